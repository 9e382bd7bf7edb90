import swagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ContainerContext } from '../../containers/context.js';
import { answerClientError, frameworkErrors, installErrorHandling } from '../errors.js';
import { schemaController } from '../validation.js';
import type { SnapshotScheduler } from '../../containers/snapshot-schedule.js';
import { listContainers } from '../../containers/lifecycle.js';
import { containerRoutes } from './containers.js';
import { snapshotRoutes } from './snapshots.js';
import { type DomainGrants, domainRoutes } from './domains.js';
import { adminLogRoutes } from './logs.js';
import type { LogSource } from '../../containers/logs.js';
import { type HostRouteDeps, hostRoutes } from './host.js';
import { documentOptions, ErrorBody } from '../openapi.js';
import { type FleetApi, fleetRoutes } from './fleet.js';

export interface AdminApiDeps extends HostRouteDeps {
  ctx: ContainerContext;
  log: Logger;
  logSources: LogSource[];
  /** Operator domain grants (issue 10.4); without them the create body's `domains` is refused. */
  grants?: DomainGrants;
  /** Snapshots on a schedule; without it the schedule routes answer SNAPSHOT_SCHEDULE_INVALID. */
  snapshots?: SnapshotScheduler;
  /** The fleet (issue 12); without it the /v1/fleet routes are absent. */
  fleet?: FleetApi;
}

/** The admin API (served on the unix socket): containers, host, metrics and its own OpenAPI document. */
export async function buildAdminApi(deps: AdminApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.log.child({ api: 'admin' }) as FastifyBaseLogger,
    bodyLimit: 1024 * 1024,
    disableRequestLogging: true,
    frameworkErrors,
    clientErrorHandler: answerClientError,
    schemaController: schemaController({ removeAdditional: false, allowUnionTypes: true }),
  });
  installErrorHandling(app);
  app.addSchema(ErrorBody);
  await app.register(
    swagger,
    documentOptions({
      openapi: {
        info: {
          title: 'hoody admin API',
          version: deps.version,
          description: "Served on the daemon's unix socket (HOODY_ADMIN_SOCKET); the socket's file permissions are its only access control.",
        },
        // A unix socket has no URL: clients connect to it and send any Host (curl --unix-socket … http://hoody/v1/…).
        servers: [{ url: 'http://hoody', description: 'the admin unix socket; the host name is not looked at' }],
        // No credentials: whoever may open the socket is the operator.
        security: [],
        tags: [
          { name: 'containers', description: 'containers: lifecycle, snapshots, tokens, domains, logs' },
          { name: 'host', description: 'the host: pool, engine, KSM, listeners, stats, metrics' },
          { name: 'fleet', description: 'the fleet: membership of this host and the directory of names and tokens' },
        ],
      },
    }),
  );
  app.addHook('onResponse', async (req, reply) => {
    req.log.info({ method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'admin request');
  });
  await app.register(hostRoutes, { deps });
  await app.register(containerRoutes, { ctx: deps.ctx, grants: deps.grants, placer: deps.fleet });
  await app.register(snapshotRoutes, { ctx: deps.ctx, scheduler: deps.snapshots });
  if (deps.grants) await app.register(domainRoutes, { ctx: deps.ctx, grants: deps.grants });
  await app.register(adminLogRoutes, { sources: deps.logSources, store: deps.ctx.store });
  if (deps.fleet) await app.register(fleetRoutes, { fleet: deps.fleet, local: { containers: () => listContainers(deps.ctx), stats: () => deps.stats() } });
  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
