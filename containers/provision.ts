import { randomUUID } from 'node:crypto';
import { lchown, mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { ContainerSpec } from '../host/engine.js';
import { SHIM_GROUP_ENV } from '../host/shim-groups.js';
import { type ContainerContext, engineName, LABEL_ID, LABEL_INSTANCE, LABEL_NAME } from './context.js';
import { fail } from './errors.js';
import { engineFailure, storageFailure } from './failures.js';
import { checkName } from './names.js';
import { boundRootLayer, removeEngineContainer } from './rootfs.js';
import type { ContainerRow } from './store.js';
import { withNormalSync } from './statements.js';
import { issueOwnerToken } from './token-service.js';
import { Undo } from './undo.js';

export interface CreateRequest {
  name: string;
  image?: string;
  memoryBytes?: number;
  nanoCpus?: number;
  diskBytes?: number | null;
  pidsLimit?: number;
}

export interface Created {
  row: ContainerRow;
  token: string;
}

const MIN_MEMORY = 6 * 1024 * 1024; // the engine refuses less
const MIN_DISK = 16 * 1024 * 1024;

export function templatePath(ctx: ContainerContext): string {
  return join(ctx.pool.templates, 'default');
}

/** The template every data volume is snapshotted from: a files area and a scripts area. */
export async function ensureTemplate(ctx: ContainerContext): Promise<void> {
  const path = templatePath(ctx);
  if (!(await ctx.storage.isVolume(path))) await ctx.storage.createVolume(path);
  await mkdir(join(path, 'files'), { recursive: true });
  await mkdir(join(path, 'scripts'), { recursive: true });
  await ownAreas(ctx, path);
}

/**
 * The two areas of a data volume belong to the container's root as the host sees it: the engine's mapped root
 * with user namespaces (else the container could not write /files), host root without. Only for a volume no
 * container has mounted yet (the template, a fresh snapshot): lchown never follows a link.
 */
async function ownAreas(ctx: ContainerContext, volume: string): Promise<void> {
  let owner: { uid: number; gid: number };
  try {
    owner = (await ctx.engine.userns()) ?? { uid: 0, gid: 0 };
  } catch (err) {
    throw engineFailure(err);
  }
  for (const area of ['files', 'scripts']) {
    await lchown(join(volume, area), owner.uid, owner.gid).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw storageFailure(err); // an old volume without it: made on first use
    });
  }
}

/**
 * The engine container of a row (create and recover): made, recorded on the row, its root layer bounded before the
 * first start; each step undone by `undo` (the row gets its former engine id back).
 */
export async function makeEngineContainer(ctx: ContainerContext, row: ContainerRow, undo: Undo): Promise<string> {
  let engineId: string;
  try {
    engineId = await ctx.engine.create(specFor(ctx, row));
  } catch (err) {
    throw engineFailure(err, row.image);
  }
  undo.push('engine container', () => removeEngineContainer(ctx, engineId));
  const before = row.engineId;
  ctx.store.setEngineId(row.name, engineId);
  undo.push('engine id', async () => ctx.store.setEngineId(row.name, before));
  await boundRootLayer(ctx, row.name, engineId, row.diskBytes); // before the first start: nothing written yet
  return engineId;
}

function specFor(ctx: ContainerContext, row: ContainerRow): ContainerSpec {
  const extras = ctx.specExtras(row.name);
  return {
    name: engineName(ctx, row.name),
    image: row.image,
    hostname: row.name,
    labels: { [LABEL_INSTANCE]: ctx.instance, [LABEL_NAME]: row.name, [LABEL_ID]: row.id },
    memoryBytes: row.memoryBytes,
    nanoCpus: row.nanoCpus,
    pidsLimit: row.pidsLimit,
    binds: [`${join(row.volume, 'files')}:/files`, `${join(row.volume, 'scripts')}:/scripts`, ...extras.binds],
    extraHosts: extras.extraHosts,
    // The shim wrapper reads the group from here (host/shim-groups.ts); the tenant sees a name and nothing more.
    env: [`HOODY_CONTAINER=${row.name}`, ...(row.shimGroup ? [`${SHIM_GROUP_ENV}=${row.shimGroup}`] : []), ...extras.env],
    ...(extras.network ? { network: extras.network } : {}),
    ...(extras.sysctls ? { sysctls: extras.sysctls } : {}),
    rootDiskBytes: row.diskBytes,
  };
}

