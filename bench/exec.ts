/**
 * Exec benchmark: a trivial script (`return { ok: true }`) through the public HTTP listener, side by side in one
 * run with a plain fastify route of the same container API on the same listener as the ceiling.
 *
 *   node --no-node-snapshot dist/bench/exec.js [--concurrency 1,16] [--duration 10] [--rounds 2] [--cold 40]
 *
 * - cold: the first run of a script after it was written (N distinct scripts, each PUT then run once; and N
 *   rewrites of one path, each run once), sequential, on a keep-alive connection;
 * - warm: the same script again and again, sequential, on a keep-alive connection, interleaved in blocks with
 *   the ceiling route;
 * - throughput: wrk with keep-alive at a few concurrencies, exec and ceiling alternating (order swapped every
 *   round) to cancel drift; the daemon's CPU (its process and the exec worker) per request from /proc;
 * - neighbour: the trivial script's latency quiet and while another tenant floods exec with CPU-heavy runs
 *   (bench/neighbour.ts; `--neighbour 0` skips it).
 *
 * The daemon of the first three phases lets one container run OPEN_BUDGET's runs at once (the default, 4 running
 * and 8 waiting, refuses a 16-connection load by design: that is fairness between tenants, not exec's speed). The
 * neighbour phase gets a daemon of its own with the default budget, the one that keeps tenants apart.
 *
 * The ceiling is `GET /api/v1/proxy/routes` of the same container: it goes through the same listener, the same
 * host routing, the same container plugin and the same token check (`?token=`, hashed and looked up) as the
 * exec route, and its handler returns a constant from memory (the container has no routes), so the difference
 * is the cost of exec itself (script lookup, compile cache, worker round trip, isolate context, exec log row).
 */
import { table } from '../daemon/cli/format.js';
import { startBenchDaemon } from './daemon.js';
import { disturbedNote, runBench, watchOthers } from './harness.js';
import { KeepAliveClient } from './keepalive.js';
import { measureNeighbour, type NeighbourResult } from './neighbour.js';
import { chartSvg } from './ns-chart.js';
import { numberListOption, numberOption } from './options.js';
import { CLK_TCK, procTimes, treeTicks } from './procs.js';
import { fmt, mdTable, notesSection, type ResultHeader, runLines } from './results.js';
import { type Dist, dist, median, round } from './stats.js';
import { runWrk, type WrkResult, wrkErrors } from './wrk.js';

const OPTIONS = {
  concurrency: numberListOption([1, 16], 1, 1024, 'wrk connections, one throughput step each'),
  duration: numberOption(10, 1, 120, 'seconds per wrk run'),
  rounds: numberOption(2, 1, 10, 'rounds of wrk runs (exec and ceiling alternating)'),
  cold: numberOption(40, 1, 60, 'new scripts (and rewrites) run once each'),
  warm: numberOption(2000, 100, 100_000, 'sequential warm requests per target'),
  neighbour: numberOption(300, 0, 10_000, "B's runs per neighbour phase (0: skip it)"),
};

type Target = 'exec' | 'ceiling';

/** One container may run this many at once (and queue 4x more): the throughput phase measures exec, not the budget. */
const OPEN_BUDGET = { HOODY_EXEC_CONTAINER_RUNS: '64', HOODY_EXEC_CONTAINER_QUEUE: '256', HOODY_EXEC_CONTAINER_CPU: '0' };

interface WrkRun {
  target: Target;
  concurrency: number;
  round: number;
  wrk: WrkResult;
  /** utime+stime of hoodyd and its exec worker during the run, per request (µs). */
  cpu_us_per_request: number | null;
  /** The part of it spent in the daemon's own process (HTTP, routing, auth, prepare, exec log); the rest is the exec worker's. */
  daemon_cpu_us_per_request: number | null;
  /** The kernel's share (stime) of the daemon process's CPU: syscalls, e.g. fsync of the database. */
  daemon_sys_share: number | null;
  cpu_percent_of_core: number;
  /** Other benchmarks or test runs seen on the box at the start or end of the run. */
  others: string[];
}

interface Agg {
  concurrency: number;
  exec_rps: number | null;
  ceiling_rps: number | null;
  ratio: number | null;
  exec_p50_ms: number | null;
  exec_p99_ms: number | null;
  ceiling_p50_ms: number | null;
  ceiling_p99_ms: number | null;
  exec_cpu_us: number | null;
  exec_daemon_cpu_us: number | null;
  ceiling_cpu_us: number | null;
  errors: number;
}

