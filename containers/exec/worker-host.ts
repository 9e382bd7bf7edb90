import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Cgroup } from '../../host/cgroup.js';
import type { FromWorker, HostOp, ToWorker, WorkerConfig, WorkerStats } from './protocol.js';

export type RunMessage = Omit<Extract<ToWorker, { type: 'run' }>, 'type'>;
export type RunReport = Extract<FromWorker, { type: 'done' | 'failed' }>;

/** Extra wall time the daemon grants the worker beyond a run's own limit before it declares the worker stuck. */
const BACKSTOP_GRACE_MS = 10_000;
/** How often the daemon samples the worker's CPU time. */
const IDLE_CHECK_MS = 1000;
/** A worker with no run in flight that uses this share of a core for IDLE_CHECKS samples in a row is stuck. */
const IDLE_CPU_SHARE = 0.5;
const IDLE_CHECKS = 3;

interface Pending {
  resolve(report: RunReport): void;
  timer: NodeJS.Timeout;
  /** The worker the run was sent to: when it exits, only its runs fail. */
  child: ChildProcess;
}

export interface WorkerHostOptions {
  log: Logger;
  config: WorkerConfig;
  /** The worker runs in it (hard memory and CPU limit); null: no cgroup on this machine. */
  cgroup: Cgroup | null;
  /** A script asked for a host function; answer with reply(). */
  onCall(id: number, call: number, op: HostOp, args: unknown): void;
}

const CLK_TCK = 100;

