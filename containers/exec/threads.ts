/**
 * CPU fairness inside the exec worker. isolated-vm runs each busy isolate on its own OS thread, and the kernel
 * shares the CPU between threads, not tenants: scripts spinning for one tenant take shares from a short run of
 * another and from this process's main thread, which every run passes through. So a thread found runnable at
 * RUNNABLE_SAMPLES samples in a row (a run computing for 100 ms and more) drops to the least priority (nice 19)
 * until it sleeps again: heavy runs still get every cycle nobody else wants, short runs come first. Runnable
 * streaks rather than CPU used: on a loaded box a spinning thread may get less CPU than a short run. Linux nice
 * is per thread.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { setPriority } from 'node:os';

const INTERVAL_MS = 50;
const RUNNABLE_SAMPLES = 3;
const LOW = 19;

/** The thread's state letter (R running or runnable, S sleeping, ...); null once it is gone. */
function threadState(tid: string): string | null {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

/** Starts the watch (no-op where /proc/self/task is missing). */
export function deprioritizeHeavyThreads(): void {
  const streak = new Map<string, number>();
  const lowered = new Set<string>();
  const main = String(process.pid);
  const tick = () => {
    let tids: string[];
    try {
      tids = readdirSync('/proc/self/task');
    } catch {
      return;
    }
    const seen = new Set(tids);
    for (const tid of tids) {
      if (tid === main) continue;
      const state = threadState(tid);
      if (state === null) continue;
      const n = state === 'R' ? (streak.get(tid) ?? 0) + 1 : 0;
      streak.set(tid, n);
      const heavy = n >= RUNNABLE_SAMPLES;
      if (heavy === lowered.has(tid)) continue;
      try {
        setPriority(Number(tid), heavy ? LOW : 0);
        if (heavy) lowered.add(tid);
        else lowered.delete(tid);
      } catch {
        // the thread ended, or raising back needs a privilege this process lacks
      }
    }
    for (const tid of [...streak.keys()]) if (!seen.has(tid)) streak.delete(tid);
    for (const tid of [...lowered]) if (!seen.has(tid)) lowered.delete(tid);
  };
  setInterval(tick, INTERVAL_MS).unref();
}
