import type { Readable, Writable } from 'node:stream';

/** Disk usage of one volume, as the quota accounting sees it. */
export interface VolumeUsage {
  exclusiveBytes: number;
  referencedBytes: number;
  limitBytes: number | null;
}

export interface PoolUsage {
  sizeBytes: number;
  usedBytes: number;
  freeBytes: number;
}

/** One backend for container data volumes (Incus-style): the real one is BtrfsDriver. */
export interface StorageDriver {
  readonly name: 'btrfs' | 'dir';
  createVolume(path: string): Promise<void>;
  snapshot(source: string, target: string, opts?: { readonly?: boolean }): Promise<void>;
  /** Deletes a volume with everything in it, subvolumes nested inside included; a no-op when absent. */
  deleteVolume(path: string): Promise<void>;
  /** The volume's id (BTRFS subvolume id), null when the path is not a volume or the driver has none. */
  volumeId(path: string): Promise<number | null>;
  /** Drops what a volume someone else deleted left behind (its qgroup); parent: any path on the pool. */
  forgetVolume(parent: string, id: number): Promise<void>;
  /** Turns an existing directory into a volume in place (entries, modes and owners kept), so a quota can bound it. */
  adoptDirectory(path: string): Promise<void>;
  /** Puts back the original directory of an adoption a crash cut short (no-op when none was). */
  recoverAdoption(path: string): Promise<void>;
  isVolume(path: string): Promise<boolean>;
  listVolumes(parent: string): Promise<string[]>;
  setQuota(path: string, bytes: number | null): Promise<void>;
  usage(path: string): Promise<VolumeUsage>;
  /** Usage of many volumes at once, as of the last commit (metrics scrapes): cheap, absent ones left out. */
  usageOf(paths: readonly string[]): Promise<Map<string, VolumeUsage>>;
  poolUsage(path: string): Promise<PoolUsage>;
  /** Writes a read-only snapshot (`snapshot(…, {readonly: true})`) as one stream (`btrfs send`) to `out`. */
  send(path: string, out: Writable): Promise<void>;
  /**
   * Makes volume `parent/name` from what send() wrote (`btrfs receive`; read-only there); `name` is the sent
   * snapshot's own name. A failed receive leaves no volume behind.
   */
  receive(parent: string, name: string, input: Readable): Promise<void>;
}

export type StorageDriverFactory = () => StorageDriver;

/** Registry of drivers by name; the daemon picks one from config. */
export class StorageRegistry {
  readonly #factories = new Map<string, StorageDriverFactory>();
  register(name: StorageDriver['name'], factory: StorageDriverFactory): this {
    this.#factories.set(name, factory);
    return this;
  }
  create(name: string): StorageDriver {
    const f = this.#factories.get(name);
    if (!f) throw new Error(`unknown storage driver ${name} (have: ${[...this.#factories.keys()].join(', ')})`);
    return f();
  }
  names(): string[] {
    return [...this.#factories.keys()];
  }
}
