import { monitorEventLoopDelay } from 'node:perf_hooks';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { listContainers } from '../../containers/lifecycle.js';
import type { KsmController } from '../../host/ksm.js';
import { type ActivityMetrics, activityMetrics } from './activity.js';
import { type ContainerMetricSources, containerMetrics } from './containers.js';

export interface DaemonMetrics {
  registry: Registry;
  /** The observation points handed to the namespaces, and forget() for a deleted container. */
  activity: ActivityMetrics;
}

/**
 * prom-client's default metrics, less the three gauges named `_total` (promtool: only counters end so); each is
 * the sum over the labelled gauge of the same name without `_total`.
 */
function defaultMetrics(registry: Registry, prefix: string): void {
  collectDefaultMetrics({ register: registry, prefix });
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(prefix + name);
}

/** The daemon's Prometheus registry (one per daemon, never the global default) and its observation points. */
export function buildMetrics(src: ContainerMetricSources, ksm: KsmController): DaemonMetrics {
  const { ctx } = src;
  const registry = new Registry();
  defaultMetrics(registry, 'hoody_daemon_');
  // The one figure an operator (and the soak benchmark) watches: event-loop delay p99 since the last scrape.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  new Gauge({
    name: 'hoody_daemon_eventloop_lag_p99_seconds',
    help: 'Event-loop delay p99 since the previous scrape, in seconds',
    registers: [registry],
    collect() {
      this.set(loopDelay.count ? loopDelay.percentile(99) / 1e9 : 0);
      loopDelay.reset();
    },
  });
  new Gauge({
    name: 'hoody_containers',
    help: 'Containers by state',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      this.reset();
      const views = await listContainers(ctx).catch(() => []);
      const counts = new Map<string, number>();
      for (const v of views) counts.set(v.state, (counts.get(v.state) ?? 0) + 1);
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
  const ksmGauge = (name: string, help: string, pick: (s: Awaited<ReturnType<KsmController['stats']>>) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        this.set(pick(await ksm.stats()));
      },
    });
  ksmGauge('hoody_ksm_pages_sharing', 'KSM pages_sharing (pages saved)', (s) => s.pagesSharing);
  ksmGauge('hoody_ksm_pages_shared', 'KSM pages_shared', (s) => s.pagesShared);
  ksmGauge('hoody_ksm_general_profit_bytes', 'KSM general_profit', (s) => s.generalProfitBytes);
  new Gauge({
    name: 'hoody_pool_free_bytes',
    help: 'Free bytes in the storage pool',
    registers: [registry],
    async collect() {
      const u = await ctx.storage.poolUsage(ctx.pool.root).catch(() => null);
      if (u) this.set(u.freeBytes);
    },
  });
  containerMetrics(registry, src);
  const activity = activityMetrics(registry, (name) => ctx.store.get(name)?.phase === 'ready');
  return { registry, activity };
}