export interface ExecResult extends ResultHeader {
  urls: { exec: string; ceiling: string };
  first_run_ms: number;
  cold_distinct_ms: Dist;
  cold_rewrite_ms: Dist;
  write_ms: Dist;
  warm_exec_ms: Dist;
  warm_ceiling_ms: Dist;
  throughput: Agg[];
  runs: WrkRun[];
  neighbour: NeighbourResult | null;
  notes: string[];
}

runBench({ name: 'exec', description: 'exec against a plain route, and the noisy neighbour', options: OPTIONS, budget: { default: 1800, min: 60, max: 6 * 3600 } }, async ({ o, s, runId, prepareHost, header, write, notes }) => {
  const { concurrency, duration, rounds, cold: coldN, warm: warmN, neighbour: neighbourN } = o;
  const host = await prepareHost();
  s.log('starting hoodyd and one container');
  const d = await startBenchDaemon({ parentDir: host.benchDir, image: host.image, dockerSocket: host.dockerSocket, env: { HOODY_LOG_LEVEL: o['log-level'], ...OPEN_BUDGET } });
  s.cleanup.push(`hoodyd ${d.pid} and its container`, () => d.destroy());
  const name = 'eb';
  const token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name })).token;
  const http = new KeepAliveClient(d.ports.http, 1);
  s.cleanup.push('HTTP client', async () => http.close());
  const apiHost = `api.${name}.hoody.localhost`;
  const execHost = `exec.${name}.hoody.localhost`;
  const put = (path: string, src: string) => http.ok('PUT', apiHost, `/api/v1/scripts/${path}?token=${token}`, src, 'text/plain');
  const execPath = `/scripts/trivial?token=${token}`;
  const ceilPath = `/api/v1/proxy/routes?token=${token}`;
  const expect = (r: { status: number; text: string }, body: string, what: string) => {
    if (r.status !== 200 || r.text !== body) throw new Error(`${what}: ${r.status} ${r.text.slice(0, 200)}`);
  };

  // The very first run after the daemon started also starts the exec worker process.
  await put('trivial.ts', 'return { ok: true };\n');
  const first = await http.call('GET', execHost, execPath);
  expect(first, '{"ok":true}', 'first run');
  expect(await http.call('GET', apiHost, ceilPath), '[]', 'ceiling');

  s.log(`cold: ${coldN} distinct scripts, then ${coldN} rewrites of one path`);
  const writes: number[] = [];
  const coldDistinct: number[] = [];
  for (let i = 0; i < coldN; i++) {
    s.check();
    writes.push((await put(`cold/c${i}.ts`, `return { ok: true, n: ${i}, run: '${runId}' };\n`)).ms);
    const r = await http.call('GET', execHost, `/scripts/cold/c${i}?token=${token}`);
    expect(r, `{"ok":true,"n":${i},"run":"${runId}"}`, `cold run ${i}`);
    coldDistinct.push(r.ms);
  }
  const coldRewrite: number[] = [];
  for (let i = 0; i < coldN; i++) {
    s.check();
    writes.push((await put('rewrite.ts', `return { ok: true, v: ${i} };\n`)).ms);
    const r = await http.call('GET', execHost, `/scripts/rewrite?token=${token}`);
    expect(r, `{"ok":true,"v":${i}}`, `rewrite run ${i}`);
    coldRewrite.push(r.ms);
  }

  s.log(`warm: ${warmN} sequential requests each, interleaved in blocks of 100`);
  const warmExec: number[] = [];
  const warmCeil: number[] = [];
  for (let i = 0; i < 200; i++) {
    await http.call('GET', execHost, execPath);
    await http.call('GET', apiHost, ceilPath);
  }
  for (let done = 0; done < warmN; done += 100) {
    s.check();
    const block = Math.min(100, warmN - done);
    const order: Target[] = (done / 100) % 2 ? ['ceiling', 'exec'] : ['exec', 'ceiling'];
    for (const t of order) {
      for (let i = 0; i < block; i++) {
        const r = t === 'exec' ? await http.call('GET', execHost, execPath) : await http.call('GET', apiHost, ceilPath);
        if (r.status !== 200) throw new Error(`warm ${t}: ${r.status} ${r.text.slice(0, 200)}`);
        (t === 'exec' ? warmExec : warmCeil).push(r.ms);
      }
    }
  }

  const base = `http://127.0.0.1:${d.ports.http}`;
  const wrkOf = (t: Target, c: number, secs: number) =>
    runWrk({ url: `${base}${t === 'exec' ? execPath : ceilPath}`, host: t === 'exec' ? execHost : apiHost, threads: Math.min(2, c), connections: c, durationS: secs, dir: host.benchDir });
  s.log('wrk warm-up (2 s each)');
  await wrkOf('exec', 8, 2);
  await wrkOf('ceiling', 8, 2);
  const runs: WrkRun[] = [];
  for (let rnd = 0; rnd < rounds; rnd++) {
    for (const c of concurrency) {
      const order: Target[] = (rnd + concurrency.indexOf(c)) % 2 ? ['ceiling', 'exec'] : ['exec', 'ceiling'];
      for (const t of order) {
        s.check();
        const { value: m, others } = await watchOthers(async () => {
          const ticks0 = await treeTicks(d.pid);
          const own0 = await procTimes(d.pid);
          const w = await wrkOf(t, c, duration);
          return { w, ticks0, own0, ticks1: await treeTicks(d.pid), own1: await procTimes(d.pid) };
        });
        const { w, ticks0, own0, ticks1, own1 } = m;
        const cpuS = (ticks1 - ticks0) / CLK_TCK;
        const ownUser = (own1.user - own0.user) / CLK_TCK;
        const ownSys = (own1.sys - own0.sys) / CLK_TCK;
        const ownS = ownUser + ownSys;
        runs.push({
          target: t,
          concurrency: c,
          round: rnd,
          wrk: w,
          cpu_us_per_request: w.requests ? round((cpuS * 1e6) / w.requests, 1) : null,
          daemon_cpu_us_per_request: w.requests ? round((ownS * 1e6) / w.requests, 1) : null,
          daemon_sys_share: ownS > 0 ? round(ownSys / ownS, 3) : null,
          cpu_percent_of_core: round((cpuS / (w.duration_s || 1)) * 100, 1) ?? 0,
          others,
        });
        s.log(`round ${rnd + 1}/${rounds} c=${c} ${t}: ${w.rps} req/s, p99 ${w.latency_ms.p99} ms, errors ${wrkErrors(w)}`);
      }
    }
  }
  const med = (t: Target, c: number, pick: (r: WrkRun) => number | null) =>
    round(median(runs.filter((r) => r.target === t && r.concurrency === c).map(pick).filter((v): v is number => v !== null)), 2);
  const throughput: Agg[] = concurrency.map((c) => {
    const e = med('exec', c, (r) => r.wrk.rps);
    const ce = med('ceiling', c, (r) => r.wrk.rps);
    return {
      concurrency: c,
      exec_rps: e,
      ceiling_rps: ce,
      ratio: e !== null && ce ? round(e / ce, 3) : null,
      exec_p50_ms: med('exec', c, (r) => r.wrk.latency_ms.p50),
      exec_p99_ms: med('exec', c, (r) => r.wrk.latency_ms.p99),
      ceiling_p50_ms: med('ceiling', c, (r) => r.wrk.latency_ms.p50),
      ceiling_p99_ms: med('ceiling', c, (r) => r.wrk.latency_ms.p99),
      exec_cpu_us: med('exec', c, (r) => r.cpu_us_per_request),
      exec_daemon_cpu_us: med('exec', c, (r) => r.daemon_cpu_us_per_request),
      ceiling_cpu_us: med('ceiling', c, (r) => r.cpu_us_per_request),
      errors: runs.filter((r) => r.concurrency === c).reduce((a, r) => a + wrkErrors(r.wrk), 0),
    };
  });
  const disturbed = disturbedNote(runs, 'wrk runs');
  if (disturbed) notes.push(disturbed);
  if (throughput.some((a) => a.errors > 0)) notes.push('Some wrk runs saw errors or non-2xx answers (see runs[].wrk.errors in the JSON).');
  let neighbour: NeighbourResult | null = null;
  if (neighbourN > 0) {
    s.log('neighbour: a second daemon, default exec budget');
    await d.destroy();
    const nd = await startBenchDaemon({ parentDir: host.benchDir, image: host.image, dockerSocket: host.dockerSocket, env: { HOODY_LOG_LEVEL: o['log-level'] } });
    s.cleanup.push(`hoodyd ${nd.pid} and its containers`, () => nd.destroy());
    const nToken = (await nd.client.call<{ token: string }>('POST', '/v1/containers', { name })).token;
    const nHttp = new KeepAliveClient(nd.ports.http, 1);
    s.cleanup.push('HTTP client', async () => nHttp.close());
    await nHttp.ok('PUT', apiHost, `/api/v1/scripts/trivial.ts?token=${nToken}`, 'return { ok: true };\n', 'text/plain');
    const victim = { host: execHost, path: `/scripts/trivial?token=${nToken}`, body: '{"ok":true}' };
    neighbour = await measureNeighbour({ client: nd.client, http: nHttp, port: nd.ports.http, victim, runs: neighbourN, dir: host.benchDir, log: (l) => s.log(l) });
  }

  const result: ExecResult = {
    ...(await header({ concurrency, duration_s: duration, rounds, cold: coldN, warm: warmN, log_level: o['log-level'], exec_budget: OPEN_BUDGET })),
    urls: { exec: `GET http://${execHost}:<http>/scripts/trivial?token=…`, ceiling: `GET http://${apiHost}:<http>/api/v1/proxy/routes?token=…` },
    first_run_ms: round(first.ms, 2) ?? 0,
    cold_distinct_ms: dist(coldDistinct),
    cold_rewrite_ms: dist(coldRewrite),
    write_ms: dist(writes),
    warm_exec_ms: dist(warmExec),
    warm_ceiling_ms: dist(warmCeil),
    throughput,
    runs,
    neighbour,
    notes,
  };
  process.stdout.write(`\n${table(['latency (ms, sequential, keep-alive)', 'n', 'p50', 'p90', 'p99', 'max'], latencyRows(result))}\n\n`);
  process.stdout.write(`${table(THROUGHPUT_HEADER, throughputRows(result))}\n`);
  if (neighbour) process.stdout.write(`\n${neighbourLine(neighbour)}\n`);
  await write(result, (svgName) => markdown(result, svgName), svg(result));
  s.log('removing the container and the daemon');
});

