import type { Socket } from 'node:net';
import type { ExecOptions, ExecResult } from '../../host/engine.js';
import { encodeFrame, FRAME, type Frame, type FrameReader, runPayload } from './protocol.js';

/** After a kill, how long the agent gets to report the exit before the run is answered without it. */
const KILL_GRACE_MS = 2000;

interface InFlight {
  chunks: Buffer[];
  size: number;
  max: number;
  truncated: boolean;
  timedOut: boolean;
  timer?: NodeJS.Timeout;
  killed: boolean;
  unlisten?: () => void;
  resolve: (r: ExecResult) => void;
  reject: (err: Error) => void;
}

/** One connected agent (it said hello): runs are multiplexed over its socket by id. */
export class AgentLink {
  readonly #runs = new Map<number, InFlight>();
  #next = 1;
  #gone: Error | null = null;

  constructor(
    private readonly socket: Socket,
    reader: FrameReader,
    private readonly onGone: () => void,
  ) {
    socket.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch (err) {
        this.#drop(err as Error);
        return;
      }
      for (const f of frames) this.#frame(f);
    });
    socket.on('close', () => this.#drop(new Error("the container's command agent went away")));
    socket.on('error', (err) => this.#drop(err));
  }

  get alive(): boolean {
    return this.#gone === null;
  }

  get running(): number {
    return this.#runs.size;
  }

  run(opts: ExecOptions): Promise<ExecResult> {
    if (this.#gone) return Promise.reject(this.#gone);
    const id = this.#next;
    this.#next = this.#next >= 0xffff_fff0 ? 1 : this.#next + 1;
    const max = opts.maxOutputBytes ?? 64 * 1024;
    const payload = runPayload({ user: opts.user ?? '', workingDir: opts.workingDir, maxOutputBytes: max, cmd: opts.cmd, env: opts.env ?? [] });
    return new Promise<ExecResult>((resolve, reject) => {
      const run: InFlight = { chunks: [], size: 0, max, truncated: false, timedOut: false, killed: false, resolve, reject };
      this.#runs.set(id, run);
      const kill = () => {
        if (run.killed || !this.#runs.has(id)) return;
        run.killed = true;
        clearTimeout(run.timer);
        this.socket.write(encodeFrame(FRAME.kill, id));
        // A (replaced) agent that never reports the exit does not hold the run.
        run.timer = setTimeout(() => this.#settle(id, null), KILL_GRACE_MS);
      };
      if (opts.timeoutMs) {
        run.timer = setTimeout(() => {
          run.timedOut = true;
          kill();
        }, opts.timeoutMs);
      }
      this.socket.write(encodeFrame(FRAME.run, id, payload));
      const signal = opts.signal;
      if (signal) {
        signal.addEventListener('abort', kill, { once: true });
        run.unlisten = () => signal.removeEventListener('abort', kill);
        if (signal.aborted) kill();
      }
    });
  }

  close(): void {
    this.socket.destroy();
  }

  #frame(f: Frame): void {
    const run = this.#runs.get(f.id);
    if (!run) return; // a late frame of a run already answered, or noise from a replaced agent
    if (f.type === FRAME.output) {
      if (run.size < run.max) run.chunks.push(Buffer.from(f.payload.subarray(0, run.max - run.size)));
      if (run.size + f.payload.length > run.max) run.truncated = true;
      run.size += f.payload.length;
    } else if (f.type === FRAME.exit && f.payload.length === 4) {
      const code = f.payload.readInt32LE(0);
      // Killed by a signal: a shell reports 128 + n, and so does docker exec.
      this.#settle(f.id, code >= 0 ? code : 128 - code);
    } else if (f.type === FRAME.error) {
      this.#runs.delete(f.id);
      clearTimeout(run.timer);
      run.unlisten?.();
      run.reject(new Error(f.payload.subarray(0, 512).toString('utf8')));
    }
  }

  #settle(id: number, exitCode: number | null): void {
    const run = this.#runs.get(id);
    if (!run) return;
    this.#runs.delete(id);
    clearTimeout(run.timer);
    run.unlisten?.();
    run.resolve({
      exitCode: run.killed ? null : exitCode,
      output: Buffer.concat(run.chunks).toString('utf8'),
      truncated: run.truncated,
      timedOut: run.timedOut,
    });
  }

  #drop(err: Error): void {
    if (this.#gone) return;
    this.#gone = err;
    this.socket.destroy();
    for (const [id, run] of this.#runs) {
      this.#runs.delete(id);
      clearTimeout(run.timer);
      run.unlisten?.();
      if (run.killed) this.#settleGone(run);
      else run.reject(err);
    }
    this.onGone();
  }

  #settleGone(run: InFlight): void {
    run.resolve({ exitCode: null, output: Buffer.concat(run.chunks).toString('utf8'), truncated: run.truncated, timedOut: run.timedOut });
  }
}
