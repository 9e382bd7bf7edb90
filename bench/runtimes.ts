/**
 * Exec runtimes benchmark: the three kinds of exec script side by side in one run, beside a plain route of the
 * same container API on the same listener as the ceiling (bench/exec.ts explains why that route is the ceiling).
 *
 *   node --no-node-snapshot dist/bench/runtimes.js [--cold 20] [--warm 500] [--out bench/results]
 *
 * Kinds (each script answers `{ ok: true }`):
 * - isolate: `return { ok: true };` (default runtime: a fresh V8 context in the daemon's exec worker per request);
 * - bun: `// @runtime bun` + the same body (a fresh Bun process in the container per request);
 * - persistent: `// @runtime bun`, `// @mode persistent`, `export default { fetch() … }` (one long-lived Bun
 *   process per script; the first request starts it).
 *
 * Phases, all sequential on one keep-alive connection, in one container of the `hoody/base` image (Bun needs glibc):
 * - first: the very first run of each kind (isolate: starts the exec worker);
 * - cold: N distinct scripts per kind, each written then run once, kinds interleaved (persistent: a new process per
 *   script, `@idle 2s` so they go away before the memory phase);
 * - warm: the same script per kind again and again, in blocks of 100 interleaved with the ceiling, order rotated
 *   every block; p50/p90/p99/max and the ratio to the ceiling's p50; CPU per request of the daemon's process tree
 *   (hoodyd + exec worker) and of the container's cgroup (the Bun processes), from /proc and cpuacct;
 * - memory: the exec worker's RSS after the first run, after cold and after warm; a serverless Bun process's RSS
 *   after its run (the exec log's memoryBytes); the persistent process's RSS as it reports it (`GET /v1/stats`)
 *   and its RSS, PSS and anonymous PSS read on the host (PSS splits Bun's binary, shared page cache, among users).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { table } from '../daemon/cli/format.js';
import { loadConfig } from '../daemon/config.js';
import { DockerEngine } from '../host/engine.js';
import { BASE_IMAGE, buildBaseImage } from '../host/images.js';
import { startBenchDaemon } from './daemon.js';
import { runBench, othersRunning } from './harness.js';
import { KeepAliveClient } from './keepalive.js';
import { chartSvg } from './ns-chart.js';
import { numberOption } from './options.js';
import { CLK_TCK, descendants, processTable, rssBytes, treeTicks } from './procs.js';
import { fmt, mdTable, notesSection, type ResultHeader, runLines } from './results.js';
import { type Dist, dist, MIB, round } from './stats.js';

const OPTIONS = {
  cold: numberOption(20, 1, 200, 'new scripts per kind, each written then run once'),
  warm: numberOption(500, 10, 100_000, 'sequential warm requests per kind'),
};

type Kind = 'isolate' | 'bun' | 'persistent' | 'ceiling';
type Script = Exclude<Kind, 'ceiling'>;
const SCRIPTS: Script[] = ['isolate', 'bun', 'persistent'];
const KINDS: Kind[] = [...SCRIPTS, 'ceiling'];
const LABEL: Record<Kind, string> = { isolate: 'isolate serverless', bun: 'Bun serverless', persistent: 'Bun persistent', ceiling: 'ceiling (GET /api/v1/proxy/routes)' };
const WARM_PATH: Record<Script, string> = { isolate: 'w-isolate', bun: 'w-bun', persistent: 'w-persistent' };

function source(k: Script, body: string, idle = '10m'): string {
  if (k === 'isolate') return `return ${body};\n`;
  if (k === 'bun') return `// @runtime bun\nreturn ${body};\n`;
  return `// @runtime bun\n// @mode persistent\n// @idle ${idle}\nexport default { fetch() { return Response.json(${body}); } };\n`;
}

interface KindResult {
  kind: Kind;
  label: string;
  first_ms: number | null;
  cold_ms: Dist | null;
  warm_ms: Dist;
  /** warm p50 / ceiling's warm p50. */
  warm_p50_ratio: number | null;
  /** utime+stime of hoodyd and its descendants (the exec worker) per warm request (µs). */
  daemon_cpu_us: number | null;
  /** CPU of the container's cgroup (the Bun processes) per warm request (µs). */
  container_cpu_us: number | null;
  /** The script's own CPU per warm run as the exec log reports it (ms). */
  script_cpu_ms: Dist | null;
}

