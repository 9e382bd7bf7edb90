import type { Logger } from 'pino';
import type { ExecResult } from '../../host/engine.js';
import { isHoodyError } from '../errors.js';
import type { RunnerConn } from './bun-channel.js';
import { type BunReport, RunnerRequests } from './bun-requests.js';
import type { BunJob } from './bun-runtime.js';
import { ConsoleLines, exitMessage } from './bun-console.js';
import type { HostOp } from './protocol.js';

/** A persistent script as `hoody stats` and the API show it. */
export interface PersistentInfo {
  container: string;
  script: string;
  user: string;
  state: 'starting' | 'running' | 'restarting';
  /** The process id inside the container. */
  pid: number | null;
  /** Resident memory as the process last reported it (it counts against the container's memory limit). */
  rssBytes: number | null;
  startedAt: string | null;
  requests: number;
  restarts: number;
  idleMs: number;
}

export interface PersistentDeps {
  log: Logger;
  /** Starts the script's process: its connection once it said hello, or how it ended first. */
  start(job: BunJob, onExit: (r: ExecResult) => void): Promise<{ conn: RunnerConn; stop: () => void } | ExecResult>;
  hostCall: (id: number, op: HostOp, args: unknown) => Promise<unknown>;
}

/** From start to `ready` (Bun up, the module imported, its fetch handler found), and a crash's back-off wait. */
const START_MS = 30_000;
/** Waits before restarting after the 1st, 2nd, … crash in a row; a run of a minute or more resets the count. */
const BACKOFF_MS = [0, 1000, 2000, 5000, 10_000, 30_000];
const STABLE_MS = 60_000;

interface Instance {
  key: string;
  job: BunJob;
  gen: number;
  requests: RunnerRequests | null;
  stop: (() => void) | null;
  starting: Promise<RunnerRequests> | null;
  /** Requests waiting for it or in flight: it is idle at 0. */
  active: number;
  /** hoodyd ends this process (idle, rewritten, timed out, closing): its exit is not a crash. */
  stopping: boolean;
  /** Replaced by a newer version of the script: it stops once its requests are answered. */
  retired: boolean;
  crashes: number;
  restarts: number;
  restartAt: number;
  served: number;
  startedAt: number | null;
  idleTimer: NodeJS.Timeout | null;
  restartTimer: NodeJS.Timeout | null;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * `@mode persistent`: one long-lived Bun process per (container, script, user) with the script's fetch handler,
 * started on its first request, restarted after a crash with back-off, stopped after `@idle` without requests,
 * replaced when the script changes, killed (process tree) when a request passes its `@timeout`.
 */
export class PersistentScripts {
  readonly #all = new Map<string, Instance>();

  constructor(private readonly deps: PersistentDeps) {}

  list(container?: string): PersistentInfo[] {
    const out: PersistentInfo[] = [];
    for (const i of this.#all.values()) {
      if (container !== undefined && i.job.row.name !== container) continue;
      const running = i.requests?.conn.open === true;
      out.push({
        container: i.job.row.name,
        script: i.job.file,
        user: i.job.user,
        state: running ? 'running' : i.restartTimer ? 'restarting' : 'starting',
        pid: running ? (i.requests!.conn.pid ?? null) : null,
        rssBytes: running ? i.requests!.rss : null,
        startedAt: running && i.startedAt ? new Date(i.startedAt).toISOString() : null,
        requests: i.served,
        restarts: i.restarts,
        idleMs: i.job.directives.idleMs,
      });
    }
    return out;
  }

  async request(job: BunJob): Promise<BunReport> {
    const key = `${job.row.name}\0${job.file}\0${job.user}`;
    let inst = this.#all.get(key);
    if (inst && (inst.job.hash !== job.hash || inst.job.row.engineId !== job.row.engineId)) {
      this.#retire(inst);
      inst = undefined;
    }
    if (!inst) {
      inst = { key, job, gen: 0, requests: null, stop: null, starting: null, active: 0, stopping: false, retired: false, crashes: 0, restarts: 0, restartAt: 0, served: 0, startedAt: null, idleTimer: null, restartTimer: null };
      this.#all.set(key, inst);
    }
    const i = inst;
    i.job = job;
    if (i.idleTimer) clearTimeout(i.idleTimer);
    i.idleTimer = null;
    i.active++;
    const lines = new ConsoleLines();
    try {
      // A start (Bun, the module's imports) is not the handler's time: @timeout counts from the request's send.
      const reqs = await this.#ensure(i);
      const deadline = Date.now() + job.directives.timeoutMs;
      const answer = reqs.add(job.id, lines);
      const h = job.http;
      reqs.conn.send({ t: 'request', id: job.id, method: h.method, url: h.url, headers: h.headers, body: h.body });
      const kill = setTimeout(
        () => {
          reqs.fail(job.id, 'timeout', '');
          this.deps.log.info({ container: job.row.name, script: job.file }, 'persistent script passed its timeout: killed');
          this.#kill(i);
        },
        Math.max(0, deadline - Date.now()),
      );
      const report = await answer;
      clearTimeout(kill);
      i.served++;
      return report;
    } catch (err) {
      if (isHoodyError(err)) throw err;
      return { type: 'failed', id: job.id, cpuMs: 0, console: lines.text(), failure: 'thrown', message: err instanceof Error ? err.message : String(err) };
    } finally {
      i.active--;
      this.#idleLater(i);
    }
  }

