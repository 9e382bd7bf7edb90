import { mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SingleBar } from 'cli-progress';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import Docker from 'dockerode';
import { pino } from 'pino';
import { HostCa } from '../containers/tls/ca.js';
import { loadConfig } from '../daemon/config.js';
import { setupHost } from '../daemon/setup.js';
import { VERSION } from '../daemon/version.js';
import { DockerEngine } from '../host/engine.js';
import { meminfo } from '../host/metrics.js';
import { engineGroupsShims } from '../host/shim-groups.js';
import { type BenchDaemon, ROOT, startBenchDaemon } from './daemon.js';
import { BENCH_LABEL, DockerFleet, type Fleet, HoodyFleet } from './fleet.js';
import { BenchKsm, type Convergence } from './ksm.js';
import { gcAndMeasure } from './inspector.js';
import { daemonAnon, diskSnapshot, memorySnapshot } from './measure.js';
import { ACTIVE_SUFFIX, MODES, mode as modeOf } from './modes.js';
import { markdown, stdoutSummary, summarize, svg } from './report.js';
import { type ResultFiles, runIdOf, writeResultFiles, writeResults } from './results.js';
import { Cleanup } from './session.js';
import { percentile, round, sleep } from './stats.js';
import type { DensityResult, ModeRun, Point } from './types.js';
import { workload as workloadOf } from './workloads.js';

export interface DensityOptions {
  counts: number[];
  workloads: string[];
  modes: string[];
  out: string;
  ksmTimeoutS: number;
  settleS: number;
  parallel: number;
  dockerSocket: string;
  /** No progress bar (still writes the files and the summary). */
  quiet: boolean;
  /** Each hoody mode also runs as `<mode>-active` (every container runs the pipeline once a minute). */
  active: boolean;
  /** Settle of active points past zero (their cron runs each minute: ≥ 130 s gives every container two runs). */
  activeSettleS: number;
}

export interface DensityOutput {
  result: DensityResult;
  files: ResultFiles;
}

const DEFAULTS = {
  counts: '0,25,50,100',
  workloads: 'busybox,node',
  modes: 'docker,hoody-ksm-off,hoody-ksm-on',
  out: 'bench/results',
  ksmTimeout: '180',
  settle: '10',
  parallel: '4',
  activeSettle: '130',
};

function usage(message: string): Error {
  return Object.assign(new Error(message), { usage: true });
}

function list(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function positive(name: string, min = 0) {
  return (v: string): string => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`${name} must be a number ≥ ${min}`);
    return v;
  };
}

/** The options of `hoody bench density` (shared by the CLI and `node dist/bench/density.js`). */
export function addDensityOptions(cmd: Command): Command {
  return cmd
    .option('--counts <list>', 'container counts, measured incrementally', DEFAULTS.counts)
    .option('--workloads <list>', 'busybox, node, node-lean, node-seeded', DEFAULTS.workloads)
    .option('--modes <list>', `${Object.keys(MODES).join(', ')}`, DEFAULTS.modes)
    .option('--out <dir>', `where density-<time>.{json,md,svg} go (default: ${DEFAULTS.out} in the checkout)`)
    .option('--ksm-timeout <s>', 'longest wait for KSM to converge at each count', positive('--ksm-timeout'), DEFAULTS.ksmTimeout)
    .option('--settle <s>', 'wait before each measurement (ksmd CPU is measured over it)', positive('--settle'), DEFAULTS.settle)
    .option('--parallel <n>', 'provisions in flight', positive('--parallel', 1), DEFAULTS.parallel)
    .option('--docker-socket <path>', 'the engine (env HOODY_DOCKER_SOCKET)')
    .option('--active', `each hoody mode also runs as <mode>${ACTIVE_SUFFIX}: every container's cron wgets its own exec script each minute (a file write + a TLS bundle PATCH)`)
    .option('--active-settle <s>', 'settle of active points (at least two cron minutes; the snapshot lands mid-minute, ≤ 60 s later)', positive('--active-settle'), DEFAULTS.activeSettle)
    .option('--quiet', 'no progress bar')
    .option('--render <json>', 'no run: recompute the figures of a result JSON from its raw points and rewrite its .json/.md/.svg');
}

