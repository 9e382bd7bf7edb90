import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LABEL_INSTANCE } from '../containers/context.js';
import { AdminClient } from '../daemon/client.js';
import { destroyHostEgress } from '../host/egress.js';
import { stopHaproxyOf } from '../host/haproxy/process.js';
import { loadConfig } from '../daemon/config.js';
import { DockerEngine } from '../host/engine.js';
import { poolPaths } from '../host/pool.js';
import { defaultStorageRegistry } from '../host/storage/index.js';
import { inspectorUrl } from './inspector.js';
import { runPool, sleep } from './stats.js';

/** The repo root (bench code runs compiled from dist/bench/...). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const HOODYD = join(ROOT, 'dist/daemon/hoodyd.js');

export interface Ports {
  http: number;
  https: number;
}

/** A real hoodyd started for the benchmark on its own state dir (on the shared BTRFS pool) and socket. */
export interface BenchDaemon {
  stateDir: string;
  socket: string;
  instance: string;
  pid: number;
  client: AdminClient;
  ports: Ports;
  /** The daemon's inspector (loopback only), used to force a GC before measuring its heap; null if unavailable. */
  inspector: string | null;
  /** SIGKILLs hoodyd and starts it again on the same state dir; resolves with the ms until its admin API answered. */
  killAndRestart(): Promise<number>;
  /** Deletes every container through the API (one per call, a few at a time), stops the daemon, removes what is left. */
  destroy(onRemoved?: () => void): Promise<void>;
}

export interface StartDaemonOptions {
  /** Directory (on the BTRFS pool) that will hold the daemon's state dir. */
  parentDir: string;
  image: string;
  env?: Record<string, string>;
  dockerSocket: string;
  /** Parallel DELETEs at clean-up (dockerd 20.10 can deadlock on many concurrent removes). */
  removeParallel?: number;
  /** Open the daemon's inspector on 127.0.0.1 (a free port) so the benchmark can force GCs before measuring it. */
  inspect?: boolean;
}

async function stopChild(child: ChildProcess, timeoutMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

/** Starts hoodyd with public listeners on free ports; waits until its admin socket answers. */
export async function startBenchDaemon(opts: StartDaemonOptions): Promise<BenchDaemon> {
  const stateDir = join(opts.parentDir, `hoodyd-${randomBytes(3).toString('hex')}`);
  await mkdir(stateDir, { recursive: true });
  const socket = join(stateDir, 'hoodyd.sock');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOODY_STATE_DIR: stateDir,
    HOODY_ADMIN_SOCKET: socket,
    HOODY_DOCKER_SOCKET: opts.dockerSocket,
    HOODY_IMAGE: opts.image,
    HOODY_HTTP_PORT: '0',
    HOODY_HTTPS_PORT: '0',
    HOODY_LOG_LEVEL: 'warn',
    ...opts.env,
  };
  const instance = loadConfig({}, env).instance;
  const client = new AdminClient(socket);
  const logFile = join(stateDir, 'hoodyd.log');
  const log = openSync(logFile, 'a');
  const nodeArgs = ['--no-node-snapshot', ...(opts.inspect ? ['--inspect=127.0.0.1:0'] : []), HOODYD];
  // Its own process group: a Ctrl-C on the benchmark must not stop the daemon before the benchmark has
  // deleted its containers through it.
  const launch = () => {
    const out = openSync(logFile, 'a');
    const c = spawn(process.execPath, nodeArgs, { env, stdio: ['ignore', out, out], detached: true });
    closeSync(out);
    return c;
  };
  closeSync(log);
  let child = launch();
  const removeLeftovers = async () => {
    const engine = new DockerEngine(opts.dockerSocket);
    const left = await engine.list({ [LABEL_INSTANCE]: instance }).catch(() => []);
    await runPool(left, 2, async (c) => engine.remove(c.id).catch(() => undefined));
    // The daemon's own network and host chains: left behind, every run would use up one of the engine's address pools.
    await destroyHostEgress(engine.docker, instance, stateDir).catch(() => undefined);
    await stopHaproxyOf(stateDir).catch(() => undefined);
    const storage = defaultStorageRegistry().create('btrfs');
    const paths = poolPaths(stateDir);
    const snapshotDirs = await readdir(paths.snapshots).catch(() => [] as string[]);
    for (const parent of [paths.containers, paths.templates, ...snapshotDirs.map((d) => join(paths.snapshots, d))]) {
      for (const v of await storage.listVolumes(parent)) await storage.deleteVolume(v).catch(() => undefined);
    }
    await rm(stateDir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      // The clean-up removes the state dir: the log's tail goes into the error.
      if (child.exitCode !== null) throw new Error(`hoodyd exited with ${child.exitCode}: ${(await readFile(logFile, 'utf8').catch(() => '')).slice(-1500)}`);
      if (await client.alive()) break;
      if (Date.now() > deadline) throw new Error(`hoodyd did not answer within 60 s; see ${stateDir}/hoodyd.log`);
      await sleep(100);
    }
  } catch (err) {
    await stopChild(child);
    await removeLeftovers().catch(() => undefined);
    throw err;
  }
  const host = await client.call<{ listeners: Ports }>('GET', '/v1/host');
  let destroyed: Promise<void> | null = null;
  return {
    stateDir,
    socket,
    instance,
    get pid() {
      return child.pid ?? 0;
    },
    client,
    ports: { http: host.listeners.http, https: host.listeners.https },
    inspector: opts.inspect ? await inspectorUrl(logFile) : null,
    async killAndRestart() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      const t0 = Date.now();
      child = launch();
      while (!(await client.alive())) {
        if (child.exitCode !== null) throw new Error(`hoodyd exited with ${child.exitCode}; see ${stateDir}/hoodyd.log`);
        if (Date.now() - t0 > 60_000) throw new Error(`hoodyd did not come back within 60 s; see ${stateDir}/hoodyd.log`);
        await sleep(50);
      }
      return Date.now() - t0;
    },
    destroy(onRemoved) {
      destroyed ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          const list = (await client.call<{ name: string }[]>('GET', '/v1/containers').catch(() => [])) ?? [];
          await runPool(list, opts.removeParallel ?? 3, async (c) => {
            await client.call('DELETE', `/v1/containers/${encodeURIComponent(c.name)}`).catch(() => undefined);
            onRemoved?.();
          });
        }
        await stopChild(child);
        await removeLeftovers();
      })();
      return destroyed;
    },
  };
}
