import { existsSync } from 'node:fs';
import { chmod, mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './command.js';
import { enableQuota, formatBtrfs, isBtrfs, rescanIfInconsistent } from './storage/btrfs.js';

export interface PoolPaths {
  /** Mount point (or plain directory on an existing BTRFS) that holds every volume. */
  root: string;
  image: string;
  containers: string;
  snapshots: string;
  templates: string;
  engine: string;
}

export function poolPaths(stateDir: string): PoolPaths {
  const root = join(stateDir, 'pool');
  return {
    root,
    image: join(stateDir, 'pool.img'),
    containers: join(root, 'containers'),
    snapshots: join(root, 'snapshots'),
    templates: join(root, 'templates'),
    engine: join(root, 'docker'),
  };
}

export interface PoolSetupResult {
  paths: PoolPaths;
  /** 'existing' when the state dir already sat on BTRFS, 'loop' when hoody made or mounted its image. */
  kind: 'existing' | 'loop';
  created: boolean;
  /** Set when the pool's filesystem still lets setuid files or device nodes work (an operator's BTRFS). */
  mountWarning: string | null;
}

/**
 * A setuid-root file a container writes into /files must not be a host root shell, nor a device node a host
 * disk: the pool (and so every bind mount of it into a container) is nosuid,nodev.
 */
export const POOL_MOUNT_FLAGS = ['nosuid', 'nodev'] as const;

async function mountOf(path: string): Promise<{ target: string; options: string[] }> {
  const { stdout } = await run('findmnt', ['-n', '-J', '-o', 'TARGET,VFS-OPTIONS', '-T', path]);
  const fs = (JSON.parse(stdout) as { filesystems: { target: string; 'vfs-options': string }[] }).filesystems[0];
  if (!fs) throw new Error(`findmnt found no mount for ${path}`);
  return { target: fs.target, options: fs['vfs-options'].split(',') };
}

/**
 * Makes the pool's mount nosuid,nodev: hoody's own mount (or an operator's mount exactly at the pool) is
 * remounted; a pool that is only a directory of a larger filesystem is left alone and reported.
 */
export async function hardenPoolMount(root: string): Promise<string | null> {
  const m = await mountOf(root);
  const missing = POOL_MOUNT_FLAGS.filter((f) => !m.options.includes(f));
  if (missing.length === 0) return null;
  if (m.target === root) {
    await run('mount', ['-o', `remount,${POOL_MOUNT_FLAGS.join(',')}`, root]);
    return null;
  }
  return `the pool ${root} is on ${m.target}, mounted without ${missing.join(',')}: a setuid file a container writes to /files runs as root on the host. Remount ${m.target} with nosuid,nodev or give hoody its own pool mount.`;
}

/** Parses sizes like 20G, 512m, 1.5g, 1048576 into bytes. */
export function parseBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (!m) throw new Error(`not a size: ${text}`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * unit);
}

async function mountedImage(root: string): Promise<boolean> {
  return isBtrfs(root);
}

/**
 * Idempotent pool set-up: a state dir already on BTRFS is used as is; otherwise a sparse image file is
 * made (once), formatted, loop-mounted. Quotas are turned on either way.
 */
export async function ensurePool(stateDir: string, sizeBytes: number): Promise<PoolSetupResult> {
  const paths = poolPaths(stateDir);
  await mkdir(paths.root, { recursive: true });
  let kind: PoolSetupResult['kind'] = 'existing';
  let created = false;
  if (!(await mountedImage(paths.root))) {
    kind = 'loop';
    if (!existsSync(paths.image)) {
      const fh = await open(paths.image, 'wx', 0o600);
      try {
        await fh.truncate(sizeBytes);
      } finally {
        await fh.close();
      }
      await formatBtrfs(paths.image);
      created = true;
    }
    await run('mount', ['-o', `loop,${POOL_MOUNT_FLAGS.join(',')}`, paths.image, paths.root]);
  } else if (existsSync(paths.image)) {
    kind = 'loop';
  }
  // The image holds every tenant's files: the host's root alone reads it.
  if (existsSync(paths.image)) await chmod(paths.image, 0o600);
  const mountWarning = await hardenPoolMount(paths.root);
  await enableQuota(paths.root);
  await rescanIfInconsistent(paths.root);
  for (const dir of [paths.containers, paths.snapshots, paths.templates]) await mkdir(dir, { recursive: true });
  return { paths, kind, created, mountWarning };
}

export interface FsInfo {
  source: string;
  fstype: string;
  uuid: string;
  target: string;
}

/** Which filesystem a path lives on (findmnt sees through loop mounts and subvolumes alike). */
export async function filesystemOf(path: string): Promise<FsInfo> {
  const { stdout } = await run('findmnt', ['-n', '-J', '-o', 'SOURCE,FSTYPE,UUID,TARGET', '-T', path]);
  const parsed = JSON.parse(stdout) as { filesystems: FsInfo[] };
  const fs = parsed.filesystems[0];
  if (!fs) throw new Error(`findmnt found no filesystem for ${path}`);
  return { source: fs.source, fstype: fs.fstype, uuid: fs.uuid ?? '', target: fs.target };
}
