/**
 * Soak: C busybox containers, each with a `* * * * *` cron entry, an exec script and a proxied HTTP server
 * (busybox httpd behind a proxy route), driven at a steady, bounded rate of exec and proxy requests for M
 * minutes. Reported: errors (HTTP and cron), latencies, and the daemon over time: RSS (with a least-squares
 * slope after the warm-up: no growth trend), event-loop lag p99 (`hoody_daemon_eventloop_lag_p99_seconds`
 * from the admin socket's /metrics, reset at each scrape) and open fds (/proc/<pid>/fd).
 *
 *   npm run bench:soak -- --containers 100 --minutes 10 [--rate 20] [--max-inflight 32]
 *
 * Results: bench/results/soak-<time>.{json,md,svg}. Everything made is removed at the end, on SIGINT/SIGTERM
 * and on errors. Not part of `npm test`.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { execa } from 'execa';
import { table } from '../daemon/cli/format.js';
import { type BenchDaemon, startBenchDaemon } from './daemon.js';
import { runBench } from './harness.js';
import { KeepAliveClient } from './keepalive.js';
import { chartSvg } from './ns-chart.js';
import { numberOption } from './options.js';
import { descendants, processTable, rssBytes } from './procs.js';
import { fmt, mdTable, type ResultHeader } from './results.js';
import type { Session } from './session.js';
import { dist, MIB, round, runPool, slope, sleep } from './stats.js';

const OPTIONS = {
  containers: numberOption(100, 1, 500, 'busybox containers, each with a cron entry, a script and a proxied httpd'),
  minutes: numberOption(10, 1, 24 * 60, 'minutes of steady load'),
  rate: numberOption(20, 1, 2000, 'requests per second in all (half exec, half proxy)'),
  'max-inflight': numberOption(32, 1, 1024, 'requests in flight at most (more are shed)'),
  sample: numberOption(10, 1, 600, 'seconds between samples of the daemon'),
  warmup: numberOption(60, 0, 3600, 'seconds at the start left out of the RSS slope (caches and JIT warming up)'),
  parallel: numberOption(4, 1, 16, 'containers provisioned at once'),
};

const SCRIPT = '// @timeout 2000\nreturn { ok: true, container: request.path, n: Number(request.query.n ?? 0) };\n';

interface Ctr {
  name: string;
  token: string;
  engineId: string;
}

interface SampleRow {
  t_s: number;
  rss_mib: number;
  worker_rss_mib: number;
  fds: number;
  lag_p99_ms: number | null;
  requests: number;
  errors: number;
  shed: number;
}

interface Kind {
  requests: number;
  errors: number;
  latencies: number[];
  firstErrors: string[];
}

export interface SoakResult extends ResultHeader {
  options: Record<string, number | string>;
  provisioning_s: number;
  requests: { total: number; errors: number; shed: number; rate_per_s: number; exec: ReturnType<typeof summary>; proxy: ReturnType<typeof summary> };
  cron: { expected_slots: number; runs: number; by_status: Record<string, number>; duplicate_slots: number };
  daemon: {
    rss_mib: { first: number; last: number; min: number; max: number; slope_mib_per_min_after_warmup: number | null };
    worker_rss_mib: { first: number; last: number; max: number; slope_mib_per_min_after_warmup: number | null };
    fds: { first: number; last: number; min: number; max: number; slope_per_min_after_warmup: number | null };
    eventloop_lag_p99_ms: { median: number | null; max: number | null };
    /** null: under 5 minutes after the warm-up, too short to tell a trend from V8 growing its heap. */
    growth_trend: boolean | null;
  };
  samples: SampleRow[];
  errors: string[];
}

function summary(k: Kind) {
  return { requests: k.requests, errors: k.errors, latency_ms: dist(k.latencies, 2) };
}

async function fdCount(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])).length;
}

