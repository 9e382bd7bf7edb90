/**
 * Shared pieces of the namespace benchmarks (cron, exec, proxy): clean-up on every exit path, a keep-alive
 * HTTP client for the public listener, /proc samplers, a wrk runner, and the result files.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../daemon/config.js';
import { setupHost } from '../daemon/setup.js';
import { BUSYBOX_IMAGE } from '../host/images.js';
import { ROOT } from './daemon.js';
import { CLK_TCK, cpuTicks, descendants, processTable } from './procs.js';
import { percentile, round, sleep } from './stats.js';

export { ROOT };

// ---------------------------------------------------------------- clean-up and signals

/** Clean-up steps, run in reverse order, each at most once, whatever happened before. */
export class Cleanup {
  private readonly steps: { label: string; fn: () => Promise<void> }[] = [];
  private running: Promise<void> | null = null;

  push(label: string, fn: () => Promise<void>): () => void {
    const step = { label, fn };
    this.steps.push(step);
    return () => {
      const i = this.steps.indexOf(step);
      if (i >= 0) this.steps.splice(i, 1);
    };
  }

  run(onStep?: (label: string) => void): Promise<void> {
    this.running ??= (async () => {
      while (this.steps.length) {
        const step = this.steps.pop()!;
        onStep?.(step.label);
        await step.fn().catch((err: Error) => process.stderr.write(`clean-up of ${step.label} failed: ${err.message}\n`));
      }
    })();
    return this.running;
  }
}

/** Child processes started by a benchmark (wrk, nginx, …): killed on SIGINT/SIGTERM before the clean-up. */
export const children = new Set<ChildProcess>();

/** The exit code a signal asked for (130/143), once one arrived. */
let signalExit: number | null = null;

export interface Session {
  readonly cleanup: Cleanup;
  /** True once SIGINT/SIGTERM arrived or the time budget ran out. */
  stopped(): boolean;
  /** Throws when stopped (call it between steps). */
  check(): void;
  /** Sleeps, but wakes early (and throws) when stopped. */
  nap(ms: number): Promise<void>;
  log(line: string): void;
  dispose(): void;
}

/**
 * One benchmark run: a clean-up list, SIGINT/SIGTERM handling (kill our children, clean up, exit 130/143)
 * and a wall-clock budget after which every loop stops at its next check.
 */
