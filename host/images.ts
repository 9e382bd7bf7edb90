import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import type Docker from 'dockerode';
import { run } from './command.js';

export const BUSYBOX_IMAGE = 'hoody/busybox';
export const BASE_IMAGE = 'hoody/base';

// Init of every hoody image: a shell that sleeps and exits promptly on SIGTERM (fast `stop`).
export const IDLE_CMD = ['/bin/sh', '-c', "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"];

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n';
const GROUP = 'root:x:0:\nnogroup:x:65534:\n';

/** Imports a root filesystem directory as an image, with hoody's idle init (or `cmd`) as its command. */
export async function importRootfs(docker: Docker, rootfs: string, ref: string, cmd: readonly string[] = IDLE_CMD): Promise<void> {
  const [repo, tag = 'latest'] = ref.split(':');
  const tar = execa('tar', ['-C', rootfs, '--numeric-owner', '-c', '.'], { buffer: false, stdout: 'pipe' });
  const stream = await docker.importImage(tar.stdout as NodeJS.ReadableStream, {
    repo,
    tag,
    changes: [`CMD ${JSON.stringify(cmd)}`, 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
  } as unknown as Record<string, string>);
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve()));
  });
  await tar;
}

/** A tiny image from the host's static busybox: fast to start, good for tests and density runs. */
export async function buildBusyboxImage(docker: Docker, ref = BUSYBOX_IMAGE): Promise<void> {
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (!busybox) throw new Error('busybox not found: apt-get install busybox-static');
  const root = await mkdtemp(join(tmpdir(), 'hoody-busybox-'));
  try {
    for (const d of ['bin', 'etc', 'tmp', 'root', 'files', 'scripts', 'proc', 'sys', 'dev', 'var/log', 'usr/bin'])
      await mkdir(join(root, d), { recursive: true });
    await chmod(join(root, 'tmp'), 0o1777);
    await copyFile(busybox, join(root, 'bin/busybox'));
    await chmod(join(root, 'bin/busybox'), 0o755);
    const { stdout } = await run(busybox, ['--list']);
    for (const applet of stdout.split('\n').filter((a) => a && a !== 'busybox')) {
      await symlink('busybox', join(root, 'bin', applet)).catch(() => undefined);
    }
    await writeFile(join(root, 'etc/passwd'), PASSWD);
    await writeFile(join(root, 'etc/group'), GROUP);
    await importRootfs(docker, root, ref);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** The apt mirror this machine uses (never hard-coded): the first URIs line of its sources. */
export async function debianMirror(): Promise<string> {
  for (const f of ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list']) {
    const text = await readFile(f, 'utf8').catch(() => '');
    const m = /^URIs:\s*(\S+)/m.exec(text) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+\s+main/m.exec(text);
    if (m) return m[1]!;
  }
  throw new Error('no Debian mirror found in /etc/apt sources');
}

/** hoody/base: a Debian minbase with curl and CA certificates, built with debootstrap (about a minute). */
export async function buildBaseImage(docker: Docker, workDir: string, ref = BASE_IMAGE, suite = 'bookworm'): Promise<void> {
  await mkdir(workDir, { recursive: true });
  const root = await mkdtemp(join(workDir, 'base-'));
  try {
    const mirror = await debianMirror();
    await run('debootstrap', ['--variant=minbase', '--include=curl,ca-certificates', suite, root, mirror], {
      timeoutMs: 15 * 60_000,
    });
    for (const d of ['files', 'scripts']) await mkdir(join(root, d), { recursive: true });
    await rm(join(root, 'var/cache/apt/archives'), { recursive: true, force: true });
    await importRootfs(docker, root, ref);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

export const NODE_IMAGE = 'hoody/node';

/**
 * The Node workload's server: answers every request with a small JSON body, exits at once on SIGTERM
 * (it runs as pid 1, where default signal actions do not apply).
 */
export const NODE_SERVER_JS = `'use strict';
const http = require('node:http');
const port = Number(process.env.PORT || 8080);
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ ok: true, path: req.url }));
});
server.listen(port, '0.0.0.0');
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
`;

/** Shared libraries a dynamic binary loads, with the loader itself (from ldd; empty for a static binary). */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await run('ldd', [binary]).catch(() => ({ stdout: '' }));
  const out = new Set<string>();
  for (const line of stdout.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) out.add(m[1]!);
  }
  return [...out];
}

async function copyInto(root: string, file: string, mode = 0o755): Promise<void> {
  const target = join(root, file);
  await mkdir(dirname(target), { recursive: true });
  await copyFile(await realpath(file), target);
  await chmod(target, mode);
}

export interface NodeImageOptions {
  ref?: string;
  /** The node binary to ship (default: the one running this process). */
  nodeBinary?: string;
  /** Extra node/V8 flags put before the script in the image's command (e.g. `--max-semi-space-size=1`). */
  nodeArgs?: readonly string[];
}

/**
 * The Node workload image: the host's node binary and the shared libraries it needs (ldd), a static busybox
 * for `sh` (cron commands run through it), and a tiny HTTP server on :8080 as the command.
 */
export async function buildNodeImage(docker: Docker, opts: NodeImageOptions = {}): Promise<void> {
  const node = opts.nodeBinary ?? process.execPath;
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  const root = await mkdtemp(join(tmpdir(), 'hoody-node-'));
  try {
    for (const d of ['bin', 'etc', 'tmp', 'root', 'files', 'scripts', 'proc', 'sys', 'dev', 'srv', 'usr/bin'])
      await mkdir(join(root, d), { recursive: true });
    await chmod(join(root, 'tmp'), 0o1777);
    await copyInto(root, node);
    if (node !== '/usr/bin/node') await symlink(node, join(root, 'usr/bin/node')).catch(() => undefined);
    for (const lib of await sharedLibraries(node)) await copyInto(root, lib);
    if (busybox) {
      await copyFile(busybox, join(root, 'bin/busybox'));
      await chmod(join(root, 'bin/busybox'), 0o755);
      for (const applet of ['sh', 'true', 'false', 'cat', 'ls', 'sleep', 'wget', 'env', 'echo', 'mkdir', 'rm'])
        await symlink('busybox', join(root, 'bin', applet)).catch(() => undefined);
    }
    await writeFile(join(root, 'etc/passwd'), PASSWD);
    await writeFile(join(root, 'etc/group'), GROUP);
    await writeFile(join(root, 'srv/server.js'), NODE_SERVER_JS);
    await importRootfs(docker, root, opts.ref ?? NODE_IMAGE, ['/usr/bin/node', ...(opts.nodeArgs ?? []), '/srv/server.js']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/**
 * Builds an image hoody makes itself (hoody/busybox, hoody/base) that the engine lost (a wiped engine): what a
 * recover needs. false: not one of hoody's (the operator's to bring back).
 */
export async function ensureOwnImage(engine: { docker: Docker; imageExists(ref: string): Promise<boolean> }, image: string, workDir: string, log?: { info(o: object, m: string): void }): Promise<boolean> {
  if (await engine.imageExists(image)) return true;
  if (image === BUSYBOX_IMAGE) {
    log?.info({ image }, 'building a lost image');
    await buildBusyboxImage(engine.docker);
  } else if (image === BASE_IMAGE) {
    log?.info({ image }, 'building a lost image (debootstrap, about a minute)');
    await buildBaseImage(engine.docker, workDir);
  } else return false;
  return true;
}
