import type { Database } from 'better-sqlite3';
import { domainToASCII } from 'node:url';
import { fail } from './errors.js';
import { sql } from './statements.js';

/** At most this many domain grants per container (each is a pattern, not a name). */
export const MAX_GRANTS = 100;

const GRANT_RE = /^(\*\.)?(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/;

/**
 * One domain grant: `example.org` (that name only) or `*.example.org` (every name under it, at any depth, and
 * wildcard certificates for them; not `example.org` itself). Lowercase ASCII (IDNs as punycode), no trailing dot.
 */
export function normalizeGrant(input: unknown): string {
  if (typeof input !== 'string') throw fail('DOMAIN_GRANT_INVALID', String(input));
  let g = input.trim().toLowerCase();
  if (g.endsWith('.')) g = g.slice(0, -1);
  const wild = g.startsWith('*.');
  const base = wild ? g.slice(2) : g;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the range is the point: anything past ASCII is an IDN
  const ascii = /[^\x00-\x7f]/.test(base) ? domainToASCII(base) : base;
  const out = `${wild ? '*.' : ''}${ascii}`;
  if (!ascii || !GRANT_RE.test(out)) throw fail('DOMAIN_GRANT_INVALID', input);
  return out;
}

/** A list of grants, normalized, duplicates dropped, sorted (an empty list lifts every restriction). */
export function normalizeGrants(input: unknown): string[] {
  if (!Array.isArray(input)) throw fail('DOMAIN_GRANT_INVALID', 'expected a list of domains');
  if (input.length > MAX_GRANTS) throw fail('DOMAIN_GRANT_INVALID', `${input.length} domains; at most ${MAX_GRANTS}`);
  return [...new Set(input.map(normalizeGrant))].sort();
}

/** Whether a grant covers a (canonical) hostname or certificate name, wildcard names included. */
export function grantCovers(grant: string, name: string): boolean {
  if (grant.startsWith('*.')) return name.endsWith(grant.slice(1));
  return name === grant;
}

/** The domains an operator granted each container (table `container_domains`; no rows = no restriction). */
export class GrantStore {
  constructor(readonly db: Database) {}

  get(container: string): string[] {
    const rows = sql(this.db, 'SELECT pattern FROM container_domains WHERE container = ? ORDER BY pattern').all(container) as { pattern: string }[];
    return rows.map((r) => r.pattern);
  }

  /** Replaces a container's grants (call inside the caller's transaction when other rows change with them). */
  replace(container: string, patterns: readonly string[]): void {
    const now = new Date().toISOString();
    sql(this.db, 'DELETE FROM container_domains WHERE container = ?').run(container);
    const insert = sql(this.db, 'INSERT INTO container_domains (container, pattern, created_at) VALUES (?, ?, ?)');
    for (const p of patterns) insert.run(container, p, now);
  }
}
