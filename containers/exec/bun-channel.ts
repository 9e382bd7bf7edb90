import { chmod, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { fail } from '../errors.js';
import type { HostOp, RunOutcome } from './protocol.js';

/**
 * The exec socket of one container (`<agents>/<name>/exec.sock`, seen in the container as /.hoody/exec.sock): Bun
 * runners hoodyd started connect to it and say hello with their run key. One JSON message per line; byte strings
 * travel as {"$b64": "…"}. Everything a runner sends is the tenant's to forge (the script runs in that process), so
 * every message is checked here as input: bounded in size, known kinds, well-formed outcomes.
 */

/** A line longer than this (a 32 MiB answer in base64, with room) ends the connection. */
const MAX_LINE = 48 * 1024 * 1024;
/** Connections that have not said hello yet, per container; more are refused. */
const PENDING_MAX = 8;
const HELLO_MS = 5000;
const TEXT_CAP = 16 * 1024;
const HOST_OPS: readonly HostOp[] = ['fetch', 'files.read', 'files.write', 'files.list', 'files.delete', 'acme.order'];

export type RunnerMessage =
  | { t: 'ready'; rss: number | null }
  | { t: 'fatal'; message: string }
  | { t: 'log'; id: number; level: string; text: string }
  | { t: 'call'; id: number; call: number; op: HostOp; args: unknown }
  | { t: 'done'; id: number; outcome: RunOutcome; cpuMs: number; rss: number | null }
  | { t: 'failed'; id: number; message: string; cpuMs: number; rss: number | null };

const replacer = (_k: string, v: unknown): unknown => (v instanceof Uint8Array ? { $b64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') } : v);
const reviver = (_k: string, v: unknown): unknown => {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    if (typeof o.$b64 === 'string' && Object.keys(o).length === 1) return new Uint8Array(Buffer.from(o.$b64, 'base64'));
  }
  return v;
};

const int = (v: unknown): number | null => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null);
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);
const str = (v: unknown, cap = TEXT_CAP): string => (typeof v === 'string' ? v : String(v)).slice(0, cap);
const body = (v: unknown): string | Uint8Array | null => (v === null || v === undefined ? null : typeof v === 'string' || v instanceof Uint8Array ? v : bad('body'));

function bad(what: string): never {
  throw fail('SCRIPT_RESPONSE_INVALID', `the Bun runner sent a malformed ${what}`);
}

/** A runner's answer, checked as the isolate's is by construction (result.ts checks status, headers and size). */
export function checkOutcome(o: unknown): RunOutcome {
  if (!o || typeof o !== 'object') bad('answer');
  const v = o as Record<string, unknown>;
  switch (v.kind) {
    case 'empty':
      return { kind: 'empty' };
    case 'json':
      return typeof v.body === 'string' ? { kind: 'json', body: v.body } : bad('JSON answer');
    case 'bytes':
      return v.body instanceof Uint8Array ? { kind: 'bytes', body: v.body } : bad('byte answer');
    case 'response': {
      const headers: Record<string, string> = {};
      if (v.headers !== undefined && (typeof v.headers !== 'object' || v.headers === null || Array.isArray(v.headers))) bad('header list');
      for (const [k, h] of Object.entries((v.headers ?? {}) as Record<string, unknown>)) headers[k] = typeof h === 'string' ? h : bad('header value');
      return { kind: 'response', status: typeof v.status === 'number' ? v.status : bad('status'), headers, body: body(v.body) };
    }
    default:
      return bad('answer');
  }
}

/** One message from a runner, or an error (the connection is then dropped). */
export function parseRunnerMessage(line: string): RunnerMessage {
  const m = JSON.parse(line, reviver) as Record<string, unknown>;
  if (!m || typeof m !== 'object') bad('message');
  const rss = int(m.rss);
  switch (m.t) {
    case 'ready':
      return { t: 'ready', rss };
    case 'fatal':
      return { t: 'fatal', message: str(m.message) };
    case 'log':
      return { t: 'log', id: int(m.id) ?? 0, level: str(m.level, 16), text: str(m.text) };
    case 'call': {
      const id = int(m.id);
      const call = int(m.call);
      if (id === null || call === null || !HOST_OPS.includes(m.op as HostOp)) bad('host call');
      return { t: 'call', id, call, op: m.op as HostOp, args: m.args };
    }
    case 'done':
      return { t: 'done', id: int(m.id) ?? bad('answer id'), outcome: checkOutcome(m.outcome), cpuMs: num(m.cpuMs), rss };
    case 'failed':
      return { t: 'failed', id: int(m.id) ?? bad('answer id'), message: str(m.message, 8192), cpuMs: num(m.cpuMs), rss };
    default:
      return bad('message');
  }
}

