/**
 * Proxy benchmark: a container app behind hoody's proxy at a test hostname with a certificate, side by side in one
 * run with Debian's nginx proxying the same container IP:port with the same certificate and a keep-alive
 * upstream. Small HTTPS responses over keep-alive connections, wrk (`-t2 -c32 -d10s` by default), the proxies
 * alternating and their order rotated every round to cancel drift.
 *
 *   node dist/bench/proxy.js [--apps node,busybox] [--rounds 3] [--duration 10] [--connections 32] [--threads 2]
 *
 * Two apps: busybox httpd serving a small file (the issue's app; it closes every connection and listens with a
 * backlog of 9, so at 32 connections it is the bottleneck and SYN retries put ~1 s into the tail), and a Node
 * HTTP server (keep-alive; the density benchmark's `hoody/node` image), where the proxies are the bottleneck.
 *
 * nginx runs twice: with 1 worker (one process, like hoodyd) and with `worker_processes auto` (Debian's default).
 * wrk takes its SNI name from the URL and resolves it with getaddrinfo, which knows no `*.localhost` here, so it
 * runs in a private mount namespace where a hosts file naming the test hostname is bind-mounted over /etc/hosts.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { HostCa } from '../containers/tls/ca.js';
import { table } from '../daemon/cli/format.js';
import { DockerEngine } from '../host/engine.js';
import { BUSYBOX_IMAGE, NODE_IMAGE } from '../host/images.js';
import { type BenchDaemon, startBenchDaemon } from './daemon.js';
import { runH2load } from './h2load.js';
import { disturbedNote, runBench, watchOthers } from './harness.js';
import { KeepAliveClient } from './keepalive.js';
import { choiceListOption, numberOption } from './options.js';
import { type FaultRun, killUnderLoad, swapsUnderLoad } from './proxy-faults.js';
import { directGet, httpsGet, settle, startNginx, tlsFacts } from './proxy-helpers.js';
import { FAULT_HEADER, faultRows, markdown, ratioRows, SUMMARY_HEADER, summaryRows, svg } from './proxy-report.js';
import { CLK_TCK, tcpExt, treeTimes } from './procs.js';
import type { ResultHeader } from './results.js';
import { median, round, sleep } from './stats.js';
import { workload } from './workloads.js';
import { runWrk, type WrkResult, wrkErrors } from './wrk.js';

const BODY = 'hello from the hoody proxy benchmark\n';

/** A container app behind both proxies. */
interface App {
  key: string;
  label: string;
  container: string;
  image: string;
  hostname: string;
  port: number;
  /** What a GET / answers (checked through every target before measuring). */
  body: string;
}

const APPS: Record<string, App> = {
  busybox: {
    key: 'busybox',
    label: 'busybox httpd, static file (no keep-alive upstream)',
    container: 'pb',
    image: BUSYBOX_IMAGE,
    hostname: 'proxybench.test',
    port: 8080,
    body: BODY,
  },
  node: {
    key: 'node',
    label: 'node http server (keep-alive upstream)',
    container: 'pn',
    image: NODE_IMAGE,
    hostname: 'proxybench-ka.test',
    port: 8080,
    body: '{"ok":true,"path":"/index.html"}',
  },
};

export type Mode = 'keepalive' | 'close' | 'h2';
const MODES: Record<Mode, string> = {
  keepalive: 'HTTPS/1.1, keep-alive',
  close: 'HTTPS/1.1, a new connection (and handshake) per request',
  h2: 'HTTP/2 over TLS',
};

const OPTIONS = {
  apps: choiceListOption(['node'], ['busybox', 'node'] as const, 'container apps behind the proxies'),
  modes: choiceListOption(['keepalive', 'close', 'h2'], Object.keys(MODES) as Mode[], 'ways of loading them'),
  rounds: numberOption(3, 1, 10, 'rounds (the order of the targets rotated every round)'),
  duration: numberOption(8, 1, 120, 'seconds per run'),
  streams: numberOption(10, 1, 256, 'HTTP/2 streams per connection (h2load)'),
  'fault-duration': numberOption(20, 0, 300, 'seconds of load per fault phase (0: no faults)'),
  swaps: numberOption(10, 0, 100, 'certificate swaps under load'),
  connections: numberOption(32, 1, 2048, 'connections (wrk) or clients (h2load)'),
  threads: numberOption(2, 1, 16, 'load-tool threads'),
  settle: numberOption(70, 0, 120, 'longest wait (s) for TIME_WAIT sockets to drain before a run'),
};

