import { existsSync } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
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
      const fh = await open(paths.image, 'wx');
      try {
        await fh.truncate(sizeBytes);
      } finally {
        await fh.close();
      }
      await formatBtrfs(paths.image);
      created = true;
    }
    await run('mount', ['-o', 'loop', paths.image, paths.root]);
  } else if (existsSync(paths.image)) {
    kind = 'loop';
  }
  await enableQuota(paths.root);
  await rescanIfInconsistent(paths.root);
  for (const dir of [paths.containers, paths.snapshots, paths.templates]) await mkdir(dir, { recursive: true });
  return { paths, kind, created };
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
