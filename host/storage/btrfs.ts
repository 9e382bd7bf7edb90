import { chmod, chown, copyFile, lstat, mkdir, readdir, readFile, rename, rm, stat, statfs, utimes } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { run, runStream } from '../command.js';
import type { PoolUsage, StorageDriver, VolumeUsage } from './driver.js';

export const BTRFS_MAGIC = 0x9123683e;
// A subvolume root is always inode 256 on BTRFS.
const SUBVOLUME_ROOT_INODE = 256;

export async function isBtrfs(path: string): Promise<boolean> {
  try {
    return (await statfs(path)).type === BTRFS_MAGIC;
  } catch {
    return false;
  }
}

/** mkfs.btrfs on a file or device (the pool set-up calls this; nothing else formats). */
export async function formatBtrfs(target: string, label = 'hoody'): Promise<void> {
  await run('mkfs.btrfs', ['-q', '-L', label, target]);
}

/** Turns qgroup accounting on; a no-op when it already is. */
export async function enableQuota(mountPoint: string): Promise<void> {
  await run('btrfs', ['quota', 'enable', mountPoint]);
}

/**
 * The kernel marks qgroup numbers inconsistent after some operations (a killed delete, a large subtree
 * drop); limits and usage are then stale until a rescan. Rescans (and waits) when that flag is up.
 */
export async function rescanIfInconsistent(path: string): Promise<boolean> {
  const { stdout } = await run('findmnt', ['-n', '-o', 'UUID', '-T', path]);
  const flag = await readFile(`/sys/fs/btrfs/${stdout.trim()}/qgroups/inconsistent`, 'utf8').catch(() => '0');
  if (flag.trim() !== '1') return false;
  try {
    await run('btrfs', ['quota', 'rescan', '-w', path], { timeoutMs: 600_000 });
  } catch {
    // A rescan is already running: wait for it instead of starting one.
    await run('btrfs', ['quota', 'rescan', '-W', path], { timeoutMs: 600_000 });
  }
  return true;
}

export async function quotaEnabled(mountPoint: string): Promise<boolean> {
  try {
    await run('btrfs', ['qgroup', 'show', mountPoint]);
    return true;
  } catch {
    return false;
  }
}

function parseSize(field: string): number | null {
  if (field === 'none' || field === '-') return null;
  const n = Number(field);
  return Number.isFinite(n) ? n : null;
}

/** What copySmallTree copies itself: a tree the engine made for a container that never ran. */
const SMALL_TREE = { entries: 16, depth: 3, fileBytes: 64 * 1024 };

/**
 * Copies the entries of `from` into the existing directory `to` (modes, owners, times) when the tree is only
 * directories and small regular files, few and shallow; returns false, copying nothing, for any other tree.
 * Extended attributes are not copied: overlay2 sets none before a layer is first mounted.
 */
export async function copySmallTree(from: string, to: string): Promise<boolean> {
  const entries: { rel: string; st: Stats }[] = [];
  const walk = async (rel: string, depth: number): Promise<boolean> => {
    for (const name of await readdir(join(from, rel))) {
      const r = rel ? join(rel, name) : name;
      const st = await lstat(join(from, r));
      entries.push({ rel: r, st });
      if (entries.length > SMALL_TREE.entries) return false;
      if (st.isDirectory()) {
        if (depth >= SMALL_TREE.depth || !(await walk(r, depth + 1))) return false;
      } else if (!st.isFile() || st.size > SMALL_TREE.fileBytes || st.nlink !== 1) return false;
    }
    return true;
  };
  if (!(await walk('', 1))) return false;
  for (const { rel, st } of entries) {
    const target = join(to, rel);
    if (st.isDirectory()) await mkdir(target);
    else await copyFile(join(from, rel), target);
    await chown(target, st.uid, st.gid);
    await chmod(target, st.mode & 0o7777);
  }
  // Times last, children before parents: making an entry changes its parent's mtime.
  for (const { rel, st } of entries.reverse()) await utimes(join(to, rel), st.atimeMs / 1000, st.mtimeMs / 1000);
  return true;
}

/** The real storage driver: every container volume is a BTRFS subvolume with a qgroup. */
export class BtrfsDriver implements StorageDriver {
  readonly name = 'btrfs' as const;
  /** Subvolume id by path and device (a subvolume put in another's place has a device of its own). */
  readonly #ids = new Map<string, number>();