/** A runner that said hello: messages in (checked), messages out. */
export class RunnerConn {
  #handler: ((m: RunnerMessage) => void) | null = null;
  /** Messages that came before a handler was set (in the same read as the hello). */
  #early: RunnerMessage[] = [];
  readonly #closed: Promise<void>;
  #open = true;

  constructor(
    private readonly socket: Socket,
    readonly pid: number | null,
    lines: LineReader,
  ) {
    this.#closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('close', () => {
      this.#open = false;
    });
    lines.onLine = (line) => {
      let m: RunnerMessage;
      try {
        m = parseRunnerMessage(line);
      } catch {
        this.close();
        return;
      }
      if (this.#handler) this.#handler(m);
      else this.#early.push(m);
    };
  }

  /** Sets where messages go (those already here first). */
  listen(handler: (m: RunnerMessage) => void): void {
    this.#handler = handler;
    for (const m of this.#early.splice(0)) handler(m);
  }

  get open(): boolean {
    return this.#open;
  }

  /** Resolves when the runner's end is gone. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  send(message: object): void {
    if (this.#open) this.socket.write(`${JSON.stringify(message, replacer)}\n`);
  }

  close(): void {
    this.#open = false;
    this.socket.destroy();
  }
}

/** Splits a socket's bytes into lines, bounded in length. */
class LineReader {
  onLine: (line: string) => void = () => undefined;
  #parts: Buffer[] = [];
  #size = 0;

  constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.#push(chunk));
  }

  #push(chunk: Buffer): void {
    let from = 0;
    let at = chunk.indexOf(10);
    while (at >= 0) {
      this.#parts.push(chunk.subarray(from, at));
      const line = Buffer.concat(this.#parts).toString('utf8');
      this.#parts = [];
      this.#size = 0;
      if (this.socket.destroyed) return;
      this.onLine(line);
      from = at + 1;
      at = chunk.indexOf(10, from);
    }
    if (from < chunk.length) {
      this.#size += chunk.length - from;
      if (this.#size > MAX_LINE) {
        this.socket.destroy();
        return;
      }
      this.#parts.push(chunk.subarray(from));
    }
  }
}

/** hoodyd's end of one container's exec socket: runners it started are expected by key, anything else is dropped. */
export class ExecSocket {
  readonly #expected = new Map<string, (conn: RunnerConn) => void>();
  #pending = 0;

  private constructor(private readonly server: Server) {}

  static async listen(path: string): Promise<ExecSocket> {
    await unlink(path).catch(() => undefined); // left by an earlier hoodyd
    const server = createServer();
    const s = new ExecSocket(server);
    server.on('connection', (socket) => s.#accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    server.on('error', () => undefined);
    await chmod(path, 0o666); // runners run as any user of the container (an unprivileged uid on the host)
    return s;
  }

  /** Waits for the runner started with this key; a second connection with it is refused. */
  expect(key: string): { conn: Promise<RunnerConn>; cancel: () => void } {
    const conn = new Promise<RunnerConn>((resolve) => {
      this.#expected.set(key, resolve);
    });
    return { conn, cancel: () => void this.#expected.delete(key) };
  }

  close(): void {
    this.#expected.clear();
    this.server.close();
  }

  #accept(socket: Socket): void {
    socket.on('error', () => undefined);
    if (this.#pending >= PENDING_MAX) {
      socket.destroy();
      return;
    }
    this.#pending++;
    const lines = new LineReader(socket);
    let said = false;
    const done = () => {
      if (said) return;
      said = true;
      this.#pending--;
      clearTimeout(timer);
    };
    const timer = setTimeout(() => {
      done();
      socket.destroy();
    }, HELLO_MS);
    socket.once('close', done);
    lines.onLine = (line) => {
      done();
      let hello: Record<string, unknown> | null = null;
      try {
        hello = JSON.parse(line) as Record<string, unknown>;
      } catch {}
      const resolve = typeof hello?.run === 'string' ? this.#expected.get(hello.run) : undefined;
      if (!resolve || hello?.t !== 'hello') {
        socket.destroy();
        return;
      }
      this.#expected.delete(hello.run as string);
      resolve(new RunnerConn(socket, int(hello.pid), lines));
    };
  }
}
