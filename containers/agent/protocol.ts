/**
 * The frames hoodyd and the in-container agent exchange (see host/agent/hoody-agent.c): u32 payload length,
 * u8 type, u32 run id (little endian), payload. The agent's end belongs to the tenant: a container can replace
 * the agent, so what arrives is bounded and never trusted beyond its own container.
 */
export const FRAME = { run: 0x52, kill: 0x4b, hello: 0x48, output: 0x4f, exit: 0x58, error: 0x45 } as const;
const HEADER = 9;
/** Larger frames than this end the connection (the real agent sends at most 16 KiB of output per frame). */
export const MAX_FRAME = 1 << 20;

export interface Frame {
  type: number;
  id: number;
  payload: Buffer;
}

export function encodeFrame(type: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(HEADER + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32LE(id, 5);
  payload.copy(out, HEADER);
  return out;
}

export interface RunRequest {
  user: string;
  workingDir?: string;
  maxOutputBytes: number;
  cmd: string[];
  env: string[];
}

/** A run request's payload: NUL-terminated user, working dir, output cap, argument count, arguments, env. */
export function runPayload(r: RunRequest): Buffer {
  const parts = [r.user, r.workingDir ?? '', String(r.maxOutputBytes), String(r.cmd.length), ...r.cmd, ...r.env];
  for (const p of parts) if (p.includes('\0')) throw new Error('a command, user or environment entry contains a NUL byte');
  return Buffer.from(parts.map((p) => `${p}\0`).join(''));
}

const EMPTY = Buffer.alloc(0);

/** Splits a byte stream into frames; throws on a frame over MAX_FRAME (the caller drops the connection). */
export class FrameReader {
  #buf: Buffer = EMPTY;

  push(chunk: Buffer): Frame[] {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    const frames: Frame[] = [];
    while (this.#buf.length >= HEADER) {
      const len = this.#buf.readUInt32LE(0);
      if (len > MAX_FRAME) throw new Error(`agent frame of ${len} bytes`);
      if (this.#buf.length < HEADER + len) break;
      frames.push({ type: this.#buf.readUInt8(4), id: this.#buf.readUInt32LE(5), payload: this.#buf.subarray(HEADER, HEADER + len) });
      this.#buf = this.#buf.subarray(HEADER + len);
    }
    // An empty view would keep the whole chunk it came from alive for as long as the link lives (one per container).
    if (this.#buf.length === 0) this.#buf = EMPTY;
    return frames;
  }
}
