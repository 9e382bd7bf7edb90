import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type Docker from 'dockerode';
import { run } from './command.js';

export const BUSYBOX_IMAGE = 'hoody/busybox';
export const BASE_IMAGE = 'hoody/base';

// Init of every hoody image: a shell that sleeps and exits promptly on SIGTERM (fast `stop`).
export const IDLE_CMD = ['/bin/sh', '-c', "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"];

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n';
const GROUP = 'root:x:0:\nnogroup:x:65534:\n';

/** Imports a root filesystem directory as an image, with hoody's idle init as its command. */
export async function importRootfs(docker: Docker, rootfs: string, ref: string): Promise<void> {
  const [repo, tag = 'latest'] = ref.split(':');
  const tar = execa('tar', ['-C', rootfs, '--numeric-owner', '-c', '.'], { buffer: false, stdout: 'pipe' });
  const stream = await docker.importImage(tar.stdout as NodeJS.ReadableStream, {
    repo,
    tag,
    changes: [`CMD ${JSON.stringify(IDLE_CMD)}`, 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
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