/** utime+stime of a process in clock ticks; null once it is gone. */
export function cpuTicks(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

function workerEntry(): { file: string; execArgv: string[] } {
  const self = fileURLToPath(import.meta.url);
  const ext = extname(self);
  // Compiled: dist/containers/exec/worker.js. Under tsx (npm test): the .ts source, loaded through tsx too.
  return { file: join(dirname(self), `worker${ext}`), execArgv: ['--no-node-snapshot', ...(ext === '.ts' ? ['--import', 'tsx'] : [])] };
}

/**
 * The daemon's side of the exec worker process. One worker: isolated-vm already runs every isolate on its own
 * thread pool (one thread per core), so a second process would add ~40 MB and a second set of caches while
 * running no more scripts at once; what a process boundary buys (a crash or a v8 fatal error cannot take the
 * daemon down) one process gives. The worker starts on the first run and again on the first run after it died,
 * so a worker that keeps crashing costs nothing between requests.
 */
export class WorkerHost {
  private child: ChildProcess | null = null;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private statsSeq = 0;
  private readonly statsWaiting = new Map<number, (s: WorkerStats) => void>();
  private idleWatch: NodeJS.Timeout | null = null;
  /** When a run was last sent or settled: the idle watch must not take a worker between two runs for idle. */
  private lastActivity = 0;

  constructor(private readonly opts: WorkerHostOptions) {}

  /** Sends a run to the worker; resolves with its report (never rejects). */
  run(msg: RunMessage): Promise<RunReport> {
    return new Promise((resolve) => {
      if (this.closed) {
        resolve({ type: 'failed', id: msg.id, cpuMs: 0, console: '', failure: 'internal', message: 'exec service closed' });
        return;
      }
      const child = this.ensure();
      const timer = setTimeout(() => {
        this.opts.log.error({ run: msg.id, key: msg.key }, 'exec worker did not end a run past its limit; restarting it');
        this.settle(msg.id, { type: 'failed', id: msg.id, cpuMs: 0, console: '', failure: 'timeout', message: 'the worker did not end the run' });
        child.kill('SIGKILL');
      }, msg.limits.timeoutMs + BACKSTOP_GRACE_MS);
      this.pending.set(msg.id, { resolve, timer, child });
      this.lastActivity = Date.now();
      this.post(child, { type: 'run', ...msg });
    });
  }

  reply(id: number, call: number, result: { ok: true; value: unknown } | { ok: false; error: string }): void {
    const p = this.pending.get(id);
    if (p) this.post(p.child, { type: 'reply', id, call, ...result });
  }

  /** Disposes a container's isolates (no-op without a worker). */
  dispose(container: string): void {
    if (this.child) this.post(this.child, { type: 'dispose', container });
  }

  /** What the worker holds right now (zeros when no worker runs). */
  stats(): Promise<WorkerStats> {
    const child = this.child;
    const none = { liveIsolates: 0, runs: 0 };
    if (!child) return Promise.resolve(none);
    return new Promise((resolve) => {
      const id = ++this.statsSeq;
      const timer = setTimeout(() => {
        this.statsWaiting.delete(id);
        resolve(none);
      }, 2000);
      this.statsWaiting.set(id, (s) => {
        clearTimeout(timer);
        resolve(s);
      });
      this.post(child, { type: 'stats', id });
    });
  }

  /** The worker's pid, or null when none runs (tests use it to kill the worker). */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.idleWatch) clearInterval(this.idleWatch);
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.disconnect?.();
      const force = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(force);
    }
    this.opts.cgroup?.remove();
  }

  /**
   * The last line of defence against code that escaped every run (a continuation spinning on an isolate thread
   * that the worker's own watchdog could not stop): a worker with nothing in flight that keeps burning CPU is
   * killed; it restarts on the next run. Measured from outside, in /proc, so a wedged worker cannot hide it.
   */
  private watchIdle(child: ChildProcess): void {
    if (this.idleWatch) clearInterval(this.idleWatch);
    let last = cpuTicks(child.pid);
    let hot = 0;
    this.idleWatch = setInterval(() => {
      const now = cpuTicks(child.pid);
      if (now === null || last === null || this.child !== child) return;
      const share = (now - last) / CLK_TCK / (IDLE_CHECK_MS / 1000);
      last = now;
      // Busy if a run was in flight at any point of the sample, not only at its end: under a steady sequential
      // load the instant between two runs is common, and three such samples in a row killed a healthy worker.
      const busy = Date.now() - this.lastActivity <= IDLE_CHECK_MS || [...this.pending.values()].some((p) => p.child === child);
      hot = !busy && share >= IDLE_CPU_SHARE ? hot + 1 : 0;
      if (hot >= IDLE_CHECKS) {
        this.opts.log.error({ worker: child.pid, share }, 'exec worker kept using CPU with no run in flight; killing it');
        hot = 0;
        child.kill('SIGKILL');
      }
    }, IDLE_CHECK_MS);
    this.idleWatch.unref();
  }

  private post(child: ChildProcess, msg: ToWorker): void {
    try {
      child.send(msg, (err) => {
        if (err) this.opts.log.warn({ err }, 'exec worker message not delivered');
      });
    } catch (err) {
      this.opts.log.warn({ err }, 'exec worker channel closed');
    }
  }

  private settle(id: number, report: RunReport): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    this.lastActivity = Date.now();
    clearTimeout(p.timer);
    p.resolve(report);
  }

  private ensure(): ChildProcess {
    if (this.child?.connected) return this.child;
    const { file, execArgv } = workerEntry();
    const child = fork(file, [JSON.stringify(this.opts.config)], {
      execArgv,
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.child = child;
    const log = this.opts.log.child({ worker: child.pid });
    const cgroup = this.opts.cgroup;
    const oomBase = cgroup?.oomKills() ?? 0;
    if (cgroup && child.pid !== undefined) {
      try {
        cgroup.add(child.pid);
      } catch (err) {
        log.warn({ err }, 'exec worker could not join its cgroup; it runs without the hard limit');
      }
    }
    this.watchIdle(child);
    if (child.stderr) createInterface({ input: child.stderr }).on('line', (line) => log.warn({ line }, 'exec worker stderr'));
    child.on('message', (msg: FromWorker) => {
      switch (msg.type) {
        case 'done':
        case 'failed':
          this.settle(msg.id, msg);
          break;
        case 'call':
          if (this.pending.has(msg.id)) this.opts.onCall(msg.id, msg.call, msg.op, msg.args);
          break;
        case 'stats':
          this.statsWaiting.get(msg.id)?.(msg.stats);
          this.statsWaiting.delete(msg.id);
          break;
        case 'fatal':
          log.error({ message: msg.message }, 'catastrophic isolate failure; the exec worker restarts');
          break;
      }
    });
    child.on('error', (err) => log.error({ err }, 'exec worker error'));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      const why = signal ? `killed by ${signal}` : `exit code ${code}`;
      // The kernel counts the kill before delivering it: by now a cgroup OOM kill shows in the counter.
      const oom = cgroup !== null && cgroup !== undefined && cgroup.oomKills() > oomBase;
      if (!this.closed) log.warn({ code, signal, oom, inFlight: this.pending.size }, 'exec worker exited');
      for (const [id, p] of [...this.pending])
        if (p.child === child)
          this.settle(id, { type: 'failed', id, cpuMs: 0, console: '', failure: oom ? 'oom' : 'internal', message: `the exec worker died (${why})` });
    });
    return child;
  }
}
