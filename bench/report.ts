import { table } from '../daemon/cli/format.js';
import { findMode } from './modes.js';
import { COLORS, esc, niceStep } from './ns-chart.js';
import { fmt, mdTable } from './results.js';
import { percentile, round, slope } from './stats.js';
import type { ActiveSummary, ByMode, DensityResult, KernelShare, ModeRun, Point, WorkloadSummary } from './types.js';
import type { Workload } from './workloads.js';

const REQUIRED_KEYS = ['docker_baseline', 'hoody_ksm_off', 'hoody_ksm_on'] as const;

function keyOf(mode: string): string {
  return findMode(mode)?.key ?? mode.replace(/-/g, '_');
}

function slopeOf(points: readonly Point[], y: (p: Point) => number | null, decimals = 3): number | null {
  const xy = points.map((p) => [p.count, y(p)] as const).filter((v): v is readonly [number, number] => v[1] !== null);
  return round(slope(xy), decimals);
}

/** The per-workload figures: least-squares slopes over the counts, per mode, plus the hoody-only ones. */
export function summarize(w: Workload, modes: readonly string[], points: readonly Point[], runs: readonly ModeRun[]): WorkloadSummary {
  const of = (mode: string) => points.filter((p) => p.workload === w.name && p.mode === mode);
  const byMode = (y: (p: Point) => number | null, decimals = 3): ByMode => {
    const out: ByMode = {};
    for (const k of REQUIRED_KEYS) out[k] = null;
    for (const m of modes) out[keyOf(m)] = slopeOf(of(m), y, decimals);
    return out;
  };
  // Provisioning and the daemon's own figures come from idle modes (an active container gets more set up).
  const hoodyModes = modes.filter((m) => findMode(m)?.engine === 'hoody' && !findMode(m)?.active);
  // The goals are judged on hoody's default: shared shims with KSM on, when the run has it.
  const main = modes.includes('hoody-grouped') ? 'hoody-grouped' : modes.includes('hoody-ksm-on') ? 'hoody-ksm-on' : (hoodyModes[0] ?? null);
  const mainPoints = main ? of(main) : [];
  // The first containers also pay the daemon's one-off warm-up (JIT code, SQLite cache, TLS), not kept per container.
  const pastFirst = mainPoints.filter((p) => p.count > 0);
  const last = mainPoints[mainPoints.length - 1];
  const hoodyTimes = hoodyModes.flatMap((m) => of(m).flatMap((p) => p.provision.per_container_s));
  const hoodyWall = hoodyModes.flatMap((m) => of(m)).reduce((a, p) => a + p.provision.wall_s, 0);
  const dockerTimes = of('docker').flatMap((p) => p.provision.per_container_s);
  const dockerWall = of('docker').reduce((a, p) => a + p.provision.wall_s, 0);
  const breakdown: Record<string, Record<string, number | null>> = {};
  const ksmByMode: WorkloadSummary['ksm_by_mode'] = {};
  for (const m of modes) {
    const ps = of(m);
    breakdown[keyOf(m)] = {
      anon_mib: slopeOf(ps, (p) => p.host.anon_mib),
      slab_mib: slopeOf(ps, (p) => p.host.slab_mib),
      slab_unreclaimable_mib: slopeOf(ps, (p) => p.host.slab_unreclaimable_mib),
      page_tables_mib: slopeOf(ps, (p) => p.host.page_tables_mib),
      kernel_stack_mib: slopeOf(ps, (p) => p.host.kernel_stack_mib),
      containers_pss_mib: slopeOf(ps, (p) => p.pss.containers_mib),
      containers_anon_mib: slopeOf(ps, (p) => p.pss.containers_anon_mib),
      shims_pss_mib: slopeOf(ps, (p) => p.pss.shims_mib),
      shims_anon_mib: slopeOf(ps, (p) => p.pss.shims_anon_mib),
      engine_pss_mib: slopeOf(ps, (p) => p.pss.engine_mib),
      engine_anon_mib: slopeOf(ps, (p) => p.pss.engine_anon_mib),
      daemon_pss_kib: slopeOf(ps, (p) => p.pss.daemon_kib, 1),
      daemon_anon_kib: slopeOf(ps, (p) => p.pss.daemon_anon_kib, 1),
      daemon_heap_kib: slopeOf(ps, (p) => (p.daemon_heap ? p.daemon_heap.heap_used_kib + p.daemon_heap.external_kib : null), 1),
      daemon_self_anon_kib: slopeOf(ps, (p) => p.pss.daemon_self_anon_kib ?? null, 1),
      exec_workers_anon_kib: slopeOf(ps, (p) => p.pss.exec_workers_anon_kib ?? null, 1),
      dataplane_anon_kib: slopeOf(ps, (p) => p.pss.dataplane_anon_kib ?? null, 1),
      processes: slopeOf(ps, (p) => p.kernel?.processes ?? null),
      threads: slopeOf(ps, (p) => p.kernel?.threads ?? null),
      foreign_anon_mib: slopeOf(ps, (p) => p.pss.foreign_anon_mib),
      ksm_sharing_mib: slopeOf(ps, (p) => (p.ksm.pages_sharing * 4096) / 1048576),
      ksm_general_profit_mib: slopeOf(ps, (p) => p.ksm.general_profit_mib),
      disk_volumes_mib: slopeOf(ps, (p) => p.disk.volumes_exclusive_mib),
      disk_rw_layers_mib: slopeOf(ps, (p) => p.disk.rw_layers_mib),
      disk_pool_mib: slopeOf(ps, (p) => p.disk.pool_used_mib),
    };
    if (findMode(m)?.ksm.kind !== 'off') {
      ksmByMode[keyOf(m)] = {
        convergence_s: ps.map((p) => round(p.ksm_convergence?.seconds ?? null, 1)),
        converged: ps.map((p) => p.ksm_convergence?.converged ?? null),
        cpu_steady_percent: ps.map((p) => round(p.ksmd_cpu_percent, 1) ?? 0),
        cpu_converging_percent: ps.map((p) => round(p.ksm_convergence?.cpu_percent ?? null, 1)),
      };
    }
  }
  const marginal = byMode((p) => p.host.used_mib);
  const marginalExcl = byMode((p) => p.used_excl_foreign_mib);
  const pinned = byMode((p) => p.pinned_excl_foreign_mib);
  const cache = byMode((p) => p.host.cached_mib);
  const memory: ByMode = {};
  for (const k of Object.keys(marginal)) {
    const a = marginal[k];
    const b = cache[k];
    memory[k] = a === null || a === undefined || b === null || b === undefined ? null : round(a + b, 3);
  }
  const disk = (p: Point) => (p.disk.volumes_exclusive_mib ?? 0) + p.disk.rw_layers_mib;
  const namespaces: Record<string, string[]> = {};
  for (const r of runs.filter((r) => r.workload === w.name)) namespaces[keyOf(r.mode)] = r.namespaces;
  return {
    image: w.image,
    description: w.description,
    marginal_mib_per_container: marginal,
    marginal_excl_foreign_mib_per_container: marginalExcl,
    pinned_mib_per_container: pinned,
    page_cache_mib_per_container: cache,
    memory_mib_per_container: memory,
    disk_marginal_mib_per_container: main ? slopeOf(mainPoints, disk) : slopeOf(of('docker'), (p) => p.disk.rw_layers_mib),
    disk_pool_mib_per_container: main ? slopeOf(mainPoints, (p) => p.disk.pool_used_mib) : null,
    ksmd_cpu_percent: last && findMode(main ?? '')?.ksm.kind !== 'off' ? round(last.ksmd_cpu_percent, 1) : null,
    ksmd_cpu_converging_percent: last?.ksm_convergence ? round(last.ksm_convergence.cpu_percent, 1) : null,
    ksm_convergence_s: last?.ksm_convergence ? round(last.ksm_convergence.seconds, 1) : null,
    ksm_converged: last?.ksm_convergence ? last.ksm_convergence.converged : null,
    provision_s_p50: round(percentile(hoodyTimes, 50), 3),
    provision_s_p95: round(percentile(hoodyTimes, 95), 3),
    provision_rate_per_s: hoodyWall > 0 ? round(hoodyTimes.length / hoodyWall, 2) : null,
    docker_provision_s_p50: round(percentile(dockerTimes, 50), 3),
    docker_rate_per_s: dockerWall > 0 ? round(dockerTimes.length / dockerWall, 2) : null,
    docker_provision_s_p95: round(percentile(dockerTimes, 95), 3),
    daemon_kib_per_container: main ? slopeOf(mainPoints, (p) => p.pss.daemon_anon_kib, 1) : null,
    daemon_kib_per_container_past_first: main && new Set(pastFirst.map((p) => p.count)).size >= 2 ? slopeOf(pastFirst, (p) => p.pss.daemon_anon_kib, 1) : null,
    daemon_heap_kib_per_container: main ? slopeOf(mainPoints, (p) => (p.daemon_heap ? p.daemon_heap.heap_used_kib + p.daemon_heap.external_kib : null), 1) : null,
    create_s_p50: round(percentile(hoodyModes.flatMap((m) => of(m).flatMap((p) => p.provision.create_s)), 50), 3),
    namespaces,
    breakdown_per_container: breakdown,
    ksm_by_mode: ksmByMode,
    active: activeSummaries(modes, of, marginal, marginalExcl, pinned, breakdown),
    kernel_per_container: Object.fromEntries(modes.filter((m) => of(m).some((p) => p.kernel)).map((m) => [keyOf(m), kernelShare(of(m))])),
    points: points.filter((p) => p.workload === w.name),
  };
}

