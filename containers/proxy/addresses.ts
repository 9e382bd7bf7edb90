/** Containers' engine addresses, looked up once and kept until invalidated (a failed or empty lookup is not kept). */
export class AddressCache {
  readonly #addresses = new Map<string, Promise<string | null>>();

  constructor(private readonly resolveAddress: (container: string) => Promise<string | null>) {}

  get(container: string): Promise<string | null> {
    let a = this.#addresses.get(container);
    if (!a) {
      a = this.resolveAddress(container).catch(() => null);
      this.#addresses.set(container, a);
      a.then((ip) => ip ?? this.#addresses.delete(container));
    }
    return a;
  }

  /** The container's address may change when it restarts. */
  invalidate(container: string): void {
    this.#addresses.delete(container);
  }
}