interface PersistentMemory {
  script: string;
  ns_pid: number | null;
  host_pid: number | null;
  reported_rss_mib: number | null;
  host_rss_mib: number | null;
  pss_mib: number | null;
  /** The process's own memory. */
  pss_anon_mib: number | null;
  /** Page cache it maps (the Bun binary, libraries), split among every process that maps the same pages. */
  pss_file_mib: number | null;
}

export interface RuntimesResult extends ResultHeader {
  kinds: KindResult[];
  memory: {
    exec_worker_rss_mib: { after_first_run: number | null; after_cold: number | null; after_warm: number | null };
    daemon_rss_mib: { start: number | null; end: number | null };
    /** A serverless Bun process's RSS after its run (exec log memoryBytes), warm runs. */
    bun_serverless_rss_mib: Dist;
    bun_persistent: PersistentMemory | null;
  };
  notes: string[];
}

const mib = (b: number | null | undefined) => (b ? round(b / MIB, 1) : null);

/** The pid of hoodyd's exec worker (a forked child running exec/worker.js), or null. */
async function execWorkerPid(daemonPid: number): Promise<number | null> {
  const t = await processTable();
  const tree = new Set(descendants(t, daemonPid));
  return t.find((p) => tree.has(p.pid) && p.cmdline.some((a) => /exec\/worker\.(js|ts)$/.test(a)))?.pid ?? null;
}

/** A line of /proc/<pid>/cgroup for one controller (v1), or the unified one. */
async function cgroupOf(pid: number, controller: string): Promise<string | null> {
  const lines = (await readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '')).split('\n');
  const hit = lines.map((l) => l.split(':')).find(([, c]) => c?.split(',').includes(controller)) ?? lines.map((l) => l.split(':')).find(([, c]) => c === '');
  return hit ? hit.slice(2).join(':') : null;
}

/** Nanoseconds of CPU used by the cgroup of a process (cgroup v1 cpuacct, or v2 cpu.stat). */
async function cgroupCpuNs(pid: number): Promise<number | null> {
  const path = await cgroupOf(pid, 'cpuacct');
  if (path === null) return null;
  const v1 = await readFile(`/sys/fs/cgroup/cpuacct${path}/cpuacct.usage`, 'utf8').catch(() => '');
  if (v1.trim()) return Number(v1.trim());
  const v2 = await readFile(`/sys/fs/cgroup${path}/cpu.stat`, 'utf8').catch(() => '');
  const us = /^usage_usec (\d+)/m.exec(v2)?.[1];
  return us ? Number(us) * 1000 : null;
}

/** The host pid of a container's bun-runner process with this pid in the container (NSpid), same memory cgroup as its init. */
async function hostPidOf(nsPid: number, initPid: number): Promise<number | null> {
  const want = await cgroupOf(initPid, 'memory');
  for (const p of await processTable()) {
    if (!p.cmdline.some((a) => a.includes('bun-runner'))) continue;
    const ns = /^NSpid:\s+(.*)$/m.exec(await readFile(`/proc/${p.pid}/status`, 'utf8').catch(() => ''))?.[1]?.trim().split(/\s+/);
    if (Number(ns?.at(-1)) === nsPid && (await cgroupOf(p.pid, 'memory')) === want) return p.pid;
  }
  return null;
}

/** Rss, Pss, Pss_Anon and Pss_File of a process from smaps_rollup (bytes; null when it is gone). */
async function smapsRollup(pid: number): Promise<Record<'Rss' | 'Pss' | 'Pss_Anon' | 'Pss_File', number> | null> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
  if (!text) return null;
  const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { Rss: kb('Rss'), Pss: kb('Pss'), Pss_Anon: kb('Pss_Anon'), Pss_File: kb('Pss_File') };
}