const SLAB_TOP = 12;

/** The kernel's share per container in one mode: slab by cache, tasks, kernel stacks, cgroups (slopes). */
export function kernelShare(ps: readonly Point[]): KernelShare {
  const caches = new Set(ps.flatMap((p) => Object.keys(p.kernel?.slab ?? {})));
  const top = [...caches]
    .map((cache) => {
      const at = (p: Point) => p.kernel?.slab[cache] ?? null;
      return {
        cache,
        kib: slopeOf(ps, (p) => at(p)?.[1] ?? (p.kernel ? 0 : null), 2) ?? 0,
        objects: slopeOf(ps, (p) => at(p)?.[0] ?? (p.kernel ? 0 : null), 2) ?? 0,
        object_size: Math.max(0, ...ps.map((p) => at(p)?.[2] ?? 0)),
      };
    })
    .sort((a, b) => b.kib - a.kib)
    .slice(0, SLAB_TOP);
  const kstack = slopeOf(ps, (p) => p.host.kernel_stack_mib * 1024, 1);
  const threads = slopeOf(ps, (p) => p.kernel?.threads ?? null, 2);
  const controllers = new Set(ps.flatMap((p) => Object.keys(p.kernel?.cgroups ?? {})));
  return {
    slab_top: top,
    slab_total_kib: slopeOf(ps, (p) => (p.kernel ? Object.values(p.kernel.slab).reduce((a, c) => a + c[1], 0) : null), 1),
    processes: slopeOf(ps, (p) => p.kernel?.processes ?? null, 2),
    threads,
    container_threads: slopeOf(ps, (p) => p.kernel?.container_threads ?? null, 2),
    shim_threads: slopeOf(ps, (p) => p.kernel?.shim_threads ?? null, 2),
    kernel_stack_kib: kstack,
    kernel_stack_kib_per_thread: kstack !== null && threads ? round(kstack / threads, 1) : null,
    page_tables_kib: slopeOf(ps, (p) => p.host.page_tables_mib * 1024, 1),
    cgroups: Object.fromEntries([...controllers].map((c) => [c, slopeOf(ps, (p) => p.kernel?.cgroups[c] ?? null, 2)])),
    container_kmem_kib: slopeOf(ps, (p) => p.kernel?.container_kmem_kib ?? (p.kernel && p.count === 0 ? 0 : null), 1),
    sample: ps.filter((p) => p.kernel?.sample).at(-1)?.kernel?.sample ?? null,
  };
}

