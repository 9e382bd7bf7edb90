import type { RouteOptions } from 'fastify';
import { fail } from '../errors.js';
import type { Http01Challenges } from './challenges.js';

export const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

export interface ChallengeAnswer {
  status: 200 | 404;
  contentType: 'text/plain' | 'application/json';
  body: string;
}

/**
 * The answer to a request on the HTTP listener if it is an http-01 probe, else null (not ours: route it on).
 * `host` is the Host header: a token is answered only for the hostnames it was published for.
 */
export function answerAcmeChallenge(
  challenges: Http01Challenges,
  method: string,
  url: string,
  host: string | undefined,
): ChallengeAnswer | null {
  if ((method !== 'GET' && method !== 'HEAD') || !url.startsWith(ACME_CHALLENGE_PREFIX)) return null;
  const token = url.slice(ACME_CHALLENGE_PREFIX.length).split('?')[0]!;
  const keyAuth = host ? challenges.get(token, host) : null;
  if (keyAuth !== null) return { status: 200, contentType: 'text/plain', body: keyAuth };
  const err = fail('ACME_CHALLENGE_UNKNOWN', token.slice(0, 256));
  return { status: 404, contentType: 'application/json', body: JSON.stringify({ error: { code: err.code, message: err.message } }) };
}

/**
 * `GET /.well-known/acme-challenge/:token` for a fastify app (register it on the HTTP listener before the
 * host routing): the key authorization as text/plain, or 404 `HOODY_ACME_CHALLENGE_UNKNOWN`.
 */
export function acmeChallengeRoute(challenges: Http01Challenges): RouteOptions {
  return {
    method: 'GET',
    url: `${ACME_CHALLENGE_PREFIX}:token`,
    handler: async (req, reply) => {
      const answer = answerAcmeChallenge(challenges, 'GET', req.url, req.headers.host)!;
      return reply.code(answer.status).type(answer.contentType).send(answer.body);
    },
  };
}