interface LogRow {
  id: number;
  script: string;
  time: string;
  status: number;
  cpuMs: number;
  runtime: string;
  mode: string;
  memoryBytes: number | null;
}

runBench({ name: 'runtimes', description: 'exec runtimes side by side: isolate, Bun serverless, Bun persistent', options: OPTIONS, budget: { default: 1800, min: 60, max: 6 * 3600 } }, async ({ o, s, started, runId, prepareHost, header, write, notes }) => {
  const { cold: coldN, warm: warmN } = o;
  const others0 = await othersRunning();
  if (others0.length) s.log(`warning: another benchmark or test run is on the box (${others0[0]}); figures will be skewed`);
  const host = await prepareHost();
  const engine = new DockerEngine(host.dockerSocket);
  if (!(await engine.imageExists(BASE_IMAGE))) {
    s.log(`building ${BASE_IMAGE} (debootstrap, about a minute): Bun needs glibc`);
    await buildBaseImage(engine.docker, join(loadConfig({}).stateDir, 'build'));
  }
  s.log('starting hoodyd and one hoody/base container');
  const d = await startBenchDaemon({ parentDir: host.benchDir, image: host.image, dockerSocket: host.dockerSocket, env: { HOODY_LOG_LEVEL: o['log-level'] } });
  s.cleanup.push(`hoodyd ${d.pid} and its container`, () => d.destroy());
  const name = 'rt';
  const token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name, image: BASE_IMAGE })).token;
  const engineId = (await d.client.call<{ engineId: string }>('GET', `/v1/containers/${name}`)).engineId;
  const initPid = (await engine.inspect(engineId))?.pid ?? 0;
  const http = new KeepAliveClient(d.ports.http, 1);
  s.cleanup.push('HTTP client', async () => http.close());
  const apiHost = `api.${name}.hoody.localhost`;
  const execHost = `exec.${name}.hoody.localhost`;
  const put = (path: string, src: string) => http.ok('PUT', apiHost, `/api/v1/scripts/${path}.ts?token=${token}`, src, 'text/plain');
  const get = async (k: Kind, path = k === 'ceiling' ? '' : WARM_PATH[k], expect?: string) => {
    const r = k === 'ceiling' ? await http.call('GET', apiHost, `/api/v1/proxy/routes?token=${token}`) : await http.call('GET', execHost, `/scripts/${path}?token=${token}`);
    if (r.status !== 200 || (expect !== undefined && r.text !== expect)) throw new Error(`${k} ${path}: ${r.status} ${r.text.slice(0, 300)}`);
    return r.ms;
  };
  const workerRss = async () => mib(await rssBytes((await execWorkerPid(d.pid)) ?? 0));
  const daemonRss0 = mib(await rssBytes(d.pid));

  s.log('first run of each kind');
  const first: Partial<Record<Kind, number>> = {};
  for (const k of SCRIPTS) {
    await put(WARM_PATH[k], source(k, '{ ok: true }'));
    first[k] = await get(k, WARM_PATH[k], '{"ok":true}');
  }
  first.ceiling = await get('ceiling', '', '[]');
  const workerAfterFirst = await workerRss();

  s.log(`cold: ${coldN} new scripts per kind, each written then run once`);
  const cold: Record<Script, number[]> = { isolate: [], bun: [], persistent: [] };
  for (let i = 0; i < coldN; i++) {
    for (const k of SCRIPTS) {
      s.check();
      const body = `{ ok: true, n: ${i}, run: '${runId}' }`;
      await put(`cold/${k}-${i}`, source(k, body, '2s'));
      cold[k].push(await get(k, `cold/${k}-${i}`, `{"ok":true,"n":${i},"run":"${runId}"}`));
    }
  }
  const workerAfterCold = await workerRss();

  s.log(`warm: ${warmN} sequential requests per kind, blocks of 100, order rotated`);
  for (const k of KINDS) for (let i = 0; i < 20; i++) await get(k);
  const warm: Record<Kind, number[]> = { isolate: [], bun: [], persistent: [], ceiling: [] };
  const ticks: Record<Kind, number> = { isolate: 0, bun: 0, persistent: 0, ceiling: 0 };
  const cgNs: Record<Kind, number | null> = { isolate: 0, bun: 0, persistent: 0, ceiling: 0 };
  let disturbed = 0;
  let blocks = 0;
  const blockN = Math.min(100, warmN);
  for (let done = 0; done < warmN; done += blockN, blocks++) {
    const n = Math.min(blockN, warmN - done);
    const shift = blocks % KINDS.length;
    for (const k of [...KINDS.slice(shift), ...KINDS.slice(0, shift)]) {
      s.check();
      const t0 = await treeTicks(d.pid);
      const c0 = await cgroupCpuNs(initPid);
      for (let i = 0; i < n; i++) warm[k].push(await get(k));
      const c1 = await cgroupCpuNs(initPid);
      ticks[k] += (await treeTicks(d.pid)) - t0;
      cgNs[k] = c0 === null || c1 === null || cgNs[k] === null ? null : cgNs[k]! + (c1 - c0);
    }
    if ((await othersRunning()).length) disturbed++;
  }
  const workerAfterWarm = await workerRss();
  if (disturbed) notes.push(`Another benchmark or test run was on the box during ${disturbed} of ${blocks} warm rounds: those figures are skewed by its load.`);

  // The exec log: every row since the start (pages of 1000 by time; the same time twice is deduplicated by id).
  const rows = new Map<number, LogRow>();
  for (let since = started.toISOString(); ; ) {
    const page = JSON.parse((await http.ok('GET', apiHost, `/api/v1/logs?source=exec&limit=1000&since=${encodeURIComponent(since)}&token=${token}`)).text) as LogRow[];
    const before = rows.size;
    for (const r of page) rows.set(r.id, r);
    if (page.length < 1000 || rows.size === before) break;
    since = page.at(-1)!.time;
  }
  const logOf = (k: Script) => [...rows.values()].filter((r) => r.script === `${WARM_PATH[k]}.ts`);

  s.log('memory: waiting for the cold persistent scripts to stop (@idle 2s)');
  type Stats = { containers: { name: string; persistent: { script: string; pid: number | null; rssBytes: number | null }[] }[] };
  const persistentNow = async () => (await d.client.call<Stats>('GET', '/v1/stats')).containers.find((c) => c.name === name)?.persistent ?? [];
  let running = await persistentNow();
  for (let t = 0; t < 60 && running.some((p) => p.script !== `${WARM_PATH.persistent}.ts`); t++) {
    await s.nap(500);
    running = await persistentNow();
  }
  if (running.length !== 1) notes.push(`${running.length} persistent scripts were running at the memory phase (expected 1): ${running.map((p) => p.script).join(', ')}.`);
  let bunPersistent: PersistentMemory | null = null;
  const p = running.find((x) => x.script === `${WARM_PATH.persistent}.ts`);
  if (p) {
    const hostPid = p.pid ? await hostPidOf(p.pid, initPid) : null;
    const m = hostPid ? await smapsRollup(hostPid) : null;
    if (!hostPid) notes.push(`The persistent process (pid ${p.pid} in the container) was not found on the host: no host RSS/PSS.`);
    bunPersistent = {
      script: p.script,
      ns_pid: p.pid,
      host_pid: hostPid,
      reported_rss_mib: mib(p.rssBytes),
      host_rss_mib: mib(m?.Rss),
      pss_mib: mib(m?.Pss),
      pss_anon_mib: mib(m?.Pss_Anon),
      pss_file_mib: mib(m?.Pss_File),
    };
    const bunProcs = (await processTable()).filter((x) => x.cmdline.some((a) => a.includes('bun-runner'))).length;
    notes.push(`${bunProcs} bun-runner process(es) on the host at the memory phase (any container): the Bun binary's page-cache pages are split among them in PSS; with one alone, PSS is close to RSS and anon PSS is the process's own memory.`);
  }

  const ceilP50 = dist(warm.ceiling).p50;
  const kinds: KindResult[] = KINDS.map((k) => {
    const w = dist(warm[k]);
    const log = k === 'ceiling' ? [] : logOf(k);
    return {
      kind: k,
      label: LABEL[k],
      first_ms: round(first[k], 2),
      cold_ms: k === 'ceiling' ? null : dist(cold[k]),
      warm_ms: w,
      warm_p50_ratio: w.p50 !== null && ceilP50 ? round(w.p50 / ceilP50, 2) : null,
      daemon_cpu_us: warm[k].length ? round(((ticks[k] / CLK_TCK) * 1e6) / warm[k].length, 0) : null,
      container_cpu_us: warm[k].length && cgNs[k] !== null ? round(cgNs[k]! / 1000 / warm[k].length, 0) : null,
      script_cpu_ms: log.length ? dist(log.map((r) => r.cpuMs)) : null,
    };
  });
  const bunRss = logOf('bun').map((r) => r.memoryBytes ?? 0).filter((b) => b > 0).map((b) => b / MIB);
  if (logOf('bun').length < warmN) notes.push(`The exec log held ${logOf('bun').length} rows of the warm Bun serverless script (of ${warmN + 21}).`);
  notes.push('CPU per request comes from 10 ms ticks summed per block (daemon tree) and the container cgroup\'s cpuacct; the Bun processes run in the container\'s cgroup, not in the daemon\'s tree.');
  const result: RuntimesResult = {
    ...(await header({ cold: coldN, warm: warmN, image: BASE_IMAGE, log_level: o['log-level'] })),
    kinds,
    memory: {
      exec_worker_rss_mib: { after_first_run: workerAfterFirst, after_cold: workerAfterCold, after_warm: workerAfterWarm },
      daemon_rss_mib: { start: daemonRss0, end: mib(await rssBytes(d.pid)) },
      bun_serverless_rss_mib: dist(bunRss, 1),
      bun_persistent: bunPersistent,
    },
    notes,
  };
  process.stdout.write(`\n${table(LATENCY_HEADER, latencyRows(result))}\n\n${table(['memory', 'MiB'], memoryRows(result))}\n`);
  await write(result, (svgName) => markdown(result, svgName), svg(result));
  s.log('removing the container and the daemon');
});

