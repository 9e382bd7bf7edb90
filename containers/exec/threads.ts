/**
 * CPU fairness inside the exec worker. isolated-vm runs each busy isolate on its own OS thread, and the kernel
 * shares the CPU between threads, not tenants: scripts spinning for one tenant take shares from a short run of
 * another and from this process's main thread, which every run passes through. So a thread that computes
 * without sleeping for two samples in a row (20-40 ms) is demoted until it sleeps again: moved into the worker
 * cgroup's `heavy` child (the least weight, and the hard CPU cap) and lowered to nice 19. Heavy runs still get
 * every cycle nobody else wants, short runs come first and are never throttled by the cap. "Without sleeping"
 * is read from the thread's voluntary context switches, so a thread that finished one run and started another
 * between two samples is never taken for heavy (a pool thread always waits between runs). Linux nice and v1
 * cpu cgroups are per thread. The watch runs only while runs are in flight.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import type { HeavyThreadFiles } from '../../host/cgroup.js';

const INTERVAL_MS = 20;
const SAMPLES = 2;
const LOW = 19;

interface Seen {
  voluntary: number;
  streak: number;
}

/** The thread's state letter and voluntary context switches; null once it is gone. */
function sample(tid: string): { state: string; voluntary: number } | null {
  try {
    const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
    const state = /^State:\s+(\S)/m.exec(status)?.[1] ?? '?';
    const voluntary = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    return { state, voluntary };
  } catch {
    return null;
  }
}

export class HeavyThreads {
  private readonly seen = new Map<string, Seen>();
  private readonly lowered = new Set<string>();
  private readonly main = String(process.pid);
  private timer: NodeJS.Timeout | null = null;

  /** `files`: the worker cgroup's heavy child, or null (nice only). */
  constructor(private readonly files: HeavyThreadFiles | null) {}

  /** Watches while runs are in flight; with none, every demoted thread is restored (the next run may land on it). */
  setActive(active: boolean): void {
    if (active && !this.timer) {
      this.timer = setInterval(() => this.tick(), INTERVAL_MS);
      this.timer.unref();
    } else if (!active && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
      for (const tid of [...this.lowered]) this.move(tid, false);
      this.seen.clear();
    }
  }

  /**
   * Restores at once every demoted thread that slept since its last sample: called as a run starts, which may
   * land on a pool thread that just finished a heavy run (the periodic tick would restore it only up to 20 ms
   * later, with the short run throttled meanwhile).
   */
  beforeRun(): void {
    for (const tid of [...this.lowered]) {
      const now = sample(tid);
      const before = this.seen.get(tid);
      if (now === null) this.lowered.delete(tid);
      else if (before === undefined || now.voluntary !== before.voluntary || now.state !== 'R') {
        this.seen.set(tid, { voluntary: now.voluntary, streak: 0 });
        this.move(tid, false);
      }
    }
  }

  private tick(): void {
    let tids: string[];
    try {
      tids = readdirSync('/proc/self/task');
    } catch {
      return;
    }
    const alive = new Set(tids);
    for (const tid of tids) {
      if (tid === this.main) continue;
      const now = sample(tid);
      if (now === null) continue;
      const before = this.seen.get(tid);
      const computing = now.state === 'R' && before !== undefined && before.voluntary === now.voluntary;
      const streak = computing ? before.streak + 1 : now.state === 'R' ? 1 : 0;
      this.seen.set(tid, { voluntary: now.voluntary, streak });
      const heavy = streak >= SAMPLES;
      if (heavy !== this.lowered.has(tid)) this.move(tid, heavy);
    }
    for (const tid of [...this.seen.keys()]) if (!alive.has(tid)) this.seen.delete(tid);
    for (const tid of [...this.lowered]) if (!alive.has(tid)) this.lowered.delete(tid);
  }

  private move(tid: string, heavy: boolean): void {
    if (heavy) this.lowered.add(tid);
    else this.lowered.delete(tid);
    try {
      if (this.files) writeFileSync(heavy ? this.files.demote : this.files.restore, tid);
    } catch {
      // the thread ended, or the group is gone: nice alone still applies
    }
    try {
      setPriority(Number(tid), heavy ? LOW : 0);
    } catch {
      // the thread ended, or raising back needs a privilege this process lacks
    }
  }
}
