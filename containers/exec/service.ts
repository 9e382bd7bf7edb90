import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import type { Database } from 'better-sqlite3';
import type { Logger } from 'pino';
import { Cgroup, type CgroupLimits } from '../../host/cgroup.js';
import type { NamespaceHooks } from '../context.js';
import { fail, type HoodyError, isHoodyError } from '../errors.js';
import { FileArea } from '../files.js';
import type { LogSource } from '../logs.js';
import { type ExecObserver, NO_EXEC_OBSERVER } from '../observe.js';
import type { ContainerRow } from '../store.js';
import { DEFAULT_BUDGET, ExecBudget, type ExecBudgetLimits } from './budget.js';
import { checkBunScript, serverlessModule } from './bun-module.js';
import { BunRuntime, type BunRuntimeDeps } from './bun-runtime.js';
import type { PersistentInfo } from './bun-persistent.js';
import { type Directives, MAX_MEMORY_MB, parseDirectives } from './directives.js';
import { type AcmeHook, flatHeaders, hostCall, type SelfFetch } from './host-calls.js';
import type { HostOp, ScriptRequest, WorkerStats } from './protocol.js';
import { failure, httpResult, type RunResult } from './result.js';
import { type RunInput, scriptRequest } from './run-input.js';
import { ExecLog, type ExecLogEntry, type ExecLogQuery } from './schema.js';
import { loaderFor, Transpiler } from './transpile.js';
import { type RunReport, WorkerHost } from './worker-host.js';

export type { AcmeHook, RunCaller, SelfCall, SelfFetch, SelfRequest, SelfResponse } from './host-calls.js';

export interface ExecDeps {
  db: Database;
  log: Logger;
  /** Base domain of the service hosts; scripts may not fetch anything under it. Default hoody.localhost. */
  domain?: string;
  selfFetch: SelfFetch;
  acme?: AcmeHook;
  /** Live isolates across all containers (default 64); idle ones beyond it are disposed least recently used first. */
  maxLiveIsolates?: number;
  /** An isolate unused this long is disposed (default 60 s). */
  idleMs?: number;
  /** Per-container caps: files in /scripts written through the API, bytes per script, exec log rows kept. */
  limits?: { scripts: number; scriptBytes: number; runsKept: number };
  /** Runs and isolate memory per container and for the host (DEFAULT_BUDGET for what is not given). */
  budget?: Partial<Omit<ExecBudgetLimits, 'hostRuns'>>;
  /**
   * The exec worker's cgroup: `name` (unique per daemon) with a hard memory and CPU limit; null: none.
   * A machine without a usable controller logs a warning and runs the worker without one.
   */
  cgroup?: ({ name: string; sweepPrefix: string } & CgroupLimits) | null;
  /** `@runtime bun`: how Bun processes start in containers; absent: Bun scripts answer RUNTIME_UNAVAILABLE. */
  bun?: Omit<BunRuntimeDeps, 'hostCall' | 'log'>;
  /** Told of every run's duration and every request's error code (metrics). */
  observer?: ExecObserver;
}

export type { RunResult } from './result.js';
export type { RunInput } from './run-input.js';

/** A script found, checked and compiled: what run() needs, and what the route needs to decide auth and CORS. */
export interface PreparedScript {
  /** The file that runs, relative to the scripts area (e.g. certs/renew.ts). */
  file: string;
  directives: Directives;
  hash: string;
  code: string;
}

export interface ScriptInfo {
  path: string;
  size: number;
  mtime: string;
  /** .ts and .js files run; other files in the area (shell scripts for cron) are only stored. */
  runnable: boolean;
  directives: Directives | null;
  /** Why a runnable file's magic comments do not parse (edited behind the API's back). */
  error: string | null;
}

/** Scripts calling scripts through fetch go at most this deep (508 beyond). */
export const MAX_EXEC_DEPTH = 4;
const CONSOLE_CAP = 16 * 1024;
/** Characters of an error kept in the exec log and the answer (the worker cuts a thrown message already). */
const ERROR_CAP = 8192;
const RUNNABLE = /\.(ts|js)$/;
/** Prepared scripts kept across requests (the transpiler keeps as many compiled sources). */
const PREPARED_KEPT = 256;
/** A file changed less than this ago is read again on its next run (file times move in clock ticks). */
const VERSION_SETTLE_MS = 50;