/** Validates the raw option values; bad input is a usage error (exit 2). */
export function parseDensityOptions(raw: Record<string, string | boolean | undefined>): DensityOptions {
  const counts = [...new Set(list(String(raw.counts ?? DEFAULTS.counts)).map(Number))].sort((a, b) => a - b);
  if (!counts.length || counts.some((c) => !Number.isInteger(c) || c < 0 || c > 1000)) throw usage('--counts must be integers 0..1000, e.g. 0,25,50,100');
  const workloads = list(String(raw.workloads ?? DEFAULTS.workloads));
  const modes = list(String(raw.modes ?? DEFAULTS.modes));
  // --active: each idle hoody mode is followed by its active variant (so the two are measured side by side).
  if (raw.active)
    for (let i = 0; i < modes.length; i++) {
      const m = modeOf(modes[i]!);
      const a = `${m.name}${ACTIVE_SUFFIX}`;
      if (m.engine === 'hoody' && !m.active && !modes.includes(a)) modes.splice(++i, 0, a);
    }
  for (const w of workloads) workloadOf(w);
  for (const m of modes) modeOf(m);
  if (!workloads.length || !modes.length) throw usage('--workloads and --modes need at least one entry');
  return {
    counts,
    workloads,
    modes,
    out: resolve(String(raw.out ?? join(ROOT, DEFAULTS.out))),
    ksmTimeoutS: Number(raw.ksmTimeout ?? DEFAULTS.ksmTimeout),
    settleS: Number(raw.settle ?? DEFAULTS.settle),
    parallel: Math.floor(Number(raw.parallel ?? DEFAULTS.parallel)),
    dockerSocket: String(raw.dockerSocket ?? process.env.HOODY_DOCKER_SOCKET ?? '/var/run/docker.sock'),
    quiet: Boolean(raw.quiet),
    active: Boolean(raw.active) || modes.some((m) => modeOf(m).active),
    activeSettleS: Number(raw.activeSettle ?? DEFAULTS.activeSettle),
  };
}

/**
 * The density benchmark: for each workload and mode, provisions containers up to each count (incrementally),
 * lets the host settle (and KSM converge), and measures where the memory goes. Cleans up everything it made,
 * also on SIGINT/SIGTERM and on errors.
 */