async function lagP99(d: BenchDaemon): Promise<number | null> {
  const text = await d.client.call<string>('GET', '/metrics').catch(() => '');
  const m = /^hoody_daemon_eventloop_lag_p99_seconds (\S+)$/m.exec(typeof text === 'string' ? text : '');
  return m ? Number(m[1]) * 1000 : null;
}

async function provision(s: Session, d: BenchDaemon, http: KeepAliveClient, n: number, parallel: number): Promise<Ctr[]> {
  const out: Ctr[] = [];
  await runPool(
    Array.from({ length: n }, (_, i) => `sk${i + 1}`),
    parallel,
    async (name) => {
      const { token } = await d.client.call<{ token: string }>('POST', '/v1/containers', { name });
      const { engineId } = await d.client.call<{ engineId: string }>('GET', `/v1/containers/${name}`);
      const q = `token=${token}`;
      await http.ok('POST', `cron.${name}.hoody.localhost`, `/users/me/entries?${q}`, { schedule: '* * * * *', command: 'echo tick', comment: 'soak' });
      await http.ok('PUT', `api.${name}.hoody.localhost`, `/api/v1/scripts/soak.ts?${q}`, SCRIPT, 'text/plain');
      await http.ok('PUT', `api.${name}.hoody.localhost`, `/api/v1/files/www/index.html?${q}`, `hello from ${name}\n`, 'text/plain');
      // busybox httpd daemonizes itself: the container's own server, behind its proxy route.
      await execa('docker', ['exec', engineId, 'httpd', '-p', '8080', '-h', '/files/www']);
      await http.ok('PUT', `api.${name}.hoody.localhost`, `/api/v1/proxy/routes/${name}.soak.test?${q}`, { port: 8080 });
      out.push({ name, token, engineId });
      if (out.length % 20 === 0) s.log(`  ${out.length}/${n}`);
    },
    () => s.stopped(),
  );
  s.check();
  return out.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
}

