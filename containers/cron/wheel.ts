interface Slot<K> {
  at: number;
  key: K;
  gen: number;
}

/** Longest sleep: wakes at least this often, so a wall-clock jump (NTP, suspend) is noticed within it. */
const MAX_SLEEP_MS = 30_000;
/**
 * Keys fired per batch: 10,000 slots due at one second, claimed in one go, held the daemon's thread for 5 s (the
 * admin API with it); in batches of 25 the next batch waits one turn of the event loop.
 */
export const BATCH_KEYS = 25;

/**
 * One timer for every scheduled key: a min-heap of due times and a single setTimeout armed for the earliest.
 * Re-setting or deleting a key leaves a stale heap item behind (skipped by generation, compacted when many).
 */
export class TimerWheel<K> {
  readonly #heap: Slot<K>[] = [];
  readonly #due = new Map<K, Slot<K>>();
  #gen = 0;
  #timer: NodeJS.Timeout | undefined;
  #armedFor = Number.POSITIVE_INFINITY;
  #stopped = false;

  constructor(
    private readonly fire: (key: K, at: number) => void,
    private readonly now: () => number = Date.now,
    /** Runs one batch of fires (up to `batchKeys` keys due): the cron service makes it one transaction. May throw. */
    private readonly batch: (fires: () => void) => void = (fires) => fires(),
    private readonly batchKeys = BATCH_KEYS,
  ) {}

  get size(): number {
    return this.#due.size;
  }

  dueOf(key: K): number | undefined {
    return this.#due.get(key)?.at;
  }

  set(key: K, at: number): void {
    if (this.#stopped) return;
    const slot = { at, key, gen: ++this.#gen };
    this.#due.set(key, slot);
    this.#push(slot);
    if (this.#heap.length > 2 * this.#due.size + 64) this.#compact();
    if (at < this.#armedFor) this.#arm();
  }

  delete(key: K): void {
    this.#due.delete(key);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#heap.length = 0;
    this.#due.clear();
  }

  #live(s: Slot<K>): boolean {
    return this.#due.get(s.key) === s;
  }

  #arm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedFor = Number.POSITIVE_INFINITY;
    while (this.#heap.length && !this.#live(this.#heap[0]!)) this.#pop();
    const top = this.#heap[0];
    if (!top || this.#stopped) return;
    const delay = Math.min(Math.max(0, top.at - this.now()), MAX_SLEEP_MS);
    this.#armedFor = top.at;
    this.#timer = setTimeout(() => this.#tick(), delay);
    this.#timer.unref(); // the daemon's listeners keep the process alive, not the scheduler
  }

  #tick(): void {
    this.#timer = undefined;
    const now = this.now();
    while (this.#heap.length && !this.#live(this.#heap[0]!)) this.#pop();
    // A wake-up with nothing due (the 30 s cap, a clock that moved back) opens no batch.
    if (!this.#heap.length || this.#heap[0]!.at > now) {
      this.#arm();
      return;
    }
    try {
      this.batch(() => {
        let fired = 0;
        while (fired < this.batchKeys && this.#heap.length && this.#heap[0]!.at <= now) {
          const s = this.#pop();
          if (!this.#live(s)) continue;
          this.#due.delete(s.key);
          fired++;
          this.fire(s.key, s.at); // the caller catches its own errors; it may set() the key again
        }
      });
    } catch {
      // the batch's owner logged it; the wheel goes on
    }
    this.#arm(); // more due: a timer of 0 ms, after pending I/O (an admin call, a run's end) had its turn
  }

  #compact(): void {
    const live = this.#heap.filter((s) => this.#live(s));
    this.#heap.length = 0;
    for (const s of live) this.#push(s);
  }

  #push(s: Slot<K>): void {
    const h = this.#heap;
    h.push(s);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= h[i]!.at) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  #pop(): Slot<K> {
    const h = this.#heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l]!.at < h[m]!.at) m = l;
        if (r < h.length && h[r]!.at < h[m]!.at) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i]!, h[m]!];
        i = m;
      }
    }
    return top;
  }
}
