/**
 * V8's compiled code of scripts, kept by content hash across isolates (issue 14.3): an idle isolate can then be
 * dropped soon (its heap is megabytes) and the next run's new isolate skips most of the compile. The cache holds
 * bytes, not live objects, bounded in total; the least recently used entries go first.
 */
import type ivm from 'isolated-vm';

/** What compileScript sets on its result with the cache options (isolated-vm's types leave it out). */
type Compiled = ivm.Script & { cachedData?: ivm.ExternalCopy<ArrayBuffer>; cachedDataRejected?: boolean };

export class CodeCache {
  readonly #entries = new Map<string, { data: ivm.ExternalCopy<ArrayBuffer>; bytes: number }>();
  #bytes = 0;
  hits = 0;
  misses = 0;

  constructor(private readonly maxBytes = 16 * 1024 * 1024) {}

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Compiles `code` in `isolate`, from the cached code of the same hash when V8 accepts it, else producing it. */
  async compile(isolate: ivm.Isolate, hash: string, code: string, filename: string): Promise<ivm.Script> {
    const cached = this.#entries.get(hash);
    if (cached) {
      const script: Compiled = await isolate.compileScript(code, { filename, cachedData: cached.data });
      if (!script.cachedDataRejected) {
        this.hits += 1;
        this.#entries.delete(hash); // most recently used last
        this.#entries.set(hash, cached);
        return script;
      }
      this.#forget(hash); // another V8 build or flags: made again below
      script.release();
    }
    this.misses += 1;
    const script: Compiled = await isolate.compileScript(code, { filename, produceCachedData: true });
    if (script.cachedData) this.#remember(hash, script.cachedData);
    return script;
  }

  #remember(hash: string, data: ivm.ExternalCopy<ArrayBuffer>): void {
    const bytes = data.copy().byteLength; // once: the handle does not tell its size
    if (bytes > this.maxBytes) {
      data.release();
      return;
    }
    this.#entries.set(hash, { data, bytes });
    this.#bytes += bytes;
    while (this.#bytes > this.maxBytes) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#forget(oldest);
    }
  }

  #forget(hash: string): void {
    const entry = this.#entries.get(hash);
    if (!entry) return;
    this.#entries.delete(hash);
    this.#bytes -= entry.bytes;
    entry.data.release();
  }
}
