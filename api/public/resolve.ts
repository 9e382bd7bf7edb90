import { timingSafeEqual } from 'node:crypto';
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
  const client = req.socket.remoteAddress ?? 'unknown';
  if (limiter?.blocked(client)) throw fail('RATE_LIMITED', 'too many bad tokens from this address; try again later');
  // The hash is the lookup key: timing reveals nothing about the token itself.
  const row = ctx.store.tokenByHash(hashToken(token));
  if (!row || row.revokedAt) {
    if (limiter?.fail(client)) req.log.warn({ client, limit: limiter.limit, windowMs: limiter.windowMs }, 'token brute force? address blocked');
    throw fail('UNAUTHORIZED');
  }
  return row;
}

/** In-process calls (a script's relative fetch) carry the caller's token id, vouched for by a per-daemon secret. */
export interface InternalAuthority {
  secret: string;
}

export const INTERNAL_SECRET_HEADER = 'x-hoody-internal';
export const INTERNAL_TOKEN_HEADER = 'x-hoody-token-id';

function internalToken(ctx: ContainerContext, req: FastifyRequest, internal: InternalAuthority | undefined): TokenRow | null | undefined {
  const presented = req.headers[INTERNAL_SECRET_HEADER];
  if (presented === undefined) return undefined;
  if (!internal || typeof presented !== 'string' || !timingSafeEqualString(presented, internal.secret)) throw fail('UNAUTHORIZED');
  const id = req.headers[INTERNAL_TOKEN_HEADER];
  if (typeof id !== 'string' || !id) return null;
  const row = ctx.store.tokenById(id);
  if (!row || row.revokedAt) throw fail('UNAUTHORIZED');
  return row;
}

function timingSafeEqualString(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Resolves which container a request is for (service host, `/c/<ctr>/` path, or the token alone) and who
 * is calling. A bad token is 401; a valid token of another container is 404 (existence is not revealed).
 */
export function resolveCaller(ctx: ContainerContext, domain: string, internal?: InternalAuthority, limiter?: FailureLimiter) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const params = req.params as { ctr?: string };
    const target = parseHost(req.headers.host, domain);
    const vouched = internalToken(ctx, req, internal);
    const raw = vouched === undefined ? presentedToken(req) : null;
    const token = vouched !== undefined ? vouched : raw ? lookupToken(ctx, raw, req, limiter) : null;
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
    const container = ctx.store.get(name);
    if (!container || container.phase !== 'ready') throw fail('CONTAINER_UNKNOWN', name);
    if (token && token.container !== container.name) throw fail('CONTAINER_UNKNOWN', name);
    req.hoody = { container, token, service };
  };
}
