import type { ContainerContext } from './context.js';
import { LABEL_INSTANCE, LABEL_NAME } from './context.js';
import { fail } from './errors.js';
import { engineFailure, storageFailure } from './failures.js';
import { type ContainerView, getContainer, startContainer } from './lifecycle.js';
import { makeEngineContainer, readyRow } from './provision.js';
import { removeEngineContainer } from './rootfs.js';
import { Undo } from './undo.js';

export interface Recovered {
  container: ContainerView;
  /** false: its engine container was there; nothing was done. */
  recovered: boolean;
}

/**
 * hoody's state is the truth: a container whose engine container was removed behind hoody's back (or whose engine
 * was wiped) is made again from its row and its intact data volume — same name, limits, image, mounts; its tokens,
 * cron entries, routes, certificates and scripts never left hoody's state. The engine container's own writable
 * layer is gone with it (only /files and /scripts are data). Started if it was meant to run. A failure leaves it
 * missing, as it was.
 */
export async function recoverContainer(ctx: ContainerContext, name: string): Promise<Recovered> {
  const row = readyRow(ctx, name);
  const busy = ctx.busy;
  if (busy.has(name)) throw fail('CONTAINER_BUSY', name);
  busy.add(name);
  try {
    const live = row.engineId ? await ctx.engine.inspect(row.engineId).catch((e) => Promise.reject(engineFailure(e))) : null;
    if (live) return { container: await getContainer(ctx, name), recovered: false };
    let volume: boolean;
    try {
      volume = await ctx.storage.isVolume(row.volume);
    } catch (err) {
      throw storageFailure(err);
    }
    if (!volume) throw fail('CONTAINER_UNRECOVERABLE', name, `its data volume ${row.volume} is gone; \`hoody rm ${name}\` removes what is left`);
    if (!(await ctx.engine.imageExists(row.image).catch((e) => Promise.reject(engineFailure(e))))) {
      if (!(await ctx.ensureImage?.(row.image))) throw fail('IMAGE_UNKNOWN', row.image);
    }
    // A half-made engine container of an earlier attempt, labelled for this name, goes first.
    const strays = await ctx.engine.list({ [LABEL_INSTANCE]: ctx.instance, [LABEL_NAME]: name }).catch((e) => Promise.reject(engineFailure(e)));
    for (const c of strays) await removeEngineContainer(ctx, c.id);

    await using undo = new Undo((label, error) => ctx.log.error({ err: error, step: label, container: name }, 'undo step failed'));
    const engineId = await makeEngineContainer(ctx, row, undo);
    // Started: the engine's start event runs the namespaces' started() hooks (redirects, agents, @reboot cron).
    if (row.desired !== 'stopped') {
      try {
        await ctx.shims.within(row.shimGroup, () => ctx.engine.start(engineId), { start: true });
      } catch (err) {
        throw engineFailure(err, row.image);
      }
    }
    undo.done();
    ctx.log.info({ container: name, engineId, previousEngineId: row.engineId, image: row.image }, 'container recovered from its volume');
    return { container: await getContainer(ctx, name), recovered: true };
  } finally {
    busy.delete(name);
  }
}

/** `start` of a missing container rebuilds it (then it runs); of any other, starts it as before. */
export async function startOrRecover(ctx: ContainerContext, name: string): Promise<ContainerView> {
  const row = readyRow(ctx, name);
  const live = row.engineId ? await ctx.engine.inspect(row.engineId).catch((e) => Promise.reject(engineFailure(e))) : null;
  if (live) return startContainer(ctx, name);
  ctx.store.setDesired(name, 'running');
  return (await recoverContainer(ctx, name)).container;
}
