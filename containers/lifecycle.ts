import type { EngineContainer } from '../host/engine.js';
import { type ContainerContext, LABEL_INSTANCE, LABEL_NAME } from './context.js';
import { fail } from './errors.js';
import { engineFailure } from './failures.js';
import { FileArea } from './files.js';
import { finishDelete, readyRow } from './provision.js';
import { removeEngineContainer } from './rootfs.js';
import type { ContainerRow } from './store.js';

export type ContainerState = 'creating' | 'deleting' | 'running' | 'stopped' | 'restarting' | 'missing' | 'unknown';

export interface ContainerView {
  name: string;
  id: string;
  state: ContainerState;
  image: string;
  memoryBytes: number;
  cpus: number;
  diskBytes: number | null;
  pidsLimit: number;
  engineId: string | null;
  clonedFrom: string | null;
  createdAt: string;
  snapshots: string[];
}

function stateOf(row: ContainerRow, live: EngineContainer | undefined): ContainerState {
  if (row.phase !== 'ready') return row.phase;
  if (!live) return 'missing';
  if (live.running) return 'running';
  if (live.status === 'restarting') return 'restarting';
  return 'stopped';
}

function view(ctx: ContainerContext, row: ContainerRow, live: EngineContainer | undefined): ContainerView {
  return {
    name: row.name,
    id: row.id,
    state: stateOf(row, live),
    image: row.image,
    memoryBytes: row.memoryBytes,
    cpus: row.nanoCpus / 1e9,
    diskBytes: row.diskBytes,
    pidsLimit: row.pidsLimit,
    engineId: row.engineId,
    clonedFrom: row.clonedFrom,
    createdAt: row.createdAt,
    snapshots: ctx.store.snapshots(row.name).map((s) => s.name),
  };
}

/** Live engine containers of this daemon, by hoody name (one engine call however many containers). */
async function liveByName(ctx: ContainerContext): Promise<Map<string, EngineContainer>> {
  let list: EngineContainer[];
  try {
    list = await ctx.engine.list({ [LABEL_INSTANCE]: ctx.instance });
  } catch (err) {
    throw engineFailure(err);
  }
  return new Map(list.map((c) => [c.labels[LABEL_NAME] ?? '', c]));
}

export async function listContainers(ctx: ContainerContext): Promise<ContainerView[]> {
  const live = await liveByName(ctx);
  return ctx.store.list().map((row) => view(ctx, row, live.get(row.name)));
}

export async function getContainer(ctx: ContainerContext, name: string): Promise<ContainerView> {
  const row = ctx.store.get(name);
  if (!row) throw fail('CONTAINER_UNKNOWN', name);
  const live = row.engineId ? await ctx.engine.inspect(row.engineId).catch((e) => Promise.reject(engineFailure(e))) : null;
  return view(ctx, row, live ?? undefined);
}

/** The main process pid of a running container (0 when not running). */
export async function containerPid(ctx: ContainerContext, name: string): Promise<number> {
  const row = readyRow(ctx, name);
  const live = row.engineId ? await ctx.engine.inspect(row.engineId) : null;
  return live?.running ? live.pid : 0;
}

async function liveRow(ctx: ContainerContext, name: string): Promise<ContainerRow & { engineId: string }> {
  const row = readyRow(ctx, name);
  const live = row.engineId ? await ctx.engine.inspect(row.engineId).catch((e) => Promise.reject(engineFailure(e))) : null;
  if (!live || !row.engineId) throw fail('CONTAINER_MISSING', name);
  return row as ContainerRow & { engineId: string };
}

export async function startContainer(ctx: ContainerContext, name: string): Promise<ContainerView> {
  if (ctx.busy.has(name)) throw fail('CONTAINER_BUSY', name); // a move copies it stopped: no start meanwhile
  const row = await liveRow(ctx, name);
  await ctx.shims.within(row.shimGroup, () => ctx.engine.start(row.engineId), { start: true }).catch((e) => Promise.reject(engineFailure(e)));
  ctx.store.setDesired(name, 'running');
  return getContainer(ctx, name); // hooks' started() run from the engine's start event (daemon/events.ts)
}

export async function stopContainer(ctx: ContainerContext, name: string): Promise<ContainerView> {
  const row = await liveRow(ctx, name);
  await ctx.shims.within(row.shimGroup, () => ctx.engine.stop(row.engineId)).catch((e) => Promise.reject(engineFailure(e)));
  ctx.store.setDesired(name, 'stopped');
  return getContainer(ctx, name);
}

export async function restartContainer(ctx: ContainerContext, name: string): Promise<ContainerView> {
  if (ctx.busy.has(name)) throw fail('CONTAINER_BUSY', name);
  const row = await liveRow(ctx, name);
  await ctx.shims.within(row.shimGroup, () => ctx.engine.restart(row.engineId), { start: true }).catch((e) => Promise.reject(engineFailure(e)));
  ctx.store.setDesired(name, 'running');
  return getContainer(ctx, name); // hooks' started() run from the engine's start event (daemon/events.ts)
}

export interface ReconcileReport {
  undoneCreates: string[];
  finishedDeletes: string[];
  orphanContainers: string[];
  orphanVolumes: string[];
  missing: string[];
  /** `<container>/<area>/<path>` of the temp files of writes a kill cut short, removed. */
  tempFiles: string[];
}

/**
 * Startup reconciliation: finish what a crash cut short (creates are undone, deletes finished), remove
 * engine containers and volumes no row owns, sweep the temp files of file writes a kill cut short (in the
 * tenant's tree, beneath a descriptor), and report containers removed behind the daemon's back.
 */
export async function reconcile(ctx: ContainerContext): Promise<ReconcileReport> {
  const report: ReconcileReport = { undoneCreates: [], finishedDeletes: [], orphanContainers: [], orphanVolumes: [], missing: [], tempFiles: [] };
  for (const row of ctx.store.list()) {
    if (row.phase === 'ready') continue;
    try {
      await finishDelete(ctx, row);
      (row.phase === 'creating' ? report.undoneCreates : report.finishedDeletes).push(row.name);
    } catch (err) {
      ctx.log.error({ err, container: row.name }, 'could not finish an interrupted operation; will retry at next start');
    }
  }
  const rows = new Map(ctx.store.list().map((r) => [r.name, r]));
  const live = await liveByName(ctx);
  for (const [name, c] of live) {
    if (!rows.has(name)) {
      await removeEngineContainer(ctx, c.id);
      report.orphanContainers.push(c.name);
    }
  }
  for (const path of await ctx.storage.listVolumes(ctx.pool.containers)) {
    const name = path.slice(ctx.pool.containers.length + 1);
    if (!rows.has(name)) {
      await ctx.storage.deleteVolume(path);
      report.orphanVolumes.push(name);
    }
  }
  for (const row of rows.values()) if (!live.has(row.name)) report.missing.push(row.name);
  for (const row of rows.values()) {
    if (row.phase !== 'ready') continue;
    for (const area of ['files', 'scripts'] as const) {
      try {
        for (const path of await FileArea.of(row, area).sweepTemp()) report.tempFiles.push(`${row.name}/${area}/${path}`);
      } catch (err) {
        ctx.log.warn({ err, container: row.name, area }, 'sweeping temp files failed; they stay until the next start');
      }
    }
  }
  return report;
}