/** Each active mode against its idle mode: the extra per container, where it goes, and the pipelines' timings. */
function activeSummaries(
  modes: readonly string[],
  of: (mode: string) => Point[],
  marginal: ByMode,
  marginalExcl: ByMode,
  pinned: ByMode,
  breakdown: Record<string, Record<string, number | null>>,
): Record<string, ActiveSummary> {
  const out: Record<string, ActiveSummary> = {};
  const diff = (a: number | null | undefined, b: number | null | undefined, d = 3) => (a === null || a === undefined || b === null || b === undefined ? null : round(a - b, d));
  for (const name of modes) {
    const m = findMode(name);
    if (!m?.active || !m.base || !modes.includes(m.base)) continue;
    const idle = keyOf(m.base);
    const active = m.key;
    // The exec worker starts with the first script run (never at 0 containers): with two or more counts past
    // zero in both modes, the slopes are taken over those only, so such fixed costs drop out.
    const past = (ps: Point[]) => ps.filter((p) => p.count > 0);
    const nonzero = past(of(name)).length >= 2 && past(of(m.base)).length >= 2;
    const pick = (ps: Point[]) => (nonzero ? past(ps) : ps);
    const ai = pick(of(name));
    const ii = pick(of(m.base));
    const slopes = (ps: Point[], y: (p: Point) => number | null) => slopeOf(ps, y);
    const parts: Record<string, number | null> = {};
    const partsOf = (ps: Point[]): Record<string, number | null> => ({
      daemon_self_anon_kib: slopeOf(ps, (p) => p.pss.daemon_self_anon_kib ?? null, 1),
      exec_workers_anon_kib: slopeOf(ps, (p) => p.pss.exec_workers_anon_kib ?? null, 1),
      dataplane_anon_kib: slopeOf(ps, (p) => p.pss.dataplane_anon_kib ?? null, 1),
      engine_anon_mib: slopes(ps, (p) => p.pss.engine_anon_mib),
      shims_anon_mib: slopes(ps, (p) => p.pss.shims_anon_mib),
      containers_anon_mib: slopes(ps, (p) => p.pss.containers_anon_mib),
      anon_mib: slopes(ps, (p) => p.host.anon_mib),
      slab_unreclaimable_mib: slopes(ps, (p) => p.host.slab_unreclaimable_mib),
      page_tables_mib: slopes(ps, (p) => p.host.page_tables_mib),
      kernel_stack_mib: slopes(ps, (p) => p.host.kernel_stack_mib),
      container_kmem_kib: slopeOf(ps, (p) => p.kernel?.container_kmem_kib ?? (p.kernel && p.count === 0 ? 0 : null), 1),
    });
    const a = nonzero ? partsOf(ai) : { ...(breakdown[active] ?? {}), container_kmem_kib: partsOf(ai).container_kmem_kib };
    const i = nonzero ? partsOf(ii) : { ...(breakdown[idle] ?? {}), container_kmem_kib: partsOf(ii).container_kmem_kib };
    for (const [part, scale] of [
      ['daemon_self_anon_kib', 1],
      ['exec_workers_anon_kib', 1],
      ['dataplane_anon_kib', 1],
      ['engine_anon_mib', 1024],
      ['shims_anon_mib', 1024],
      ['containers_anon_mib', 1024],
      ['anon_mib', 1024],
      ['slab_unreclaimable_mib', 1024],
      ['page_tables_mib', 1024],
      ['kernel_stack_mib', 1024],
      ['container_kmem_kib', 1],
    ] as const) {
      const d = diff(a[part], i[part], 4);
      parts[part.replace(/_(kib|mib)$/, '_kib')] = d === null ? null : round(d * scale, 1);
    }
    const own = ['daemon_self_anon_kib', 'exec_workers_anon_kib', 'dataplane_anon_kib', 'shims_anon_kib', 'containers_anon_kib', 'container_kmem_kib'].map((k) => parts[k]);
    // The benchmark's own processes and the containers' charged kernel memory: immune to other users of the host.
    parts.own_total_kib = own.some((v) => v === null || v === undefined) ? null : round(own.reduce<number>((x, v) => x + (v ?? 0), 0), 1);
    const last = of(name).filter((p) => p.activity).at(-1);
    const act = last?.activity;
    const lat = act?.cron_lateness_ms ?? [];
    const ex = act?.exec_ms ?? [];
    out[active] = {
      idle_key: idle,
      active_key: active,
      slopes_over: nonzero ? 'counts past zero' : 'all counts (fixed costs such as the exec worker included)',
      idle_mib: nonzero ? slopes(ii, (p) => p.host.used_mib) : (marginal[idle] ?? null),
      active_mib: nonzero ? slopes(ai, (p) => p.host.used_mib) : (marginal[active] ?? null),
      extra_mib: nonzero ? diff(slopes(ai, (p) => p.host.used_mib), slopes(ii, (p) => p.host.used_mib)) : diff(marginal[active], marginal[idle]),
      extra_excl_foreign_mib: nonzero
        ? diff(slopes(ai, (p) => p.used_excl_foreign_mib), slopes(ii, (p) => p.used_excl_foreign_mib))
        : diff(marginalExcl[active], marginalExcl[idle]),
      extra_pinned_mib: nonzero ? diff(slopes(ai, (p) => p.pinned_excl_foreign_mib), slopes(ii, (p) => p.pinned_excl_foreign_mib)) : diff(pinned[active], pinned[idle]),
      extra_parts_kib: parts,
      count: last?.count ?? null,
      settle_s: last?.settle_s ?? null,
      cron_runs: act?.cron_runs ?? null,
      cron_failed: act?.cron_failed ?? null,
      min_runs_per_container: act?.min_runs_per_container ?? null,
      cron_lateness_ms: { p50: round(percentile(lat, 50), 0), p99: round(percentile(lat, 99), 0), max: lat.length ? Math.max(...lat) : null },
      exec_ms: { p50: round(percentile(ex, 50), 0), p99: round(percentile(ex, 99), 0), max: ex.length ? Math.max(...ex) : null },
      exec_failed: act?.exec_failed ?? null,
      burst_mib: last?.host_peak_used_mib === undefined ? null : round(last.host_peak_used_mib - last.host.used_mib, 1),
    };
  }
  return out;
}

