/**
 * Per-container gauges and the data plane's counters, read at scrape time: cgroup files for memory, one
 * `btrfs qgroup show` for every disk, the proxy's certificates from memory, HAProxy's stick table and `show stat`.
 * No engine call: a scrape costs the same whether the host holds three containers or three hundred.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ContainerContext } from '../../containers/context.js';
import type { ContainerRow } from '../../containers/store.js';
import { CgroupMemoryReader, type CgroupMemory } from '../../host/container-memory.js';
import type { BackendTimes, ContainerProxyFigures } from '../../host/haproxy/stats.js';
import type { VolumeUsage } from '../../host/storage/driver.js';

export interface ContainerMetricSources {
  ctx: ContainerContext;
  /** Certificates the proxy holds (tenants' bundles and ACME orders installed). */
  certificates(): readonly { domain: string; container: string; notAfter: string }[];
  /** HAProxy's figures per container; null when hoodyd itself is the data plane (no per-container figures). */
  proxyFigures(): Promise<ReadonlyMap<string, ContainerProxyFigures>> | null;
  /** HAProxy's average times over the tenant backend; null as above. */
  proxyTimes(): Promise<BackendTimes | null> | null;
}

interface Snapshot {
  rows: ContainerRow[];
  memory: Map<string, CgroupMemory>;
  disk: Map<string, VolumeUsage>;
  proxy: ReadonlyMap<string, ContainerProxyFigures>;
  times: BackendTimes | null;
}

export function containerMetrics(registry: Registry, src: ContainerMetricSources): void {
  const memoryReader = new CgroupMemoryReader();
  let pending: Promise<Snapshot> | null = null;
  // A scrape starts every collect() in one tick (registry.metrics()): they share one snapshot, the next takes anew.
  const snapshot = (): Promise<Snapshot> => {
    pending ??= take().finally(() => {
      pending = null;
    });
    return pending;
  };
  const take = async (): Promise<Snapshot> => {
    const rows = src.ctx.store.list().filter((r) => r.phase === 'ready');
    const memory = new Map<string, CgroupMemory>();
    for (const r of rows) {
      const m = r.engineId ? await memoryReader.read(r.engineId) : null;
      if (m) memory.set(r.name, m);
    }
    memoryReader.keepOnly(new Set(rows.flatMap((r) => (r.engineId ? [r.engineId] : []))));
    const usage = await src.ctx.storage.usageOf(rows.map((r) => r.volume)).catch(() => new Map<string, VolumeUsage>());
    const disk = new Map(rows.flatMap((r) => (usage.has(r.volume) ? [[r.name, usage.get(r.volume)!] as const] : [])));
    const names = new Set(rows.map((r) => r.name));
    const figures = (await src.proxyFigures()?.catch(() => null)) ?? new Map<string, ContainerProxyFigures>();
    const proxy = new Map([...figures].filter(([name]) => names.has(name)));
    const times = (await src.proxyTimes()?.catch(() => null)) ?? null;
    return { rows, memory, disk, proxy, times };
  };

  const registers = [registry];
  const perContainer = (name: string, help: string, pick: (s: Snapshot, row: ContainerRow) => number | null | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['container'],
      registers,
      async collect() {
        const s = await snapshot();
        this.reset();
        for (const row of s.rows) {
          const v = pick(s, row);
          if (typeof v === 'number' && Number.isFinite(v)) this.set({ container: row.name }, v);
        }
      },
    });
  perContainer('hoody_container_memory_usage_bytes', 'Memory charged to the container cgroup (anonymous and page cache)', (s, r) => s.memory.get(r.name)?.usageBytes);
  perContainer('hoody_container_memory_anon_bytes', 'Anonymous memory of the container cgroup', (s, r) => s.memory.get(r.name)?.anonBytes);
  perContainer('hoody_container_memory_limit_bytes', 'Memory limit of the container', (_s, r) => r.memoryBytes);
  perContainer('hoody_container_disk_exclusive_bytes', 'Bytes only this container volume holds (BTRFS qgroup exclusive)', (s, r) => s.disk.get(r.name)?.exclusiveBytes);
  perContainer('hoody_container_disk_referenced_bytes', 'Bytes the container volume references (BTRFS qgroup referenced)', (s, r) => s.disk.get(r.name)?.referencedBytes);
  perContainer('hoody_container_disk_limit_bytes', 'Disk limit of the container (absent: none)', (_s, r) => r.diskBytes);
  // Per backend, not per container: HAProxy keeps times per server, and one static server keeps upstream keep-alive.
  const backendTime = (name: string, help: string, pick: (t: BackendTimes) => number) =>
    new Gauge({
      name,
      help,
      registers,
      async collect() {
        const t = (await snapshot()).times;
        this.reset();
        if (t) this.set(pick(t) / 1000);
      },
    });
  backendTime('hoody_proxy_response_time_average_seconds', 'Average time to the response head over the last 1024 proxied requests, all containers (HAProxy rtime)', (t) => t.responseTimeAvgMs);
  backendTime('hoody_proxy_total_time_average_seconds', 'Average total time over the last 1024 proxied requests, all containers (HAProxy ttime)', (t) => t.totalTimeAvgMs);

  new Gauge({
    name: 'hoody_tls_certificate_expiry_timestamp_seconds',
    help: 'When a certificate the proxy serves for a domain expires (Unix time)',
    labelNames: ['container', 'domain'],
    registers,
    collect() {
      this.reset();
      for (const c of src.certificates()) {
        const at = Date.parse(c.notAfter);
        if (Number.isFinite(at)) this.set({ container: c.container, domain: c.domain }, at / 1000);
      }
    },
  });

  // HAProxy's counters are set whole at each scrape (they reset when HAProxy restarts, as counters may).
  const proxyCounter = (name: string, help: string, labelNames: string[], each: (f: ContainerProxyFigures, set: (labels: Record<string, string>, v: number) => void) => void) =>
    new Counter({
      name,
      help,
      labelNames: ['container', ...labelNames],
      registers,
      async collect() {
        const s = await snapshot();
        this.reset();
        for (const [container, f] of s.proxy) each(f, (labels, v) => this.inc({ container, ...labels }, v));
      },
    });
  proxyCounter('hoody_proxy_requests_total', 'Requests the data plane proxied to the container (HAProxy http_req_cnt)', [], (f, set) => set({}, f.requests));
  proxyCounter('hoody_proxy_error_responses_total', 'Error responses from the container: class 4xx, or 5xx other than 501 and 505', ['class'], (f, set) => {
    set({ class: '4xx' }, f.clientErrors);
    set({ class: '5xx' }, f.serverErrors);
  });
  proxyCounter('hoody_proxy_request_bytes_total', 'Bytes from clients to the container', [], (f, set) => set({}, f.bytesIn));
  proxyCounter('hoody_proxy_response_bytes_total', 'Bytes from the container to clients', [], (f, set) => set({}, f.bytesOut));
}
