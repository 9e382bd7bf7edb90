import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type Database from 'better-sqlite3';
import { execa } from 'execa';
import { pino } from 'pino';
import type { ContainerContext } from '../../containers/context.js';
import { ensureTemplate, removeContainer } from '../../containers/provision.js';
import type { MigrationSet } from '../../containers/schema.js';
import { AdminClient } from '../../daemon/client.js';
import { type Config, loadConfig } from '../../daemon/config.js';
import { buildContainerContext } from '../../daemon/daemon.js';
import { openDatabase } from '../../daemon/db.js';
import { setupHost } from '../../daemon/setup.js';
import { destroyHostEgress } from '../../host/egress.js';
import { stopHaproxyOf } from '../../host/haproxy/process.js';
import { DockerEngine } from '../../host/engine.js';
import { BUSYBOX_IMAGE } from '../../host/images.js';
import { BtrfsDriver } from '../../host/storage/btrfs.js';
import { claimTestDir, sweepTestLeftovers } from './sweep.js';

/** The repo root (tests run compiled from dist/test/...). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const HOODYD = join(ROOT, 'dist/daemon/hoodyd.js');
export const HOODY = join(ROOT, 'dist/daemon/cli/hoody.js');
export const SUPERVISOR = join(ROOT, 'dist/daemon/hoodyd-supervisor.js');

let hostReady: Promise<Config> | undefined;

/** The shared host every test uses: the default pool, the engine and the busybox image (idempotent). */
export function ensureTestHost(): Promise<Config> {
  hostReady ??= (async () => {
    const config = loadConfig({});
    await setupHost(config, pino({ level: 'warn' }), { images: 'busybox' });
    await sweepTestLeftovers(join(config.stateDir, 'pool', 'tests'), new DockerEngine(config.dockerSocket), new BtrfsDriver());
    return config;
  })();
  return hostReady;
}

/** A fresh state dir on the shared BTRFS pool, so a test daemon needs no loop device of its own. */
export async function tempStateDir(): Promise<string> {
  const host = await ensureTestHost();
  const dir = join(host.stateDir, 'pool', 'tests', randomBytes(4).toString('hex'));
  await mkdir(dir, { recursive: true });
  await claimTestDir(dir);
  return dir;
}

export interface TestContext {
  ctx: ContainerContext;
  db: Database.Database;
  config: Config;
  cleanup(): Promise<void>;
}

/**
 * A container context in-process (no HTTP), on a temp state dir, with busybox as the default image.
 * `sets`: extra migration sets (e.g. a namespace's) applied after the containers one.
 */
export async function testContext(env: NodeJS.ProcessEnv = {}, sets: readonly MigrationSet[] = []): Promise<TestContext> {
  const stateDir = await tempStateDir();
  const config = loadConfig({ stateDir, image: BUSYBOX_IMAGE }, { ...process.env, ...env });
  const db = openDatabase(config.dbPath, sets);
  const ctx = buildContainerContext(config, db, pino({ level: process.env.HOODY_TEST_LOG ?? 'warn' }));
  await ensureTemplate(ctx);
  return {
    ctx,
    db,
    config,
    async cleanup() {
      for (const row of ctx.store.list()) await removeContainer(ctx, row.name).catch(() => undefined);
      db.close();
      await removeStateDir(ctx, stateDir);
    },
  };
}

async function removeStateDir(ctx: ContainerContext, stateDir: string): Promise<void> {
  for (const parent of [ctx.pool.containers, ctx.pool.templates]) {
    for (const v of await ctx.storage.listVolumes(parent)) await ctx.storage.deleteVolume(v).catch(() => undefined);
  }
  await rm(stateDir, { recursive: true, force: true });
}

