/** Counters and histograms the namespaces feed through their observer interfaces (containers/observe.ts). */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { AcmeObserver, CronObserver, ExecObserver } from '../../containers/observe.js';

export interface ActivityMetrics {
  cron: CronObserver;
  exec: ExecObserver;
  acme: AcmeObserver;
  /** A deleted container's series go with it. */
  forget(container: string): Promise<void>;
}

type ContainerMetric = Counter<string> | Histogram<string>;

/** Removes every series of one container (a histogram's `le` is not part of a series' identity). */
async function dropSeries(metric: ContainerMetric, container: string): Promise<void> {
  const seen = new Set<string>();
  for (const v of (await metric.get()).values) {
    if (v.labels.container !== container) continue;
    const { le: _le, ...labels } = v.labels;
    const key = JSON.stringify(labels);
    if (seen.has(key)) continue;
    seen.add(key);
    metric.remove(labels);
  }
}

/** `known`: events of a container being deleted (or gone) are dropped, so its series do not come back. */
export function activityMetrics(registry: Registry, known: (container: string) => boolean): ActivityMetrics {
  const registers = [registry];
  const cronRuns = new Counter({
    name: 'hoody_cron_runs_total',
    help: 'Cron runs that reached a final status, by status (ok, failed, timeout, late, skipped, expired) and trigger',
    labelNames: ['container', 'status', 'trigger'],
    registers,
  });
  const cronLateness = new Histogram({
    name: 'hoody_cron_run_lateness_seconds',
    help: 'How long after its scheduled slot a scheduled cron run started',
    labelNames: ['container'],
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
    registers,
  });
  const execDuration = new Histogram({
    name: 'hoody_exec_duration_seconds',
    help: 'Wall time of exec script runs (to a result or an error), by runtime',
    labelNames: ['container', 'runtime'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers,
  });
  const execErrors = new Counter({
    name: 'hoody_exec_errors_total',
    help: 'Exec requests that ended in an error, by the error catalogue code',
    labelNames: ['container', 'code'],
    registers,
  });
  const acmeOrders = new Counter({
    name: 'hoody_acme_orders_total',
    help: 'ACME orders by outcome (issued, failed, refused before ordering, validated only) and directory',
    labelNames: ['container', 'outcome', 'directory'],
    registers,
  });
  const all: ContainerMetric[] = [cronRuns, cronLateness, execDuration, execErrors, acmeOrders];
  return {
    cron: {
      runEnded: (container, status, trigger) => known(container) && cronRuns.inc({ container, status, trigger }),
      runStarted: (container, seconds) => known(container) && cronLateness.observe({ container }, seconds),
    },
    exec: {
      ran: (container, runtime, seconds) => known(container) && execDuration.observe({ container, runtime }, seconds),
      // Codes come from the catalogue; anything else would be free text, so it is folded into one.
      failed: (container, code) => known(container) && execErrors.inc({ container, code: /^HOODY_[A-Z0-9_]{1,60}$/.test(code) ? code : 'HOODY_INTERNAL' }),
    },
    acme: {
      orderEnded: (container, outcome, directory) => known(container) && acmeOrders.inc({ container, outcome, directory }),
    },
    async forget(container) {
      for (const m of all) await dropSeries(m, container);
    },
  };
}
