import { type TSchema, Type } from '@sinclair/typebox';
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

/** Shared containerd shims: the size asked for, whether the engine can group, groups in use. */
export interface ShimsView {
  configuredSize: number;
  grouping: boolean;
  groups: number;
}

export interface HostRouteDeps {
  hostInfo(): Promise<HostInfo & { shims: ShimsView }>;
  listeners(): Listeners | Promise<Listeners>;
  stats(): Promise<StatsReport>;
  metrics: Registry;
  instance: string;
  version: string;
}

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
// Named fields are the contract clients rely on; the rest (engine, KSM, metrics) passes through as the host reports it.
const Open = { additionalProperties: true } as const;
const ListenersView = Type.Object({
  http: Nullable(Type.Integer()),
  https: Nullable(Type.Integer()),
  domain: Type.String(),
  data_plane: Type.Object({ kind: Type.Union([Type.Literal('haproxy'), Type.Literal('node')]), pid: Nullable(Type.Integer()) }),
});
const HostView = Type.Object(
  {
    version: Type.String(),
    instance: Type.String(),
    listeners: ListenersView,
    pool: Type.Object({ path: Type.String() }, Open),
    engine: Type.Object({ available: Type.Boolean() }, Open),
    ksm: Type.Object({}, Open),
    memoryMerge: Type.Boolean(),
    shims: Type.Object({ configuredSize: Type.Integer(), grouping: Type.Boolean(), groups: Type.Integer() }),
    host: Type.Object({}, Open),
  },
  Open,
);
const StatsView = Type.Object(
  { containers: Type.Array(Type.Object({ name: Type.String() }, Open)), totals: Type.Object({}, Open), ksm: Type.Object({}, Open) },
  Open,
);
const MetricsText = { content: { 'text/plain': { schema: Type.String({ description: 'Prometheus text exposition format 0.0.4' }) } } };

/** Host-wide admin routes: host info, live stats, Prometheus metrics. */
export const hostRoutes: FastifyPluginAsync<{ deps: HostRouteDeps }> = async (app, { deps }) => {
  const tags = ['host'];
  app.get('/v1/host', { schema: { tags, description: 'pool, engine, KSM, host memory and the listeners', response: { 200: HostView } } }, async () => ({
    version: deps.version,
    instance: deps.instance,
    listeners: await deps.listeners(),
    ...(await deps.hostInfo()),
  }));

  app.get('/v1/stats', { schema: { tags, description: 'per-container memory (RSS/PSS), KSM sharing, disk', response: { 200: StatsView } } }, async () =>
    deps.stats(),
  );

  app.get('/metrics', { schema: { tags, description: 'Prometheus text exposition', response: { 200: MetricsText } } }, async (_req, reply) =>
    reply.type(deps.metrics.contentType).send(await deps.metrics.metrics()),
  );
};