  /** Stops every persistent script (of one container). */
  async stop(container?: string): Promise<void> {
    for (const i of [...this.#all.values()]) {
      if (container !== undefined && i.job.row.name !== container) continue;
      this.#all.delete(i.key);
      if (i.restartTimer) clearTimeout(i.restartTimer);
      if (i.idleTimer) clearTimeout(i.idleTimer);
      i.restartTimer = i.idleTimer = null;
      this.#kill(i);
    }
  }

  /** Its runner's requests, starting it (after the back-off of a crash, if one is due) when none runs. */
  #ensure(i: Instance): Promise<RunnerRequests> {
    if (i.requests?.conn.open) return Promise.resolve(i.requests);
    if (i.starting) return i.starting;
    if (i.restartTimer) clearTimeout(i.restartTimer);
    i.restartTimer = null;
    const wait = i.restartAt - Date.now();
    const starting = (wait > 0 ? sleep(wait) : Promise.resolve()).then(() => this.#launch(i));
    i.starting = starting;
    void starting.finally(() => {
      if (i.starting === starting) i.starting = null;
    }).catch(() => undefined);
    return starting;
  }

  async #launch(i: Instance): Promise<RunnerRequests> {
    const gen = ++i.gen;
    i.stopping = false;
    const started = await this.deps.start(i.job, (r) => this.#exited(i, gen, r));
    if (!('conn' in started)) throw new Error(exitMessage(started));
    const reqs = new RunnerRequests(started.conn, this.deps.hostCall);
    const log = this.deps.log.child({ container: i.job.row.name, script: i.job.file });
    reqs.onStray = (level, text) => log.info({ level, text: text.slice(0, 2000) }, 'persistent script console');
    i.stop = started.stop;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`no fetch handler within ${START_MS / 1000} s`), START_MS);
    });
    const ready = await Promise.race([reqs.started, late]);
    clearTimeout(timer);
    if (ready !== null) {
      started.stop();
      throw new Error(`the persistent script did not start: ${ready}`);
    }
    i.requests = reqs;
    i.startedAt = Date.now();
    log.info({ pid: started.conn.pid, user: i.job.user }, 'persistent script started');
    this.#idleLater(i);
    return reqs;
  }

  #exited(i: Instance, gen: number, r: ExecResult): void {
    if (gen !== i.gen) return;
    const planned = i.stopping || i.retired || this.#all.get(i.key) !== i;
    i.requests?.failAll(planned ? 'aborted' : 'thrown', exitMessage(r));
    i.requests = null;
    i.stop = null;
    if (planned) return;
    if (i.startedAt !== null && Date.now() - i.startedAt >= STABLE_MS) i.crashes = 0;
    i.startedAt = null;
    i.crashes++;
    i.restarts++;
    const delay = BACKOFF_MS[Math.min(i.crashes - 1, BACKOFF_MS.length - 1)]!;
    i.restartAt = Date.now() + delay;
    this.deps.log.warn({ container: i.job.row.name, script: i.job.file, exitCode: r.exitCode, restartInMs: delay }, 'persistent script crashed: restarting');
    i.restartTimer = setTimeout(() => {
      i.restartTimer = null;
      this.#ensure(i).catch((err: unknown) => this.deps.log.warn({ err, container: i.job.row.name, script: i.job.file }, 'persistent script restart failed'));
    }, delay);
  }

  #kill(i: Instance): void {
    i.stopping = true;
    i.stop?.();
  }

  #retire(i: Instance): void {
    this.#all.delete(i.key);
    i.retired = true;
    if (i.restartTimer) clearTimeout(i.restartTimer);
    i.restartTimer = null;
    if (i.active === 0) this.#kill(i);
  }

  /** Stops it after its idle time without requests (a retired one at once). */
  #idleLater(i: Instance): void {
    if (i.active > 0) return;
    if (i.retired) {
      this.#kill(i);
      return;
    }
    if (i.idleTimer) clearTimeout(i.idleTimer);
    i.idleTimer = setTimeout(() => {
      i.idleTimer = null;
      if (i.active > 0 || this.#all.get(i.key) !== i) return;
      this.#all.delete(i.key);
      this.deps.log.info({ container: i.job.row.name, script: i.job.file }, 'persistent script idle: stopped');
      this.#kill(i);
    }, i.job.directives.idleMs);
  }
}