export interface Target {
  server: string;
  label: string;
  port: number;
  /** Root pid of the server's processes (CPU is summed over it and its children). */
  pid: number;
}

export interface TargetRun {
  app: string;
  mode: Mode;
  server: string;
  round: number;
  wrk: WrkResult;
  cpu_us_per_request: number | null;
  /** The kernel's share of that CPU (connect/accept/TLS writes…). */
  cpu_sys_share: number | null;
  cpu_percent_of_core: number;
  /** Seconds waited before the run for TIME_WAIT sockets to drain (host + app namespaces). */
  settle_s: number;
  time_wait_before: { host: number; app: number };
  /** SYNs the app's listen queue dropped during the run (TcpExt ListenOverflows in its namespace). */
  app_listen_overflows: number | null;
  /** Other benchmarks or test runs seen on the box at the start or end of the run. */
  others: string[];
}

export interface TargetAgg {
  app: string;
  mode: Mode;
  server: string;
  label: string;
  rps: number | null;
  p50_ms: number | null;
  p90_ms: number | null;
  p99_ms: number | null;
  cpu_us_per_request: number | null;
  app_listen_overflows: number;
  errors: number;
}

export interface ProxyResult extends ResultHeader {
  nginx_version: string;
  wrk_version: string;
  apps: Record<string, { label: string; hostname: string; upstream: string; body_bytes: number; upstream_connection_header: string | null; token?: string }>;
  tls: Record<string, { protocol: string | null; cipher: string; fingerprint256: string }>;
  h2load_version: string;
  summary: TargetAgg[];
  ratios: Record<string, Record<string, number | null>>;
  runs: TargetRun[];
  faults: FaultRun[];
  notes: string[];
}

/** Creates the apps in one daemon's containers, routes their hostnames and installs the bundle; returns how to reach them. */
async function setupApps(
  d: BenchDaemon,
  docker: DockerEngine,
  apps: readonly App[],
  pem: { cert: string; key: string; chain: string },
  notes: string[],
): Promise<{ info: ProxyResult['apps']; upstreams: { hostname: string; upstream: string }[]; pids: Map<string, number> }> {
  const cli = new KeepAliveClient(d.ports.http, 2);
  const info: ProxyResult['apps'] = {};
  const upstreams: { hostname: string; upstream: string }[] = [];
  const pids = new Map<string, number>();
  try {
    for (const app of apps) {
      const token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: app.container, image: app.image })).token;
      const row = await d.client.call<{ engineId: string }>('GET', `/v1/containers/${app.container}`);
      if (app.key === 'busybox') {
        // The issue's app: busybox httpd on port 8080 of the container, serving one small file.
        const sh = `mkdir -p /files/www && printf '%s\\n' '${BODY.trimEnd()}' > /files/www/index.html`;
        for (const cmd of [['sh', '-c', sh], ['busybox', 'httpd', '-p', String(app.port), '-h', '/files/www']]) {
          const r = await execa('docker', ['exec', row.engineId, ...cmd], { reject: false, all: true });
          if (r.exitCode !== 0) throw new Error(`docker exec ${cmd.join(' ')}: ${r.all}`);
        }
      }
      const live = await docker.inspect(row.engineId);
      if (!live?.ip) throw new Error(`${app.container} has no IP address on the engine network`);
      pids.set(app.key, live.pid);
      const upstream = `${live.ip}:${app.port}`;
      let direct = await directGet(live.ip, app.port).catch(() => null);
      for (let i = 0; i < 50 && direct?.status !== 200; i++) {
        await sleep(200);
        direct = await directGet(live.ip, app.port).catch(() => null);
      }
      if (direct?.status !== 200 || direct.text !== app.body) throw new Error(`${app.label} does not answer: ${direct?.status} ${direct?.text}`);
      const api = `api.${app.container}.hoody.localhost`;
      await cli.ok('PUT', api, `/api/v1/proxy/routes/${app.hostname}?token=${token}`, { port: app.port });
      await cli.ok('PATCH', api, `/api/v1/proxy/cert/bundle?token=${token}`, { domain: app.hostname, cert: pem.cert, key: pem.key, chain: pem.chain });
      info[app.key] = { label: app.label, hostname: app.hostname, upstream, body_bytes: Buffer.byteLength(app.body), upstream_connection_header: direct.connection, token };
      upstreams.push({ hostname: app.hostname, upstream });
      if (app.key === 'busybox' && !notes.some((n) => n.startsWith('busybox httpd')))
        notes.push(
          `busybox httpd answers \`Connection: ${direct.connection ?? '(none)'}\` and listens with a backlog of 9: every proxy opens a new upstream connection per request, and SYNs beyond the backlog are dropped and retried after 1 s (see "listen overflows"). Its figures measure the app as much as the proxy; the node app (keep-alive upstream) measures the proxies.`,
        );
    }
  } finally {
    cli.close();
  }
  return { info, upstreams, pids };
}

