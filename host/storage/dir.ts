import { mkdir, readdir, rm, stat, statfs, writeFile, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { runStream } from '../command.js';
import type { PoolUsage, StorageDriver, VolumeUsage } from './driver.js';
import { copyTree, treeBytes } from './tree.js';

const MARKER = '.hoody-volume';


/**
 * Plain-directory driver: a fake beside the real BtrfsDriver (for hosts without BTRFS and for the
 * shared driver test suite). Snapshots are full copies and quotas are recorded but not enforced.
 */
export class DirDriver implements StorageDriver {
  readonly name = 'dir' as const;

  async createVolume(path: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true });
    await mkdir(path);
    await writeFile(join(path, MARKER), JSON.stringify({ limit: null }));
  }
  async snapshot(source: string, target: string): Promise<void> {
    await mkdir(dirname(target), { recursive: true });
    await mkdir(target);
    try {
      await copyTree(source, target); // by descriptor: the source is a tenant's live tree
    } catch (err) {
      await rm(target, { recursive: true, force: true });
      throw err;
    }
  }
  async deleteVolume(path: string): Promise<void> {
    await rm(path, { recursive: true, force: true });
  }
  async volumeId(): Promise<number | null> {
    return null;
  }
  async forgetVolume(): Promise<void> {}
  /** Nothing to do: this driver enforces no quota, so a plain directory is as good as a volume. */
  async adoptDirectory(): Promise<void> {}
  async recoverAdoption(): Promise<void> {}
  async isVolume(path: string): Promise<boolean> {
    return stat(join(path, MARKER)).then(
      () => true,
      () => false,
    );
  }
  async listVolumes(parent: string): Promise<string[]> {
    const names = await readdir(parent).catch(() => [] as string[]);
    const out: string[] = [];
    for (const n of names) if (await this.isVolume(join(parent, n))) out.push(join(parent, n));
    return out.sort();
  }
  async setQuota(path: string, bytes: number | null): Promise<void> {
    await writeFile(join(path, MARKER), JSON.stringify({ limit: bytes }));
  }
  async usage(path: string): Promise<VolumeUsage> {
    const meta = JSON.parse(await readFile(join(path, MARKER), 'utf8')) as { limit: number | null };
    const bytes = await treeBytes(path); // by descriptor: a tenant's live tree
    return { exclusiveBytes: bytes, referencedBytes: bytes, limitBytes: meta.limit };
  }
  async usageOf(paths: readonly string[]): Promise<Map<string, VolumeUsage>> {
    const out = new Map<string, VolumeUsage>();
    for (const p of paths) {
      const u = await this.usage(p).catch(() => null);
      if (u) out.set(p, u);
    }
    return out;
  }
  /** A tar stream stands in for `btrfs send` here (owners by number, as on the sending host). */
  async send(path: string, out: Writable): Promise<void> {
    await runStream('tar', ['--numeric-owner', '-C', path, '-cf', '-', '.'], { stdout: out });
  }
  async receive(parent: string, name: string, input: Readable): Promise<void> {
    const target = join(parent, name);
    await mkdir(target, { recursive: true });
    try {
      await runStream('tar', ['--numeric-owner', '-C', target, '-xpf', '-'], { stdin: input });
      if (!(await this.isVolume(target))) throw new Error(`the stream received into ${target} was not a volume`);
    } catch (err) {
      await rm(target, { recursive: true, force: true }); // undo: no half-received volume
      throw err;
    }
  }
  async poolUsage(path: string): Promise<PoolUsage> {
    const s = await statfs(path);
    return { sizeBytes: s.blocks * s.bsize, usedBytes: (s.blocks - s.bfree) * s.bsize, freeBytes: s.bavail * s.bsize };
  }
}