  async createVolume(path: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true });
    await run('btrfs', ['subvolume', 'create', path]);
  }

  async snapshot(source: string, target: string, opts: { readonly?: boolean } = {}): Promise<void> {
    await mkdir(dirname(target), { recursive: true });
    await run('btrfs', ['subvolume', 'snapshot', ...(opts.readonly ? ['-r'] : []), source, target]);
  }

  async subvolumeId(path: string): Promise<number> {
    const { stdout } = await run('btrfs', ['inspect-internal', 'rootid', path]);
    return Number(stdout.trim());
  }

  async volumeId(path: string): Promise<number | null> {
    return (await this.isVolume(path)) ? this.subvolumeId(path) : null;
  }

  /**
   * Deletes a volume and every subvolume nested in it (a tenant can create those with an ioctl), deepest
   * first and by id, so a path a tenant swapped for a symlink cannot redirect the delete.
   */
  async deleteVolume(path: string): Promise<void> {
    if (!(await this.isVolume(path))) return;
    const id = await this.subvolumeId(path);
    const nested = await this.nestedIds(dirname(path), id);
    // By id through the volume's own root (the path must be a subvolume; the tenant cannot move that one).
    for (const n of nested) await run('btrfs', ['subvolume', 'delete', '--subvolid', String(n), path]);
    await run('btrfs', ['subvolume', 'delete', '--commit-after', path]);
    for (const n of [...nested, id]) await this.destroyQgroup(dirname(path), n);
  }

  async send(path: string, out: Writable): Promise<void> {
    await runStream('btrfs', ['send', '--quiet', path], { stdout: out });
  }

  async receive(parent: string, name: string, input: Readable): Promise<void> {
    await mkdir(parent, { recursive: true });
    try {
      // chroot: the stream's paths cannot reach outside the parent, whatever a sender put in them.
      await runStream('btrfs', ['receive', '--chroot', parent], { stdin: input });
      if (!(await this.isVolume(join(parent, name)))) throw new Error(`btrfs receive into ${parent} made no ${name}`);
    } catch (err) {
      // Undo: receive leaves what it had made so far (a partial subvolume) on a failure.
      await this.deleteVolume(join(parent, name)).catch(() => undefined);
      throw err;
    }
  }

  async forgetVolume(parent: string, id: number): Promise<void> {
    await this.destroyQgroup(parent, id);
  }

  /** Ids of the subvolumes below subvolume `id`, children after their own children (safe delete order). */
  async nestedIds(fsPath: string, id: number): Promise<number[]> {
    const { stdout } = await run('btrfs', ['subvolume', 'list', fsPath]);
    const children = new Map<number, number[]>();
    for (const line of stdout.split('\n')) {
      const m = /^ID (\d+) gen \d+ top level (\d+) path /.exec(line.trim());
      if (!m) continue;
      const parent = Number(m[2]);
      children.set(parent, [...(children.get(parent) ?? []), Number(m[1])]);
    }
    const out: number[] = [];
    const walk = (p: number, depth: number) => {
      if (depth > 4096) throw new Error(`subvolume nesting below ${id} deeper than 4096`);
      for (const c of children.get(p) ?? []) {
        walk(c, depth + 1);
        out.push(c);
      }
    };
    walk(id, 0);
    return out;
  }

  async recoverAdoption(path: string): Promise<void> {
    const aside = `${path}.hoody-adopt`;
    await rm(`${path}.hoody-adopted`, { recursive: true, force: true });
    if (!(await lstat(aside).then(() => true, () => false))) return;
    // A crash cut an adoption short: the aside copy is the truth, the subvolume (if any) may be partial.
    if (await this.isVolume(path)) await run('btrfs', ['subvolume', 'delete', path]);
    await rename(aside, path);
  }

  /**
   * Turns an existing plain directory into a subvolume holding the same entries (modes, owners, xattrs
   * kept), so a qgroup can bound what is written below it. Idempotent; a failure puts the directory back.
   */
  async adoptDirectory(path: string): Promise<void> {
    if (!path.startsWith('/') || path.length < 2) throw new Error(`adoptDirectory needs an absolute path, got ${JSON.stringify(path)}`);
    await this.recoverAdoption(path);
    const aside = `${path}.hoody-adopt`;
    if (await this.isVolume(path)) return;
    const st = await lstat(path);
    if (!st.isDirectory()) throw new Error(`${path} is not a directory`);
    await rename(path, aside);
    try {
      await run('btrfs', ['subvolume', 'create', path]);
      await chown(path, st.uid, st.gid);
      await chmod(path, st.mode & 0o7777);
      // A container's layer before its first start (the usual case) is a few empty directories and two small
      // files: copied here, no cp process. Anything else (links, big files, deeper trees) goes to cp -a.
      if (!(await copySmallTree(aside, path))) await run('cp', ['-a', '--', `${aside}/.`, `${path}/`]);
    } catch (err) {
      if (await this.isVolume(path)) await run('btrfs', ['subvolume', 'delete', path]).catch(() => undefined);
      await rename(aside, path).catch(() => undefined);
      throw err;
    }
    // Renamed first: a kill while it is being removed must not leave a partial copy that looks like the truth.
    const done = `${path}.hoody-adopted`;
    await rename(aside, done);
    await rm(done, { recursive: true, force: true });
  }

  /** Removes the level-0 qgroup a deleted subvolume leaves behind, so no orphan remains. */
  private async destroyQgroup(mountPath: string, id: number): Promise<void> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const groups = await this.qgroupIds(mountPath);
      if (!groups.has(`0/${id}`)) return;
      try {
        await run('btrfs', ['qgroup', 'destroy', `0/${id}`, mountPath]);
        return;
      } catch (err) {
        // The kernel (6.x) drops the qgroup itself once the cleaner is done: gone is done.
        if (/No such file or directory/.test((err as Error).message)) return;
        // Busy until the cleaner has dropped the subvolume. The cleaner only sees a deletion after a commit (the
        // engine's rmdir of a layer commits nothing: up to 30 s), so commit now, then wait for it and retry.
        await run('btrfs', ['filesystem', 'sync', mountPath]).catch(() => undefined);
        await run('btrfs', ['subvolume', 'sync', mountPath, String(id)]).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async qgroupIds(path: string): Promise<Set<string>> {
    const { stdout } = await run('btrfs', ['qgroup', 'show', '--raw', path]);
    const ids = new Set<string>();
    for (const line of stdout.split('\n')) {
      const id = line.trim().split(/\s+/)[0];
      if (id && /^\d+\/\d+$/.test(id)) ids.add(id);
    }
    return ids;
  }

  async isVolume(path: string): Promise<boolean> {
    try {
      const st = await stat(path);
      return st.isDirectory() && st.ino === SUBVOLUME_ROOT_INODE && (await isBtrfs(path));
    } catch {
      return false;
    }
  }

  async listVolumes(parent: string): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(parent);
    } catch {
      return [];
    }
    const out: string[] = [];
    for (const n of names) if (await this.isVolume(join(parent, n))) out.push(join(parent, n));
    return out.sort();
  }

  async setQuota(path: string, bytes: number | null): Promise<void> {
    await run('btrfs', ['qgroup', 'limit', bytes === null ? 'none' : String(bytes), path]);
  }

  async usage(path: string): Promise<VolumeUsage> {
    await rescanIfInconsistent(path);
    const id = await this.subvolumeId(path);
    // -f: only the qgroups that affect this path; --sync: numbers as of now, not the last commit.
    const { stdout } = await run('btrfs', ['qgroup', 'show', '-re', '-f', '--raw', '--sync', path]);
    for (const line of stdout.split('\n')) {
      const cols = line.trim().split(/\s+/);
      if (cols[0] !== `0/${id}`) continue;
      return {
        referencedBytes: Number(cols[1]),
        exclusiveBytes: Number(cols[2]),
        limitBytes: parseSize(cols[3] ?? 'none'),
      };
    }
    throw new Error(`no qgroup 0/${id} for ${path}; are quotas enabled?`);
  }

  /** One `qgroup show` for all of them (no --sync, no rescan); an id is looked up once per subvolume. */
  async usageOf(paths: readonly string[]): Promise<Map<string, VolumeUsage>> {
    const ids = new Map<string, string>();
    const seen = new Set<string>();
    for (const p of paths) {
      const st = await stat(p).catch(() => null);
      if (!st || st.ino !== SUBVOLUME_ROOT_INODE) continue;
      const key = `${st.dev}\0${p}`;
      seen.add(key);
      let id = this.#ids.get(key);
      if (id === undefined) {
        id = await this.subvolumeId(p).catch(() => undefined);
        if (id === undefined) continue;
        this.#ids.set(key, id);
      }
      ids.set(`0/${id}`, p);
    }
    for (const key of this.#ids.keys()) if (!seen.has(key)) this.#ids.delete(key);
    const out = new Map<string, VolumeUsage>();
    const first = ids.values().next().value;
    if (first === undefined) return out;
    const { stdout } = await run('btrfs', ['qgroup', 'show', '-re', '--raw', first]);
    for (const line of stdout.split('\n')) {
      const cols = line.trim().split(/\s+/);
      const p = ids.get(cols[0] ?? '');
      if (p) out.set(p, { referencedBytes: Number(cols[1]), exclusiveBytes: Number(cols[2]), limitBytes: parseSize(cols[3] ?? 'none') });
    }
    return out;
  }

  async poolUsage(path: string): Promise<PoolUsage> {
    const s = await statfs(path);
    return {
      sizeBytes: s.blocks * s.bsize,
      usedBytes: (s.blocks - s.bfree) * s.bsize,
      freeBytes: s.bavail * s.bsize,
    };
  }
}
