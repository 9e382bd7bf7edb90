import type { ContainerEngine, EngineInfo } from './engine.js';
import type { KsmController, KsmStats } from './ksm.js';
import { hostMetrics, type HostMetrics } from './metrics.js';
import { memoryMergeEnabled } from './memory-merge.js';
import { filesystemOf, type FsInfo, type PoolPaths } from './pool.js';
import type { PoolUsage, StorageDriver } from './storage/index.js';

export interface HostInfo {
  pool: { path: string; image: string | null; filesystem: FsInfo; usage: PoolUsage; storageDriver: string };
  engine:
    | (EngineInfo & { available: true; dataRootFilesystem: FsInfo | null; dataRootOnPool: boolean })
    | { available: false; error: string };
  ksm: KsmStats;
  memoryMerge: boolean;
  host: HostMetrics;
}

/** Everything `hoody host info` shows: the pool, the engine (and whether its data root is on the pool), KSM. */
export async function hostInfo(
  pool: PoolPaths,
  storage: StorageDriver,
  engine: ContainerEngine,
  ksm: KsmController,
  hasImage: boolean,
): Promise<HostInfo> {
  const [filesystem, usage, ksmStats, host] = await Promise.all([
    filesystemOf(pool.root),
    storage.poolUsage(pool.root),
    ksm.stats(),
    hostMetrics(),
  ]);
  let engineInfo: HostInfo['engine'];
  try {
    const e = await engine.info();
    const dataFs = await filesystemOf(e.dockerRootDir).catch(() => null);
    engineInfo = {
      ...e,
      available: true,
      dataRootFilesystem: dataFs,
      dataRootOnPool: !!dataFs && dataFs.uuid !== '' && dataFs.uuid === filesystem.uuid,
    };
  } catch (err) {
    engineInfo = { available: false, error: (err as Error).message };
  }
  return {
    pool: { path: pool.root, image: hasImage ? pool.image : null, filesystem, usage, storageDriver: storage.name },
    engine: engineInfo,
    ksm: ksmStats,
    memoryMerge: memoryMergeEnabled(),
    host,
  };
}
