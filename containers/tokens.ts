import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { fail } from './errors.js';

export const SCOPES = ['cron', 'exec', 'proxy', 'files', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];
export const OWNER_SCOPES: readonly Scope[] = SCOPES;

export interface IssuedToken {
  id: string;
  token: string;
  hash: string;
}

/** A fresh random token; only its hash is ever stored. */
export function newToken(): IssuedToken {
  const token = `hdy_${randomBytes(32).toString('base64url')}`;
  return { id: randomUUID(), token, hash: hashToken(token) };
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** Constant-time comparison of a presented token against a stored hash. */
export function tokenMatches(token: string, storedHash: string): boolean {
  const a = Buffer.from(hashToken(token), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

export function parseScopes(input: readonly string[] | string | undefined): Scope[] {
  if (input === undefined) return [...OWNER_SCOPES];
  const list = (typeof input === 'string' ? input.split(',') : input).map((s) => s.trim());
  // An empty name or an empty list would make a token that can do nothing, silently: refuse it.
  if (!list.length) throw fail('SCOPE_INVALID', '(an empty list)');
  for (const s of list) if (!(SCOPES as readonly string[]).includes(s)) throw fail('SCOPE_INVALID', JSON.stringify(s));
  return [...new Set(list)] as Scope[];
}
