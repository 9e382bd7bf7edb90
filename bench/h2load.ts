/** h2load (nghttp2) for HTTP/2 runs, with latency percentiles from its per-request log. */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runTool, type WrkResult } from './wrk.js';
import { round } from './stats.js';

export interface H2loadOptions {
  url: string;
  clients: number;
  /** Concurrent streams per connection. */
  streams: number;
  threads: number;
  durationS: number;
  dir: string;
  /** A hosts file bind-mounted over /etc/hosts (h2load takes SNI and :authority from the URL's host). */
  hostsFile?: string;
}

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

/** Runs h2load for a duration and reports in wrk's shape (errors: failed + errored as `status`/`connect`). */
export async function runH2load(o: H2loadOptions): Promise<WrkResult> {
  const log = join(o.dir, `h2load-${process.pid}-${Date.now()}.tsv`);
  const args = ['-D', String(o.durationS), '-c', String(o.clients), '-m', String(o.streams), '-t', String(o.threads), '--log-file', log, o.url];
  const out = await runTool('h2load', args, o.durationS, o.hostsFile);
  // requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  if (!m) throw new Error(`h2load printed no summary: ${out.slice(-500)}`);
  const [done, succeeded, failed, errored, timeout] = [m[3], m[4], m[5], m[6], m[7]].map(Number) as [number, number, number, number, number];
  const traffic = /traffic: [^(]*\((\d+)\) total/.exec(out);
  // Per request: start (µs since epoch), status, µs until the end of the response.
  const rows = (await readFile(log, 'utf8').catch(() => ''))
    .split('\n')
    .map((l) => l.split('\t'))
    .filter((c) => c.length >= 3);
  await rm(log, { force: true });
  const lat = rows.map((c) => Number(c[2]) / 1000).sort((a, b) => a - b);
  // A loop, not Math.max(...starts): a fast target logs more requests than a spread can pass as arguments.
  let first = Number.POSITIVE_INFINITY;
  let last = Number.NEGATIVE_INFINITY;
  for (const c of rows) {
    const t = Number(c[0]);
    if (t < first) first = t;
    if (t > last) last = t;
  }
  const span = rows.length ? (last - first) / 1e6 : o.durationS;
  const duration = Math.max(span, 0.001);
  const ms = (v: number) => round(v, 3) ?? 0;
  return {
    requests: succeeded,
    duration_s: round(duration, 3) ?? 0,
    rps: round(succeeded / duration, 1) ?? 0,
    bytes: Number(traffic?.[1] ?? 0),
    errors: { connect: errored, read: 0, write: 0, status: failed + Math.max(done - succeeded - failed - errored, 0), timeout },
    latency_ms: {
      mean: ms(lat.reduce((a, b) => a + b, 0) / (lat.length || 1)),
      p50: ms(pct(lat, 50)),
      p90: ms(pct(lat, 90)),
      p99: ms(pct(lat, 99)),
      p999: ms(pct(lat, 99.9)),
      max: ms(lat.at(-1) ?? 0),
    },
  };
}
