/**
 * Fleet routing benchmark (issue 12): the cost of a request forwarded over the host-to-host hop against the same
 * request served locally, and how long a new container takes to be reachable from every host.
 *
 * A 1-member etcd and H hoodyd (fleet members on loopback, each with its HAProxy) are started; one busybox
 * container lives on host 1. A closed Node load loop (C connections, keep-alive) sends `GET /api/v1/scripts`
 * for it by service host for `--seconds`, first to host 1's public port (local), then to host 2's (forwarded).
 * Then `--creates` containers are made on host 1 one after the other, each polled on every other host until it
 * answers 200: the time from the create's answer to the last host's 200.
 *
 *   node --no-node-snapshot dist/bench/fleet-routing.js --hosts 2 --connections 16 --seconds 10 --creates 5
 *
 * (`bench/fleet.ts` is another benchmark.) Everything made is removed at the end, on SIGINT/SIGTERM and on errors.
 */
import { mkdir, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { startEtcdCluster } from '../test/support/etcd.js';
import { type BenchDaemon, startBenchDaemon } from './daemon.js';
import { disturbedNote, runBench, watchOthers } from './harness.js';
import { chartSvg, type Panel } from './ns-chart.js';
import { numberOption } from './options.js';
import { fmt, mdTable, notesSection, runLines } from './results.js';
import { dist, sleep } from './stats.js';

const OPTIONS = {
  hosts: numberOption(2, 2, 5, 'hoodyd fleet members on this box'),
  connections: numberOption(16, 1, 256, 'concurrent keep-alive connections of the load loop'),
  seconds: numberOption(10, 1, 300, 'seconds of load per path (local, forwarded)'),
  creates: numberOption(5, 0, 100, 'containers created to time reachability from every host'),
};

const DOMAIN = 'hoody.localhost';

interface LoadResult {
  path: 'local' | 'forwarded';
  requests: number;
  errors: number;
  rps: number;
  latency_ms: ReturnType<typeof dist>;
  others: string[];
}

/** One GET on a keep-alive agent; resolves with its status and milliseconds. */
function get(agent: Agent, port: number, host: string, path: string): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host }, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
    });
    req.on('error', () => resolve({ status: 0, ms: performance.now() - t0 }));
    req.end();
  });
}

/** A closed loop: `connections` workers, each sending the next request when the last one answered. */
async function load(port: number, host: string, path: string, connections: number, seconds: number, stop: () => boolean): Promise<Omit<LoadResult, 'path' | 'others'>> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const times: number[] = [];
  let errors = 0;
  const end = Date.now() + seconds * 1000;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (Date.now() < end && !stop()) {
        const r = await get(agent, port, host, path);
        if (r.status === 200) times.push(r.ms);
        else errors++;
      }
    }),
  );
  agent.destroy();
  const elapsed = (Date.now() - t0) / 1000;
  return { requests: times.length, errors, rps: Math.round(times.length / elapsed), latency_ms: dist(times) };
}