export function session(name: string, budgetS: number): Session {
  const cleanup = new Cleanup();
  let stop = false;
  const deadline = Date.now() + budgetS * 1000;
  const log = (line: string) => process.stderr.write(`[${name} ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
  const onSignal = (signal: NodeJS.Signals) => {
    if (stop && signal) {
      process.stderr.write(`\n${signal}: still cleaning up, please wait\n`);
      return;
    }
    stop = true;
    signalExit = signal === 'SIGINT' ? 130 : 143;
    process.stderr.write(`\n${signal}: stopping and removing what the benchmark made…\n`);
    for (const c of children) c.kill('SIGTERM');
    void (async () => {
      await cleanup.run((label) => process.stderr.write(`  removing ${label}\n`));
      process.exit(signalExit ?? 130);
    })();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const stopped = () => {
    if (!stop && Date.now() > deadline) {
      stop = true;
      log(`time budget of ${budgetS} s used up: stopping`);
    }
    return stop;
  };
  return {
    cleanup,
    stopped,
    check() {
      if (stopped()) throw new Error('stopped (signal or time budget)');
    },
    async nap(ms) {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        if (stopped()) throw new Error('stopped (signal or time budget)');
        await sleep(Math.min(500, end - Date.now()));
      }
    },
    log,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

export function stamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z').replace('T', '-');
}

export function runIdOf(d: Date): string {
  return `${stamp(d).slice(0, 15).replace('-', '')}${randomBytes(2).toString('hex')}`;
}

// ---------------------------------------------------------------- host

export interface BenchHost {
  stateDir: string;
  dockerSocket: string;
  /** A directory on the BTRFS pool for this run (removed at clean-up). */
  benchDir: string;
  image: string;
}

/** Pool, engine and the busybox image (idempotent), and a bench dir on the pool for this run. */
export async function prepareHost(kind: string, runId: string, cleanup: Cleanup): Promise<BenchHost> {
  const config = loadConfig({});
  await setupHost(config, pino({ level: 'silent' }), { images: 'busybox' });
  const benchDir = join(config.stateDir, 'pool', 'bench', `${kind}-${runId}`);
  await mkdir(benchDir, { recursive: true });
  cleanup.push(`bench dir ${benchDir}`, () => rm(benchDir, { recursive: true, force: true }));
  return { stateDir: config.stateDir, dockerSocket: config.dockerSocket, benchDir, image: BUSYBOX_IMAGE };
}

// ---------------------------------------------------------------- HTTP to the public listener

export interface Reply {
  status: number;
  text: string;
  ms: number;
}

/** Keep-alive requests to a listener on 127.0.0.1 with a chosen Host header (no DNS involved). */
export class KeepAliveClient {
  readonly agent: Agent;
  constructor(
    readonly port: number,
    maxSockets = 16,
    private readonly timeoutMs = 60_000,
  ) {
    this.agent = new Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  }

  call(method: string, host: string, path: string, body?: unknown, contentType?: string): Promise<Reply> {
    const payload = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const headers: Record<string, string | number> = { host };
    if (payload) {
      headers['content-length'] = payload.length;
      headers['content-type'] = contentType ?? (typeof body === 'string' ? 'text/plain' : 'application/json');
    }
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      const req = request({ host: '127.0.0.1', port: this.port, method, path, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - t0 }));
        res.on('error', reject);
      });
      req.setTimeout(this.timeoutMs, () => req.destroy(new Error(`${method} ${host}${path.split('?')[0]}: no answer in ${this.timeoutMs} ms`)));
      req.on('error', reject);
      if (payload) req.write(payload);
      req.end();
    });
  }

  /** Like call(), but a non-2xx answer is an error. */
  async ok(method: string, host: string, path: string, body?: unknown, contentType?: string): Promise<Reply> {
    const r = await this.call(method, host, path, body, contentType);
    if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${host}${path.split('?')[0]}: ${r.status} ${r.text.slice(0, 300)}`);
    return r;
  }

  close(): void {
    this.agent.destroy();
  }
}

// ---------------------------------------------------------------- /proc

/** Resident set size of a process in bytes (0 when gone). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
}

/** Busy and total jiffies of the whole host (/proc/stat "cpu" line). */
export async function hostCpu(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** Summed utime+stime (ticks) of a pid and all its descendants (e.g. hoodyd and its exec worker). */
export async function treeTicks(root: number): Promise<number> {
  const pids = descendants(await processTable(), root);
  let sum = 0;
  for (const p of pids) sum += await cpuTicks(p);
  return sum;
}

/** utime and stime (ticks) of one process (zeros when gone). */
export async function procTimes(pid: number): Promise<{ user: number; sys: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return { user: 0, sys: 0 };
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]), sys: Number(f[12]) };
}

/** utime and stime (ticks) summed over a pid and its descendants: user-space work vs the kernel's (e.g. connect()). */
export async function treeTimes(root: number): Promise<{ user: number; sys: number }> {
  const out = { user: 0, sys: 0 };
  for (const p of descendants(await processTable(), root)) {
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    if (!stat) continue;
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.user += Number(f[11]);
    out.sys += Number(f[12]);
  }
  return out;
}

