import type { FastifyDynamicSwaggerOptions } from '@fastify/swagger';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { fail } from '../../containers/errors.js';
import { parseHost } from '../../containers/tls/sni.js';
import { documentOptions } from '../openapi.js';

/** Where every container's API host serves its OpenAPI document. */
export const DOCUMENT_PATH = '/api/v1/openapi.json';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route answers before (and without) the caller's resolution: the OpenAPI document only. */
    publicDocument?: boolean;
  }
}

/**
 * The per-container API's document options. The document is the same bytes for every container and every host:
 * no container name, domain, port or daemon version in it (info.version is the API's), so serving it without a
 * token tells a stranger nothing about this host or who lives on it, and a client generator needs no secret.
 */
export function containerDocumentOptions(): FastifyDynamicSwaggerOptions {
  return documentOptions({
    stripPrefix: /^\/c\/:ctr(?=\/|$)/,
    openapi: {
      info: {
        title: 'hoody per-container API',
        version: 'v1',
        description:
          "One container's cron, exec, proxy, files, tokens and logs. Served on the container's service hosts " +
          '(api.<container>.<domain>, cron.…, exec.…), on any host under /c/<container>/, and on api.<domain> where the ' +
          'token alone says which container. A token of another container is answered 404, as if the container did not exist.',
      },
      servers: [
        { url: '/', description: "a service host of the container (api.<container>.<domain>), or api.<domain> with the container's token" },
        {
          url: '/c/{container}',
          description: 'any host, by path prefix',
          variables: { container: { default: 'demo', description: "the container's name" } },
        },
      ],
      components: {
        securitySchemes: {
          urlToken: { type: 'apiKey', in: 'query', name: 'token', description: 'the container token as a URL token (?token=…)' },
          bearer: { type: 'http', scheme: 'bearer', description: 'the container token as Authorization: Bearer …' },
        },
      },
      // Either form of the token; its scopes (cron, exec, proxy, files, admin) are named by each operation's tag.
      security: [{ urlToken: [] }, { bearer: [] }],
      tags: [
        { name: 'cron', description: 'scope cron: the container crontab and its log; /users/me is the token user' },
        { name: 'exec', description: 'scope exec: scripts (write API) and running them' },
        { name: 'proxy', description: 'scope proxy: routed hostnames and TLS certificates' },
        { name: 'files', description: 'scope files: the files area (/files inside the container)' },
        { name: 'tokens', description: 'any token: rotate the calling token' },
        { name: 'logs', description: 'the cron log (scope cron) or the exec log (scope exec)' },
      ],
    },
  });
}

/** The document is served on hoody's service hosts and `/c/<ctr>/` only, like every other route of this API. */
function onServiceHost(req: FastifyRequest, domain: string): boolean {
  return (req.params as { ctr?: string }).ctr !== undefined || parseHost(req.headers.host, domain).kind !== 'other';
}

/** `GET /api/v1/openapi.json`, generated once from this plugin's routes (call after they are all registered). */
export function documentRoute(app: FastifyInstance, domain: string): void {
  let body: string | undefined;
  app.get(DOCUMENT_PATH, { config: { publicDocument: true }, schema: { hide: true } }, async (req, reply) => {
    if (!onServiceHost(req, domain)) throw fail('NOT_FOUND', `${req.method} ${req.url.split('?')[0]}`);
    body ??= JSON.stringify(app.swagger());
    return reply.type('application/json; charset=utf-8').send(body);
  });
}
