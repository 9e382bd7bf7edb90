/**
 * Shared-shim benchmark (issue 14.1): picks hoody's default HOODY_SHIM_GROUP_SIZE from numbers. On a private engine
 * of its own, started with hoody's shim wrapper (test/support/engine.ts; the main engine is never touched), it runs
 * N idle busybox containers per setting, one setting after the other:
 *
 *   node --no-node-snapshot dist/bench/shims.js [--group-sizes 1,8,16,32] [--containers 64] [--parallel 4]
 *
 * Settings: each group size g (env HOODY_SHIM_GROUP=<run>-g<g>-<k>, groups filled in container order, g per group;
 * g = 1: no env, one runc v2 shim per container, as plain Docker) and `v1` (Docker 20.10's built-in runtime
 * `io.containerd.runtime.v1.linux`: one containerd-shim v1 per container). Per setting:
 * - provisioning: create + start of N containers through dockerode, --parallel at a time (rate, p50/p95);
 * - memory after --settle s, minus the 0-container baseline taken before the setting: host MemTotal − MemAvailable
 *   per container, the same bottom-up with other users' processes taken out (as the density bench), and the shim
 *   processes' PSS and RSS (smaps_rollup);
 * - `docker exec echo hi` (exec create + start + inspect): 50 sequential over the containers, and --exec-rounds
 *   rounds of 16 at once into the members of one group (ungrouped settings: 16 containers, 16 shims), where a
 *   shim's one lock over runc start/exec in containerd 1.6.20 (containerd#8557) shows;
 * - blast radius: kill -9 of one shim (grouped: the one of a full group; v1: a containerd-shim), how many containers
 *   went down and the seconds until all of them run again (restart policy unless-stopped, as hoody's).
 * Everything (containers, the engine, its bridge and directory) is removed at the end, on errors and on SIGINT.
 */
import { readFile, mkdir } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { loadConfig } from '../daemon/config.js';
import { DockerEngine } from '../host/engine.js';
import { BUSYBOX_IMAGE } from '../host/images.js';
import { meminfo } from '../host/metrics.js';
import { SHIM_GROUP_ENV } from '../host/shim-groups.js';
import { type PrivateEngine, startPrivateEngine } from '../test/support/engine.js';
import { othersRunning, runBench } from './harness.js';
import { chartSvg, type Panel } from './ns-chart.js';
import { numberListOption, numberOption } from './options.js';
import { descendants, type ProcInfo, procMemory, processTable, rssBytes } from './procs.js';
import { fmt, mdTable, notesSection, type ResultHeader, runLines } from './results.js';
import { type Dist, dist, median, MIB, percentile, round, runPool, sleep } from './stats.js';

const OPTIONS = {
  'group-sizes': numberListOption([1, 8, 16, 32], 1, 256, 'shim group sizes to compare (1: a shim per container)'),
  containers: numberOption(64, 1, 500, 'idle busybox containers per setting'),
  parallel: numberOption(4, 1, 32, 'creates + starts in flight'),
  settle: numberOption(10, 0, 600, 'seconds to wait before each memory reading'),
  'exec-sequential': numberOption(50, 1, 10_000, 'sequential execs spread over the containers'),
  'exec-concurrent': numberOption(16, 1, 128, 'execs at once into the members of one group'),
  'exec-rounds': numberOption(3, 1, 100, 'rounds of the concurrent execs'),
  'recover-timeout': numberOption(120, 5, 1800, 'seconds to wait for a killed shim’s containers to run again'),
  v1: numberOption(1, 0, 1, 'also measure shim v1 (io.containerd.runtime.v1.linux): 1 yes, 0 no'),
};

const V1_RUNTIME = 'io.containerd.runtime.v1.linux';
const LABEL = 'hoody.bench.shims';

interface Setting {
  /** `g8`, `v1`. */
  name: string;
  /** Members per group (1: no env). */
  size: number;
  runtime: 'runc-v2' | 'shim-v1';
}

interface MemoryFigures {
  /** Medians of three 1 s samples, MiB. */
  used_mib: number;
  /** AnonPages + SUnreclaim + PageTables + KernelStack + Shmem − other users' processes (anon + shmem PSS, page tables). */
  pinned_excl_foreign_mib: number;
}