/** TCP sockets in TIME_WAIT in the network namespace of a process (`self`: ours). */
export async function timeWaitCount(pid: number | 'self'): Promise<number> {
  let n = 0;
  for (const f of ['tcp', 'tcp6']) {
    const text = await readFile(`/proc/${pid}/net/${f}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) if (line.trim().split(/\s+/)[3] === '06') n++;
  }
  return n;
}

/** A TcpExt counter (e.g. ListenOverflows) of the network namespace of a process. */
export async function tcpExt(pid: number | 'self', name: string): Promise<number | null> {
  const lines = (await readFile(`/proc/${pid}/net/netstat`, 'utf8').catch(() => '')).split('\n').filter((l) => l.startsWith('TcpExt:'));
  const keys = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  const i = keys.indexOf(name);
  return i > 0 && values[i] !== undefined ? Number(values[i]) : null;
}

/**
 * Other benchmarks or test runs on this shared box right now (the density benchmark, `node --test`): their load
 * skews ours, so every measurement records whether one was running.
 */
export async function othersRunning(): Promise<string[]> {
  const out: string[] = [];
  for (const p of await processTable()) {
    if (p.pid === process.pid) continue;
    const cmd = p.cmdline.join(' ');
    if (/dist\/bench\/density\.js|hoody(\.js)? bench density|node .*--test\b/.test(cmd)) out.push(`${p.pid} ${cmd.slice(0, 120)}`);
  }
  return out;
}

/** Pids of the engine's own processes (dockerd, containerd), found by name. */
export async function enginePids(): Promise<number[]> {
  return (await processTable()).filter((p) => p.comm === 'dockerd' || p.comm === 'containerd').map((p) => p.pid);
}

export interface Sample {
  /** Seconds since the sampler started. */
  t: number;
  daemon_rss_mib: number;
  /** CPU of the daemon (percent of one core) since the previous sample. */
  daemon_cpu_percent: number;
  engine_cpu_percent: number;
  host_busy_percent: number;
}

/**
 * Samples the daemon's CPU (utime+stime, its process only) and RSS, the engine's CPU, and the host's busy
 * share once per interval, and keeps cumulative tick counters so any window can be read off afterwards.
 */
export class ProcSampler {
  readonly samples: Sample[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly t0 = Date.now();
  private last: { at: number; daemon: number; engine: number; host: { busy: number; total: number } } | null = null;
  private busy = false;

  constructor(
    private readonly daemonPid: number,
    private readonly engine: number[],
    private readonly intervalMs = 1000,
  ) {}

  async counters(): Promise<{ at: number; daemon: number; engine: number; host: { busy: number; total: number } }> {
    let engine = 0;
    for (const p of this.engine) engine += await cpuTicks(p);
    return { at: Date.now(), daemon: await cpuTicks(this.daemonPid), engine, host: await hostCpu() };
  }

  start(): void {
    const tick = async () => {
      if (this.busy) return;
      this.busy = true;
      try {
        const now = await this.counters();
        const rss = await rssBytes(this.daemonPid);
        if (this.last) {
          const dt = (now.at - this.last.at) / 1000 || 1;
          const ht = now.host.total - this.last.host.total || 1;
          this.samples.push({
            t: round((now.at - this.t0) / 1000, 1) ?? 0,
            daemon_rss_mib: round(rss / 1048576, 1) ?? 0,
            daemon_cpu_percent: round(((now.daemon - this.last.daemon) / CLK_TCK / dt) * 100, 1) ?? 0,
            engine_cpu_percent: round(((now.engine - this.last.engine) / CLK_TCK / dt) * 100, 1) ?? 0,
            host_busy_percent: round(((now.host.busy - this.last.host.busy) / ht) * 100, 1) ?? 0,
          });
        }
        this.last = now;
      } finally {
        this.busy = false;
      }
    };
    void tick();
    this.timer = setInterval(() => void tick(), this.intervalMs);
  }

  /** Seconds since start of a wall-clock instant (ms). */
  at(ms: number): number {
    return (ms - this.t0) / 1000;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

// ---------------------------------------------------------------- wrk

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
  const [cmd, argv] = o.hostsFile
    ? ['unshare', ['-m', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec wrk "$@"', o.hostsFile, ...args]]
    : ['wrk', args];
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(cmd, argv as string[], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let text = '';
    child.stdout.on('data', (c: Buffer) => {
      text += c.toString('utf8');
    });
    child.stderr.on('data', (c: Buffer) => {
      text += c.toString('utf8');
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), (o.durationS + 30) * 1000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(killer);
      children.delete(child);
      if (code === 0) resolve(text);
      else reject(new Error(`wrk exited with ${code}: ${text.slice(-500)}`));
    });
  });
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

// ---------------------------------------------------------------- figures and files

/** p50/p99/max/mean of a list, rounded. */
export function dist(values: readonly number[], decimals = 3): { n: number; p50: number | null; p90: number | null; p99: number | null; max: number | null; mean: number | null } {
  const n = values.length;
  return {
    n,
    p50: round(percentile(values, 50), decimals),
    p90: round(percentile(values, 90), decimals),
    p99: round(percentile(values, 99), decimals),
    max: round(n ? Math.max(...values) : null, decimals),
    mean: round(n ? values.reduce((a, b) => a + b, 0) / n : null, decimals),
  };
}

/** The 0, 1, …, 100 % quantiles (nearest rank), rounded; empty when there are no values. */
export function quantiles(values: readonly number[], decimals = 3): number[] {
  if (!values.length) return [];
  const s = [...values].sort((a, b) => a - b);
  return Array.from({ length: 101 }, (_, q) => round(s[Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1))]!, decimals) ?? 0);
}

export function median(values: readonly number[]): number | null {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export const fmt = (v: number | null | undefined, d = 2): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));

export function mdTable(header: string[], rows: (string | number)[][]): string {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** Writes `<out>/<name>-<time>.json`, `.md` and (when given) `.svg`; returns the paths. */
export async function writeResults(
  out: string,
  name: string,
  started: Date,
  json: unknown,
  md: (svgName: string | null) => string,
  svgText: string | null,
): Promise<{ json: string; md: string; svg: string | null }> {
  await mkdir(out, { recursive: true });
  const base = `${name}-${stamp(started)}`;
  const files = { json: join(out, `${base}.json`), md: join(out, `${base}.md`), svg: svgText ? join(out, `${base}.svg`) : null };
  await writeFile(files.json, `${JSON.stringify(json, null, 2)}\n`);
  if (svgText && files.svg) await writeFile(files.svg, svgText);
  await writeFile(files.md, md(svgText ? `${base}.svg` : null));
  return files;
}

/** Host facts for the result files. */
export async function hostFacts(): Promise<Record<string, unknown>> {
  const os = await import('node:os');
  return { kernel: os.release(), cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model ?? '', mem_total_mib: Math.round(os.totalmem() / 1048576), node: process.version };
}

/** `--name value` options of a `node dist/bench/<x>.js` command line, checked against the known names. */
export function parseArgs(argv: readonly string[], known: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = { ...known };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      process.stdout.write(`options (defaults):\n${Object.entries(known).map(([k, v]) => `  --${k} ${v}`).join('\n')}\n`);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m || !(m[1]! in known)) usageExit(`unknown option ${a}; try --help`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) usageExit(`${a} needs a value`);
    out[m[1]!] = value;
  }
  return out;
}

export function usageExit(message: string): never {
  process.stderr.write(`usage error: ${message}\n`);
  process.exit(2);
}

/** A number option within bounds, else a usage error (exit 2). */
export function num(opts: Record<string, string>, name: string, min: number, max: number): number {
  const n = Number(opts[name]);
  if (!Number.isFinite(n) || n < min || n > max) usageExit(`--${name} must be a number in ${min}..${max}, got ${opts[name]}`);
  return n;
}

export function numList(opts: Record<string, string>, name: string, min: number, max: number): number[] {
  const v = (opts[name] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (!v.length || v.some((n) => !Number.isInteger(n) || n < min || n > max)) usageExit(`--${name} must be integers in ${min}..${max}, comma-separated`);
  return v;
}

/** Runs a benchmark's main: prints its error and exits 1 on failure. */
export function main(fn: () => Promise<void>): void {
  fn().then(
    () => process.exit(0),
    (err: Error) => {
      // Interrupted: the signal handler cleans up and exits with its own code.
      if (signalExit !== null) return;
      process.stderr.write(`error: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
