import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { linkAtomic } from '../../host/atomic-file.js';
import type { ContainerEngine, ExecResult } from '../../host/engine.js';
import { AGENT_MOUNT, type CommandTarget, type ContainerCommands } from '../agent/commands.js';
import { ContainerUsers } from '../agent/users.js';
import { fail } from '../errors.js';
import type { ContainerRow } from '../store.js';
import { ExecSocket, type RunnerConn } from './bun-channel.js';
import { ConsoleLines, exitMessage } from './bun-console.js';
import { type BunReport, RunnerRequests } from './bun-requests.js';
import { PersistentScripts, type PersistentInfo } from './bun-persistent.js';
import type { Directives } from './directives.js';
import type { HostOp, ScriptRequest } from './protocol.js';

/** The Bun binary and the runner, placed once in the state dir (hard-linked into each container's directory). */
export interface BunFiles {
  bun: string;
  runner: string;
}

export interface BunRuntimeDeps {
  engine: ContainerEngine;
  /** Must start commands through the agent's mount: the Bun binary is there. */
  commands: ContainerCommands;
  /** Per-container directories mounted read-only at /.hoody (`<dir>/<name>/`). */
  dir: string;
  /** null: Bun is not available on this host (`unavailable` says why). */
  files: BunFiles | null;
  unavailable?: string;
  log: Logger;
  /** A host call of run `id` (ExecService's run id), served with that run's caller's authority. */
  hostCall: (id: number, op: HostOp, args: unknown) => Promise<unknown>;
}

/** One request for a Bun script. */
export interface BunJob {
  /** ExecService's run id: the runner's host calls name it. */
  id: number;
  row: ContainerRow;
  /** Relative to the scripts area (mounted at /scripts). */
  file: string;
  hash: string;
  directives: Directives;
  /** The container user the process runs as. */
  user: string;
  /** serverless: `request` and the module (bun-module.ts). */
  request: ScriptRequest;
  module: string;
  /** persistent: the HTTP request the fetch handler gets. */
  http: { method: string; url: string; headers: Record<string, string>; body: Uint8Array | null };
}

export const BUN_PATH = `${AGENT_MOUNT}/bun`;
export const RUNNER_PATH = `${AGENT_MOUNT}/bun-runner.mjs`;
export const EXEC_SOCKET_PATH = `${AGENT_MOUNT}/exec.sock`;
import { CONSOLE_CAP } from './bun-console.js';
/** After a serverless answer, how long the process gets to exit (and its last output to arrive). */
const EXIT_GRACE_MS = 1000;
/** A persistent script's process connects within this (a serverless one within its own timeout). */
const HELLO_MS = 30_000;

interface Site {
  engineId: string;
  socket: ExecSocket;
}

/** A runner that could not even start: the image cannot run Bun (no glibc) or the mount is missing. */
export function startFailure(r: ExecResult): Error | null {
  if (r.exitCode !== 127 && r.exitCode !== 126) return null;
  return fail('RUNTIME_UNAVAILABLE', `${BUN_PATH} does not start in this container (${r.output.trim().slice(0, 300)}); Bun needs glibc (/lib64/ld-linux-x86-64.so.2) in the image`);
}

/**
 * `@runtime bun`: exec scripts in a Bun process inside their own container (its filesystem, network, cgroup and
 * the caller's user), started through the command agent. The runner (host/agent/bun-runner.mjs) reaches hoodyd over
 * the container's exec socket for its request, its host calls and its answer.
 */
export class BunRuntime {
  readonly #sites = new Map<string, Promise<Site>>();
  readonly #users: ContainerUsers;
  readonly #persistent: PersistentScripts;

