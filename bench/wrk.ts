/** wrk runs with exact figures (a Lua done() hook), and the child-process plumbing h2load shares. */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { children } from './session.js';
import { round } from './stats.js';

export interface WrkResult {
  requests: number;
  duration_s: number;
  rps: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latency_ms: { mean: number; p50: number; p90: number; p99: number; p999: number; max: number };
}

// wrk's done() hook: exact figures (microseconds) as one JSON line instead of its rounded text summary.
const WRK_LUA = `done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.3f}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
`;

export interface WrkOptions {
  url: string;
  /** Host header (wrk otherwise sends the URL's host and port). */
  host?: string;
  threads: number;
  connections: number;
  durationS: number;
  /** Where the Lua hook is written (a work dir of the run). */
  dir: string;
  /**
   * A hosts file bind-mounted over /etc/hosts for wrk only (a private mount namespace): wrk resolves the URL's
   * host with getaddrinfo, which knows no `*.localhost`, and takes its SNI name from the URL.
   */
  hostsFile?: string;
  /** Extra request headers (e.g. `Connection: close`: a new connection and TLS handshake per request). */
  headers?: string[];
  /** More Lua for the hook (e.g. a `response` and `delay` pair that backs off after a refusal). */
  lua?: string;
}

/** Runs one wrk measurement (keep-alive, bounded by its duration plus a margin). */
export async function runWrk(o: WrkOptions): Promise<WrkResult> {
  const lua = join(o.dir, 'wrk-done.lua');
  await writeFile(lua, WRK_LUA + (o.lua ?? ''));
  const args = ['-t', String(o.threads), '-c', String(o.connections), '-d', `${o.durationS}s`, '--timeout', '5s', '-s', lua];
  if (o.host) args.push('-H', `Host: ${o.host}`);
  for (const h of o.headers ?? []) args.push('-H', h);
  args.push(o.url);
  const out = await runTool('wrk', args, o.durationS, o.hostsFile);
  const line = out.split('\n').find((l) => l.startsWith('WRKJSON '));
  if (!line) throw new Error(`wrk printed no summary: ${out.slice(-500)}`);
  const j = JSON.parse(line.slice(8)) as Record<string, number>;
  const ms = (us: number | undefined) => round((us ?? 0) / 1000, 3) ?? 0;
  const duration = (j.duration_us ?? 0) / 1e6;
  return {
    requests: j.requests ?? 0,
    duration_s: round(duration, 3) ?? 0,
    rps: round((j.requests ?? 0) / (duration || 1), 1) ?? 0,
    bytes: j.bytes ?? 0,
    errors: { connect: j.connect ?? 0, read: j.read ?? 0, write: j.write ?? 0, status: j.status ?? 0, timeout: j.timeout ?? 0 },
    latency_ms: { mean: ms(j.mean), p50: ms(j.p50), p90: ms(j.p90), p99: ms(j.p99), p999: ms(j.p999), max: ms(j.max) },
  };
}

export function wrkErrors(r: WrkResult): number {
  return r.errors.connect + r.errors.read + r.errors.write + r.errors.status + r.errors.timeout;
}

/**
 * Runs a load tool to its end and returns what it printed (stdout and stderr), killed 30 s past its duration.
 * With a hosts file, it runs in a private mount namespace where that file is bind-mounted over /etc/hosts: the
 * tools resolve the URL's host with getaddrinfo, which knows no `*.localhost`, and take their SNI name from it.
 */
export async function runTool(tool: string, args: readonly string[], durationS: number, hostsFile?: string): Promise<string> {
  const [cmd, argv] = hostsFile ? ['unshare', ['-m', 'sh', '-c', `mount --bind "$0" /etc/hosts && exec ${tool} "$@"`, hostsFile, ...args]] : [tool, [...args]];
  return new Promise<string>((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let text = '';
    child.stdout.on('data', (c: Buffer) => {
      text += c.toString('utf8');
    });
    child.stderr.on('data', (c: Buffer) => {
      text += c.toString('utf8');
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), (durationS + 30) * 1000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(killer);
      children.delete(child);
      if (code === 0) resolve(text);
      else reject(new Error(`${tool} exited with ${code}: ${text.slice(-500)}`));
    });
  });
}