runBench(
  {
    name: 'soak',
    description: 'steady exec and proxy load on many containers: errors, latencies, daemon growth',
    options: OPTIONS,
    budget: { default: 7200, min: 120, max: 48 * 3600 },
    sessionBudget: (o) => Math.max(o.budget, o.minutes * 60 + 1800),
  },
  async ({ o, s, prepareHost, header, write }) => {
    const { containers: containersN, minutes, rate, sample: sampleS, warmup: warmupS, parallel } = o;
    const maxInflight = o['max-inflight'];
    const host = await prepareHost();
    s.log(`starting hoodyd (state under ${host.benchDir})`);
    const d = await startBenchDaemon({ parentDir: host.benchDir, image: host.image, dockerSocket: host.dockerSocket, env: { HOODY_LOG_LEVEL: o['log-level'] } });
    s.cleanup.push(`hoodyd ${d.pid} and its containers`, () => d.destroy());
    const http = new KeepAliveClient(d.ports.http, maxInflight, 30_000);
    s.cleanup.push('HTTP client', async () => http.close());

    s.log(`provisioning ${containersN} containers with a minute cron entry, a script and a proxied httpd (${parallel} at a time)`);
    const tProv = Date.now();
    const ctrs = await provision(s, d, http, containersN, parallel);
    const provisioningS = round((Date.now() - tProv) / 1000, 1) ?? 0;

    // ---- the steady load
    const kinds: Record<'exec' | 'proxy', Kind> = {
      exec: { requests: 0, errors: 0, latencies: [], firstErrors: [] },
      proxy: { requests: 0, errors: 0, latencies: [], firstErrors: [] },
    };
    let inflight = 0;
    let shed = 0;
    let interval = { requests: 0, errors: 0, shed: 0 };
    const one = async (kind: 'exec' | 'proxy', c: Ctr, n: number) => {
      const k = kinds[kind];
      k.requests++;
      interval.requests++;
      let problem: string | null = null;
      try {
        const r =
          kind === 'exec'
            ? await http.call('GET', `exec.${c.name}.hoody.localhost`, `/scripts/soak?n=${n}&token=${c.token}`)
            : await http.call('GET', `${c.name}.soak.test`, '/index.html');
        k.latencies.push(r.ms);
        const good = r.status === 200 && (kind === 'exec' ? (JSON.parse(r.text) as { n: number }).n === n : r.text === `hello from ${c.name}\n`);
        if (!good) problem = `${kind} ${c.name}: ${r.status} ${r.text.slice(0, 160)}`;
      } catch (err) {
        problem = `${kind} ${c.name}: ${(err as Error).message}`;
      }
      if (problem) {
        k.errors++;
        interval.errors++;
        if (k.firstErrors.length < 10) k.firstErrors.push(problem);
      }
    };
    const samples: SampleRow[] = [];
    const t0 = Date.now();
    const sample = async () => {
      const table0 = await processTable();
      const worker = descendants(table0, d.pid).filter((p) => p !== d.pid);
      let workerRss = 0;
      for (const p of worker) workerRss += await rssBytes(p);
      samples.push({
        t_s: round((Date.now() - t0) / 1000, 1) ?? 0,
        rss_mib: round((await rssBytes(d.pid)) / MIB, 1) ?? 0,
        worker_rss_mib: round(workerRss / MIB, 1) ?? 0,
        fds: await fdCount(d.pid),
        lag_p99_ms: round(await lagP99(d), 2),
        ...interval,
      });
      interval = { requests: 0, errors: 0, shed: 0 };
    };
    await sample();
    s.log(`load: ${rate} requests/s (exec and proxy alternating, at most ${maxInflight} in flight) for ${minutes} min`);
    const endAt = t0 + minutes * 60_000;
    let nextSample = t0 + sampleS * 1000;
    let i = 0;
    const windowStart = new Date(t0).toISOString();
    while (Date.now() < endAt && !s.stopped()) {
      const due = t0 + (i * 1000) / rate;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      if (Date.now() >= nextSample) {
        nextSample += sampleS * 1000;
        await sample();
        const last = samples[samples.length - 1]!;
        s.log(`  ${Math.round(last.t_s)} s: RSS ${last.rss_mib} MiB, worker ${last.worker_rss_mib} MiB, ${last.fds} fds, lag p99 ${fmt(last.lag_p99_ms)} ms, ${last.requests} req, ${last.errors} errors`);
      }
      const kind = i % 2 === 0 ? 'exec' : 'proxy';
      const c = ctrs[Math.floor(i / 2) % ctrs.length]!;
      i++;
      if (inflight >= maxInflight) {
        shed++;
        interval.shed++;
        continue;
      }
      inflight++;
      void one(kind, c, i).finally(() => {
        inflight--;
      });
    }
    while (inflight > 0) await sleep(50);
    await sample();
    const windowEnd = new Date().toISOString();
    s.check();

    // ---- cron over the window (slots strictly inside it)
    await sleep(5000); // the last slot's runs finish
    const db = new Database(join(d.stateDir, 'hoody.db'), { readonly: true, fileMustExist: true });
    const runs = db
      .prepare("SELECT status, scheduled_for, entry_id FROM cron_runs WHERE trigger = 'schedule' AND scheduled_for >= ? AND scheduled_for < ?")
      .all(windowStart, windowEnd) as { status: string; scheduled_for: string; entry_id: string }[];
    db.close();
    const byStatus: Record<string, number> = {};
    for (const r of runs) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    const slotKeys = runs.map((r) => `${r.entry_id} ${r.scheduled_for}`);
    const slots = Math.floor(Date.parse(windowEnd) / 60_000) - Math.ceil(Date.parse(windowStart) / 60_000) + 1;

    // ---- figures
    const after = samples.filter((x) => x.t_s >= warmupS);
    const perMin = (pick: (x: SampleRow) => number) => round(slope(after.map((x) => [x.t_s / 60, pick(x)] as const)), 3);
    const rss = samples.map((x) => x.rss_mib);
    const fds = samples.map((x) => x.fds);
    const lags = samples.map((x) => x.lag_p99_ms).filter((x): x is number => x !== null);
    const rssSlope = perMin((x) => x.rss_mib);
    const meanRss = after.reduce((a, x) => a + x.rss_mib, 0) / Math.max(1, after.length);
    // Growth: more than 1% of the mean RSS per minute after the warm-up, and at least 0.5 MiB/min, over at
    // least 5 minutes (before that, V8 growing its heap to its working size looks like a trend).
    const judged = after.length >= 2 && after[after.length - 1]!.t_s - after[0]!.t_s >= 300;
    const growth = !judged ? null : rssSlope !== null && rssSlope > Math.max(0.5, meanRss * 0.01);
    const total = kinds.exec.requests + kinds.proxy.requests;
    const errors = kinds.exec.errors + kinds.proxy.errors;
    const cronErrors = runs.filter((r) => r.status !== 'ok').length;
    s.log('removing the containers and the daemon');
    await s.cleanup.run((label) => s.log(`  removing ${label}`));
    const result: SoakResult = {
      ...(await header({ containers: containersN, minutes, rate, max_inflight: maxInflight, sample_s: sampleS, warmup_s: warmupS, log_level: o['log-level'] })),
      provisioning_s: provisioningS,
      requests: { total, errors, shed, rate_per_s: round(total / ((Date.parse(windowEnd) - t0) / 1000), 2) ?? 0, exec: summary(kinds.exec), proxy: summary(kinds.proxy) },
      cron: { expected_slots: Math.max(0, slots) * ctrs.length, runs: runs.length, by_status: byStatus, duplicate_slots: slotKeys.length - new Set(slotKeys).size },
      daemon: {
        rss_mib: { first: rss[0]!, last: rss[rss.length - 1]!, min: Math.min(...rss), max: Math.max(...rss), slope_mib_per_min_after_warmup: rssSlope },
        worker_rss_mib: {
          first: samples[0]!.worker_rss_mib,
          last: samples[samples.length - 1]!.worker_rss_mib,
          max: Math.max(...samples.map((x) => x.worker_rss_mib)),
          slope_mib_per_min_after_warmup: perMin((x) => x.worker_rss_mib),
        },
        fds: { first: fds[0]!, last: fds[fds.length - 1]!, min: Math.min(...fds), max: Math.max(...fds), slope_per_min_after_warmup: perMin((x) => x.fds) },
        eventloop_lag_p99_ms: { median: dist(lags, 2).p50, max: lags.length ? round(Math.max(...lags), 2) : null },
        growth_trend: growth,
      },
      samples,
      errors: [...kinds.exec.firstErrors, ...kinds.proxy.firstErrors],
    };
    process.stdout.write(`\n${table(['figure', 'value'], summaryRows(result))}\n`);
    if (cronErrors) process.stdout.write(`cron runs not ok: ${JSON.stringify(byStatus)}\n`);
    await write(result, (svgName) => markdown(result, svgName), svg(result));
  },
);