function validateLimits(req: CreateRequest, ctx: ContainerContext): Omit<ContainerRow, 'phase' | 'createdAt'> {
  const name = checkName(req.name);
  const memoryBytes = req.memoryBytes ?? ctx.defaults.memoryBytes;
  const nanoCpus = req.nanoCpus ?? ctx.defaults.nanoCpus;
  const diskBytes = req.diskBytes === undefined ? ctx.defaults.diskBytes : req.diskBytes;
  const pidsLimit = req.pidsLimit ?? ctx.defaults.pidsLimit;
  // Safe integers only: past 2^53 a size is no longer exact, and SQLite's INTEGER column refuses it (a 500).
  if (!Number.isSafeInteger(memoryBytes) || memoryBytes < MIN_MEMORY)
    throw fail('LIMIT_INVALID', `memory must be at least ${MIN_MEMORY / 1024 / 1024} MiB and at most 2^53 - 1 bytes`);
  // The engine refuses more CPUs than the host has (a 502 from it otherwise): the same bound, as a 400 here.
  const hostCpus = availableParallelism();
  if (!Number.isInteger(nanoCpus) || nanoCpus < 10_000_000 || nanoCpus > hostCpus * 1e9)
    throw fail('LIMIT_INVALID', `cpus must be between 0.01 and ${hostCpus} (the CPUs this host has)`);
  if (diskBytes !== null && (!Number.isSafeInteger(diskBytes) || diskBytes < MIN_DISK))
    throw fail('LIMIT_INVALID', `disk must be at least ${MIN_DISK / 1024 / 1024} MiB and at most 2^53 - 1 bytes`);
  if (!Number.isSafeInteger(pidsLimit) || pidsLimit < 8) throw fail('LIMIT_INVALID', 'pids limit must be at least 8');
  return {
    name,
    id: randomUUID(),
    engineId: null,
    layerDir: null,
    shimGroup: null,
    image: req.image ?? ctx.defaults.image,
    memoryBytes,
    nanoCpus,
    diskBytes,
    pidsLimit,
    volume: join(ctx.pool.containers, name),
    desired: 'running',
    clonedFrom: null,
  };
}

/**
 * Row (phase creating) -> data volume -> quota -> engine container -> start -> token -> namespaces.
 * Any failure undoes the finished steps in reverse; a crash mid-way is finished by reconcile().
 */
async function provision(ctx: ContainerContext, base: Omit<ContainerRow, 'phase' | 'createdAt'>, source: string): Promise<Created> {
  const busy = ctx.busy;
  if (busy.has(base.name)) throw fail('CONTAINER_BUSY', base.name);
  if (ctx.store.get(base.name)) throw fail('NAME_TAKEN', base.name);
  busy.add(base.name);
  try {
    await using undo = new Undo((label, error) => ctx.log.error({ err: error, step: label, container: base.name }, 'undo step failed'));
    // In a fleet the name is taken fleet-wide first: of two hosts racing for it, one provisions, one gets a 409.
    const names = ctx.names;
    if (names) {
      await names.reserve(base.name, base.id);
      undo.push('name reservation', () => names.release(base.name, base.id));
    }
    // Chosen and inserted in one turn of the event loop: the row counts towards its group at once.
    const row: ContainerRow = { ...base, shimGroup: ctx.shims.choose(), phase: 'creating', createdAt: new Date().toISOString() };
    // No fsync of its own: kill -9 keeps it (WAL), the next durable write (engine id) syncs it, and a power loss
    // before that leaves only a volume no row owns, which reconcile() removes.
    withNormalSync(ctx.store.db, () => ctx.store.insert(row));
    undo.push('row', () => ctx.store.delete(row.name));

    try {
      await ctx.storage.snapshot(source, row.volume);
    } catch (err) {
      throw storageFailure(err);
    }
    undo.push('volume', () => ctx.storage.deleteVolume(row.volume));
    await ownAreas(ctx, row.volume); // a clone of a volume made on a rootful engine, or an older template
    try {
      if (row.diskBytes !== null) await ctx.storage.setQuota(row.volume, row.diskBytes);
    } catch (err) {
      throw storageFailure(err);
    }

    const engineId = await makeEngineContainer(ctx, row, undo);
    try {
      await ctx.shims.within(row.shimGroup, () => ctx.engine.start(engineId), { start: true });
    } catch (err) {
      throw engineFailure(err, row.image);
    }

    const ready: ContainerRow = { ...row, engineId };
    for (const hook of ctx.hooks) {
      await hook.open(ready);
      undo.push('namespace', () => hook.close(ready));
    }
    // The token and the ready phase in one transaction: one fsync, and no ready container without its token.
    const token = ctx.store.db.transaction(() => {
      const issued = issueOwnerToken(ctx.store, row.name);
      ctx.store.setPhase(row.name, 'ready');
      return issued;
    })();
    undo.done();
    ctx.log.info({ container: row.name, engineId, image: row.image, clonedFrom: row.clonedFrom }, 'container created');
    return { row: { ...ready, phase: 'ready' }, token };
  } finally {
    busy.delete(base.name);
  }
}

