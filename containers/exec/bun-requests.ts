import { isHoodyError } from '../errors.js';
import type { RunnerConn, RunnerMessage } from './bun-channel.js';
import type { HostOp, RunFailure } from './protocol.js';
import type { RunReport } from './worker-host.js';

/** Where one request's console lines go. */
export interface LineSink {
  add(level: string, text: string): void;
  text(): string;
}

/** A run's report, with the Bun process's resident memory as it reported it with its answer. */
export type BunReport = RunReport & { memoryBytes?: number | null };

interface Entry {
  lines: LineSink;
  resolve: (r: BunReport) => void;
}

/**
 * The requests in flight on one runner connection. A runner may make host calls and write console lines only
 * under the id of a request in flight on its own connection: run ids are the daemon's across all containers,
 * and a forged id must not borrow another run's authority.
 */
export class RunnerRequests {
  readonly #inflight = new Map<number, Entry>();
  /** The runner's RSS as it last reported it (bytes). */
  rss: number | null = null;
  /** A persistent runner's start: null once its fetch handler is ready, else why it is not. */
  readonly started: Promise<string | null>;
  #startedWith: (why: string | null) => void = () => undefined;
  /** Console lines outside any request (a persistent script's start-up). */
  onStray: (level: string, text: string) => void = () => undefined;

  constructor(
    readonly conn: RunnerConn,
    private readonly hostCall: (id: number, op: HostOp, args: unknown) => Promise<unknown>,
  ) {
    this.started = new Promise((resolve) => {
      this.#startedWith = resolve;
    });
    void conn.closed.then(() => this.#startedWith('its process ended while starting'));
    conn.listen((m) => this.#on(m));
  }

  get size(): number {
    return this.#inflight.size;
  }

  /** Resolves with the runner's answer, or with failAll's; never rejects. */
  add(id: number, lines: LineSink): Promise<BunReport> {
    return new Promise((resolve) => this.#inflight.set(id, { lines, resolve }));
  }

  fail(id: number, failure: RunFailure, message: string): void {
    const e = this.#inflight.get(id);
    if (!e) return;
    this.#inflight.delete(id);
    e.resolve({ type: 'failed', id, cpuMs: 0, console: e.lines.text(), failure, message });
  }

  failAll(failure: RunFailure, message: string): void {
    for (const id of [...this.#inflight.keys()]) this.fail(id, failure, message);
  }

  #on(m: RunnerMessage): void {
    if ('rss' in m && m.rss !== null) this.rss = m.rss;
    switch (m.t) {
      case 'ready':
        this.#startedWith(null);
        return;
      case 'fatal':
        this.#startedWith(m.message);
        return;
      case 'log': {
        const e = this.#inflight.get(m.id);
        if (e) e.lines.add(m.level, m.text);
        else this.onStray(m.level, m.text);
        return;
      }
      case 'call': {
        const reply = (ok: boolean, v: unknown) => this.conn.send(ok ? { t: 'reply', call: m.call, ok, value: v } : { t: 'reply', call: m.call, ok, error: v });
        if (!this.#inflight.has(m.id)) {
          reply(false, 'host calls are only available while a request is handled');
          return;
        }
        this.hostCall(m.id, m.op, m.args).then(
          (v) => reply(true, v),
          (err: unknown) => reply(false, isHoodyError(err) ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err)),
        );
        return;
      }
      case 'done':
      case 'failed': {
        const e = this.#inflight.get(m.id);
        if (!e) return;
        this.#inflight.delete(m.id);
        const console = e.lines.text();
        const memoryBytes = m.rss;
        e.resolve(
          m.t === 'done'
            ? { type: 'done', id: m.id, cpuMs: m.cpuMs, console, outcome: m.outcome, memoryBytes }
            : { type: 'failed', id: m.id, cpuMs: m.cpuMs, console, failure: 'thrown', message: m.message, memoryBytes },
        );
      }
    }
  }
}