function neighbourLine(n: NeighbourResult): string {
  const w = n.attacker.wrk;
  return (
    `B's trivial run, p50/p99: quiet ${fmt(n.quiet_ms.p50)}/${fmt(n.quiet_ms.p99)} ms (n=${n.quiet_ms.n}), while A floods ${fmt(n.loaded_ms.p50)}/${fmt(n.loaded_ms.p99)} ms (n=${n.loaded_ms.n}); ` +
    `ratio p50 ${fmt(n.p50_ratio)}, p99 ${fmt(n.p99_ratio)} (goal: p99 within 2). A: ${w.requests} requests over ${w.duration_s} s, ${w.errors.status} refused (non-2xx), ${n.attacker.connections} connections, 500 ms back-off after a refusal.`
  );
}

function latencyRows(r: ExecResult): (string | number)[][] {
  const row = (label: string, x: Dist) => [label, x.n, fmt(x.p50), fmt(x.p90), fmt(x.p99), fmt(x.max)];
  return [
    ['very first run (starts the exec worker)', 1, fmt(r.first_run_ms), '', '', ''],
    row('cold: first run of a new script', r.cold_distinct_ms),
    row('cold: first run after rewriting a script', r.cold_rewrite_ms),
    row('warm exec (trivial script)', r.warm_exec_ms),
    row('warm ceiling (GET /api/v1/proxy/routes)', r.warm_ceiling_ms),
    row('script write (PUT /api/v1/scripts/…)', r.write_ms),
  ];
}