const LATENCY_HEADER = ['kind', 'first ms', 'cold p50/p90/max ms', 'warm n', 'warm p50', 'p90', 'p99', 'max', 'p50 / ceiling', 'daemon CPU µs/req', 'container CPU µs/req'];

function latencyRows(r: RuntimesResult): (string | number)[][] {
  return r.kinds.map((k) => [
    k.label,
    fmt(k.first_ms),
    k.cold_ms ? `${fmt(k.cold_ms.p50)} / ${fmt(k.cold_ms.p90)} / ${fmt(k.cold_ms.max)}` : '',
    k.warm_ms.n,
    fmt(k.warm_ms.p50),
    fmt(k.warm_ms.p90),
    fmt(k.warm_ms.p99),
    fmt(k.warm_ms.max),
    fmt(k.warm_p50_ratio),
    fmt(k.daemon_cpu_us, 0),
    fmt(k.container_cpu_us, 0),
  ]);
}

function memoryRows(r: RuntimesResult): (string | number)[][] {
  const m = r.memory;
  const w = m.exec_worker_rss_mib;
  const p = m.bun_persistent;
  return [
    ['exec worker RSS after first run / after cold / after warm (isolates)', `${fmt(w.after_first_run, 1)} / ${fmt(w.after_cold, 1)} / ${fmt(w.after_warm, 1)}`],
    ['hoodyd RSS at start / end', `${fmt(m.daemon_rss_mib.start, 1)} / ${fmt(m.daemon_rss_mib.end, 1)}`],
    [`Bun serverless process RSS after its run (warm-up + warm), p50 / max (n=${m.bun_serverless_rss_mib.n})`, `${fmt(m.bun_serverless_rss_mib.p50, 1)} / ${fmt(m.bun_serverless_rss_mib.max, 1)}`],
    ['Bun persistent RSS as reported (GET /v1/stats)', fmt(p?.reported_rss_mib, 1)],
    ['Bun persistent on the host: RSS / PSS (anon + file)', `${fmt(p?.host_rss_mib, 1)} / ${fmt(p?.pss_mib, 1)} (${fmt(p?.pss_anon_mib, 1)} + ${fmt(p?.pss_file_mib, 1)})`],
  ];
}