/** Goals from issue 14 (hoody's default: shared shims, KSM on; idle, namespaces populated). */
export function goals(name: string, s: WorkloadSummary): { goal: string; value: string; met: boolean | null }[] {
  const key = s.memory_mib_per_container.hoody_grouped !== undefined ? 'hoody_grouped' : 'hoody_ksm_on';
  const raw = s.memory_mib_per_container[key] ?? null;
  const pinned = s.pinned_mib_per_container[key] ?? null;
  const cache = s.page_cache_mib_per_container[key] ?? null;
  const bottomUp = pinned === null || cache === null ? null : round(pinned + cache, 3);
  const limit = name === 'busybox' ? 1.0 : name === 'node-seeded' || name === 'node-merge' ? 3 : name.startsWith('node') ? 5 : null;
  const daemon = s.daemon_kib_per_container_past_first ?? s.daemon_kib_per_container;
  const rate = s.provision_rate_per_s;
  // Met only when both the issue's figure and the bottom-up one (immune to other users' churn) are under the limit.
  const memMet = limit === null || raw === null || bottomUp === null ? null : raw <= limit && bottomUp <= limit;
  return [
    ...(limit === null ? [] : [{ goal: `memory (marginal + page cache) ≤ ${limit} MiB/container`, value: `${fmt(raw)} (bottom-up ${fmt(bottomUp)})`, met: memMet }]),
    { goal: 'ksmd ≤ 10% of one core', value: fmt(s.ksmd_cpu_percent, 1), met: s.ksmd_cpu_percent === null ? null : s.ksmd_cpu_percent <= 10 },
    { goal: 'daemon ≤ 64 KiB/container (past the first count)', value: fmt(daemon, 1), met: daemon === null ? null : daemon <= 64 },
    { goal: 'disk ≤ 1 MiB/container', value: fmt(s.disk_marginal_mib_per_container, 3), met: s.disk_marginal_mib_per_container === null ? null : s.disk_marginal_mib_per_container <= 1 },
    { goal: 'provisioning ≥ 5 containers/s', value: fmt(rate), met: rate === null ? null : rate >= 5 },
    ...Object.values(s.active ?? {}).map((a) => ({
      goal: `active ≤ 1 MiB/container more than idle (${a.active_key} − ${a.idle_key}, issue 14)`,
      // The benchmark's own processes + the containers' memcg kernel memory first: host-wide slopes swing by tens of MiB here.
      value: `own processes ${fmt(own(a), 3)} (host ${fmt(a.extra_mib, 3)}, excl. others ${fmt(a.extra_excl_foreign_mib, 3)}, bottom-up ${fmt(a.extra_pinned_mib, 3)})`,
      met: own(a) === null ? (a.extra_mib === null || a.extra_pinned_mib === null ? null : a.extra_mib <= 1 && a.extra_pinned_mib <= 1) : own(a)! <= 1,
    })),
  ];
}

