import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { ContainerContext } from '../../containers/context.js';
import type { FailureLimiter } from '../public/limiter.js';
import { resolveCaller } from '../public/resolve.js';
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
 */
export const containerApi: FastifyPluginAsync<ContainerApiOptions> = async (app, opts) => {
  app.decorateRequest('hoody', null as never);
  app.addHook('onRequest', resolveCaller(opts.ctx, opts.domain, opts.limiter));
  await app.register(tokenRoutes, { store: opts.ctx.store });
  for (const ns of opts.namespaces) await ns(app);
};