function markdown(r: RuntimesResult, svgName: string | null): string {
  const out: string[] = [];
  out.push(`# hoody exec runtimes benchmark — ${r.started}`, '');
  out.push(...runLines(r), '');
  out.push('- isolate serverless: `return { ok: true };` (a fresh V8 context in the exec worker per request)');
  out.push('- Bun serverless: `// @runtime bun` + the same body (a fresh Bun process in the container per request)');
  out.push('- Bun persistent: `// @runtime bun`, `// @mode persistent`, `export default { fetch() { return Response.json({ ok: true }); } }` (one process; cold = the request that starts it)');
  out.push('- ceiling: `GET /api/v1/proxy/routes` of the same container on the same listener (same host routing and token check; a constant answer).');
  out.push('- Sequential requests on one keep-alive connection; warm runs in blocks of 100 per kind, order rotated every block.', '');
  if (svgName) out.push(`![exec runtimes](${svgName})`, '');
  out.push('## Latency and CPU', '');
  out.push(mdTable(LATENCY_HEADER, latencyRows(r)), '');
  out.push('daemon CPU = utime+stime of hoodyd and its exec worker during the warm blocks, per request; container CPU = the container cgroup\'s cpuacct (the Bun processes) per request.', '');
  const sc = r.kinds.filter((k) => k.script_cpu_ms);
  if (sc.length) out.push(`Script CPU per warm run as the exec log reports it, p50 (ms): ${sc.map((k) => `${k.label} ${fmt(k.script_cpu_ms!.p50)}`).join(', ')}.`, '');
  out.push('## Memory', '');
  out.push(mdTable(['memory', 'MiB'], memoryRows(r)), '');
  out.push('PSS splits shared pages (the Bun binary in the page cache, shared libraries) among the processes that map them; anon PSS is the process\'s own memory.', '');
  out.push(...notesSection(r.notes));
  return out.join('\n');
}