const own = (a: ActiveSummary): number | null => {
  const kib = a.extra_parts_kib.own_total_kib;
  return kib === null || kib === undefined ? null : round(kib / 1024, 3);
};

/** The active modes against their idle ones (Markdown). */
function activeSection(s: WorkloadSummary): string[] {
  const list = Object.values(s.active ?? {});
  if (!list.length) return [];
  const rows = list.map((a) => [
    `${a.active_key} vs ${a.idle_key}`,
    `${fmt(a.idle_mib, 3)} → ${fmt(a.active_mib, 3)}`,
    `**${fmt(own(a), 3)}** (host ${fmt(a.extra_mib, 3)})`,
    fmt(a.extra_excl_foreign_mib, 3),
    fmt(a.extra_pinned_mib, 3),
    `${a.count ?? '–'} / ${fmt(a.settle_s, 0)} s`,
    `${a.cron_runs ?? '–'} (${a.cron_failed ?? '–'} failed; ≥ ${a.min_runs_per_container ?? '–'} per container)`,
    `${fmt(a.cron_lateness_ms.p50, 0)} / ${fmt(a.cron_lateness_ms.p99, 0)} / ${fmt(a.cron_lateness_ms.max, 0)}`,
    `${fmt(a.exec_ms.p50, 0)} / ${fmt(a.exec_ms.p99, 0)} / ${fmt(a.exec_ms.max, 0)} (${a.exec_failed ?? '–'} failed)`,
    fmt(a.burst_mib, 1),
  ]);
  const parts = Object.keys(list[0]!.extra_parts_kib);
  return [
    'Active containers (issue 14: each container runs the pipeline once a minute — cron → wget of its own exec URL → a file write + a TLS bundle PATCH):',
    '',
    mdTable(
      ['modes', 'idle → active MiB/container (host)', 'active − idle MiB: own processes + memcg kernel (host used)', 'same, excl. others', 'same, bottom-up', 'at n / settle', 'cron runs in window', 'cron lateness ms p50 / p99 / max', 'exec ms p50 / p99 / max', 'burst MiB above median'],
      rows,
    ),
    '',
    `Where the extra goes (active − idle slope, KiB per container; slopes over ${list.map((a) => a.slopes_over ?? 'all counts').join(' / ')}):`,
    '',
    mdTable(['part', ...list.map((a) => a.active_key)], parts.map((p) => [p, ...list.map((a) => fmt(a.extra_parts_kib[p], 1))])),
    '',
  ];
}

/** The kernel's share per container by mode: slab by cache, tasks, kernel stacks, cgroups (Markdown). */
function kernelSection(s: WorkloadSummary, keys: readonly string[]): string[] {
  const by = s.kernel_per_container ?? {};
  const ks = keys.filter((k) => by[k]);
  if (!ks.length) return [];
  const row = (label: string, v: (k: KernelShare) => string) => [label, ...ks.map((k) => v(by[k]!))];
  const out = [
    "The kernel's share (slopes per container; host-wide, so other users' churn is in them too):",
    '',
    mdTable(
      ['figure', ...ks],
      [
        row('tasks (processes) per container', (k) => fmt(k.processes, 2)),
        row('threads per container (host)', (k) => fmt(k.threads, 2)),
        row('  of which in the containers / their shims', (k) => `${fmt(k.container_threads, 2)} / ${fmt(k.shim_threads, 2)}`),
        row('kernel stacks KiB per container', (k) => fmt(k.kernel_stack_kib, 1)),
        row('kernel stack KiB per thread', (k) => fmt(k.kernel_stack_kib_per_thread, 1)),
        row('page tables KiB per container', (k) => fmt(k.page_tables_kib, 1)),
        row('slab KiB per container (sum of /proc/slabinfo)', (k) => fmt(k.slab_total_kib, 1)),
        row("kernel memory charged to the containers' memory cgroups, KiB per container", (k) => fmt(k.container_kmem_kib, 1)),
        row('one container: processes / threads / mounts', (k) => (k.sample ? `${k.sample.processes} / ${k.sample.threads} / ${k.sample.mounts}` : '–')),
        row('one container: own namespaces', (k) => k.sample?.namespaces.join(' ') || '–'),
        row('one container: cgroup hierarchies joined', (k) => (k.sample ? `${k.sample.cgroups.length} (${k.sample.cgroups.join(' ')})` : '–')),
        row('cgroups per container (by controller)', (k) =>
          Object.entries(k.cgroups)
            .filter(([, v]) => v !== null && Math.abs(v) >= 0.05)
            .map(([c, v]) => `${c} ${fmt(v, 2)}`)
            .join(', ') || '–'),
      ],
    ),
    '',
  ];
  const caches = [...new Set(ks.flatMap((k) => by[k]!.slab_top.map((c) => c.cache)))];
  const cell = (k: string, cache: string) => {
    const c = by[k]!.slab_top.find((x) => x.cache === cache);
    return c ? `${fmt(c.kib, 1)} (${fmt(c.objects, 1)} × ${c.object_size} B)` : '–';
  };
  out.push(`Slab caches that grow most (top ${SLAB_TOP} per mode; KiB per container, objects × size):`, '');
  out.push(mdTable(['cache', ...ks], caches.map((c) => [c, ...ks.map((k) => cell(k, c))])), '');
  return out;
}