export async function createContainer(ctx: ContainerContext, req: CreateRequest): Promise<Created> {
  const base = validateLimits(req, ctx);
  return provision(ctx, base, templatePath(ctx));
}

/** A new container whose data volume is a writable snapshot of the source's (files and scripts carried over). */
export async function cloneContainer(ctx: ContainerContext, sourceName: string, newName: string): Promise<Created> {
  const src = readyRow(ctx, sourceName);
  checkName(newName);
  const base = validateLimits(
    { name: newName, image: src.image, memoryBytes: src.memoryBytes, nanoCpus: src.nanoCpus, diskBytes: src.diskBytes, pidsLimit: src.pidsLimit },
    ctx,
  );
  return provision(ctx, { ...base, clonedFrom: src.name }, src.volume);
}

export function readyRow(ctx: ContainerContext, name: string): ContainerRow {
  const row = ctx.store.get(name);
  if (!row) throw fail('CONTAINER_UNKNOWN', name);
  if (row.phase !== 'ready') throw fail('CONTAINER_BUSY', name);
  return row;
}

/** Namespaces -> engine container -> snapshots -> volume (and its qgroup) -> rows: reverse of create. */
export async function removeContainer(ctx: ContainerContext, name: string): Promise<void> {
  const row = ctx.store.get(name);
  if (!row) throw fail('CONTAINER_UNKNOWN', name);
  const busy = ctx.busy;
  if (busy.has(name)) throw fail('CONTAINER_BUSY', name);
  busy.add(name);
  try {
    ctx.store.setPhase(name, 'deleting'); // a crash from here on is finished by reconcile()
    await finishDelete(ctx, row);
  } finally {
    busy.delete(name);
  }
}

export async function finishDelete(ctx: ContainerContext, row: ContainerRow): Promise<void> {
  for (const hook of [...ctx.hooks].reverse()) await hook.close(row);
  // A kill inside boundRootLayer left the layer moved aside, where the engine cannot even inspect the container.
  if (row.layerDir) await ctx.storage.recoverAdoption(row.layerDir).catch((err) => ctx.log.warn({ err, container: row.name }, 'could not put a root layer back'));
  if (row.engineId) await ctx.shims.within(row.shimGroup, () => removeEngineContainer(ctx, row.engineId!));
  let strays: { id: string }[];
  try {
    strays = await ctx.engine.list({ [LABEL_INSTANCE]: ctx.instance, [LABEL_NAME]: row.name });
  } catch (err) {
    throw engineFailure(err);
  }
  for (const c of strays) await removeEngineContainer(ctx, c.id);
  try {
    for (const s of ctx.store.snapshots(row.name)) {
      await ctx.storage.deleteVolume(s.path);
      ctx.store.deleteSnapshot(row.name, s.name);
    }
    await ctx.storage.deleteVolume(row.volume);
  } catch (err) {
    throw storageFailure(err);
  }
  ctx.store.delete(row.name);
  ctx.log.info({ container: row.name }, 'container removed');
}