function svg(r: RuntimesResult): string {
  const group = (label: string, pick: (k: KindResult) => number | null | undefined) => ({ label, values: r.kinds.map((k) => ({ name: k.label, value: pick(k) ?? null })) });
  const p = r.memory.bun_persistent;
  return chartSvg(
    [
      { kind: 'bar', title: 'warm latency (ms)', yLabel: 'ms', groups: [group('p50', (k) => k.warm_ms.p50), group('p99', (k) => k.warm_ms.p99)] },
      { kind: 'bar', title: 'cold: first run of a new script (ms)', yLabel: 'ms', groups: [group('p50', (k) => k.cold_ms?.p50), group('p90', (k) => k.cold_ms?.p90)] },
      {
        kind: 'bar',
        title: 'memory (MiB)',
        yLabel: 'MiB',
        groups: [
          { label: 'exec worker RSS', values: [{ name: LABEL.isolate, value: r.memory.exec_worker_rss_mib.after_warm }] },
          { label: 'Bun serverless RSS', values: [{ name: LABEL.bun, value: r.memory.bun_serverless_rss_mib.p50 }] },
          { label: 'persistent RSS', values: [{ name: LABEL.persistent, value: p?.host_rss_mib ?? p?.reported_rss_mib ?? null }] },
          { label: 'persistent PSS', values: [{ name: LABEL.persistent, value: p?.pss_mib ?? null }] },
          { label: 'persistent anon PSS', values: [{ name: LABEL.persistent, value: p?.pss_anon_mib ?? null }] },
        ],
      },
    ],
    'exec runtimes: the same { ok: true } answer, sequential keep-alive requests; ceiling: GET /api/v1/proxy/routes',
  );
}

