import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync, openSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { DockerEngine } from '../../host/engine.js';
import { buildBusyboxImage } from '../../host/images.js';
import { engineEnv, installShimWrapper } from '../../host/shim-groups.js';
import { ensureRemapUser, REMAP_USER } from '../../host/userns.js';
import { tempStateDir } from './host.js';

/**
 * A Docker engine of a test's own: its own socket, data root and exec root in a test dir on the pool, its own
 * bridge, no iptables rules. Restarting or killing it disturbs no other test or session on the box.
 */
export interface PrivateEngine {
  socket: string;
  dir: string;
  bridge: string;
  /** The running dockerd's pid (0 while stopped). */
  pid(): number;
  /** SIGTERM and wait: its containers stop with it (no live-restore), as when an engine is restarted. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it, removes its bridge and its directory. Safe to call twice and after a failed start. */
  destroy(): Promise<void>;
}

const until = async (what: string, fn: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
};

/** A free 172.31.X.0/24 (X in 100..249) for the bridge: none of the box's interfaces has an address in it. */
async function freeSubnet(): Promise<number> {
  const used = (await execa('ip', ['-4', '-o', 'addr'])).stdout;
  for (;;) {
    const x = randomInt(100, 250);
    if (!used.includes(`172.31.${x}.`)) return x;
  }
}

/**
 * `storageDriver`: the graph driver of the private engine (overlay2, like hoody's own; vfs to see what hoody refuses).
 * `userns`: containers in user namespaces, as in an engine `hoody up` starts (default unless HOODY_USERNS=off).
 * `shims`: started with hoody's shim wrapper first on its PATH, as `hoody up` starts it (default: plain).
 * `dir`: an empty directory under the pool's `tests/` or `bench/` to use instead of a fresh test dir (a benchmark
 * passes one, so the shared host's test set-up and sweep never run against the main engine).
 */
export async function startPrivateEngine(
  storageDriver: 'overlay2' | 'vfs' = 'overlay2',
  opts: { userns?: boolean; shims?: boolean; dir?: string } = {},
): Promise<PrivateEngine> {
  const userns = opts.userns ?? process.env.HOODY_USERNS?.toLowerCase() !== 'off';
  if (userns) await ensureRemapUser();
  const dir = opts.dir ?? (await tempStateDir());
  const socket = join(dir, 'docker.sock');
  // The test sweep leaves a dir alone while the pid in its hoodyd.pid lives: dockerd's pid file keeps it.
  const pidFile = join(dir, 'hoodyd.pid');
  const bridge = `hsh${randomInt(0, 0xffff).toString(16).padStart(4, '0')}`;
  const subnet = await freeSubnet();
  let child: ChildProcess | null = null;
  const engine = new DockerEngine(socket);

  await execa('ip', ['link', 'add', bridge, 'type', 'bridge']);
  const start = async () => {
    const wrapper = opts.shims ? await installShimWrapper(join(dir, 'shims')) : null;
    if (opts.shims && !wrapper) throw new Error('no containerd-shim-runc-v2 or jq on PATH for the shim wrapper');
    const out = openSync(join(dir, 'dockerd.log'), 'a');
    child = spawn(
      '/usr/sbin/dockerd',
      [
        '--data-root', join(dir, 'data'),
        '--exec-root', join(dir, 'exec'),
        '--pidfile', pidFile,
        '-H', `unix://${socket}`,
        '--storage-driver', storageDriver,
        '--bridge', bridge,
        '--iptables=false',
        '--ip6tables=false',
        '--ip-masq=false',
        ...(userns ? ['--userns-remap', REMAP_USER] : []),
      ],
      { stdio: ['ignore', out, out], detached: true, env: engineEnv(wrapper), ...(wrapper ? { cwd: wrapper.dir } : {}) },
    );
    child.unref();
    const c = child;
    await until('the private dockerd to answer', async () => {
      if (c.exitCode !== null) throw new Error(`the private dockerd exited with ${c.exitCode}; see ${dir}/dockerd.log`);
      return engine.ping();
    }, 120_000);
  };
  const stop = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.ref(); // an unref'd child would let the event loop end before its exit event
    c.kill('SIGTERM');
    await exited;
    child = null;
  };
  const e: PrivateEngine = {
    socket,
    dir,
    bridge,
    pid: () => (child as ChildProcess | null)?.pid ?? 0,
    stop,
    start,
    async destroy() {
      await stop().catch(() => undefined);
      // A dockerd this process did not see exit (e.g. started before a crash of this test): by its pid file.
      const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
      if (pid && existsSync(`/proc/${pid}`) && (await readFile(`/proc/${pid}/cmdline`, 'utf8')).includes(socket)) {
        process.kill(pid, 'SIGTERM');
        await until('the private dockerd to exit', () => !existsSync(`/proc/${pid}`), 60_000).catch(() => undefined);
      }
      await execa('ip', ['link', 'del', bridge], { reject: false });
      // Whatever it left mounted under its directory goes first (deepest first), then the directory.
      const mounts = (await readFile('/proc/self/mounts', 'utf8'))
        .split('\n')
        .map((l) => l.split(' ')[1] ?? '')
        .filter((m) => m.startsWith(`${dir}/`))
        .sort((a, b) => b.length - a.length);
      for (const m of mounts) await execa('umount', ['-l', m], { reject: false });
      if (!/\/pool\/(tests|bench)\//.test(dir) || dir.length < 20) throw new Error(`refusing to remove ${dir}`);
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await execa('ip', ['addr', 'add', `172.31.${subnet}.1/24`, 'dev', bridge]);
    await execa('ip', ['link', 'set', bridge, 'up']);
    await start();
    await buildBusyboxImage(engine.docker);
  } catch (err) {
    await e.destroy();
    throw err;
  }
  return e;
}