function summaryRows(r: SoakResult): (string | number)[][] {
  const d = r.daemon;
  return [
    ['containers', r.options.containers!],
    ['minutes', r.options.minutes!],
    ['requests (exec + proxy)', `${r.requests.total} at ${r.requests.rate_per_s}/s, ${r.requests.shed} shed at the in-flight cap`],
    ['HTTP errors', `${r.requests.errors} (exec ${r.requests.exec.errors}, proxy ${r.requests.proxy.errors})`],
    ['exec latency p50 / p99 ms', `${fmt(r.requests.exec.latency_ms.p50)} / ${fmt(r.requests.exec.latency_ms.p99)}`],
    ['proxy latency p50 / p99 ms', `${fmt(r.requests.proxy.latency_ms.p50)} / ${fmt(r.requests.proxy.latency_ms.p99)}`],
    ['cron runs / expected slots', `${r.cron.runs} / ${r.cron.expected_slots} (${Object.entries(r.cron.by_status).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}; ${r.cron.duplicate_slots} twice)`],
    ['daemon RSS MiB first / last / max', `${d.rss_mib.first} / ${d.rss_mib.last} / ${d.rss_mib.max}`],
    [
      'daemon RSS slope after warm-up',
      `${fmt(d.rss_mib.slope_mib_per_min_after_warmup, 3)} MiB/min (${d.growth_trend === null ? 'too short to judge: under 5 min after the warm-up' : d.growth_trend ? 'GROWING' : 'no growth trend'})`,
    ],
    ['exec worker RSS MiB first / last / max (slope)', `${d.worker_rss_mib.first} / ${d.worker_rss_mib.last} / ${d.worker_rss_mib.max} (${fmt(d.worker_rss_mib.slope_mib_per_min_after_warmup, 3)} MiB/min)`],
    ['open fds first / last / max (slope/min)', `${d.fds.first} / ${d.fds.last} / ${d.fds.max} (${fmt(d.fds.slope_per_min_after_warmup, 3)})`],
    ['event-loop lag p99 ms median / max', `${fmt(d.eventloop_lag_p99_ms.median)} / ${fmt(d.eventloop_lag_p99_ms.max)}`],
  ];
}

