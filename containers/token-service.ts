import { fail } from './errors.js';
import { checkUser } from './names.js';
import type { ContainerStore, TokenRow } from './store.js';
import { newToken, OWNER_SCOPES, type Scope } from './tokens.js';

// The owner's tokens act as the container's root user; `me` in a path always means the token's own user.
export const OWNER_USER = 'root';

/** The container's first token: user `me`, every scope. Returned once; only its hash is kept. */
export function issueOwnerToken(store: ContainerStore, container: string): string {
  const t = newToken();
  store.insertToken({ id: t.id, container, user: OWNER_USER, scopes: [...OWNER_SCOPES], hash: t.hash, createdAt: new Date().toISOString() });
  return t.token;
}

export interface TokenGrant {
  token: string;
  id: string;
  container: string;
  user: string;
  scopes: Scope[];
}

/** Issues an extra token (another user, narrower scopes); existing ones stay valid. */
export function issueToken(store: ContainerStore, container: string, user: string, scopes: Scope[]): TokenGrant {
  if (!store.get(container)) throw fail('CONTAINER_UNKNOWN', container);
  checkUser(user);
  const t = newToken();
  store.insertToken({ id: t.id, container, user, scopes, hash: t.hash, createdAt: new Date().toISOString() });
  return { token: t.token, id: t.id, container, user, scopes };
}

/**
 * Rotation: every active token of (container, user) is revoked and one new token with the union of their
 * scopes issued, in one transaction, so the old ones fail everywhere at once.
 */
export function rotateTokens(store: ContainerStore, container: string, user: string, scopes?: Scope[]): TokenGrant {
  if (!store.get(container)) throw fail('CONTAINER_UNKNOWN', container);
  checkUser(user);
  const old = store.activeTokens(container, user);
  const nextScopes = scopes ?? [...new Set(old.flatMap((o) => o.scopes))];
  const granted: Scope[] = nextScopes.length ? nextScopes : user === OWNER_USER ? [...OWNER_SCOPES] : [];
  if (!granted.length) throw fail('BAD_REQUEST', `user ${user} has no token on ${container} to rotate`);
  const t = newToken();
  const swapped = store.replaceTokens(
    old.map((o) => o.id),
    { id: t.id, container, user, scopes: granted, hash: t.hash, createdAt: new Date().toISOString() },
  );
  // Read and swap run in one synchronous step here, so only another process could have changed the set.
  if (!swapped) throw fail('CONTAINER_BUSY', container);
  return { token: t.token, id: t.id, container, user, scopes: granted };
}

/**
 * Rotates exactly one token (the caller's own, from the per-container API), compare-and-swap: of concurrent
 * rotations of one token only the first succeeds; the others presented a token no longer valid (401).
 */
export function rotateOne(store: ContainerStore, current: TokenRow): TokenGrant {
  const t = newToken();
  const swapped = store.replaceTokens([current.id], {
    id: t.id,
    container: current.container,
    user: current.user,
    scopes: current.scopes,
    hash: t.hash,
    createdAt: new Date().toISOString(),
  });
  if (!swapped) throw fail('UNAUTHORIZED');
  return { token: t.token, id: t.id, container: current.container, user: current.user, scopes: current.scopes };
}
