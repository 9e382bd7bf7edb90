import { requestClient } from './forward.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ContainerContext } from '../../containers/context.js';
import { fail } from '../../containers/errors.js';
import type { TokenRow } from '../../containers/store.js';
import { parseHost } from '../../containers/tls/sni.js';
import { hashToken } from '../../containers/tokens.js';
import type { CallerContext } from '../container/context.js';
import type { FailureLimiter } from './limiter.js';

/** The presented token: `?token=` (the URL token) or `Authorization: Bearer`. */
export function presentedToken(req: FastifyRequest): string | null {
  const q = (req.query as Record<string, unknown> | undefined)?.token;
  if (typeof q === 'string' && q) return q;
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim() || null;
  return null;
}

function lookupToken(ctx: ContainerContext, token: string, req: FastifyRequest, limiter?: FailureLimiter): TokenRow {
  // A script's guesses count against its container, not against the loopback address every inject comes from.
  const client = req.hoodyCall ? `exec:${req.hoodyCall.container}` : (requestClient(req.raw) ?? 'unknown');
  if (limiter?.blocked(client)) throw fail('RATE_LIMITED', 'too many bad tokens from this address; try again later');
  // The hash is the lookup key: timing reveals nothing about the token itself.
  const row = ctx.store.tokenByHash(hashToken(token));
  if (!row || row.revokedAt) {
    if (limiter?.fail(client)) req.log.warn({ client, limit: limiter.limit, windowMs: limiter.windowMs }, 'token brute force? address blocked');
    throw fail('UNAUTHORIZED');
  }
  return row;
}

/**
 * Resolves which container a request is for (service host, `/c/<ctr>/` path, or the token alone) and who
 * is calling. A bad token is 401; a valid token of another container is 404 (existence is not revealed).
 */
export function resolveCaller(ctx: ContainerContext, domain: string, limiter?: FailureLimiter) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const params = req.params as { ctr?: string };
    const target = parseHost(req.headers.host, domain);
    const call = req.hoodyCall;
    const token = call?.tokenId ? callerToken(ctx, call.tokenId) : presentedOrNull(ctx, req, limiter);
    let name: string | undefined;
    let service: CallerContext['service'] = null;
    if (params.ctr !== undefined) {
      name = params.ctr;
      if (target.kind === 'container-service' && target.container !== name) throw fail('NOT_FOUND', req.url.split('?')[0]!);
    } else if (target.kind === 'container-service') {
      name = target.container;
      service = target.service;
    } else if (target.kind === 'token-service') {
      if (!token) throw fail('UNAUTHORIZED');
      name = token.container;
      service = target.service;
    } else {
      throw fail('NOT_FOUND', `${req.method} ${req.url.split('?')[0]}`);
    }
    // An in-process call reaches its own container and nothing else, whatever its path or token says.
    if (call && call.container !== name) throw fail('CONTAINER_UNKNOWN', name);
    const container = ctx.store.get(name);
    if (container?.phase !== 'ready') throw fail('CONTAINER_UNKNOWN', name);
    if (token && token.container !== container.name) throw fail('CONTAINER_UNKNOWN', name);
    req.hoody = { container, token, service, depth: call?.depth ?? 0 };
  };
}

/** The token an in-process call was bound to by the daemon; revoked since (rotation): 401 like any stale token. */
function callerToken(ctx: ContainerContext, id: string): TokenRow {
  const row = ctx.store.tokenById(id);
  if (!row || row.revokedAt) throw fail('UNAUTHORIZED');
  return row;
}

function presentedOrNull(ctx: ContainerContext, req: FastifyRequest, limiter?: FailureLimiter): TokenRow | null {
  const raw = presentedToken(req);
  return raw ? lookupToken(ctx, raw, req, limiter) : null;
}