export async function runDensity(opts: DensityOptions): Promise<DensityOutput> {
  const started = new Date();
  const runId = runIdOf(started);
  const cleanup = new Cleanup();
  const ksm = new BenchKsm();
  let aborted = false;
  let interruptedBy: NodeJS.Signals | null = null;
  let busy: Promise<unknown> | null = null;
  let bar: SingleBar | null = null;

  const onSignal = (signal: NodeJS.Signals) => {
    if (aborted) {
      process.stderr.write(`\n${signal}: still cleaning up, please wait\n`);
      return;
    }
    aborted = true;
    interruptedBy = signal;
    bar?.stop();
    process.stderr.write(`\n${signal}: stopping and cleaning up what the benchmark made…\n`);
    void (async () => {
      await Promise.race([busy, sleep(120_000)]).catch(() => undefined);
      await cleanup.run((label) => process.stderr.write(`  removing ${label}\n`));
      process.exit(signal === 'SIGINT' ? 130 : 143);
    })();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const stop = () => aborted;

  const points: Point[] = [];
  const runs: ModeRun[] = [];
  const notes: string[] = [];
  try {
    const knobsBefore = await ksm.save();
    if (!(await ksm.available())) throw new Error('KSM is not available (/sys/kernel/mm/ksm)');
    cleanup.push('KSM knobs (restored)', () => ksm.restore());

    const config = loadConfig({}, { ...process.env, HOODY_DOCKER_SOCKET: opts.dockerSocket });
    await setupHost(config, pino({ level: 'silent' }), { images: 'none' });
    const poolRoot = join(config.stateDir, 'pool');
    const benchDir = join(poolRoot, 'bench', runId);
    await mkdir(benchDir, { recursive: true });
    cleanup.push(`bench dir ${benchDir}`, () => rm(benchDir, { recursive: true, force: true }));
    const ca = await HostCa.loadOrCreate(join(benchDir, 'ca'), 'hoody bench CA');
    const docker = new Docker({ socketPath: opts.dockerSocket });
    cleanup.push('containers labelled with this run', async () => {
      const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${BENCH_LABEL}=${runId}`] }) });
      for (const c of left) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
    });
    const engineInfo = await new DockerEngine(opts.dockerSocket).info();
    const workloads = opts.workloads.map(workloadOf);
    const modes = opts.modes.map(modeOf);
    for (const w of workloads) {
      if (!opts.quiet) process.stderr.write(`image ${w.image}…\n`);
      await w.ensureImage(docker);
      // Warm-up: one container run and removed, so the image's files are in the page cache before any mode's
      // first point (otherwise the first mode alone pays for reading them and its cache slope is skewed).
      const warm = await docker.createContainer({ Image: w.image, Labels: { [BENCH_LABEL]: runId } });
      await warm.start();
      await sleep(2000);
      await warm.remove({ force: true });
    }
    const mem = await meminfo();
    const os = await import('node:os');
    const maxCount = opts.counts[opts.counts.length - 1]!;
    const total = workloads.length * modes.length * maxCount;
    if (!opts.quiet) {
      bar = new SingleBar({
        format: 'density [{bar}] {value}/{total} containers | {eta_formatted} | {workload} {mode} {phase}',
        stream: process.stderr,
        hideCursor: true,
        noTTYOutput: true,
        notTTYSchedule: 5000,
        etaBuffer: 50,
      });
      bar.start(total, 0, { workload: '', mode: '', phase: 'starting' });
    }
    let done = 0;
    const phase = (w: string, m: string, p: string) => bar?.update(done, { workload: w, mode: m, phase: p });

    for (const w of workloads) {
      for (const m of modes) {
        if (aborted) break;
        const t0 = Date.now();
        const run: ModeRun = { workload: w.name, mode: m.name, description: m.description, namespaces: [], namespace_errors: {}, errors: [], daemon: null, seconds: 0 };
        runs.push(run);
        let daemon: BenchDaemon | null = null;
        let fleet: Fleet;
        phase(w.name, m.name, 'starting');
        if (m.engine === 'hoody') {
          if (m.env?.HOODY_SHIM_GROUP_SIZE !== '1' && !(await engineGroupsShims(opts.dockerSocket)))
            throw new Error(`mode ${m.name} needs an engine started with hoody's shim wrapper: stop the dockerd on ${opts.dockerSocket} and run the benchmark again (it starts one)`);
          daemon = await startBenchDaemon({ parentDir: benchDir, image: w.image, dockerSocket: opts.dockerSocket, inspect: true, env: m.env });
          run.daemon = { pid: daemon.pid, state_dir: daemon.stateDir, instance: daemon.instance };
          fleet = new HoodyFleet(opts.dockerSocket, daemon, w, ca, w.name.replace(/[^a-z0-9]/g, ''), m.active === true);
        } else {
          fleet = new DockerFleet(opts.dockerSocket, runId, w);
        }
        const f = fleet;
        const forget = cleanup.push(`${w.name}/${m.name} containers${daemon ? ' and daemon' : ''}`, () => f.destroy());
        // The daemon turns KSM on when it starts; the mode's profile is applied after it. Every hoodyd that starts
        // on this host (other users' too) does the same, so a guard puts the profile back within a second.
        await ksm.apply(m.ksm);
        let resets = 0;
        let guarding = false;
        const guard = setInterval(() => {
          if (guarding) return;
          guarding = true;
          void (async () => {
            if (!(await ksm.matches(m.ksm))) {
              resets++;
              await ksm.apply(m.ksm);
            }
          })()
            .catch(() => undefined)
            .finally(() => {
              guarding = false;
            });
        }, 1000);
        const stopGuard = cleanup.push(`${w.name}/${m.name} KSM guard`, async () => clearInterval(guard));
        for (const count of opts.counts) {
          if (aborted) break;
          phase(w.name, m.name, `provisioning to ${count}`);
          const tAdd = Date.now();
          const adding = fleet.add(
            count - fleet.size,
            opts.parallel,
            () => {
              done++;
              bar?.update(done);
            },
            stop,
          );
          busy = adding;
          const times = await adding;
          busy = null;
          if (aborted) break;
          const failed = count - fleet.size;
          if (failed > Math.max(2, Math.ceil(count * 0.1)))
            throw new Error(`${w.name}/${m.name}: ${failed} of ${count} containers failed to provision: ${fleet.failures().slice(0, 3).join(' | ')}`);
          const wall = (Date.now() - tAdd) / 1000;
          let convergence: Convergence | null = null;
          if (m.ksm.kind !== 'off') {
            phase(w.name, m.name, `n=${count}: waiting for KSM`);
            convergence = await ksm.waitConverged(await ksm.sample(), opts.ksmTimeoutS, 10, stop);
          }
          phase(w.name, m.name, `n=${count}: settling`);
          const s0 = await ksm.sample();
          // The daemon's heap breathes with V8's GC: keep the smallest anonymous PSS seen while idle.
          let daemonAnonMin: number | null = null;
          // Host used and cached are sampled every second and the median kept: other users' short spikes drop out.
          const usedSamples: number[] = [];
          const cachedSamples: number[] = [];
          const settleStart = new Date();
          let settleEnd = Date.now() + opts.settleS * 1000;
          const active = m.active === true && count > 0;
          if (active) {
            // At least --active-settle, then on to the next :35 of a minute: the snapshot falls between two bursts.
            const min = Date.now() + opts.activeSettleS * 1000;
            settleEnd = min - (min % 60_000) + 35_000;
            if (settleEnd < min) settleEnd += 60_000;
          }
          while (Date.now() < settleEnd && !aborted) {
            await sleep(Math.min(1000, Math.max(0, settleEnd - Date.now())));
            const mi = await meminfo();
            usedSamples.push(((mi.MemTotal ?? 0) - (mi.MemAvailable ?? 0)) / 1048576);
            cachedSamples.push((mi.Cached ?? 0) / 1048576);
            if (daemon) {
              const a = await daemonAnon(daemon.pid);
              daemonAnonMin = daemonAnonMin === null ? a : Math.min(daemonAnonMin, a);
            }
          }
          if (aborted) break;
          const settled = round((Date.now() - settleStart.getTime()) / 1000, 1) ?? 0;
          const ids = await fleet.engineIds();
          // Forced full GCs in the daemon first, so its figure is what it retains, not what V8 has not collected yet.
          const heap = daemon?.inspector ? await gcAndMeasure(daemon.inspector) : null;
          if (heap && daemon) daemonAnonMin = await daemonAnon(daemon.pid);
          if (!(await ksm.matches(m.ksm))) {
            resets++;
            await ksm.apply(m.ksm);
          }
          const snap = await memorySnapshot(ids, daemon?.pid ?? null, ksm, daemonAnonMin, daemon?.stateDir ?? null);
          const activity = active && fleet instanceof HoodyFleet ? await fleet.activity(settleStart) : null;
          const changed = resets > 0 || !(await ksm.matches(m.ksm));
          const ksmResets = resets;
          resets = 0;
          usedSamples.push(snap.host.used_mib);
          cachedSamples.push(snap.host.cached_mib);
          const instant = { used_mib: snap.host.used_mib, cached_mib: snap.host.cached_mib };
          const peak = round(Math.max(...usedSamples), 2) ?? snap.host.used_mib;
          snap.host.used_mib = round(percentile(usedSamples, 50), 2) ?? snap.host.used_mib;
          snap.host.cached_mib = round(percentile(cachedSamples, 50), 2) ?? snap.host.cached_mib;
          let hoodyStats: Point['hoody_stats'] = null;
          let volumes: number | null = null;
          if (daemon) {
            type S = { containers: { pssBytes: number; rssBytes: number; ksmProfitBytes: number; mergeAny: boolean; diskExclusiveBytes: number }[] };
            const s = await daemon.client.call<S>('GET', '/v1/stats').catch(() => null);
            if (s) {
              const sum = (g: (c: S['containers'][number]) => number) => s.containers.reduce((a, c) => a + g(c), 0);
              volumes = sum((c) => c.diskExclusiveBytes);
              hoodyStats = {
                containers: s.containers.length,
                pss_mib: round(sum((c) => c.pssBytes) / 1048576) ?? 0,
                rss_mib: round(sum((c) => c.rssBytes) / 1048576) ?? 0,
                ksm_profit_mib: round(sum((c) => c.ksmProfitBytes) / 1048576) ?? 0,
                merge_any: s.containers.filter((c) => c.mergeAny).length,
              };
            }
          }
          const disk = await diskSnapshot(docker, ids, poolRoot, volumes);
          const running = await docker.listContainers({ filters: JSON.stringify({ status: ['running'] }) });
          const mine = new Set(ids);
          points.push({
            workload: w.name,
            mode: m.name,
            count,
            at: new Date().toISOString(),
            provision: {
              added: times.length,
              wall_s: round(wall, 3) ?? 0,
              per_container_s: times.map((t) => round(t.total, 4) ?? 0),
              create_s: times.map((t) => round(t.create, 4) ?? 0),
            },
            daemon_heap: heap
              ? { heap_used_kib: Math.round(heap.heapUsed / 1024), external_kib: Math.round(heap.external / 1024), rss_kib: Math.round(heap.rss / 1024) }
              : null,
            ksm_convergence: convergence
              ? { converged: convergence.converged, seconds: round(convergence.seconds, 1) ?? 0, cpu_percent: round(convergence.cpuPercent, 2) ?? 0, full_scans: convergence.fullScans }
              : null,
            ksmd_cpu_percent: round(BenchKsm.cpuPercent(s0, snap.ksmSample), 2) ?? 0,
            host: snap.host,
            host_instant: instant,
            used_excl_foreign_mib: snap.usedExclForeignMib,
            pinned_excl_foreign_mib: snap.pinnedExclForeignMib,
            pss: snap.pss,
            ksm: snap.ksm,
            disk,
            hoody_stats: hoodyStats,
            foreign_containers: running.filter((c) => !mine.has(c.Id) && c.Labels?.[BENCH_LABEL] === undefined).length,
            ksm_changed_externally: changed,
            ksm_resets: ksmResets,
            settle_s: settled,
            host_peak_used_mib: peak,
            kernel: snap.kernel,
            activity,
          });
        }
        clearInterval(guard);
        stopGuard();
        run.namespaces = fleet.namespaces();
        run.namespace_errors = fleet.namespaceErrors();
        run.errors = [...fleet.failures(), ...(fleet instanceof HoodyFleet ? fleet.errorSamples : [])];
        if (aborted) break;
        phase(w.name, m.name, 'removing');
        await fleet.destroy();
        forget();
        await sleep(3000); // let the freed memory settle before the next mode's first point
        run.seconds = round((Date.now() - t0) / 1000, 1) ?? 0;
      }
    }
    bar?.update(done, { phase: 'done' });
    bar?.stop();
    bar = null;
    if (aborted) throw Object.assign(new Error('interrupted; everything the benchmark made was removed'), { exitCode: interruptedBy === 'SIGTERM' ? 143 : 130 });
    await cleanup.run();
    const knobsAfter = await ksm.knobs();

    if (points.some((p) => p.foreign_containers > 0)) notes.push('Other containers ran on the engine during the run ("foreign" column): their memory changes add noise to the host-wide figures.');
    if (points.some((p) => p.ksm_changed_externally))
      notes.push(
        `Another process changed the KSM knobs during the run (every hoodyd that starts turns KSM on with its own knobs): the mode's profile was put back within a second, ${points.reduce((a, p) => a + (p.ksm_resets ?? 0), 0)} times in all (ksm_resets per point).`,
      );
    if (opts.active && opts.activeSettleS < 120)
      notes.push(`--active-settle ${opts.activeSettleS} s: active points may have seen one cron minute only (two need ≥ 120 s).`);
    for (const p of points.filter((p) => p.activity?.errors.length))
      notes.push(`${p.workload}/${p.mode} n=${p.count}: ${p.activity!.cron_failed} failed cron runs, ${p.activity!.exec_failed} failed exec runs (${p.activity!.errors.slice(0, 2).join(' | ')})`);
    for (const r of runs) {
      const errs = Object.entries(r.namespace_errors);
      if (errs.length) notes.push(`${r.workload}/${r.mode}: namespace calls failed: ${errs.map(([k, v]) => `${k} ×${v}`).join(', ')} (${r.errors.slice(0, 2).join(' | ')})`);
    }
    const finished = new Date();
    const result: DensityResult = {
      tool: `hoody bench density ${VERSION}`,
      run_id: runId,
      started: started.toISOString(),
      finished: finished.toISOString(),
      duration_s: round((finished.getTime() - started.getTime()) / 1000, 1) ?? 0,
      options: {
        counts: opts.counts,
        workloads: opts.workloads,
        modes: opts.modes,
        ksm_timeout_s: opts.ksmTimeoutS,
        settle_s: opts.settleS,
        parallel: opts.parallel,
        active: opts.active,
        active_settle_s: opts.activeSettleS,
      },
      host: {
        kernel: os.release(),
        cpus: os.cpus().length,
        mem_total_mib: Math.round((mem.MemTotal ?? 0) / 1048576),
        engine_version: engineInfo.serverVersion,
        storage_driver: engineInfo.storageDriver,
        backing_fs: engineInfo.backingFilesystem,
        node: process.version,
      },
      ksm_knobs_before: knobsBefore as Record<string, string>,
      ksm_knobs_after: knobsAfter as Record<string, string>,
      modes: Object.fromEntries(modes.map((m) => [m.name, { key: m.key, engine: m.engine, description: m.description }])),
      runs,
      workloads: Object.fromEntries(workloads.map((w) => [w.name, summarize(w, opts.modes, points, runs)])),
      notes,
    };
    const files = await writeResults(opts.out, 'density', started, result, (svgName) => markdown(result, svgName ?? ''), svg(result));
    return { result, files };
  } finally {
    bar?.stop();
    // Idempotent: after a signal this waits for the clean-up the handler started instead of racing it.
    await cleanup.run(aborted ? (label) => process.stderr.write(`  removing ${label}\n`) : undefined);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** Recomputes the summaries of a result file from its raw points (after the figures' definitions changed) and rewrites its files. */
export async function renderFrom(file: string): Promise<DensityOutput> {
  const result = JSON.parse(await readFile(file, 'utf8')) as DensityResult;
  const modes = result.options.modes as string[];
  const points = Object.values(result.workloads).flatMap((w) => w.points);
  for (const name of Object.keys(result.workloads)) result.workloads[name] = summarize(workloadOf(name), modes, points, result.runs);
  const files = await writeResultFiles(file.replace(/\.json$/, ''), result, (svgName) => markdown(result, svgName ?? ''), svg(result));
  return { result, files };
}

/** Runs the benchmark (or re-renders a result with --render) and prints the summary table (the CLI's action). */
export async function densityAction(raw: Record<string, string | boolean | undefined>): Promise<void> {
  const { result, files } = raw.render ? await renderFrom(resolve(String(raw.render))) : await runDensity(parseDensityOptions(raw));
  process.stdout.write(`${stdoutSummary(result)}\n`);
  process.stdout.write(`wrote ${files.json}\n      ${files.md}\n      ${files.svg}\n`);
}

// `node dist/bench/density.js [options]` runs it without the hoody CLI (exit codes as the CLI's: 2 = usage).
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const cmd = addDensityOptions(new Command('density').description('hoody density benchmark'))
    .exitOverride()
    .action((o: Record<string, string | boolean | undefined>) => densityAction(o));
  cmd.parseAsync(process.argv).catch((err: Error & { usage?: boolean; exitCode?: number }) => {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(err.usage ? 2 : (err.exitCode ?? 1));
  });
}
