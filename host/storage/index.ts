import { BtrfsDriver } from './btrfs.js';
import { DirDriver } from './dir.js';
import { StorageRegistry } from './driver.js';

export type { StorageDriver, VolumeUsage, PoolUsage } from './driver.js';

export function defaultStorageRegistry(): StorageRegistry {
  return new StorageRegistry().register('btrfs', () => new BtrfsDriver()).register('dir', () => new DirDriver());
}
