import { randomBytes } from 'node:crypto';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerContext } from './context.js';
import { fail } from './errors.js';
import { engineFailure, storageFailure } from './failures.js';
import { checkSnapshotName } from './names.js';
import { readyRow } from './provision.js';
import type { ContainerRow, SnapshotRow } from './store.js';
import { Undo } from './undo.js';

export interface SnapshotInfo {
  name: string;
  createdAt: string;
  /** Bytes only this snapshot holds (what deleting it frees), and all it refers to (its size as a copy). */
  exclusiveBytes: number | null;
  referencedBytes: number | null;
  /** Taken by the schedule (auto-…), pruned by it; the others are the operator's. */
  auto: boolean;
}

/** Snapshots the schedule takes are named auto-<UTC time>; the operator's may not start with auto-. */
export const AUTO_PREFIX = 'auto-';

/** A read-only snapshot of the container's data volume (files and scripts), recorded with its time. */
export async function snapshotContainer(ctx: ContainerContext, name: string, snap: string, opts: { auto?: boolean } = {}): Promise<{ name: string; path: string; createdAt: string }> {
  const row = readyRow(ctx, name);
  checkSnapshotName(snap);
  if (!opts.auto && snap.startsWith(AUTO_PREFIX)) throw fail('SNAPSHOT_NAME_INVALID', `${snap} (auto- names are the schedule's)`);
  if (ctx.store.snapshots(name).some((s) => s.name === snap)) throw fail('SNAPSHOT_TAKEN', snap);
  const path = join(ctx.pool.snapshots, name, snap);
  await using undo = new Undo();
  try {
    await ctx.storage.snapshot(row.volume, path, { readonly: true });
  } catch (err) {
    throw storageFailure(err);
  }
  undo.push('snapshot volume', () => ctx.storage.deleteVolume(path));
  const createdAt = new Date().toISOString();
  ctx.store.insertSnapshot({ container: name, name: snap, path, createdAt });
  undo.done();
  return { name: snap, path, createdAt };
}

function snapshotOf(ctx: ContainerContext, name: string, snap: string): SnapshotRow {
  const s = ctx.store.snapshots(name).find((x) => x.name === snap);
  if (!s) throw fail('SNAPSHOT_UNKNOWN', name, snap);
  return s;
}

/** Oldest first, with sizes from the quota accounting (null where the pool keeps none). */
export async function listSnapshots(ctx: ContainerContext, name: string): Promise<SnapshotInfo[]> {
  readyRow(ctx, name);
  const rows = ctx.store.snapshots(name).sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
  const out: SnapshotInfo[] = [];
  for (const s of rows) {
    const u = await ctx.storage.usage(s.path).catch(() => null);
    out.push({ name: s.name, createdAt: s.createdAt, exclusiveBytes: u?.exclusiveBytes ?? null, referencedBytes: u?.referencedBytes ?? null, auto: s.name.startsWith(AUTO_PREFIX) });
  }
  return out;
}

/** The snapshot's volume first, then its row: a crash between leaves a row whose delete is retried, no orphan. */
export async function deleteSnapshot(ctx: ContainerContext, name: string, snap: string): Promise<void> {
  readyRow(ctx, name);
  const s = snapshotOf(ctx, name, snap);
  try {
    await ctx.storage.deleteVolume(s.path);
  } catch (err) {
    throw storageFailure(err);
  }
  ctx.store.deleteSnapshot(name, snap);
}

/**
 * Puts the container's data volume back to a snapshot: the container stops, the current volume is kept as the
 * snapshot `pre-restore-<time>` (so a restore can itself be undone), a writable copy of the snapshot takes the
 * volume's place, its quota is set again, and the container starts again if it ran. A failure puts everything
 * back as it was.
 */
export async function restoreSnapshot(ctx: ContainerContext, name: string, snap: string): Promise<{ restored: string; kept: string }> {
  const row = readyRow(ctx, name);
  const s = snapshotOf(ctx, name, snap);
  if (ctx.busy.has(name)) throw fail('CONTAINER_BUSY', name);
  ctx.busy.add(name);
  try {
    await using undo = new Undo((label, error) => ctx.log.error({ err: error, step: label, container: name }, 'undo step failed'));
    const live = row.engineId ? await ctx.engine.inspect(row.engineId).catch((e) => Promise.reject(engineFailure(e))) : null;
    const wasRunning = live?.running === true;
    if (wasRunning) {
      await ctx.shims.within(row.shimGroup, () => ctx.engine.stop(row.engineId!)).catch((e) => Promise.reject(engineFailure(e)));
      undo.push('start again', () => ctx.shims.within(row.shimGroup, () => ctx.engine.start(row.engineId!), { start: true }));
    }
    const kept = `pre-restore-${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
    await snapshotContainer(ctx, name, kept, { auto: true });
    undo.push('pre-restore snapshot', () => deleteSnapshot(ctx, name, kept));
    const fresh = `${row.volume}.restore-${randomBytes(4).toString('hex')}`;
    const old = `${row.volume}.old-${randomBytes(4).toString('hex')}`;
    try {
      await ctx.storage.snapshot(s.path, fresh);
      undo.push('restored copy', () => ctx.storage.deleteVolume(fresh));
      await swap(row, fresh, old);
    } catch (err) {
      throw storageFailure(err);
    }
    undo.push('swap back', () => swap(row, old, fresh));
    try {
      if (row.diskBytes !== null) await ctx.storage.setQuota(row.volume, row.diskBytes);
    } catch (err) {
      throw storageFailure(err);
    }
    if (wasRunning) await ctx.shims.within(row.shimGroup, () => ctx.engine.start(row.engineId!), { start: true }).catch((e) => Promise.reject(engineFailure(e)));
    undo.done();
    // The volume it replaced is the pre-restore snapshot now (its own copy): the old one goes.
    await ctx.storage.deleteVolume(old).catch((err: unknown) => ctx.log.warn({ err, container: name, path: old }, 'removing the replaced volume failed; reconcile removes it at the next start'));
    ctx.log.info({ container: name, snapshot: snap, kept }, 'container restored to a snapshot');
    return { restored: snap, kept };
  } finally {
    ctx.busy.delete(name);
  }
}

/** volume -> `aside`, `incoming` -> volume (two renames of subvolumes on one filesystem). */
async function swap(row: ContainerRow, incoming: string, aside: string): Promise<void> {
  await rename(row.volume, aside);
  try {
    await rename(incoming, row.volume);
  } catch (err) {
    await rename(aside, row.volume);
    throw err;
  }
}