const THROUGHPUT_HEADER = ['conc.', 'exec req/s', 'ceiling req/s', 'exec/ceiling', 'exec p50/p99 ms', 'ceiling p50/p99 ms', 'exec CPU µs/req (daemon+worker)', 'ceiling CPU µs/req', 'errors'];

function throughputRows(r: ExecResult): (string | number)[][] {
  return r.throughput.map((a) => [
    a.concurrency,
    fmt(a.exec_rps, 0),
    fmt(a.ceiling_rps, 0),
    fmt(a.ratio, 3),
    `${fmt(a.exec_p50_ms)} / ${fmt(a.exec_p99_ms)}`,
    `${fmt(a.ceiling_p50_ms)} / ${fmt(a.ceiling_p99_ms)}`,
    `${fmt(a.exec_cpu_us, 0)} (${fmt(a.exec_daemon_cpu_us, 0)}+${fmt(a.exec_cpu_us !== null && a.exec_daemon_cpu_us !== null ? a.exec_cpu_us - a.exec_daemon_cpu_us : null, 0)})`,
    fmt(a.ceiling_cpu_us, 0),
    a.errors,
  ]);
}

function markdown(r: ExecResult, svgName: string | null): string {
  const out: string[] = [];
  out.push(`# hoody exec benchmark — ${r.started}`, '');
  out.push(...runLines(r), '');
  out.push(`- exec: \`${r.urls.exec}\` runs \`trivial.ts\` = \`return { ok: true };\``);
  out.push(`- ceiling: \`${r.urls.ceiling}\`: same listener, same container plugin, same token check; the handler returns \`[]\` from memory.`);
  out.push('- Both on the plain-HTTP public listener, token in the URL, keep-alive. wrk runs on the same 2-core box (it takes CPU from the daemon); exec and ceiling alternate, order swapped every round; figures are medians over rounds.');
  out.push(`- The daemon of the latency and throughput phases lets one container run more at once than the default (${Object.entries(OPEN_BUDGET).map(([k, v]) => `${k}=${v}`).join(', ')}): the default budget refuses a 16-connection load on one container by design. The neighbour phase runs on a second daemon with the default budget.`, '');
  if (svgName) out.push(`![exec benchmark](${svgName})`, '');
  out.push('## Latency (sequential requests on one keep-alive connection)', '');
  out.push(mdTable(['latency (ms)', 'n', 'p50', 'p90', 'p99', 'max'], latencyRows(r)), '');
  const overhead = r.warm_exec_ms.p50 !== null && r.warm_ceiling_ms.p50 !== null ? r.warm_exec_ms.p50 - r.warm_ceiling_ms.p50 : null;
  out.push(`Warm overhead of exec over the plain route, p50: **${fmt(overhead)} ms** (goal: at most 1 ms).`, '');
  out.push('## Throughput (wrk, keep-alive)', '');
  out.push(mdTable(THROUGHPUT_HEADER, throughputRows(r)), '');
  out.push('CPU µs/req = utime+stime of hoodyd and its exec worker process during the wrk run, divided by the requests answered; in brackets the daemon process\'s part + the worker\'s part.', '');
  if (r.neighbour) {
    out.push('## Noisy neighbour (another tenant floods exec with CPU-heavy runs)', '');
    out.push(neighbourLine(r.neighbour), '');
  }
  out.push('All runs:', '');
  out.push(
    mdTable(
      ['round', 'conc.', 'target', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'daemon+worker CPU %', 'CPU µs/req', 'of it daemon', 'daemon sys share', 'errors', 'other bench running'],
      r.runs.map((x) => [x.round + 1, x.concurrency, x.target, fmt(x.wrk.rps, 0), fmt(x.wrk.latency_ms.p50), fmt(x.wrk.latency_ms.p90), fmt(x.wrk.latency_ms.p99), fmt(x.wrk.latency_ms.max), fmt(x.cpu_percent_of_core, 1), fmt(x.cpu_us_per_request, 0), fmt(x.daemon_cpu_us_per_request, 0), fmt(x.daemon_sys_share, 2), wrkErrors(x.wrk), x.others.length ? 'yes' : '']),
    ),
    '',
  );
  out.push(...notesSection(r.notes));
  return out.join('\n');
}