interface SettingResult {
  setting: string;
  group_size: number;
  runtime: string;
  containers: number;
  failed_starts: number;
  start_retries: number;
  provision: { wall_s: number; rate_per_s: number; create_start_s: Dist & { p95: number | null } };
  memory: {
    baseline: MemoryFigures;
    loaded: MemoryFigures;
    /** The next setting's baseline (or the end's), minus this one's: drift from other users over the setting. */
    baseline_after: MemoryFigures | null;
    used_mib_per_container: number | null;
    pinned_mib_per_container: number | null;
    shim_processes: number;
    shim_pss_mib: number;
    shim_pss_anon_mib: number;
    shim_rss_mib: number;
    shim_pss_mib_per_container: number | null;
    shim_rss_mib_per_container: number | null;
  };
  exec: {
    sequential_ms: Dist;
    concurrent_ms: Dist;
    /** Wall time of one round of concurrent execs (median of the rounds), ms. */
    concurrent_round_ms: number | null;
    concurrent_targets: number;
    concurrent_shims: number;
    errors: number;
  };
  blast: {
    shim_pid: number | null;
    /** Containers the killed shim served (by the process tree before the kill). */
    served: number;
    went_down: number;
    recovered: boolean;
    recovery_s: number | null;
  };
  load_before: number[];
  load_after: number[];
  others: string[];
}

interface ShimsResult extends ResultHeader {
  settings: SettingResult[];
  ksm: { run: string; pages_sharing: number };
  notes: string[];
}

const mib = (bytes: number) => round(bytes / MIB, 2) ?? 0;

/** Shim processes of our private engine (its containerd socket is under the engine's exec root), no `start`/`delete` runs. */
function shimsOf(table: readonly ProcInfo[], engine: PrivateEngine): ProcInfo[] {
  return table.filter(
    (p) => p.comm.startsWith('containerd-shim') && p.cmdline.some((a) => a.startsWith(`${engine.dir}/exec/`)) && !['start', 'delete'].includes(p.cmdline.at(-1) ?? ''),
  );
}

/** Host memory, median of three samples a second apart, with everything not of our engine taken out of the bottom-up figure. */
async function memoryNow(engine: PrivateEngine): Promise<MemoryFigures> {
  const used: number[] = [];
  const pinned: number[] = [];
  for (let i = 0; i < 3; i++) {
    if (i) await sleep(1000);
    const table = await processTable();
    const ours = new Set<number>([process.pid]);
    for (const root of [engine.pid(), ...shimsOf(table, engine).map((p) => p.pid)]) if (root) for (const pid of descendants(table, root)) ours.add(pid);
    let foreign = 0;
    for (const p of table) {
      if (ours.has(p.pid)) continue;
      const m = await procMemory(p.pid);
      foreign += m.pssAnon + m.pssShmem + m.pageTables;
    }
    const mem = await meminfo();
    used.push((mem.MemTotal ?? 0) - (mem.MemAvailable ?? 0));
    pinned.push((mem.AnonPages ?? 0) + (mem.SUnreclaim ?? 0) + (mem.PageTables ?? 0) + (mem.KernelStack ?? 0) + (mem.Shmem ?? 0) - foreign);
  }
  return { used_mib: mib(median(used) ?? 0), pinned_excl_foreign_mib: mib(median(pinned) ?? 0) };
}

/** What a start says when the group's shim it was handed went away under it (as hoody's placement retries). */
const SHIM_RACE = /ttrpc: closed|shim.*(disconnected|exited|closed)|connection refused|transport is closing|failed to connect/i;

/** `docker exec <id> echo hi` through the engine API, to the end of its output and its exit code; ms. */
async function execOnce(docker: Docker, id: string): Promise<number> {
  const t0 = performance.now();
  const ex = await docker.getContainer(id).exec({ Cmd: ['echo', 'hi'], AttachStdout: true, AttachStderr: true });
  const stream = await ex.start({ hijack: true, stdin: false });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    stream.on('data', (b: Buffer) => {
      out += b.toString('latin1');
    });
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', reject);
  });
  const info = await ex.inspect();
  const ms = performance.now() - t0;
  if (info.ExitCode !== 0 || !out.includes('hi')) throw new Error(`exec in ${id.slice(0, 12)}: exit ${info.ExitCode}, output ${JSON.stringify(out)}`);
  return ms;
}

