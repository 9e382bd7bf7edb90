import { table } from '../daemon/cli/format.js';
import { MODES } from './modes.js';
import { COLORS, esc, niceStep } from './ns-chart.js';
import { fmt, mdTable } from './results.js';
import { percentile, round, slope } from './stats.js';
import type { ByMode, DensityResult, ModeRun, Point, WorkloadSummary } from './types.js';
import type { Workload } from './workloads.js';

const REQUIRED_KEYS = ['docker_baseline', 'hoody_ksm_off', 'hoody_ksm_on'] as const;

function keyOf(mode: string): string {
  return MODES[mode]?.key ?? mode.replace(/-/g, '_');
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
  const hoodyModes = modes.filter((m) => MODES[m]?.engine === 'hoody');
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
      foreign_anon_mib: slopeOf(ps, (p) => p.pss.foreign_anon_mib),
      ksm_sharing_mib: slopeOf(ps, (p) => (p.ksm.pages_sharing * 4096) / 1048576),
      ksm_general_profit_mib: slopeOf(ps, (p) => p.ksm.general_profit_mib),
      disk_volumes_mib: slopeOf(ps, (p) => p.disk.volumes_exclusive_mib),
      disk_rw_layers_mib: slopeOf(ps, (p) => p.disk.rw_layers_mib),
      disk_pool_mib: slopeOf(ps, (p) => p.disk.pool_used_mib),
    };
    if (MODES[m]?.ksm.kind !== 'off') {
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
    ksmd_cpu_percent: last && MODES[main ?? '']?.ksm.kind !== 'off' ? round(last.ksmd_cpu_percent, 1) : null,
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
    points: points.filter((p) => p.workload === w.name),
  };
}

/** Goals from issue 14 (hoody's default: shared shims, KSM on; idle, namespaces populated). */
export function goals(name: string, s: WorkloadSummary): { goal: string; value: string; met: boolean | null }[] {
  const key = s.memory_mib_per_container.hoody_grouped !== undefined ? 'hoody_grouped' : 'hoody_ksm_on';
  const raw = s.memory_mib_per_container[key] ?? null;
  const pinned = s.pinned_mib_per_container[key] ?? null;
  const cache = s.page_cache_mib_per_container[key] ?? null;
  const bottomUp = pinned === null || cache === null ? null : round(pinned + cache, 3);
  const limit = name === 'busybox' ? 1.0 : name === 'node-seeded' ? 3 : name.startsWith('node') ? 5 : null;
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
  ];
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
    const g = goals(name, s).map((x) => `${x.goal}: ${x.value} ${x.met === null ? '' : x.met ? '(met)' : '(NOT met)'}`);
    out.push(`goals: ${g.join('; ')}`, '');
  }
  return out.join('\n');
}