  constructor(private readonly deps: BunRuntimeDeps) {
    this.#users = new ContainerUsers(deps.commands);
    this.#persistent = new PersistentScripts({
      log: deps.log,
      start: (job, onExit) => this.#startPersistent(job, onExit),
      hostCall: deps.hostCall,
    });
  }

  async run(job: BunJob): Promise<BunReport> {
    if (job.directives.mode === 'persistent') return this.#persistent.request(job);
    return this.#serverless(job);
  }

  /** Persistent scripts running now (all containers, or one). */
  persistent(container?: string): PersistentInfo[] {
    return this.#persistent.list(container);
  }

  /** With a row: that container's persistent scripts stop and its socket closes. Without: all of them. */
  async close(row?: ContainerRow): Promise<void> {
    const names = row ? [row.name] : [...this.#sites.keys()];
    await this.#persistent.stop(row?.name);
    for (const name of names) {
      const site = this.#sites.get(name);
      this.#sites.delete(name);
      await site?.then((s) => s.socket.close()).catch(() => undefined);
    }
  }

  // ---- one request, one process

  async #serverless(job: BunJob): Promise<BunReport> {
    const { hello, abort, exited } = await this.#spawn(job, 'serverless', job.directives.timeoutMs);
    const lines = new ConsoleLines();
    try {
      const first = await Promise.race([hello.conn, exited]);
      if (!('send' in first)) {
        const why = startFailure(first);
        if (why) throw why;
        return this.#ended(job, first, lines);
      }
      const conn = first;
      const answer = new RunnerRequests(conn, this.deps.hostCall).add(job.id, lines);
      conn.send({ t: 'run', id: job.id, module: job.module, request: job.request });
      const settled = await Promise.race([answer, exited]);
      if ('type' in settled) {
        // The answer is in: the process's last output (what it wrote outside console) has a moment to arrive.
        const grace = setTimeout(() => abort.abort(), EXIT_GRACE_MS);
        const r = await exited;
        clearTimeout(grace);
        settled.console = lines.text(r.output);
        return settled;
      }
      conn.close();
      return this.#ended(job, settled, lines);
    } finally {
      hello.cancel();
      abort.abort();
    }
  }

  /** A run whose process ended without an answer: its timeout, or how it died. */
  #ended(job: BunJob, r: ExecResult, lines: ConsoleLines): BunReport {
    const console = lines.text(r.output);
    if (r.timedOut) return { type: 'failed', id: job.id, cpuMs: 0, console, failure: 'timeout', message: '' };
    return { type: 'failed', id: job.id, cpuMs: 0, console, failure: 'thrown', message: exitMessage(r) };
  }

  // ---- processes

  /** Starts a runner for the job with a fresh one-time key: its hello (once it connects), its end, a kill switch. */
  async #spawn(job: BunJob, mode: 'serverless' | 'persistent', timeoutMs?: number) {
    const { target, site } = await this.#ready(job);
    const key = randomBytes(18).toString('base64url');
    const hello = site.socket.expect(key);
    const abort = new AbortController();
    const exited = this.#exec(target, job, key, mode, abort.signal, timeoutMs);
    return { hello, abort, exited };
  }

  #exec(target: CommandTarget, job: BunJob, key: string, mode: 'serverless' | 'persistent', signal: AbortSignal, timeoutMs?: number): Promise<ExecResult> {
    const script = `/scripts/${job.file}`;
    return this.deps.commands.exec(target, {
      cmd: [BUN_PATH, '--no-install', RUNNER_PATH],
      user: job.user,
      env: [`HOODY_EXEC_SOCK=${EXEC_SOCKET_PATH}`, `HOODY_RUN=${key}`, `HOODY_SCRIPT=${script}`, `HOODY_MODE=${mode}`, `USER=${job.user}`, 'BUN_RUNTIME_TRANSPILER_CACHE_PATH=0'],
      workingDir: dirname(script),
      timeoutMs,
      maxOutputBytes: CONSOLE_CAP,
      signal,
    });
  }

  /** Starts a persistent script's process: resolves with its connection once it said hello (or how it ended). */
  async #startPersistent(job: BunJob, onExit: (r: ExecResult) => void): Promise<{ conn: RunnerConn; stop: () => void } | ExecResult> {
    const { hello, abort, exited } = await this.#spawn(job, 'persistent');
    void exited.then(onExit, (err: Error) => onExit({ exitCode: null, output: err.message, truncated: false, timedOut: false }));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<null>((r) => {
      timer = setTimeout(() => r(null), HELLO_MS);
    });
    const first = await Promise.race([hello.conn, exited, late]);
    clearTimeout(timer);
    hello.cancel();
    if (first === null) {
      abort.abort();
      throw new Error(`the Bun process did not connect within ${HELLO_MS / 1000} s`);
    }
    if (!('send' in first)) {
      const why = startFailure(first);
      if (why) throw why;
      return first;
    }
    return {
      conn: first,
      stop: () => {
        first.close();
        abort.abort();
      },
    };
  }

  /** The container's exec socket and files, and its user; RUNTIME_UNAVAILABLE when Bun cannot run there. */
  async #ready(job: BunJob): Promise<{ target: CommandTarget; site: Site }> {
    const { row } = job;
    if (!this.deps.files) throw fail('RUNTIME_UNAVAILABLE', this.deps.unavailable ?? 'Bun is not installed on this host');
    if (!row.engineId) throw fail('RUNTIME_UNAVAILABLE', `container ${row.name} has no engine container`);
    const target = { name: row.name, engineId: row.engineId };
    let site = this.#sites.get(row.name);
    const known = await site?.catch(() => null);
    if (!known || known.engineId !== row.engineId) {
      known?.socket.close();
      site = this.#open(target, this.deps.files);
      this.#sites.set(row.name, site);
      site.catch(() => this.#sites.get(row.name) === site && this.#sites.delete(row.name));
    }
    const s = await site!;
    const problem = await this.#users.ensure(target, job.user);
    if (problem) throw fail('RUNTIME_UNAVAILABLE', problem);
    return { target, site: s };
  }

  async #open(target: CommandTarget, files: BunFiles): Promise<Site> {
    const live = await this.deps.engine.inspect(target.engineId);
    if (!live?.running) throw fail('RUNTIME_UNAVAILABLE', `container ${target.name} is not running`);
    if (!live.mounts.includes(AGENT_MOUNT))
      throw fail('RUNTIME_UNAVAILABLE', `container ${target.name} was made before the Bun runtime (no ${AGENT_MOUNT} mount): make it again to use @runtime bun`);
    const dir = join(this.deps.dir, target.name);
    await linkAtomic(files.bun, join(dir, 'bun'));
    await linkAtomic(files.runner, join(dir, 'bun-runner.mjs'));
    const socket = await ExecSocket.listen(join(dir, 'exec.sock'));
    return { engineId: target.engineId, socket };
  }
}
