import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, createWriteStream, openSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import Docker from 'dockerode';
import { execa } from 'execa';
import { BUSYBOX_IMAGE } from '../host/images.js';
import { processTable, procMemory } from './procs.js';
import { round, sleep } from './stats.js';

/**
 * Lever probe: the Go runtime settings of the engine, which containerd hands down to every shim (it adds only
 * GOMAXPROCS=2 and its own addresses to the environment it passes on). Starts a private containerd (own root,
 * state and socket; no CRI, no network), runs N busybox containers with `ctr` under each environment, measures
 * the shims' anonymous PSS and threads, and removes everything again. The shared engine is not touched.
 */
export interface ShimEnvResult {
  env: Record<string, string>;
  containers: number;
  shim_anon_kib_each: number;
  shim_pss_kib_each: number;
  shim_threads_each: number;
}

async function ctr(sock: string, args: string[]): Promise<void> {
  await execa('ctr', ['-a', sock, '-n', 'hoodybench', ...args], { timeout: 120_000, cleanup: false });
}

async function withContainerd<T>(dir: string, env: Record<string, string>, fn: (sock: string) => Promise<T>): Promise<T> {
  await mkdir(join(dir, 'root'), { recursive: true });
  const state = `/run/hoody-bench-${randomBytes(3).toString('hex')}`;
  const sock = join(state, 'containerd.sock');
  await writeFile(
    join(dir, 'config.toml'),
    [
      'version = 2',
      `root = "${join(dir, 'root')}"`,
      `state = "${state}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${sock}"`,
      '[ttrpc]',
      `  address = "${sock}.ttrpc"`,
      '[debug]',
      '  address = ""',
      '[metrics]',
      '  address = ""',
      '',
    ].join('\n'),
  );
  const log = openSync(join(dir, 'containerd.log'), 'a');
  const child: ChildProcess = spawn('containerd', ['--config', join(dir, 'config.toml')], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', log, log] });
  closeSync(log);
  try {
    for (let i = 0; i < 100; i++) {
      if (await execa('ctr', ['-a', sock, 'version'], { reject: false }).then((r) => r.exitCode === 0)) break;
      await sleep(100);
    }
    return await fn(sock);
  } finally {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (child.exitCode === null) child.kill('SIGKILL');
    await execa('umount', ['-R', join(dir, 'root')], { reject: false });
    await rm(state, { recursive: true, force: true });
  }
}

/** Runs `count` idle busybox containers under a private containerd started with `env`; measures their shims. */
export async function probeShimEnv(docker: Docker, workDir: string, env: Record<string, string>, count: number, settleS = 10): Promise<ShimEnvResult> {
  const dir = join(workDir, `shim-${randomBytes(3).toString('hex')}`);
  try {
    return await withContainerd(dir, env, async (sock) => {
      const image = `docker.io/${BUSYBOX_IMAGE}:latest`;
      const tarball = join(dir, 'image.tar');
      await pipeline((await docker.getImage(BUSYBOX_IMAGE).get()) as NodeJS.ReadableStream, createWriteStream(tarball));
      await ctr(sock, ['images', 'import', tarball]);
      const names = Array.from({ length: count }, (_, i) => `shim-probe-${i + 1}`);
      try {
        for (const n of names) await ctr(sock, ['run', '-d', image, n, '/bin/sh', '-c', 'while :; do sleep 3600; done']);
        await sleep(settleS * 1000);
        const shims = (await processTable()).filter((p) => p.comm.startsWith('containerd-shim') && p.cmdline.includes(`${sock}`));
        let anon = 0;
        let pss = 0;
        let threads = 0;
        for (const s of shims) {
          const m = await procMemory(s.pid);
          anon += m.pssAnon;
          pss += m.pss;
          threads += (await readdir(`/proc/${s.pid}/task`).catch(() => [])).length;
        }
        const n = Math.max(1, shims.length);
        return {
          env,
          containers: shims.length,
          shim_anon_kib_each: Math.round(anon / n / 1024),
          shim_pss_kib_each: Math.round(pss / n / 1024),
          shim_threads_each: round(threads / n, 1) ?? 0,
        };
      } finally {
        for (const n of names) {
          await execa('ctr', ['-a', sock, '-n', 'hoodybench', 'task', 'kill', '-s', 'KILL', n], { reject: false });
          await execa('ctr', ['-a', sock, '-n', 'hoodybench', 'task', 'rm', '-f', n], { reject: false });
          await execa('ctr', ['-a', sock, '-n', 'hoodybench', 'container', 'rm', n], { reject: false });
        }
      }
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// `node dist/bench/shim-env.js [count] [outfile]`: the default environment against a few Go runtime settings.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const count = Number(process.argv[2] ?? 10);
  const variants: Record<string, string>[] = [{}, { GOGC: '20' }, { GOMEMLIMIT: '1MiB' }, { GOGC: '20', GOMEMLIMIT: '1MiB' }];
  const docker = new Docker({ socketPath: process.env.HOODY_DOCKER_SOCKET ?? '/var/run/docker.sock' });
  const work = resolve(process.env.HOODY_STATE_DIR ?? '/var/lib/hoody', 'pool', 'bench', `shim-env-${randomBytes(3).toString('hex')}`);
  void (async () => {
    const results: ShimEnvResult[] = [];
    try {
      for (const env of variants) {
        const r = await probeShimEnv(docker, work, env, count);
        results.push(r);
        process.stdout.write(`${JSON.stringify(r)}\n`);
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    if (process.argv[3]) await writeFile(process.argv[3], `${JSON.stringify({ measured: new Date().toISOString(), count, results }, null, 2)}\n`);
  })().catch((err: Error) => {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(1);
  });
}