/** The figures as rows, one per metric, one column per mode (shared by the Markdown and stdout tables). */
function figureRows(s: WorkloadSummary, keys: readonly string[]): (string | number)[][] {
  const row = (label: string, by: ByMode) => [label, ...keys.map((k) => fmt(by[k]))];
  return [
    row('marginal MiB/container (MemTotal−MemAvailable)', s.marginal_mib_per_container),
    row('  same, other users\' processes taken out', s.marginal_excl_foreign_mib_per_container),
    row('  bottom-up (anon+unreclaimable slab+page tables+kernel stacks+shmem), excl. others', s.pinned_mib_per_container),
    row('page cache MiB/container (Cached)', s.page_cache_mib_per_container),
    row('memory MiB/container (sum)', s.memory_mib_per_container),
  ];
}

function singleRows(s: WorkloadSummary): [string, string][] {
  return [
    ['daemon KiB/container (hoodyd anon PSS after GC)', fmt(s.daemon_kib_per_container, 1)],
    ['  same, fitted past the first count (without the one-off warm-up)', fmt(s.daemon_kib_per_container_past_first ?? null, 1)],
    ['daemon KiB/container (live JS heap + external after GC)', fmt(s.daemon_heap_kib_per_container, 1)],
    ['disk MiB/container (volume exclusive + rw layer)', fmt(s.disk_marginal_mib_per_container, 3)],
    ['disk MiB/container (whole pool, noisy)', fmt(s.disk_pool_mib_per_container, 3)],
    ['ksmd CPU % (steady, at the largest count)', fmt(s.ksmd_cpu_percent, 1)],
    ['ksmd CPU % while converging', fmt(s.ksmd_cpu_converging_percent, 1)],
    ['KSM convergence s (largest count)', `${fmt(s.ksm_convergence_s, 1)}${s.ksm_converged === false ? ' (timeout)' : ''}`],
    ['provisioning s p50 / p95 (hoody, namespaces populated)', `${fmt(s.provision_s_p50, 3)} / ${fmt(s.provision_s_p95, 3)}`],
    ['create call alone s p50 (hoody)', fmt(s.create_s_p50, 3)],
    ['provisioning rate containers/s (hoody)', fmt(s.provision_rate_per_s)],
    ['docker run s p50 / p95', `${fmt(s.docker_provision_s_p50, 3)} / ${fmt(s.docker_provision_s_p95, 3)}`],
    ['docker run rate containers/s (same parallelism)', fmt(s.docker_rate_per_s)],
  ];
}

function modeKeys(r: DensityResult): string[] {
  const keys = new Set<string>(REQUIRED_KEYS);
  for (const m of Object.values(r.modes)) keys.add(m.key);
  return [...keys].filter((k) => Object.values(r.workloads).some((w) => w.marginal_mib_per_container[k] !== null));
}