/** The shim pid serving each container: its init's parent. */
async function shimOfContainers(docker: Docker, ids: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await runPool(ids, 8, async (id) => {
    const pid = (await docker.getContainer(id).inspect()).State.Pid;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (stat) out.set(id, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
  });
  return out;
}

runBench(
  {
    name: 'shims',
    description: 'shared containerd shims: memory, provisioning, exec latency and blast radius per shim group size, on a private engine',
    options: OPTIONS,
    budget: { default: 1500, min: 60, max: 14_400 },
  },
  async (b) => {
    const { o, s } = b;
    const settings: Setting[] = [...new Set(o['group-sizes'])].map((g) => ({ name: `g${g}`, size: g, runtime: 'runc-v2' as const }));
    if (o.v1) settings.push({ name: 'v1', size: 1, runtime: 'shim-v1' });
    const n = o.containers;

    const config = loadConfig({});
    const dir = join(config.stateDir, 'pool', 'bench', `shims-${b.runId}`);
    await mkdir(dir, { recursive: true });
    s.log(`starting a private engine with the shim wrapper in ${dir}`);
    // The engine's destroy removes the directory; until it exists, nothing else to undo.
    const engine = await startPrivateEngine('overlay2', { shims: true, dir });
    s.cleanup.push(`private engine ${engine.socket}`, async () => {
      await engine.destroy();
      // A shim outliving its containerd (it is ours: it names our engine's directory).
      for (const p of shimsOf(await processTable(), engine)) process.kill(p.pid, 'SIGKILL');
    });
    const docker = new DockerEngine(engine.socket).docker;
    const info = (await docker.info()) as { Runtimes?: Record<string, unknown> };
    if (o.v1 && !info.Runtimes?.[V1_RUNTIME]) throw new Error(`the private engine lists no runtime ${V1_RUNTIME}: ${Object.keys(info.Runtimes ?? {}).join(', ')}`);

    const ours = async () => (await docker.listContainers({ all: true, filters: { label: [`${LABEL}=${b.runId}`] } })).map((c) => c.Id);
    const removeAll = async () => {
      // One container per call, a few at a time: dockerd 20.10 can deadlock on many removals at once (moby#46661).
      await runPool(await ours(), 3, async (id) => {
        await docker.getContainer(id).remove({ force: true }).catch(() => undefined);
      });
    };
    s.cleanup.push('the benchmark containers', removeAll);

    const results: SettingResult[] = [];
    s.log(`settling ${o.settle} s for the first baseline`);
    await s.nap(o.settle * 1000);
    let baseline = await memoryNow(engine);

    for (const st of settings) {
      s.check();
      const others = new Set(await othersRunning());
      const loadBefore = loadavg().map((l) => round(l, 2) ?? 0);
      s.log(`${st.name}: creating ${n} containers, ${o.parallel} at a time`);
      const groupOf = (i: number) => (st.size > 1 ? `sb${b.runId.slice(-8)}-${st.name}-${Math.floor(i / st.size)}` : null);
      const ids: (string | null)[] = Array.from({ length: n }, () => null);
      const times: number[] = [];
      let failed = 0;
      let retries = 0;
      const t0 = performance.now();
      await runPool(
        Array.from({ length: n }, (_, i) => i),
        o.parallel,
        async (i) => {
          const group = groupOf(i);
          const c0 = performance.now();
          try {
            const c = await docker.createContainer({
              name: `shims-${b.runId}-${st.name}-${i}`,
              Image: BUSYBOX_IMAGE,
              Env: group ? [`${SHIM_GROUP_ENV}=${group}`] : [],
              Labels: { [LABEL]: b.runId },
              HostConfig: { RestartPolicy: { Name: 'unless-stopped' }, ...(st.runtime === 'shim-v1' ? { Runtime: V1_RUNTIME } : {}) },
            });
            ids[i] = c.id;
            for (let attempt = 1; ; attempt++) {
              try {
                await c.start();
                break;
              } catch (err) {
                if (attempt >= 3 || !SHIM_RACE.test(String((err as Error).message))) throw err;
                retries++;
                await sleep(200 * attempt);
              }
            }
            times.push((performance.now() - c0) / 1000);
          } catch (err) {
            failed++;
            ids[i] = null;
            s.log(`  ${st.name} #${i}: ${(err as Error).message.slice(0, 200)}`);
          }
        },
        s.stopped,
      );
      const wall = (performance.now() - t0) / 1000;
      s.check();
      const running = ids.filter((id): id is string => !!id);
      s.log(`${st.name}: ${times.length} started in ${wall.toFixed(1)} s (${failed} failed, ${retries} retries); settling ${o.settle} s`);

      await s.nap(o.settle * 1000);
      const loaded = await memoryNow(engine);
      const table = await processTable();
      const shims = shimsOf(table, engine);
      let pss = 0;
      let pssAnon = 0;
      let rss = 0;
      for (const p of shims) {
        const m = await procMemory(p.pid);
        pss += m.pss;
        pssAnon += m.pssAnon;
        rss += await rssBytes(p.pid);
      }
      const ok = times.length;
      const per = (v: number) => (ok ? round(v / ok, 3) : null);
      s.log(`${st.name}: ${shims.length} shims, PSS ${mib(pss)} MiB, host used +${round(loaded.used_mib - baseline.used_mib, 1)} MiB`);

      // Sequential execs, spread over the containers.
      const seq: number[] = [];
      let execErrors = 0;
      for (let k = 0; k < o['exec-sequential'] && running.length; k++) {
        s.check();
        const id = running[Math.floor((k * running.length) / o['exec-sequential']) % running.length]!;
        try {
          seq.push(await execOnce(docker, id));
        } catch (err) {
          execErrors++;
          s.log(`  exec: ${(err as Error).message.slice(0, 200)}`);
        }
      }
      // Concurrent execs into one group's members (ungrouped: as many distinct containers, each its own shim).
      const members = (st.size > 1 ? ids.slice(0, Math.min(st.size, n)) : ids.slice(0, Math.min(o['exec-concurrent'], n))).filter((id): id is string => !!id);
      const shimOf = await shimOfContainers(docker, members);
      const conc: number[] = [];
      const rounds: number[] = [];
      for (let r = 0; r < o['exec-rounds'] && members.length; r++) {
        s.check();
        const r0 = performance.now();
        await Promise.all(
          Array.from({ length: o['exec-concurrent'] }, async (_, k) => {
            try {
              conc.push(await execOnce(docker, members[k % members.length]!));
            } catch (err) {
              execErrors++;
              s.log(`  concurrent exec: ${(err as Error).message.slice(0, 200)}`);
            }
          }),
        );
        rounds.push(performance.now() - r0);
      }
      const seqD = dist(seq, 1);
      const concD = dist(conc, 1);
      s.log(`${st.name}: exec sequential p50 ${seqD.p50} ms; ${o['exec-concurrent']} at once into ${members.length} containers / ${new Set(shimOf.values()).size} shims: p50 ${concD.p50} p99 ${concD.p99} ms`);

      // Blast radius: the shim of the first group (full when n >= size), or of the first container.
      s.check();
      const victimMembers = st.size > 1 ? ids.slice(0, Math.min(st.size, n)).filter((id): id is string => !!id) : running.slice(0, 1);
      const victim = victimMembers.length ? (await shimOfContainers(docker, victimMembers.slice(0, 1))).get(victimMembers[0]!) ?? null : null;
      const before = await shimOfContainers(docker, running);
      const served = [...before.values()].filter((pid) => pid === victim).length;
      const startedAt = new Map<string, string>();
      await runPool(running, 8, async (id) => {
        startedAt.set(id, (await docker.getContainer(id).inspect()).State.StartedAt);
      });
      let wentDown = 0;
      let recovered = false;
      let recoveryS: number | null = null;
      if (victim) {
        s.log(`${st.name}: kill -9 shim ${victim} (serves ${served})`);
        const k0 = performance.now();
        process.kill(victim, 'SIGKILL');
        const deadline = Date.now() + o['recover-timeout'] * 1000;
        const down = new Set<string>();
        const state = new Map<string, { running: boolean; restarted: boolean }>();
        const poll = async (which: readonly string[]) => {
          await runPool(which, 8, async (id) => {
            const st2 = (await docker.getContainer(id).inspect()).State;
            const restarted = st2.StartedAt !== startedAt.get(id);
            if (!st2.Running || restarted) down.add(id);
            state.set(id, { running: st2.Running && !st2.Restarting, restarted });
          });
        };
        const expected = new Set(running.filter((id) => before.get(id) === victim));
        for (;;) {
          await poll([...new Set([...expected, ...down])]);
          const back = [...expected, ...down].every((id) => state.get(id)?.running && state.get(id)?.restarted);
          if (back) {
            // Anyone else hit too (went down and back meanwhile, or not running now)?
            await poll(running);
            if ([...down].every((id) => state.get(id)?.running && state.get(id)?.restarted)) {
              recovered = true;
              recoveryS = round((performance.now() - k0) / 1000, 2);
              break;
            }
          }
          if (Date.now() > deadline || s.stopped()) break;
          await sleep(100);
        }
        wentDown = down.size;
        s.log(`${st.name}: ${wentDown} went down; ${recovered ? `all back in ${recoveryS} s` : 'not all back'}`);
      }

      results.push({
        setting: st.name,
        group_size: st.size,
        runtime: st.runtime === 'shim-v1' ? V1_RUNTIME : 'io.containerd.runc.v2',
        containers: ok,
        failed_starts: failed,
        start_retries: retries,
        provision: { wall_s: round(wall, 2) ?? 0, rate_per_s: round(ok / wall, 2) ?? 0, create_start_s: { ...dist(times, 3), p95: round(percentile(times, 95), 3) } },
        memory: {
          baseline,
          loaded,
          baseline_after: null,
          used_mib_per_container: per(loaded.used_mib - baseline.used_mib),
          pinned_mib_per_container: per(loaded.pinned_excl_foreign_mib - baseline.pinned_excl_foreign_mib),
          shim_processes: shims.length,
          shim_pss_mib: mib(pss),
          shim_pss_anon_mib: mib(pssAnon),
          shim_rss_mib: mib(rss),
          shim_pss_mib_per_container: per(mib(pss)),
          shim_rss_mib_per_container: per(mib(rss)),
        },
        exec: {
          sequential_ms: seqD,
          concurrent_ms: concD,
          concurrent_round_ms: round(median(rounds), 1),
          concurrent_targets: members.length,
          concurrent_shims: new Set(shimOf.values()).size,
          errors: execErrors,
        },
        blast: { shim_pid: victim, served, went_down: wentDown, recovered, recovery_s: recoveryS },
        load_before: loadBefore,
        load_after: loadavg().map((l) => round(l, 2) ?? 0),
        others: [...new Set([...others, ...(await othersRunning())])],
      });

      s.log(`${st.name}: removing ${n} containers`);
      await removeAll();
      const gone = Date.now() + 60_000;
      while (shimsOf(await processTable(), engine).length && Date.now() < gone) await sleep(250);
      await s.nap(o.settle * 1000);
      baseline = await memoryNow(engine);
      results.at(-1)!.memory.baseline_after = baseline;
    }

    const ksmRun = (await readFile('/sys/kernel/mm/ksm/run', 'utf8').catch(() => '')).trim();
    const ksmSharing = Number((await readFile('/sys/kernel/mm/ksm/pages_sharing', 'utf8').catch(() => '0')).trim());
    const notes = [...b.notes];
    const disturbed = results.filter((r) => r.others.length);
    if (disturbed.length)
      notes.push(`Other benchmark or test runs were on the box during ${disturbed.map((r) => r.setting).join(', ')} (${[...new Set(disturbed.flatMap((r) => r.others))].slice(0, 3).join(' | ')}): timings and host memory are skewed by their load.`);
    for (const r of results) {
      const drift = r.memory.baseline_after ? round(r.memory.baseline_after.used_mib - r.memory.baseline.used_mib, 1) : null;
      if (drift !== null && Math.abs(drift) > 50) notes.push(`${r.setting}: host used drifted ${drift} MiB between the baselines before and after it (other users): its host-used figure is unreliable; read PSS and bottom-up.`);
    }
    const result: ShimsResult = {
      ...(await b.header({
        group_sizes: o['group-sizes'],
        v1: o.v1,
        containers: n,
        parallel: o.parallel,
        settle: o.settle,
        exec_sequential: o['exec-sequential'],
        exec_concurrent: o['exec-concurrent'],
        exec_rounds: o['exec-rounds'],
        recover_timeout: o['recover-timeout'],
      })),
      settings: results,
      ksm: { run: ksmRun, pages_sharing: ksmSharing },
      notes,
    };
    await b.write(result, (svg) => markdown(result, svg), chart(result));
  },
);

function markdown(r: ShimsResult, svg: string | null): string {
  const [run, opts] = runLines(r);
  const rows = r.settings.map((x) => [
    x.setting === 'v1' ? 'shim v1' : x.group_size === 1 ? '1 (no groups)' : String(x.group_size),
    `${x.containers}${x.failed_starts ? ` (${x.failed_starts} failed)` : ''}`,
    x.memory.shim_processes,
    fmt(x.memory.used_mib_per_container),
    fmt(x.memory.pinned_mib_per_container),
    `${fmt(x.memory.shim_pss_mib, 1)} / ${fmt(x.memory.shim_pss_mib_per_container)}`,
    `${fmt(x.memory.shim_rss_mib, 1)} / ${fmt(x.memory.shim_rss_mib_per_container)}`,
    fmt(x.provision.rate_per_s),
    `${fmt(x.provision.create_start_s.p50)} / ${fmt(x.provision.create_start_s.p95)}`,
    `${fmt(x.exec.sequential_ms.p50, 0)} / ${fmt(x.exec.sequential_ms.p99, 0)}`,
    `${fmt(x.exec.concurrent_ms.p50, 0)} / ${fmt(x.exec.concurrent_ms.p99, 0)} (${x.exec.concurrent_targets} ctr, ${x.exec.concurrent_shims} shim${x.exec.concurrent_shims === 1 ? '' : 's'})`,
    `${x.blast.went_down} / ${x.blast.recovered ? fmt(x.blast.recovery_s, 1) : 'not back'}`,
  ]);
  return [
    '# Shared containerd shims: group size',
    '',
    run,
    `${opts} KSM run=${r.ksm.run}, pages_sharing ${r.ksm.pages_sharing}.`,
    '',
    mdTable(
      [
        'group size',
        'containers',
        'shims',
        'host used MiB/ctr',
        'bottom-up MiB/ctr',
        'shim PSS MiB total / per ctr',
        'shim RSS MiB total / per ctr',
        'provisioning ctr/s',
        'create+start s p50 / p95',
        'exec sequential ms p50 / p99',
        `exec ${r.options.exec_concurrent} at once, one group, ms p50 / p99`,
        'kill -9 one shim: down / s to all back',
      ],
      rows,
    ),
    '',
    'Host used: MemTotal − MemAvailable after the settle minus the baseline before the setting (median of three 1 s samples); bottom-up: AnonPages + SUnreclaim + PageTables + KernelStack + Shmem with every process not of the private engine taken out (less noisy on a shared box). Shim RSS counts the shared binary once per process; PSS splits it.',
    '',
    ...(svg ? [`![chart](${svg})`, ''] : []),
    '| setting | load avg before → after | baseline used MiB before → after | exec errors | start retries |',
    '|---|---|---|---|---|',
    ...r.settings.map(
      (x) =>
        `| ${x.setting} | ${x.load_before[0]} → ${x.load_after[0]} | ${fmt(x.memory.baseline.used_mib, 0)} → ${fmt(x.memory.baseline_after?.used_mib, 0)} | ${x.exec.errors} | ${x.start_retries} |`,
    ),
    '',
    ...notesSection(r.notes),
  ].join('\n');
}

function chart(r: ShimsResult): string {
  const label = (x: SettingResult) => (x.setting === 'v1' ? 'shim v1' : `size ${x.group_size}`);
  const panels: Panel[] = [
    {
      kind: 'bar',
      title: 'Memory per container (MiB)',
      yLabel: 'MiB',
      groups: r.settings.map((x) => ({
        label: label(x),
        values: [
          { name: 'host used', value: x.memory.used_mib_per_container },
          { name: 'bottom-up', value: x.memory.pinned_mib_per_container },
          { name: 'shim PSS', value: x.memory.shim_pss_mib_per_container },
        ],
      })),
    },
    {
      kind: 'bar',
      title: 'docker exec echo hi (ms)',
      yLabel: 'ms',
      groups: r.settings.map((x) => ({
        label: label(x),
        values: [
          { name: 'sequential p50', value: x.exec.sequential_ms.p50 },
          { name: 'one group at once p50', value: x.exec.concurrent_ms.p50 },
          { name: 'one group at once p99', value: x.exec.concurrent_ms.p99 },
        ],
      })),
    },
    {
      kind: 'bar',
      title: 'Provisioning and blast radius',
      yLabel: 'containers/s · containers · s',
      groups: r.settings.map((x) => ({
        label: label(x),
        values: [
          { name: 'containers/s', value: x.provision.rate_per_s },
          { name: 'down after kill -9 of a shim', value: x.blast.went_down },
          { name: 's until all back', value: x.blast.recovery_s },
        ],
      })),
    },
  ];
  return chartSvg(panels, `hoody bench shims ${r.run_id}: ${r.options.containers} idle busybox containers per setting`, 3);
}
