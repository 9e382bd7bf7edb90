import { dirname } from 'node:path';
import type { ContainerContext } from './context.js';
import { fail } from './errors.js';
import { engineFailure, storageFailure } from './failures.js';

/**
 * The disk limit bounds the root filesystem too (issue 10.5): overlay2 writes everything a container puts
 * on `/` into its layer directory, so that directory becomes a subvolume with its own qgroup limit before
 * the first start. `disk` thus caps /files + /scripts and, separately, the root filesystem: at most 2 x disk
 * on the pool. (One level-1 qgroup over both was tried: on kernel 6.18 it marks the pool's accounting
 * inconsistent at every create and can stop accounting pool-wide until a rescan.)
 */
export async function boundRootLayer(ctx: ContainerContext, name: string, engineId: string, bytes: number | null): Promise<void> {
  if (bytes === null || ctx.storage.name !== 'btrfs') return; // the dir driver enforces no quota at all
  let layerDir: string;
  let driver: string;
  try {
    layerDir = (await ctx.engine.inspect(engineId))?.layerDir ?? '';
    driver = layerDir ? 'overlay2' : (await ctx.engine.info()).storageDriver;
  } catch (err) {
    throw engineFailure(err);
  }
  if (driver === 'btrfs') return; // the engine's btrfs driver applied the size itself (ContainerSpec.rootDiskBytes)
  if (!layerDir) throw fail('ROOT_QUOTA_UNSUPPORTED', driver);
  ctx.store.setLayerDir(name, layerDir); // a kill inside the adoption is undone from this path (finishDelete)
  try {
    await ctx.storage.adoptDirectory(layerDir);
    await ctx.storage.setQuota(layerDir, bytes);
  } catch (err) {
    throw storageFailure(err);
  }
}

/**
 * Removes an engine container and its quota'd root layer. The engine deletes the (empty) subvolume with
 * rmdir; what it leaves (the qgroup; the subvolume itself on kernels without rmdir of subvolumes) goes here.
 */
export async function removeEngineContainer(ctx: ContainerContext, engineId: string): Promise<void> {
  let layerDir = '';
  try {
    layerDir = (await ctx.engine.inspect(engineId))?.layerDir ?? '';
  } catch (err) {
    throw engineFailure(err);
  }
  // A kill in the middle of boundRootLayer leaves the layer directory moved aside: the engine cannot remove it so.
  if (layerDir) await ctx.storage.recoverAdoption(layerDir).catch(() => undefined);
  const volumeId = layerDir ? await ctx.storage.volumeId(layerDir).catch(() => null) : null;
  try {
    await ctx.engine.remove(engineId);
  } catch (err) {
    throw engineFailure(err);
  }
  if (volumeId === null) return;
  try {
    if (await ctx.storage.isVolume(layerDir)) await ctx.storage.deleteVolume(layerDir);
    else await ctx.storage.forgetVolume(dirname(layerDir), volumeId);
  } catch (err) {
    throw storageFailure(err);
  }
}
