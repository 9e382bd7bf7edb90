/**
 * The noisy neighbour (issue 10.6): another tenant's latency while one tenant floods exec with CPU-heavy runs.
 * B runs a trivial script sequentially on one keep-alive connection, first on a quiet daemon, then while wrk
 * (a separate process) drives 50 connections at A's script that spins 300 ms; A's client backs off 500 ms
 * after a refusal, as a retrying client would (a flood of refusals is HTTP load, not exec).
 */
import type { AdminClient } from '../daemon/client.js';
import type { KeepAliveClient } from './keepalive.js';
import { type Dist, dist, round } from './stats.js';
import { runWrk, type WrkResult } from './wrk.js';

const BACKOFF_LUA = `
local refused = false
response = function(status, headers, body) refused = status ~= 200 end
delay = function() if refused then return 500 end return 0 end
`;

export interface NeighbourResult {
  attacker: { script: string; connections: number; wrk: WrkResult };
  quiet_ms: Dist;
  loaded_ms: Dist;
  p50_ratio: number | null;
  p99_ratio: number | null;
}

export interface NeighbourOptions {
  client: AdminClient;
  http: KeepAliveClient;
  port: number;
  /** B's trivial run: host and path (with token) on the same listener. */
  victim: { host: string; path: string; body: string };
  runs: number;
  dir: string;
  log(line: string): void;
}

export async function measureNeighbour(o: NeighbourOptions): Promise<NeighbourResult> {
  const token = (await o.client.call<{ token: string }>('POST', '/v1/containers', { name: 'ea' })).token;
  const apiHost = 'api.ea.hoody.localhost';
  const script = '// @timeout 3000\nconst end = Date.now() + 300; while (Date.now() < end) {}\nreturn 1;\n';
  await o.http.ok('PUT', apiHost, `/api/v1/scripts/burn.ts?token=${token}`, script, 'text/plain');
  const victimRuns = async (n: number, until = Number.POSITIVE_INFINITY): Promise<number[]> => {
    const ms: number[] = [];
    for (let i = 0; i < n && performance.now() < until; i++) {
      const r = await o.http.call('GET', o.victim.host, o.victim.path);
      if (r.status !== 200 || r.text !== o.victim.body) throw new Error(`neighbour: B got ${r.status} ${r.text.slice(0, 200)}`);
      ms.push(r.ms);
    }
    return ms;
  };
  o.log(`neighbour: ${o.runs} runs of B quiet, then under A's 50-connection flood of a 300 ms spinning script`);
  await victimRuns(50);
  const quiet = await victimRuns(o.runs);
  const durationS = Math.max(8, Math.ceil((quiet.reduce((a, b) => a + b, 0) * 3) / 1000) + 4);
  const flood = runWrk({
    url: `http://127.0.0.1:${o.port}/scripts/burn?token=${token}`,
    host: 'exec.ea.hoody.localhost',
    threads: 2,
    connections: 50,
    durationS,
    dir: o.dir,
    lua: BACKOFF_LUA,
  });
  await new Promise((r) => setTimeout(r, 1500)); // the flood is in full swing
  const loaded = await victimRuns(o.runs, performance.now() + (durationS - 2.5) * 1000);
  const wrk = await flood;
  const q = dist(quiet);
  const l = dist(loaded);
  const ratio = (a: number | null, b: number | null) => (a !== null && b ? round(a / b, 2) : null);
  return { attacker: { script, connections: 50, wrk }, quiet_ms: q, loaded_ms: l, p50_ratio: ratio(l.p50, q.p50), p99_ratio: ratio(l.p99, q.p99) };
}
