/**
 * CPU fairness inside the exec worker. isolated-vm runs each busy isolate on its own OS thread, and the kernel
 * shares the CPU between threads, not tenants: four scripts spinning for one tenant would take four shares from
 * a short run of another and from this process's main thread, which every run passes through. So a thread that
 * used most of the last interval is lowered to the least priority (nice 19) until it goes quiet again: heavy
 * runs still get every cycle nobody else wants, short ones come first. Linux nice is per thread.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { setPriority } from 'node:os';

const INTERVAL_MS = 100;
/**
 * Share of the interval a thread must use to count as CPU-heavy: low, since several heavy threads share the
 * worker's one-core cgroup quota; a short run uses a millisecond or two.
 */
const HEAVY_SHARE = 0.2;
const LOW = 19;
const CLK_TCK = 100;

function threadTicks(tid: string): number | null {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

/** Starts the watch (no-op where /proc/self/task is missing). */
export function deprioritizeHeavyThreads(): void {
  const last = new Map<string, number>();
  const lowered = new Set<string>();
  const main = String(process.pid);
  let at = performance.now();
  const tick = () => {
    const now = performance.now();
    const heavyTicks = ((now - at) / 1000) * CLK_TCK * HEAVY_SHARE;
    at = now;
    let tids: string[];
    try {
      tids = readdirSync('/proc/self/task');
    } catch {
      return;
    }
    const seen = new Set(tids);
    for (const tid of tids) {
      if (tid === main) continue;
      const t = threadTicks(tid);
      if (t === null) continue;
      const used = t - (last.get(tid) ?? t);
      last.set(tid, t);
      const heavy = used >= heavyTicks;
      if (heavy === lowered.has(tid)) continue;
      try {
        setPriority(Number(tid), heavy ? LOW : 0);
        if (heavy) lowered.add(tid);
        else lowered.delete(tid);
      } catch {
        // the thread ended, or raising back needs a privilege this process lacks
      }
    }
    for (const tid of [...last.keys()]) if (!seen.has(tid)) last.delete(tid);
    for (const tid of [...lowered]) if (!seen.has(tid)) lowered.delete(tid);
  };
  setInterval(tick, INTERVAL_MS).unref();
}
