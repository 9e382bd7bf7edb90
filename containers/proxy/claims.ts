import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { fail } from '../errors.js';
import { type GrantStore, grantCovers } from '../grants.js';

// Loose on purpose: anything shaped like a (possibly single-label, possibly wildcard) DNS name. Callers keep their
// own stricter syntax check and its 400; this only decides who a well-formed name belongs to.
const NAMEISH = /^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/;
const NUMERIC_LABEL = /^(0x[0-9a-f]*|[0-9]+)$/;

/**
 * A hostname as the route table and SNI key it: trimmed, lowercase, without a `:port` and one trailing dot,
 * IDNs as punycode. `API.B.HOODY.LOCALHOST.:443` -> `api.b.hoody.localhost`. Bracketed IPv6 stays bracketed.
 */
export function canonicalName(input: string): string {
  let h = input.trim().toLowerCase();
  if (!h.startsWith('[') && !isIP(h)) h = h.replace(/:\d*$/, '');
  else if (h.startsWith('[')) h = h.replace(/(\])(:\d*)$/, '$1');
  if (h.endsWith('.')) h = h.slice(0, -1);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the range is the point: anything past ASCII is an IDN
  if (/[^\x00-\x7f]/.test(h)) {
    const wild = h.startsWith('*.');
    const ascii = domainToASCII(wild ? h.slice(2) : h);
    if (ascii) h = `${wild ? '*.' : ''}${ascii}`;
  }
  return h;
}

/** Whether a wildcard `*.<base>` matches `name` (exactly one label more, as TLS wildcards do). */
function wildcardMatches(base: string, name: string): boolean {
  return name.endsWith(`.${base}`) && !name.slice(0, -(base.length + 1)).includes('.');
}

/**
 * Who a name belongs to. Service hostnames under hoody's domain, IP literals, localhost, single-label names and
 * the host's own names are never a tenant's (NAME_RESERVED); a container with grants may use only names its
 * grants cover (NAME_NOT_GRANTED). Routes, certificate bundles and ACME orders all ask here.
 */
export class NameClaims {
  #hostNames: ReadonlySet<string> = new Set();
  #hostNamesAt = -Infinity;

  constructor(
    readonly domain: string,
    /** The box's own names and addresses (re-read at most every 30 s: interfaces come and go). */
    private readonly hostNames: () => ReadonlySet<string>,
    private readonly grants: GrantStore,
  ) {}

  private host(): ReadonlySet<string> {
    const now = Date.now();
    if (now - this.#hostNamesAt > 30_000) {
      this.#hostNames = this.hostNames();
      this.#hostNamesAt = now;
    }
    return this.#hostNames;
  }

  /** Why a canonical name (a hostname or a `*.` certificate name) is not a tenant's to claim, or null. */
  reservedReason(name: string): string | null {
    const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
    if (isIP(bare) || isIP(bare.replace(/%.*$/, ''))) return 'IP addresses belong to the host';
    if (!NAMEISH.test(name)) return null; // not a name at all: the caller's syntax check answers
    const wild = name.startsWith('*.');
    const base = wild ? name.slice(2) : name;
    const labels = base.split('.');
    // WHATWG URL parsers read a numeric (or 0x) last label as IPv4: `127.1`, `0x7f.1`, `2130706433`.
    if (NUMERIC_LABEL.test(labels[labels.length - 1]!)) return 'a numeric name is read as an IP address';
    if (labels.length < 2) return wild ? 'a wildcard over a whole top-level domain' : 'single-label names are local to the host';
    if (base === 'localhost' || base.endsWith('.localhost')) return 'localhost names belong to the host';
    const d = this.domain;
    if (base === d || base.endsWith(`.${d}`) || (wild && wildcardMatches(base, d)))
      return `names under ${d} are hoody's service hostnames`;
    for (const own of this.host()) {
      if (own === base || (wild && wildcardMatches(base, own))) return "the host's own name";
    }
    return null;
  }

  isReserved(name: string): boolean {
    return this.reservedReason(canonicalName(name)) !== null;
  }

  /** Canonicalizes and refuses a reserved name (403 HOODY_NAME_RESERVED); returns the canonical name. */
  assertNotReserved(input: string): string {
    const name = canonicalName(input);
    const why = this.reservedReason(name);
    if (why) throw fail('NAME_RESERVED', input, why);
    return name;
  }

  /** The container's grants (empty: no restriction). */
  granted(container: string): string[] {
    return this.grants.get(container);
  }

  /** Replaces a container's grants (inside the caller's transaction: see ProxyService.setGrants). */
  replaceGrants(container: string, patterns: readonly string[]): void {
    this.grants.replace(container, patterns);
  }

  /** Refuses a name the container's grants do not cover (403 HOODY_NAME_NOT_GRANTED); no grants, no limit. */
  assertGranted(container: string, input: string): void {
    const grants = this.grants.get(container);
    if (!grants.length) return;
    const name = canonicalName(input);
    if (!grants.some((g) => grantCovers(g, name))) throw fail('NAME_NOT_GRANTED', name, grants.join(', '));
  }
}
