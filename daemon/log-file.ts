import { closeSync, fchmodSync, fstatSync, openSync, renameSync, writeSync } from 'node:fs';

/**
 * The daemon's own log file, rotated by size: `file` -> `file.1` -> … -> `file.<keep>` (the oldest dropped),
 * every file 0600 (the log names tokens' ids, containers and hostnames). A pino destination: synchronous writes,
 * so nothing logged is lost when the process dies right after.
 */
export class RotatingLog {
  #fd = -1;
  #size = 0;

  constructor(
    readonly path: string,
    readonly maxBytes: number,
    readonly keep: number,
  ) {
    this.#open();
  }

  write(chunk: string): boolean {
    const buf = Buffer.from(chunk);
    if (this.#size > 0 && this.#size + buf.length > this.maxBytes) this.rotate();
    writeSync(this.#fd, buf);
    this.#size += buf.length;
    return true;
  }

  /** Shifts every file up one place and starts an empty live file. */
  rotate(): void {
    closeSync(this.#fd);
    rotateFiles(this.path, this.keep);
    this.#open();
  }

  #open(): void {
    this.#fd = openSync(this.path, 'a', 0o600);
    // A file made before (by an older hoodyd or a shell redirect) may be world-readable.
    fchmodSync(this.#fd, 0o600);
    this.#size = fstatSync(this.#fd).size;
  }
}

/** `path` becomes `path.1`, `path.1` becomes `path.2`, …; `path.<keep>` is overwritten. Missing ones are skipped. */
export function rotateFiles(path: string, keep: number): void {
  for (let i = keep - 1; i >= 0; i--) {
    try {
      renameSync(i === 0 ? path : `${path}.${i}`, `${path}.${i + 1}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}