async function haproxyPid(stateDir: string): Promise<number> {
  return Number((await readFile(join(stateDir, 'dataplane', 'haproxy.pid'), 'utf8')).trim());
}

runBench({ name: 'proxy', description: 'the data plane against nginx, and faults under load', options: OPTIONS, budget: { default: 1800, min: 60, max: 6 * 3600 } }, async ({ o, s, prepareHost, header, write, notes }) => {
  const { rounds, duration, connections, threads, streams, swaps, modes } = o;
  const settleMax = o.settle;
  const faultDuration = o['fault-duration'];
  const apps = o.apps.map((a) => APPS[a]!);
  const nginxVersion = (await execa('nginx', ['-v'], { reject: false, all: true })).all?.trim() ?? '';
  const wrkVersion = (await execa('wrk', ['--version'], { reject: false, all: true })).all?.split('\n')[0]?.trim() ?? '';
  const h2Version = (await execa('h2load', ['--version'], { reject: false, all: true })).all?.split('\n')[0]?.trim() ?? '';
  if (!nginxVersion.includes('nginx')) throw new Error('nginx is not installed: apt-get install -y nginx');
  if (!wrkVersion.includes('wrk')) throw new Error('wrk is not installed: apt-get install -y wrk');
  if (modes.includes('h2') && !h2Version.includes('h2load')) throw new Error('h2load is not installed: apt-get install -y nghttp2-client');
  const host = await prepareHost();
  const docker = new DockerEngine(host.dockerSocket);
  if (apps.some((a) => a.key === 'node')) await workload('node').ensureImage(docker.docker);
  // One certificate naming every test hostname, from a CA of the run: the same bundle for every proxy.
  const ca = await HostCa.loadOrCreate(join(host.benchDir, 'ca'), 'hoody proxy bench CA');
  const pem = await ca.issue(apps.map((a) => a.hostname));
  const fullchain = `${pem.cert}${ca.certPem}`;
  s.log(`starting two hoodyd (data plane: HAProxy, and hoodyd's own forwarder) with ${apps.length} containers each`);
  const env = { HOODY_LOG_LEVEL: o['log-level'] };
  const d = await startBenchDaemon({ parentDir: host.benchDir, image: host.image, dockerSocket: host.dockerSocket, env });
  s.cleanup.push(`hoodyd ${d.pid} (HAProxy data plane) and its containers`, () => d.destroy());
  const dn = await startBenchDaemon({ parentDir: host.benchDir, image: host.image, dockerSocket: host.dockerSocket, env: { ...env, HOODY_DATA_PLANE: 'node' } });
  s.cleanup.push(`hoodyd ${dn.pid} (in-process forwarder) and its containers`, () => dn.destroy());
  const bundle = { cert: pem.cert, key: pem.key, chain: ca.certPem };
  const main = await setupApps(d, docker, apps, bundle, notes);
  const other = await setupApps(dn, docker, apps, bundle, notes);
  const autoWorkers = cpus().length;
  s.log('starting nginx (1 worker, and auto)');
  const ng1 = await startNginx(s, join(host.benchDir, 'nginx-1'), '1', main.upstreams, { fullchain, key: pem.key });
  const ngA = await startNginx(s, join(host.benchDir, 'nginx-auto'), 'auto', main.upstreams, { fullchain, key: pem.key });
  const hostsFile = join(host.benchDir, 'hosts');
  await writeFile(hostsFile, `127.0.0.1 localhost\n${apps.map((a) => `127.0.0.1 ${a.hostname}`).join('\n')}\n`);
  const targets: Target[] = [
    { server: 'hoody', label: 'hoody: HAProxy data plane', port: d.ports.https, pid: await haproxyPid(d.stateDir) },
    { server: 'hoody_node', label: "hoody: hoodyd's own forwarder", port: dn.ports.https, pid: dn.pid },
    { server: 'nginx_1', label: 'nginx, 1 worker', port: ng1.port, pid: ng1.child.pid ?? 0 },
    { server: 'nginx_auto', label: `nginx, auto (${autoWorkers} workers)`, port: ngA.port, pid: ngA.child.pid ?? 0 },
  ];
  const tls: ProxyResult['tls'] = {};
  const fp = new X509Certificate(pem.cert).fingerprint256;
  for (const app of apps) {
    for (const t of targets) {
      const r = await httpsGet(t.port, app.hostname, ca.certPem);
      if (r.status !== 200 || r.text !== app.body) throw new Error(`${t.label} → ${app.key}: ${r.status} ${r.text.slice(0, 200)}`);
      const f = await tlsFacts(t.port, app.hostname);
      tls[`${app.key}/${t.server}`] = f;
      if (f.fingerprint256 !== fp) notes.push(`${t.server} served another certificate for ${app.hostname} (${f.fingerprint256}) than the bundle's (${fp}).`);
    }
  }
  if (new Set(Object.values(tls).map((f) => `${f.protocol} ${f.cipher}`)).size > 1) notes.push(`The targets negotiated different TLS parameters: ${JSON.stringify(tls)}`);

  const load = (app: App, t: Target, mode: Mode, secs: number): Promise<WrkResult> => {
    const url = `https://${app.hostname}:${t.port}/index.html`;
    if (mode === 'h2') return runH2load({ url, clients: connections, streams, threads, durationS: secs, dir: host.benchDir, hostsFile });
    return runWrk({ url, host: app.hostname, threads, connections, durationS: secs, dir: host.benchDir, hostsFile, headers: mode === 'close' ? ['Connection: close'] : [] });
  };
  const runs: TargetRun[] = [];
  for (const app of apps) {
    const appPid = main.pids.get(app.key) ?? 0;
    for (const mode of modes) {
      s.log(`${app.key} ${mode}: warm-up (2 s per target)`);
      for (const t of targets) await load(app, t, mode, 2);
      for (let rnd = 0; rnd < rounds; rnd++) {
        const order = targets.map((_, i) => targets[(i + rnd) % targets.length]!);
        for (const t of order) {
          s.check();
          const st = await settle(s, appPid, settleMax);
          const { value: m, others } = await watchOthers(async () => {
            const overflow0 = await tcpExt(appPid, 'ListenOverflows');
            const t0 = await treeTimes(t.pid);
            const w = await load(app, t, mode, duration);
            return { overflow0, t0, w, t1: await treeTimes(t.pid), overflow1: await tcpExt(appPid, 'ListenOverflows') };
          });
          const { overflow0, t0, w, t1, overflow1 } = m;
          const user = (t1.user - t0.user) / CLK_TCK;
          const sys = (t1.sys - t0.sys) / CLK_TCK;
          runs.push({
            app: app.key,
            mode,
            server: t.server,
            round: rnd,
            wrk: w,
            cpu_us_per_request: w.requests ? round(((user + sys) * 1e6) / w.requests, 1) : null,
            cpu_sys_share: user + sys > 0 ? round(sys / (user + sys), 3) : null,
            cpu_percent_of_core: round(((user + sys) / (w.duration_s || 1)) * 100, 1) ?? 0,
            settle_s: st.waited,
            time_wait_before: { host: st.host, app: st.app },
            app_listen_overflows: overflow0 === null || overflow1 === null ? null : overflow1 - overflow0,
            others,
          });
          s.log(`${app.key} ${mode} round ${rnd + 1}/${rounds} ${t.server}: ${w.rps} req/s, p99 ${w.latency_ms.p99} ms, errors ${wrkErrors(w)}`);
        }
      }
    }
  }
  const summary: TargetAgg[] = apps.flatMap((app) =>
    modes.flatMap((mode) =>
      targets.map((t) => {
        const mine = runs.filter((r) => r.app === app.key && r.mode === mode && r.server === t.server);
        const med = (pick: (r: TargetRun) => number | null) => round(median(mine.map(pick).filter((v): v is number => v !== null)), 2);
        return {
          app: app.key,
          mode,
          server: t.server,
          label: t.label,
          rps: med((r) => r.wrk.rps),
          p50_ms: med((r) => r.wrk.latency_ms.p50),
          p90_ms: med((r) => r.wrk.latency_ms.p90),
          p99_ms: med((r) => r.wrk.latency_ms.p99),
          cpu_us_per_request: med((r) => r.cpu_us_per_request),
          app_listen_overflows: mine.reduce((a, r) => a + (r.app_listen_overflows ?? 0), 0),
          errors: mine.reduce((a, r) => a + wrkErrors(r.wrk), 0),
        };
      }),
    ),
  );
  const ratio = (a: number | null | undefined, b: number | null | undefined) => (a !== null && a !== undefined && b ? round(a / b, 3) : null);
  const ratios: ProxyResult['ratios'] = {};
  for (const app of apps) {
    for (const mode of modes) {
      const by = (server: string) => summary.find((x) => x.app === app.key && x.mode === mode && x.server === server);
      ratios[`${app.key}/${mode}`] = {
        rps_hoody_over_nginx_auto: ratio(by('hoody')?.rps, by('nginx_auto')?.rps),
        rps_hoody_over_nginx_1: ratio(by('hoody')?.rps, by('nginx_1')?.rps),
        p99_hoody_over_nginx_auto: ratio(by('hoody')?.p99_ms, by('nginx_auto')?.p99_ms),
        p99_hoody_over_nginx_1: ratio(by('hoody')?.p99_ms, by('nginx_1')?.p99_ms),
        rps_hoody_over_hoody_node: ratio(by('hoody')?.rps, by('hoody_node')?.rps),
        cpu_per_request_hoody_over_nginx_auto: ratio(by('hoody')?.cpu_us_per_request, by('nginx_auto')?.cpu_us_per_request),
      };
    }
  }
  // Faults under load: hoodyd SIGKILLed and restarted, then certificate swaps; both data planes.
  const faults: FaultRun[] = [];
  if (faultDuration > 0) {
    const app = apps[0]!;
    for (const [t, daemon, info] of [
      [targets[0]!, d, main.info],
      [targets[1]!, dn, other.info],
    ] as const) {
      s.log(`faults, ${t.server}: hoodyd SIGKILLed and restarted under load (${faultDuration} s)`);
      faults.push(await killUnderLoad({ daemon, target: t.server, durationS: faultDuration, load: () => load(app, t, 'close', faultDuration) }));
      // hoodyd's own listeners (HOODY_DATA_PLANE=node) come back on new free ports; HAProxy kept its own.
      const now = (await daemon.client.call<{ listeners: { http: number; https: number } }>('GET', '/v1/host')).listeners;
      daemon.ports.http = now.http;
      daemon.ports.https = now.https;
      t.port = now.https;
      if (swaps > 0) {
        s.log(`faults, ${t.server}: ${swaps} certificate swaps under load`);
        faults.push(
          await swapsUnderLoad({ daemon, target: t.server, swaps, ca, hostname: app.hostname, container: app.container, token: info[app.key]!.token ?? '', durationS: faultDuration, load: () => load(app, t, 'close', faultDuration) }),
        );
      }
    }
  }
  const disturbed = disturbedNote(runs, 'runs');
  if (disturbed) notes.push(disturbed);
  if (summary.some((x) => x.errors > 0)) notes.push('Some runs saw socket errors or non-2xx answers (see runs[].wrk.errors in the JSON).');
  if (runs.some((r) => r.settle_s >= settleMax && settleMax > 0)) notes.push(`Some runs started with TIME_WAIT sockets left after waiting ${settleMax} s (see runs[].time_wait_before).`);

  const result: ProxyResult = {
    ...(await header({ apps: apps.map((a) => a.key), modes, rounds, duration_s: duration, connections, threads, h2_streams: streams, settle_max_s: settleMax, fault_duration_s: faultDuration, swaps, log_level: o['log-level'] })),
    nginx_version: nginxVersion,
    wrk_version: wrkVersion,
    h2load_version: h2Version,
    apps: Object.fromEntries(Object.entries(main.info).map(([k, v]) => [k, { ...v, token: undefined }])) as ProxyResult['apps'],
    tls,
    summary,
    ratios,
    runs,
    faults,
    notes,
  };
  process.stdout.write(`\n${table(SUMMARY_HEADER, summaryRows(result))}\n\n${table(['ratio', ...Object.keys(ratios)], ratioRows(result))}\n\n${table(FAULT_HEADER, faultRows(result))}\n`);
  await write(result, (svgName) => markdown(result, svgName, MODES), svg(result));
  s.log('removing nginx, the containers and the daemons');
});
