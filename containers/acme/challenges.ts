/** ACME tokens are base64url (RFC 8555 §8.3: at least 128 bits of entropy); anything else is never ours. */
const TOKEN_RE = /^[A-Za-z0-9_-]{16,256}$/;

export function isChallengeToken(token: string): boolean {
  return TOKEN_RE.test(token);
}

interface Pending {
  keyAuthorization: string;
  hostnames: Set<string>;
  /** set() calls not yet matched by a delete() (two orders can share a reused authorization, hence a token). */
  refs: number;
}

/** A hostname as it appears in a Host header or an ACME identifier: lowercase, no port, no trailing dot. */
export function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  const colon = h.lastIndexOf(':');
  if (colon !== -1 && h.indexOf(':') === colon) h = h.slice(0, colon);
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

/**
 * The http-01 challenges in flight, in memory: token -> key authorization, and the hostnames it may be answered
 * for. The public HTTP listener answers `GET /.well-known/acme-challenge/<token>` from it.
 */
export class Http01Challenges {
  readonly #pending = new Map<string, Pending>();

  /** Publishes a token; a second set() of the same token counts a reference (each needs its delete()). */
  set(token: string, keyAuthorization: string, hostnames: readonly string[]): void {
    if (!isChallengeToken(token)) throw new Error(`not an ACME token: ${JSON.stringify(token)}`);
    const hosts = hostnames.map(normalizeHost);
    const cur = this.#pending.get(token);
    if (cur && cur.keyAuthorization === keyAuthorization) {
      cur.refs++;
      for (const h of hosts) cur.hostnames.add(h);
      return;
    }
    this.#pending.set(token, { keyAuthorization, hostnames: new Set(hosts), refs: 1 });
  }

  /** The key authorization for a token, or null; with `hostname` (a Host header is fine), only for that name. */
  get(token: string, hostname?: string): string | null {
    const p = this.#pending.get(token);
    if (!p) return null;
    if (hostname !== undefined && !p.hostnames.has(normalizeHost(hostname))) return null;
    return p.keyAuthorization;
  }

  delete(token: string): void {
    const p = this.#pending.get(token);
    if (p && --p.refs <= 0) this.#pending.delete(token);
  }

  get size(): number {
    return this.#pending.size;
  }
}