function svg(r: ExecResult): string {
  const groups = (pick: (a: Agg, t: Target) => number | null) =>
    r.throughput.map((a) => ({ label: `c=${a.concurrency}`, values: [
      { name: 'exec (trivial script)', value: pick(a, 'exec') },
      { name: 'ceiling (GET /api/v1/proxy/routes)', value: pick(a, 'ceiling') },
    ] }));
  const lat = (label: string, e: Dist, c: Dist | null) => ({
    label,
    values: [
      { name: 'exec (trivial script)', value: e.p50 },
      { name: 'ceiling (GET /api/v1/proxy/routes)', value: c?.p50 ?? null },
    ],
  });
  return chartSvg(
    [
      { kind: 'bar', title: 'requests per second (wrk, keep-alive)', yLabel: 'req/s', groups: groups((a, t) => (t === 'exec' ? a.exec_rps : a.ceiling_rps)) },
      { kind: 'bar', title: 'p99 latency under load (ms)', yLabel: 'ms', groups: groups((a, t) => (t === 'exec' ? a.exec_p99_ms : a.ceiling_p99_ms)) },
      {
        kind: 'bar',
        title: 'sequential latency p50 (ms)',
        yLabel: 'ms',
        groups: [lat('cold (new script)', r.cold_distinct_ms, null), lat('cold (rewrite)', r.cold_rewrite_ms, null), lat('warm', r.warm_exec_ms, r.warm_ceiling_ms)],
      },
    ],
    'exec: GET /scripts/trivial (return { ok: true }); ceiling: GET /api/v1/proxy/routes on the same listener and container',
  );
}