runBench({ name: 'fleet-routing', description: 'forwarded vs local request latency and req/s; time for a new container to be reachable from every host', options: OPTIONS, budget: { default: 600, min: 60, max: 3600 } }, async (b) => {
  const { o, s } = b;
  const bench = await b.prepareHost();
  const etcd = await startEtcdCluster(1);
  s.cleanup.push('etcd', () => etcd.stop());
  await etcd.healthy();
  const fleet = `bench${b.runId.replace(/[^a-z0-9]/gi, '').slice(-8).toLowerCase()}`;
  // A short parent: HAProxy's unix sockets live under each state dir, and `fleet-routing-<run id>` pushes them past
  // the 108 bytes a socket path may have (haproxy -c then fails without a word).
  const parentDir = join(bench.stateDir, 'pool', 'bench', `fr-${b.runId.slice(-4)}`);
  await mkdir(parentDir, { recursive: true });
  s.cleanup.push(`bench dir ${parentDir}`, () => rm(parentDir, { recursive: true, force: true }));
  const daemons: BenchDaemon[] = [];
  for (let i = 1; i <= o.hosts; i++) {
    s.log(`starting hoodyd h${i}`);
    const d = await startBenchDaemon({
      parentDir,
      image: bench.image,
      dockerSocket: bench.dockerSocket,
      env: { HOODY_FLEET_ETCD: etcd.endpoints.join(','), HOODY_FLEET_NAME: fleet, HOODY_FLEET_HOST: `h${i}`, HOODY_FLEET_ADDRESS: '127.0.0.1', HOODY_FLEET_PUBLISH_MS: '500' },
    });
    daemons.push(d);
    s.cleanup.push(`hoodyd h${i}`, () => d.destroy());
  }
  const [home, away] = [daemons[0]!, daemons[1]!];
  const live = async (d: BenchDaemon) => (await d.client.call<{ healthy: boolean; record: { hop?: unknown } | null }[]>('GET', '/v1/fleet/hosts')).filter((h) => h.healthy && h.record?.hop).length;
  for (const d of daemons) while ((await live(d)) < o.hosts) await sleep(100);
  const { token } = await home.client.call<{ token: string }>('POST', '/v1/containers', { name: 'target', memory: '32m', host: 'h1' });
  const path = `/api/v1/scripts?token=${token}`;
  const host = `api.target.${DOMAIN}`;
  while ((await get(new Agent(), away.ports.http, host, path)).status !== 200) await sleep(100);

  const runs: LoadResult[] = [];
  for (const [label, d] of [['local', home], ['forwarded', away]] as const) {
    s.log(`load: ${label} (${o.connections} connections, ${o.seconds} s)`);
    const { value, others } = await watchOthers(() => load(d.ports.http, host, path, o.connections, o.seconds, s.stopped));
    runs.push({ path: label, ...value, others });
  }

  // By name the entry exists from the reservation on (before provisioning); the token-only host needs the token's
  // hash, published after the create: both are timed.
  const reach: number[] = [];
  const reachToken: number[] = [];
  for (let i = 0; i < o.creates && !s.stopped(); i++) {
    const name = `reach-${i}`;
    const made = await home.client.call<{ token: string }>('POST', '/v1/containers', { name, memory: '32m', host: 'h1' });
    const t0 = performance.now();
    const agent = new Agent({ keepAlive: true });
    const poll = async (vhost: string) => {
      await Promise.all(
        daemons.slice(1).map(async (d) => {
          while ((await get(agent, d.ports.http, vhost, `/api/v1/scripts?token=${made.token}`)).status !== 200) await sleep(5);
        }),
      );
      return performance.now() - t0;
    };
    const [byName, byToken] = await Promise.all([poll(`api.${name}.${DOMAIN}`), poll(`api.${DOMAIN}`)]);
    agent.destroy();
    reach.push(byName);
    reachToken.push(byToken);
  }

  const note = disturbedNote(runs, 'load runs');
  if (note) b.notes.push(note);
  b.notes.push('Every host is on this one box: the hop is loopback TLS, so the forwarded cost is CPU (TLS, HMAC, a second HTTP parse), not the network.');
  const result = { ...(await b.header(o)), runs, reachable_ms: dist(reach, 1), reachable_by_token_ms: dist(reachToken, 1), notes: b.notes };
  const [runLine, optLine] = runLines(result);
  const [local, fwd] = [runs.find((r) => r.path === 'local'), runs.find((r) => r.path === 'forwarded')];
  const md = (svgName: string | null) =>
    [
      '# fleet routing: forwarded vs local',
      '',
      runLine,
      optLine,
      '',
      ...(svgName ? [`![forwarded vs local, and reachability](${svgName})`, ''] : []),
      mdTable(
        ['path', 'requests', 'errors', 'req/s', 'p50 ms', 'p99 ms', 'max ms'],
        runs.map((r) => [r.path, r.requests, r.errors, r.rps, fmt(r.latency_ms.p50), fmt(r.latency_ms.p99), fmt(r.latency_ms.max)]),
      ),
      '',
      local && fwd ? `Forwarding adds ${fmt((fwd.latency_ms.p50 ?? 0) - (local.latency_ms.p50 ?? 0))} ms at p50 and costs ${fmt(100 - (100 * fwd.rps) / Math.max(1, local.rps), 0)}% of the req/s.` : '',
      '',
      `A new container reachable from every other host (${reach.length} creates), after its create answered: by name p50 ${fmt(result.reachable_ms.p50, 0)} ms, max ${fmt(result.reachable_ms.max, 0)} ms; by token only p50 ${fmt(result.reachable_by_token_ms.p50, 0)} ms, max ${fmt(result.reachable_by_token_ms.max, 0)} ms.`,
      ...notesSection(b.notes),
      '',
    ].join('\n');
  const bars = (title: string, yLabel: string, groups: [string, [string, number | null | undefined][]][]): Panel => ({
    kind: 'bar',
    title,
    yLabel,
    groups: groups.map(([label, values]) => ({ label, values: values.map(([name, value]) => ({ name, value: value ?? null })) })),
  });
  const svg = chartSvg(
    [
      bars('latency', 'ms', [
        ['p50', runs.map((r) => [r.path, r.latency_ms.p50])],
        ['p99', runs.map((r) => [r.path, r.latency_ms.p99])],
      ]),
      bars('throughput', 'req/s', [['req/s', runs.map((r) => [r.path, r.rps])]]),
      bars('reachable from every host', 'ms after the create', [
        ['p50', [['by name', result.reachable_ms.p50], ['by token', result.reachable_by_token_ms.p50]]],
        ['max', [['by name', result.reachable_ms.max], ['by token', result.reachable_by_token_ms.max]]],
      ]),
    ],
    `fleet routing, ${o.hosts} hosts on one box, ${o.connections} connections`,
  );
  await b.write(result, md, svg);
});
