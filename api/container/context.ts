import type { FastifyRequest } from 'fastify';
import { fail } from '../../containers/errors.js';
import type { ContainerRow, TokenRow } from '../../containers/store.js';
import type { Scope } from '../../containers/tokens.js';
import type { InProcessCall } from '../public/authority.js';

/** Who is calling which container: resolved once per request by the router, before any route runs. */
export interface CallerContext {
  container: ContainerRow;
  /** null when no token was presented (only routes that allow that, e.g. `@auth none` scripts, may go on). */
  token: TokenRow | null;
  /** The service host the request came in on (cron.<ctr>…, exec.<ctr>…, api.<ctr>…), or null for /c/<ctr>/. */
  service: 'cron' | 'exec' | 'api' | null;
  /** Scripts up the call chain: from the daemon's record of an in-process call, 0 for any outside request. */
  depth: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    hoody: CallerContext;
    /** Set by the public app's first hook: the daemon-side record of an in-process call, null from outside. */
    hoodyCall: InProcessCall | null;
  }
}

/** The caller's token, with the scope this route needs; 401 without a token, 403 without the scope. */
export function authorize(req: FastifyRequest, scope: Scope): TokenRow {
  const token = req.hoody.token;
  if (!token) throw fail('UNAUTHORIZED');
  if (!token.scopes.includes(scope) && !token.scopes.includes('admin'))
    throw fail('FORBIDDEN', `this token lacks the ${scope} scope`);
  return token;
}

/** `/users/:user/…`: your own user always; another user only with an admin-scoped token. */
export function authorizeUser(req: FastifyRequest, scope: Scope, user: string): TokenRow {
  const token = authorize(req, scope);
  const wanted = user === 'me' ? token.user : user;
  if (wanted !== token.user && !token.scopes.includes('admin'))
    throw fail('FORBIDDEN', `a token of user ${token.user} cannot reach user ${user}'s entries`);
  return token;
}

/** The effective user name of `/users/:user/…` (`me` means the token's own user). */
export function effectiveUser(token: TokenRow, user: string): string {
  return user === 'me' ? token.user : user;
}
