/**
 * Counts failed token checks per client address in a sliding window; past the limit the address is refused
 * (429) until the window passes. Bounded: at most `maxClients` addresses are tracked (oldest evicted).
 */
export class FailureLimiter {
  readonly #failures = new Map<string, number[]>();

  constructor(
    readonly limit = 100,
    readonly windowMs = 60_000,
    readonly maxClients = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  private recent(client: string): number[] {
    const cutoff = this.now() - this.windowMs;
    const list = (this.#failures.get(client) ?? []).filter((t) => t > cutoff);
    if (list.length) this.#failures.set(client, list);
    else this.#failures.delete(client);
    return list;
  }

  blocked(client: string): boolean {
    return this.recent(client).length >= this.limit;
  }

  /** Records a failure; returns true when this one reached the limit (log it once). */
  fail(client: string): boolean {
    const list = this.recent(client);
    list.push(this.now());
    this.#failures.delete(client);
    this.#failures.set(client, list);
    if (this.#failures.size > this.maxClients) this.#failures.delete(this.#failures.keys().next().value!);
    return list.length === this.limit;
  }
}
