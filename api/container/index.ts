import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { ContainerContext } from '../../containers/context.js';
import { ErrorBody } from '../openapi.js';
import type { FailureLimiter } from '../public/limiter.js';
import { resolveCaller } from '../public/resolve.js';
import { containerDocumentOptions, documentRoute } from './document.js';
import { tokenRoutes } from './tokens.js';

/** A namespace's routes (cron, exec, files, logs…), registered inside the container plugin. */
export type NamespaceRoutes = (app: FastifyInstance) => Promise<void>;

export interface ContainerApiOptions {
  ctx: ContainerContext;
  domain: string;
  namespaces: NamespaceRoutes[];
  limiter?: FailureLimiter;
}

/**
 * One container's API as one encapsulated plugin: the caller is resolved before any route runs, then
 * every namespace's routes see `req.hoody`. Registered at `/` (service hosts) and at `/c/:ctr`.
 * Its OpenAPI document is generated from the routes' schemas (document.ts), the same for both mounts.
 */
export const containerApi: FastifyPluginAsync<ContainerApiOptions> = async (app, opts) => {
  app.decorateRequest('hoody', null as never);
  app.addSchema(ErrorBody);
  await app.register(swagger, containerDocumentOptions());
  const resolve = resolveCaller(opts.ctx, opts.domain, opts.limiter);
  // The document holds nothing of any container (document.ts): it needs no caller, so no token and no existence check.
  app.addHook('onRequest', async (req, reply) => (req.routeOptions.config.publicDocument ? undefined : resolve(req, reply)));
  await app.register(tokenRoutes, { store: opts.ctx.store });
  for (const ns of opts.namespaces) await ns(app);
  documentRoute(app, opts.domain);
};