export function markdown(r: DensityResult, svgName: string): string {
  const keys = modeKeys(r);
  const out: string[] = [];
  out.push(`# hoody density benchmark — ${r.started}`, '');
  out.push(`Run \`${r.run_id}\`, ${Math.round(r.duration_s)} s. Counts ${(r.options.counts as number[]).join(', ')}; settle ${r.options.settle_s} s; KSM timeout ${r.options.ksm_timeout_s} s; ${r.options.parallel} provisions in flight.`);
  const h = r.host;
  out.push(`Host: ${h.kernel}, ${h.cpus} cores, ${h.mem_total_mib} MiB; engine ${h.engine_version} (${h.storage_driver} on ${h.backing_fs}); node ${h.node}.`, '');
  out.push(`![host MiB vs containers](${svgName})`, '');
  out.push('Slopes are least-squares fits over the counts (MiB per added container). Modes:', '');
  for (const [name, m] of Object.entries(r.modes)) out.push(`- \`${name}\` (${m.key}): ${m.description}`);
  out.push('');
  for (const [name, s] of Object.entries(r.workloads)) {
    out.push(`## ${name} — \`${s.image}\``, '', s.description, '');
    out.push(mdTable(['figure', ...keys], figureRows(s, keys)), '');
    out.push(mdTable(['figure', 'value'], singleRows(s)), '');
    out.push('Namespaces populated: ' + Object.entries(s.namespaces).map(([k, v]) => `${k}: ${v.length ? v.join(', ') : 'none'}`).join('; '), '');
    out.push('Goals (issue 14):', '');
    out.push(mdTable(['goal', 'measured', 'met'], goals(name, s).map((g) => [g.goal, g.value, g.met === null ? '–' : g.met ? 'yes' : '**no**'])), '');
    out.push('Where it goes (slope per container, by mode):', '');
    const parts = Object.keys(s.breakdown_per_container[keys[0] ?? ''] ?? {});
    out.push(mdTable(['part', ...keys], parts.map((p) => [p, ...keys.map((k) => fmt(s.breakdown_per_container[k]?.[p], p.endsWith('kib') ? 1 : 3))])), '');
    out.push(...activeSection(s));
    out.push(...kernelSection(s, keys));
    if (Object.keys(s.ksm_by_mode).length) {
      out.push('KSM per count (convergence s / ksmd CPU % converging / steady):', '');
      out.push(
        mdTable(
          ['mode', 'per count'],
          Object.entries(s.ksm_by_mode).map(([k, v]) => [
            k,
            v.convergence_s.map((c, i) => `${fmt(c, 0)}${v.converged[i] === false ? '(t/o)' : ''} / ${fmt(v.cpu_converging_percent[i], 1)} / ${fmt(v.cpu_steady_percent[i], 1)}`).join(' · '),
          ]),
        ),
        '',
      );
    }
    out.push('Raw points:', '');
    out.push(
      mdTable(
        ['mode', 'n', 'used', 'used excl. foreign', 'bottom-up', 'cached', 'anon', 'slab', 'ptables', 'kstack', 'ctr PSS (anon)', 'shim PSS (anon)', 'engine PSS', 'daemon anon KiB (live heap)', 'ksm sharing', 'ksm profit', 'disk vol', 'disk rw', 'pool', 'prov p50 s', 'ksmd %', 'foreign ctrs'],
        s.points.map((p) => [
          p.mode,
          p.count,
          fmt(p.host.used_mib, 1),
          fmt(p.used_excl_foreign_mib, 1),
          fmt(p.pinned_excl_foreign_mib, 1),
          fmt(p.host.cached_mib, 1),
          fmt(p.host.anon_mib, 1),
          fmt(p.host.slab_mib, 1),
          fmt(p.host.page_tables_mib, 1),
          fmt(p.host.kernel_stack_mib, 1),
          `${fmt(p.pss.containers_mib, 1)} (${fmt(p.pss.containers_anon_mib, 1)})`,
          `${fmt(p.pss.shims_mib, 1)} (${fmt(p.pss.shims_anon_mib, 1)})`,
          fmt(p.pss.engine_mib, 1),
          p.pss.daemon_anon_kib === null ? '–' : `${p.pss.daemon_anon_kib}${p.daemon_heap ? ` (heap ${p.daemon_heap.heap_used_kib + p.daemon_heap.external_kib})` : ''}`,
          p.ksm.pages_sharing,
          fmt(p.ksm.general_profit_mib, 1),
          fmt(p.disk.volumes_exclusive_mib, 2),
          fmt(p.disk.rw_layers_mib, 2),
          fmt(p.disk.pool_used_mib, 0),
          fmt(percentile(p.provision.per_container_s, 50), 3),
          fmt(p.ksmd_cpu_percent, 1),
          p.foreign_containers,
        ]),
      ),
      '',
    );
  }
  if (r.notes.length) out.push('## Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  out.push('Memory figures in MiB unless marked; PSS = proportional set size from smaps_rollup. "foreign" = containers of other users on the engine.', '');
  return out.join('\n');
}

/**
 * Host MiB vs containers, one panel per workload, one line per mode: solid = host used (MemTotal −
 * MemAvailable) above the mode's first point, dashed = the bottom-up figure above it.
 */
export function svg(r: DensityResult): string {
  const names = Object.keys(r.workloads);
  const modes = Object.keys(r.modes);
  const W = 480;
  const H = 340;
  const m = { l: 62, r: 16, t: 34, b: 46 };
  const legendH = 22 * Math.ceil(modes.length / 4) + 44;
  const width = Math.max(1, names.length) * W;
  const height = H + legendH;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  const seriesOf = (name: string) =>
    modes.map((mode) => {
      const ps = r.workloads[name]!.points.filter((p) => p.mode === mode).sort((a, b) => a.count - b.count);
      const base = ps[0];
      return {
        mode,
        used: ps.map((p) => [p.count, p.host.used_mib - (base?.host.used_mib ?? 0)] as const),
        total: ps.map((p) => [p.count, p.pinned_excl_foreign_mib - (base?.pinned_excl_foreign_mib ?? 0)] as const),
      };
    });
  const rangeOf = (name: string) => {
    const ys = seriesOf(name).flatMap((se) => [...se.used, ...se.total].map(([, y]) => y));
    return [Math.min(0, ...ys), Math.max(1, ...ys)] as const;
  };
  // Panels share one y scale when their ranges are alike (variants of one workload), so they compare at a glance.
  const ranges = names.map(rangeOf);
  const spans = ranges.map(([lo, hi]) => hi - lo);
  const shared = names.length > 1 && Math.max(...spans) <= 3 * Math.min(...spans);
  names.forEach((name, i) => {
    const s = r.workloads[name]!;
    const x0 = i * W + m.l;
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;
    const series = seriesOf(name);
    const all = series.flatMap((se) => [...se.used, ...se.total]);
    const maxX = Math.max(1, ...all.map(([x]) => x));
    const minY = shared ? Math.min(...ranges.map(([lo]) => lo)) : ranges[i]![0];
    const maxY = shared ? Math.max(...ranges.map(([, hi]) => hi)) : ranges[i]![1];
    const yStep = niceStep(maxY - minY);
    const yLo = Math.floor(minY / yStep) * yStep;
    const yHi = Math.ceil(maxY / yStep) * yStep;
    const xStep = niceStep(maxX);
    const X = (x: number) => x0 + (x / maxX) * pw;
    const Y = (y: number) => m.t + ph - ((y - yLo) / (yHi - yLo || 1)) * ph;
    parts.push(`<text x="${x0 + pw / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(name)} (${esc(s.image)})</text>`);
    for (let y = yLo; y <= yHi + 1e-9; y += yStep) {
      parts.push(`<line x1="${x0}" x2="${x0 + pw}" y1="${Y(y).toFixed(1)}" y2="${Y(y).toFixed(1)}" stroke="#e5e5e5"/>`);
      parts.push(`<text x="${x0 - 6}" y="${(Y(y) + 4).toFixed(1)}" text-anchor="end">${Number(y.toFixed(6))}</text>`);
    }
    for (let x = 0; x <= maxX + 1e-9; x += xStep) {
      parts.push(`<line x1="${X(x).toFixed(1)}" x2="${X(x).toFixed(1)}" y1="${m.t + ph}" y2="${m.t + ph + 5}" stroke="#333"/>`);
      parts.push(`<text x="${X(x).toFixed(1)}" y="${m.t + ph + 18}" text-anchor="middle">${x}</text>`);
    }
    parts.push(`<line x1="${x0}" x2="${x0}" y1="${m.t}" y2="${m.t + ph}" stroke="#333"/>`);
    parts.push(`<line x1="${x0}" x2="${x0 + pw}" y1="${Y(0).toFixed(1)}" y2="${Y(0).toFixed(1)}" stroke="#333"/>`);
    parts.push(`<text x="${x0 + pw / 2}" y="${H - 8}" text-anchor="middle">containers</text>`);
    parts.push(`<text transform="translate(${i * W + 16},${m.t + ph / 2}) rotate(-90)" text-anchor="middle">host MiB above 0 containers</text>`);
    series.forEach((se, j) => {
      const color = COLORS[j % COLORS.length]!;
      const path = (pts: readonly (readonly [number, number])[]) => pts.map(([x, y], k) => `${k ? 'L' : 'M'}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
      if (se.used.length) {
        parts.push(`<path d="${path(se.total)}" fill="none" stroke="${color}" stroke-width="1.5" stroke-dasharray="5,4"/>`);
        parts.push(`<path d="${path(se.used)}" fill="none" stroke="${color}" stroke-width="2.2"/>`);
        for (const [x, y] of se.used) parts.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="3" fill="${color}"/>`);
      }
    });
  });
  const ly = H + 6;
  modes.forEach((mode, j) => {
    const x = 20 + (j % 4) * 190;
    const y = ly + 22 * Math.floor(j / 4);
    const color = COLORS[j % COLORS.length]!;
    parts.push(`<line x1="${x}" x2="${x + 28}" y1="${y + 6}" y2="${y + 6}" stroke="${color}" stroke-width="2.2"/>`);
    parts.push(`<text x="${x + 34}" y="${y + 10}">${esc(mode)}</text>`);
  });
  parts.push(`<text x="20" y="${height - 24}" fill="#555">solid: host used (MemTotal − MemAvailable, median over the settle window); dashed: bottom-up (anon + unreclaimable</text>`);
  parts.push(`<text x="20" y="${height - 8}" fill="#555">slab + page tables + kernel stacks + shmem) with other users' processes taken out; both relative to the mode's first point</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

/** The summary table printed on stdout. */
export function stdoutSummary(r: DensityResult): string {
  const keys = modeKeys(r);
  const out: string[] = [];
  for (const [name, s] of Object.entries(r.workloads)) {
    out.push(`${name} (${s.image})`);
    out.push(table(['figure', ...keys], figureRows(s, keys)));
    out.push(table(['figure', 'value'], singleRows(s)));
    for (const a of Object.values(s.active ?? {}))
      out.push(
        `${a.active_key}: ${fmt(a.extra_mib, 3)} MiB/container more than ${a.idle_key} (bottom-up ${fmt(a.extra_pinned_mib, 3)}); at n=${a.count ?? '–'}: ${a.cron_runs ?? 0} cron runs (${a.cron_failed ?? 0} failed), lateness p50/p99 ${fmt(a.cron_lateness_ms.p50, 0)}/${fmt(a.cron_lateness_ms.p99, 0)} ms, exec p50/p99 ${fmt(a.exec_ms.p50, 0)}/${fmt(a.exec_ms.p99, 0)} ms`,
      );
    const g = goals(name, s).map((x) => `${x.goal}: ${x.value} ${x.met === null ? '' : x.met ? '(met)' : '(NOT met)'}`);
    out.push(`goals: ${g.join('; ')}`, '');
  }
  return out.join('\n');
}