function markdown(r: SoakResult, svgName: string | null): string {
  return [
    `# Soak: ${r.options.containers} containers for ${r.options.minutes} min`,
    '',
    `${r.started} → ${r.finished}; ${r.host.cpus} CPUs, ${r.host.mem_total_mib} MiB, kernel ${r.host.kernel}, Node ${r.host.node}. Provisioning took ${r.provisioning_s} s.`,
    '',
    'Each container has a `* * * * *` cron entry (`echo tick`), an exec script and busybox httpd behind a proxy route; requests alternate between',
    `exec and proxy at ${r.options.rate}/s with at most ${r.options.max_inflight} in flight. The daemon is sampled every ${r.options.sample_s} s; the RSS and fd slopes leave out the first ${r.options.warmup_s} s.`,
    '',
    mdTable(['figure', 'value'], summaryRows(r)),
    '',
    ...(svgName ? [`![soak](${svgName})`, ''] : []),
    ...(r.errors.length ? ['First errors:', '', ...r.errors.map((e) => `- ${e}`), ''] : []),
  ].join('\n');
}

function svg(r: SoakResult): string {
  const pts = (pick: (x: SampleRow) => number | null) =>
    r.samples.map((x) => [round(x.t_s / 60, 3) ?? 0, pick(x)] as const).filter((p): p is readonly [number, number] => p[1] !== null);
  return chartSvg(
    [
      { kind: 'line', title: 'daemon RSS', xLabel: 'minutes', yLabel: 'MiB', series: [{ name: 'hoodyd RSS', points: pts((x) => x.rss_mib) }, { name: 'exec worker RSS', points: pts((x) => x.worker_rss_mib), dashed: true }] },
      { kind: 'line', title: 'open fds', xLabel: 'minutes', yLabel: 'fds', series: [{ name: 'hoodyd fds', points: pts((x) => x.fds) }] },
      { kind: 'line', title: 'event-loop lag p99', xLabel: 'minutes', yLabel: 'ms', series: [{ name: 'lag p99', points: pts((x) => x.lag_p99_ms) }] },
      { kind: 'line', title: 'requests and errors per sample', xLabel: 'minutes', yLabel: 'count', series: [{ name: 'requests', points: pts((x) => x.requests) }, { name: 'errors', points: pts((x) => x.errors) }] },
    ],
    `hoody soak, ${r.options.containers} containers, ${r.options.minutes} min, ${r.options.rate} req/s`,
    2,
  );
}