export interface TestDaemon {
  stateDir: string;
  socket: string;
  env: NodeJS.ProcessEnv;
  client: AdminClient;
  /** hoodyd itself, or its supervisor when started with `supervised`. */
  process: ChildProcess;
  /** The pid of the running hoodyd (from its pid file when supervised). */
  daemonPid(): Promise<number>;
  /** Runs the hoody CLI against this daemon. */
  hoody(args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  stop(signal?: NodeJS.Signals): Promise<void>;
  restart(signal?: NodeJS.Signals): Promise<void>;
  /** Stops the daemon and removes every container and volume it made. */
  destroy(): Promise<void>;
}

/**
 * A real hoodyd process on a temp state dir and socket, public listeners on free ports. `supervised`: started
 * the way `hoody up` does, under its supervisor (then `process` is the supervisor and stop() stops both).
 */
export async function startTestDaemon(extraEnv: NodeJS.ProcessEnv = {}, opts: { supervised?: boolean } = {}): Promise<TestDaemon> {
  const stateDir = await tempStateDir();
  const socket = join(stateDir, 'hoodyd.sock');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOODY_STATE_DIR: stateDir,
    HOODY_ADMIN_SOCKET: socket,
    HOODY_IMAGE: BUSYBOX_IMAGE,
    HOODY_HTTP_PORT: '0',
    HOODY_HTTPS_PORT: '0',
    ...extraEnv,
  };
  const client = new AdminClient(socket);
  const launch = async (): Promise<ChildProcess> => {
    const out = openSync(join(stateDir, 'hoodyd.log'), 'a');
    const entry = opts.supervised ? SUPERVISOR : HOODYD;
    const child = spawn(process.execPath, ['--no-node-snapshot', entry], { env, stdio: ['ignore', out, out] });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`hoodyd exited with ${child.exitCode}; see ${stateDir}/hoodyd.log`);
      if (await client.alive()) return child;
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGKILL');
    throw new Error(`hoodyd did not answer; see ${stateDir}/hoodyd.log`);
  };
  const stopChild = async (child: ChildProcess, signal: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await exited;
  };
  const d: TestDaemon = {
    stateDir,
    socket,
    env,
    client,
    process: await launch(),
    daemonPid: async () =>
      opts.supervised ? Number((await readFile(join(stateDir, 'hoodyd.pid'), 'utf8').catch(() => '0')).trim()) : (d.process.pid ?? 0),
    hoody: async (args) => {
      const r = await execa(process.execPath, [HOODY, ...args], { env, reject: false });
      return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
    },
    stop: (signal = 'SIGTERM') => stopChild(d.process, signal),
    restart: async (signal = 'SIGTERM') => {
      await stopChild(d.process, signal);
      d.process = await launch();
    },
    destroy: async () => {
      const list = (await client.call<{ name: string }[]>('GET', '/v1/containers').catch(() => [])) ?? [];
      for (const c of list) await client.call('DELETE', `/v1/containers/${c.name}`).catch(() => undefined);
      await stopChild(d.process, 'SIGTERM');
      const config = loadConfig({}, env);
      const db = openDatabase(config.dbPath);
      const ctx = buildContainerContext(config, db, pino({ level: 'silent' }));
      for (const row of ctx.store.list()) await removeContainer(ctx, row.name).catch(() => undefined);
      db.close();
      // The daemon's own state dir (a test may have given it another one than the temp dir made here).
      await removeInstanceOf(env, env.HOODY_STATE_DIR ?? stateDir);
      await removeStateDir(ctx, stateDir);
    },
  };
  return d;
}

/**
 * Removes what the daemon on `stateDir` leaves running on purpose when it stops: its network and host chains
 * (else every run uses up one of the engine's address pools) and its data plane (HAProxy, holding two ports).
 */
export async function removeInstanceOf(env: NodeJS.ProcessEnv, stateDir: string): Promise<void> {
  const config = loadConfig({ stateDir }, { ...process.env, ...env });
  await destroyHostEgress(new DockerEngine(config.dockerSocket).docker, config.instance, stateDir).catch(() => undefined);
  await stopHaproxyOf(stateDir).catch(() => undefined);
}

/** Runs a command inside a container through the docker CLI-free engine API (docker exec). */
export async function dockerExec(engineId: string, cmd: string[]): Promise<{ exitCode: number; output: string }> {
  const r = await execa('docker', ['exec', engineId, ...cmd], { reject: false, all: true });
  return { exitCode: r.exitCode ?? -1, output: String(r.all ?? '') };
}
