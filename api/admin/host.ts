import type { FastifyPluginAsync } from 'fastify';
import type { Registry } from 'prom-client';
import type { StatsReport } from '../../containers/stats.js';
import type { HostInfo } from '../../host/info.js';

export interface Listeners {
  http: number | null;
  https: number | null;
  domain: string;
  /** Who holds the public ports: HAProxy (with its pid; null while it is being restarted) or hoodyd itself. */
  data_plane: { kind: 'haproxy' | 'node'; pid: number | null };
}

export interface HostRouteDeps {
  hostInfo(): Promise<HostInfo>;
  listeners(): Listeners | Promise<Listeners>;
  stats(): Promise<StatsReport>;
  metrics: Registry;
  instance: string;
  version: string;
}

/** Host-wide admin routes: host info, live stats, Prometheus metrics. */
export const hostRoutes: FastifyPluginAsync<{ deps: HostRouteDeps }> = async (app, { deps }) => {
  app.get('/v1/host', { schema: { tags: ['host'], description: 'pool, engine, KSM, host memory and the listeners' } }, async () => ({
    version: deps.version,
    instance: deps.instance,
    listeners: await deps.listeners(),
    ...(await deps.hostInfo()),
  }));

  app.get('/v1/stats', { schema: { tags: ['host'], description: 'per-container memory (RSS/PSS), KSM sharing, disk' } }, async () =>
    deps.stats(),
  );

  app.get('/metrics', { schema: { tags: ['host'], description: 'Prometheus text exposition' } }, async (_req, reply) =>
    reply.type(deps.metrics.contentType).send(await deps.metrics.metrics()),
  );
};