interface ActiveRun {
  row: ContainerRow;
  input: RunInput;
  /** Made by the run's first host call (most runs make none; an abort costs a DOMException). */
  abort: AbortController | null;
}

/** The container user an anonymous (`@auth none`, no token) Bun run runs as. */
const ANONYMOUS_USER = 'nobody';

/** A Bun script's key and what the runner loads: the serverless module, or nothing (a persistent one is a module). */
async function bunCompiled(text: string, file: string, d: Directives): Promise<{ hash: string; code: string }> {
  await checkBunScript(text, loaderFor(file), d.mode);
  const hash = createHash('sha256').update('bun\0').update(text).digest('hex').slice(0, 32);
  return { hash, code: d.mode === 'serverless' ? serverlessModule(text) : '' };
}

function errorText(err: unknown): string {
  if (isHoodyError(err)) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

/**
 * Exec: scripts on each container's scripts area, run in V8 isolates in a separate worker process.
 * The daemon owns one; it is also a NamespaceHooks (close() of a container disposes its isolates).
 */
export class ExecService implements NamespaceHooks {
  private readonly worker: WorkerHost;
  private readonly transpiler = new Transpiler();
  /** Prepared scripts by container id and file, with the file version they were read at; least recently used out. */
  private readonly preparedCache = new Map<string, { version: string; script: PreparedScript }>();
  private readonly active = new Map<number, ActiveRun>();
  private readonly scriptWrites = new Map<string, Promise<void>>();
  private readonly execLog: ExecLog;
  private readonly domain: string;
  private readonly budget: ExecBudget;
  private readonly cgroup: Cgroup | null;
  private readonly bun: BunRuntime | null;
  private seq = 0;
  private readonly observer: ExecObserver;

  constructor(private readonly deps: ExecDeps) {
    this.domain = deps.domain ?? 'hoody.localhost';
    this.observer = deps.observer ?? NO_EXEC_OBSERVER;
    this.execLog = new ExecLog(deps.db, (err) => deps.log.error({ err }, 'exec log write failed'), deps.limits?.runsKept);
    const maxLiveIsolates = deps.maxLiveIsolates ?? 64;
    // The host's runs in flight are its busy isolates: the live-isolate cap bounds both.
    this.budget = new ExecBudget({ ...DEFAULT_BUDGET, ...deps.budget, hostRuns: maxLiveIsolates });
    this.cgroup = null;
    if (deps.cgroup) {
      try {
        this.cgroup = Cgroup.create(deps.cgroup.name, deps.cgroup);
        this.cgroup.sweepStale(deps.cgroup.sweepPrefix);
        deps.log.info({ cgroup: this.cgroup.dirs, version: this.cgroup.version, ...deps.cgroup }, 'exec worker cgroup ready');
      } catch (err) {
        deps.log.warn({ err }, 'no cgroup for the exec worker: it runs without a hard memory and CPU limit');
      }
    }
    const l = this.budget.limits;
    this.worker = new WorkerHost({
      log: deps.log.child({ ns: 'exec' }),
      // The worker's per-container cap backs the daemon's up; nested runs may use the reserve on top.
      config: {
        maxLiveIsolates,
        idleMs: deps.idleMs ?? 60_000,
        containerMemoryMb: l.containerMemoryMb + l.nestedReserve * MAX_MEMORY_MB,
        hostMemoryMb: l.hostMemoryMb,
        heavyThreads: this.cgroup?.heavyThreads ?? null,
      },
      cgroup: this.cgroup,
      onCall: (id, call, op, args) => this.serveCall(id, call, op, args),
    });
    this.bun = deps.bun ? new BunRuntime({ ...deps.bun, log: deps.log.child({ ns: 'exec-bun' }), hostCall: (id, op, args) => this.hostCallOf(id, op, args) }) : null;
  }

  /** Persistent Bun scripts running now (all containers, or one). */
  persistent(container?: string): PersistentInfo[] {
    return this.bun?.persistent(container) ?? [];
  }

  /** The exec worker's cgroup (null without one): its directories and limits. */
  get workerCgroup(): Cgroup | null {
    return this.cgroup;
  }

  /** Live isolates and runs in flight (for metrics). */
  async stats(): Promise<{ liveIsolates: number; runsInFlight: number; workerPid: number | null; codeCache: WorkerStats['codeCache'] | null }> {
    const s = await this.worker.stats();
    return { liveIsolates: s.liveIsolates, runsInFlight: this.active.size, workerPid: this.worker.pid, codeCache: s.codeCache ?? null };
  }

  /** The exec worker's pid, null while none runs. */
  get workerPid(): number | null {
    return this.worker.pid;
  }

  // ---- NamespaceHooks

  async open(row: ContainerRow): Promise<void> {
    await FileArea.of(row, 'scripts').ensure();
  }

  /**
   * With a row (the NamespaceHooks call, before a container is deleted): disposes that container's isolates.
   * Without: shuts the service down (stops the worker, writes what is left of the log).
   */
  async close(row?: ContainerRow): Promise<void> {
    await this.bun?.close(row);
    if (row) {
      this.worker.dispose(row.id);
      for (const key of [...this.preparedCache.keys()]) if (key.startsWith(`${row.id}\0`)) this.preparedCache.delete(key);
    } else await this.worker.close();
    this.execLog.flush();
  }

  // ---- running

  /**
   * Finds `<path>.ts` (or `.js`, or the path itself when it names one), reads its magic comments, compiles it.
   * A file whose version (inode, size, times) is unchanged since it was last prepared is not read again.
   */
  async prepare(row: ContainerRow, scriptPath: string): Promise<PreparedScript | null> {
    const rel = FileArea.normalize(scriptPath);
    if (rel === '') return null;
    const area = FileArea.of(row, 'scripts');
    const candidates = RUNNABLE.test(rel) ? [rel] : [`${rel}.ts`, `${rel}.js`];
    for (const file of candidates) {
      const version = await area.version(file);
      if (!version) continue;
      const key = `${row.id}\0${file}`;
      const hit = this.preparedCache.get(key);
      if (hit && hit.version === version.key) {
        this.preparedCache.delete(key);
        this.preparedCache.set(key, hit);
        return hit.script;
      }
      let source: Buffer;
      try {
        source = await area.read(file);
      } catch (err) {
        if (isHoodyError(err) && (err.code === 'HOODY_FILE_UNKNOWN' || err.code === 'HOODY_PATH_CONFLICT')) continue;
        throw err;
      }
      const text = source.toString('utf8');
      const directives = parseDirectives(text);
      const compiled = directives.runtime === 'bun' ? await bunCompiled(text, file, directives) : await this.transpiler.compile(text, loaderFor(file));
      const script = { file, directives, hash: compiled.hash, code: compiled.code };
      // A write within a clock tick of now may not have moved the file's times yet: such a version is not kept.
      if (Date.now() - version.changedMs > VERSION_SETTLE_MS) {
        this.preparedCache.set(key, { version: version.key, script });
        if (this.preparedCache.size > PREPARED_KEPT) this.preparedCache.delete(this.preparedCache.keys().next().value!);
      } else this.preparedCache.delete(key);
      return script;
    }
    return null;
  }

  /**
   * Runs a script for one request and logs the run. Resolves with the HTTP answer; a script that throws,
   * times out or exceeds its memory rejects with the catalogued HoodyError (5xx).
   */
  async run(row: ContainerRow, script: string | PreparedScript, input: RunInput): Promise<RunResult> {
    try {
      return await this.runLogged(row, script, input);
    } catch (err) {
      this.observer.failed(row.name, isHoodyError(err) ? err.code : 'HOODY_INTERNAL');
      throw err;
    }
  }

  private async runLogged(row: ContainerRow, script: string | PreparedScript, input: RunInput): Promise<RunResult> {
    const prepared = typeof script === 'string' ? await this.prepare(row, script) : script;
    if (!prepared) throw fail('SCRIPT_UNKNOWN', typeof script === 'string' ? script : '');
    const depth = input.depth ?? 0;
    if (depth > MAX_EXEC_DEPTH) throw fail('SCRIPT_LOOP', depth);
    const request = scriptRequest(input);
    const started = new Date();
    // Waits its turn within the container's and the host's budget, or is refused (429/503) without running.
    const release = await this.budget.acquire(row.id, prepared.directives.memoryMb, depth > 0);
    const id = ++this.seq;
    const active: ActiveRun = { row, input, abort: null };
    this.active.set(id, active);
    let report: RunReport & { memoryBytes?: number | null };
    let cpuMs = 0;
    try {
      const d = prepared.directives;
      report = d.runtime === 'bun' ? await this.runBun(id, row, prepared, input, request) : await this.worker.run({
        id,
        key: `${row.id}:${prepared.file}`,
        container: row.id,
        hash: prepared.hash,
        code: prepared.code,
        limits: { timeoutMs: d.timeoutMs, memoryMb: d.memoryMb, consoleCap: CONSOLE_CAP },
        request,
      });
      cpuMs = report.cpuMs;
    } finally {
      release(cpuMs);
      this.active.delete(id);
      active.abort?.abort();
    }
    let result: RunResult | null = null;
    let error: HoodyError | null = null;
    if (report.type === 'done') {
      try {
        result = httpResult(report.outcome);
      } catch (err) {
        error = err as HoodyError;
      }
    } else error = failure(report, prepared.directives, Math.round((this.cgroup?.limits.memoryBytes ?? 0) / 1048576));
    this.observer.ran(row.name, prepared.directives.runtime, (Date.now() - started.getTime()) / 1000);
    if (error && error.message.length > ERROR_CAP) error.message = `${error.message.slice(0, ERROR_CAP)}… [cut]`;
    this.execLog.add({
      container: row.name,
      script: prepared.file,
      method: request.method,
      time: started.toISOString(),
      status: error ? error.status : result!.status,
      durationMs: Date.now() - started.getTime(),
      cpuMs: Math.round(report.cpuMs * 1000) / 1000,
      tokenId: input.caller?.id ?? null,
      dryRun: input.dryRun,
      console: report.console,
      error: error ? `${error.code}: ${error.message}` : null,
      runtime: prepared.directives.runtime,
      mode: prepared.directives.mode,
      memoryBytes: report.memoryBytes ?? null,
    });
    if (error) throw error;
    return result!;
  }

  /** A Bun run: as the caller's user in the container (an anonymous run as nobody). */
  private runBun(id: number, row: ContainerRow, prepared: PreparedScript, input: RunInput, request: ScriptRequest) {
    if (!this.bun) throw fail('RUNTIME_UNAVAILABLE', 'this daemon runs without the command agent (HOODY_COMMAND_AGENT=off), which starts Bun');
    const headers = flatHeaders(input.headers);
    delete headers.authorization;
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(request.query)) for (const one of Array.isArray(v) ? v : [v]) query.append(k, one);
    const search = query.size > 0 ? `?${query}` : '';
    const raw = input.body === null ? null : typeof input.body === 'string' ? Buffer.from(input.body) : input.body;
    return this.bun.run({
      id,
      row,
      file: prepared.file,
      hash: prepared.hash,
      directives: prepared.directives,
      user: input.caller?.user ?? ANONYMOUS_USER,
      request,
      module: prepared.code,
      http: { method: request.method, url: `http://${headers.host ?? 'localhost'}${input.path}${search}`, headers: request.headers, body: raw ? new Uint8Array(raw) : null },
    });
  }

  /** The exec log of a container: oldest first, from `since` (inclusive) or else the latest `limit` rows. */
  logs(container: string, q: ExecLogQuery = {}): ExecLogEntry[] {
    return this.execLog.query(container, q);
  }

  /** The exec log as a `GET /api/v1/logs?source=exec` source. */
  logSource(): LogSource {
    return { name: 'exec', read: (container, q) => this.logs(container, q) };
  }

  // ---- scripts area (the write API)

  async listScripts(row: ContainerRow): Promise<ScriptInfo[]> {
    const area = FileArea.of(row, 'scripts');
    const out: ScriptInfo[] = [];
    for (const f of await area.walk('')) {
      const runnable = RUNNABLE.test(f.path);
      let directives: Directives | null = null;
      let error: string | null = null;
      if (runnable) {
        try {
          directives = parseDirectives((await area.read(f.path)).toString('utf8'));
        } catch (err) {
          error = errorText(err);
        }
      }
      out.push({ ...f, runnable, directives, error });
    }
    return out;
  }

  async readScript(row: ContainerRow, path: string): Promise<Buffer> {
    try {
      return await FileArea.of(row, 'scripts').read(path);
    } catch (err) {
      if (isHoodyError(err) && err.code === 'HOODY_FILE_UNKNOWN') throw fail('SCRIPT_UNKNOWN', path);
      throw err;
    }
  }

  /** Writes a script after checking it: magic comments parse and the code compiles (runnable files only). */
  async writeScript(row: ContainerRow, path: string, source: Buffer): Promise<ScriptInfo & { created: boolean }> {
    const rel = FileArea.normalize(path);
    if (rel === '') throw fail('PATH_INVALID', 'name a script file, e.g. certs/renew.ts');
    const maxBytes = this.deps.limits?.scriptBytes ?? 1024 * 1024;
    if (source.length > maxBytes) throw fail('SCRIPT_TOO_LARGE', maxBytes);
    const runnable = RUNNABLE.test(rel);
    let directives: Directives | null = null;
    if (runnable) {
      if (!isUtf8(source)) throw fail('BODY_INVALID', 'a script must be UTF-8 text');
      const text = source.toString('utf8');
      directives = parseDirectives(text);
      if (directives.runtime === 'bun') await checkBunScript(text, loaderFor(rel), directives.mode);
      else await this.transpiler.compile(text, loaderFor(rel));
    }
    const w = await this.serialized(row.name, async () => {
      const area = FileArea.of(row, 'scripts');
      const max = this.deps.limits?.scripts ?? 500;
      // A new file past the cap is refused; rewriting one that exists is always allowed.
      if ((await area.stat(rel)) === null && (await area.walk('', max)).length >= max) throw fail('SCRIPT_LIMIT', max);
      return area.write(rel, source);
    });
    return { path: w.path, size: w.size, mtime: w.mtime, created: w.created, runnable, directives, error: null };
  }

  /** Runs script writes of one container one at a time, so two new files cannot both take the last place. */
  private serialized<T>(container: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.scriptWrites.get(container) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.scriptWrites.set(container, tail);
    void tail.then(() => this.scriptWrites.get(container) === tail && this.scriptWrites.delete(container));
    return next;
  }

  async deleteScript(row: ContainerRow, path: string): Promise<void> {
    try {
      await FileArea.of(row, 'scripts').remove(path);
    } catch (err) {
      if (isHoodyError(err) && err.code === 'HOODY_FILE_UNKNOWN') throw fail('SCRIPT_UNKNOWN', path);
      throw err;
    }
  }

  // ---- host functions of scripts (served here, in the daemon, for the worker)

  private serveCall(id: number, call: number, op: HostOp, args: unknown): void {
    this.hostCallOf(id, op, args).then(
      (value) => this.worker.reply(id, call, { ok: true, value }),
      (err: unknown) => this.worker.reply(id, call, { ok: false, error: errorText(err) }),
    );
  }

  /** A host call of run `id`, with its caller's authority; a run that has ended makes none. */
  private hostCallOf(id: number, op: HostOp, args: unknown): Promise<unknown> {
    const run = this.active.get(id);
    if (!run) return Promise.reject(new Error('the run has ended'));
    const deps = { domain: this.domain, selfFetch: this.deps.selfFetch, acme: this.deps.acme };
    run.abort ??= new AbortController();
    const ctx = { row: run.row, caller: run.input.caller, depth: run.input.depth ?? 0, dryRun: run.input.dryRun, signal: run.abort.signal };
    return hostCall(deps, ctx, op, (args && typeof args === 'object' ? args : {}) as Record<string, unknown>);
  }
}
