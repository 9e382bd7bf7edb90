import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { ContainerContext } from '../../containers/context.js';
import { fail } from '../../containers/errors.js';
import { readyRow } from '../../containers/provision.js';
import type { SnapshotScheduler } from '../../containers/snapshot-schedule.js';
import { deleteSnapshot, listSnapshots, restoreSnapshot } from '../../containers/snapshots.js';
import { Restored, Schedule, ScheduleBody, SnapshotInfo, SnapshotParams } from './schemas.js';

const NameParam = Type.Object({ name: Type.String({ maxLength: 256 }) });
const tags = ['containers'];

/** Snapshots beyond taking one (containers.ts): list with sizes, delete, restore, a schedule with retention. */
export const snapshotRoutes: FastifyPluginAsync<{ ctx: ContainerContext; scheduler?: SnapshotScheduler }> = async (plain, { ctx, scheduler }) => {
  const app = plain.withTypeProvider<TypeBoxTypeProvider>();
  app.get('/v1/containers/:name/snapshots', { schema: { tags, params: NameParam, response: { 200: Type.Array(SnapshotInfo) } } }, async (req) =>
    listSnapshots(ctx, req.params.name),
  );
  app.delete(
    '/v1/containers/:name/snapshots/:snapshot',
    { schema: { tags, params: SnapshotParams, response: { 200: Type.Object({ name: Type.String(), deleted: Type.Boolean() }) } } },
    async (req) => {
      await deleteSnapshot(ctx, req.params.name, req.params.snapshot);
      return { name: req.params.snapshot, deleted: true };
    },
  );
  app.post(
    '/v1/containers/:name/snapshots/:snapshot/restore',
    { schema: { tags, params: SnapshotParams, description: 'put the data volume back to a snapshot (the current one is kept as pre-restore-<time>)', response: { 200: Restored } } },
    async (req) => restoreSnapshot(ctx, req.params.name, req.params.snapshot),
  );
  const schedules = () => scheduler ?? Promise.reject(fail('SNAPSHOT_SCHEDULE_INVALID', 'this daemon keeps no snapshot schedules'));
  app.get('/v1/containers/:name/snapshot-schedule', { schema: { tags, params: NameParam, response: { 200: Type.Union([Schedule, Type.Null()]) } } }, async (req) => {
    readyRow(ctx, req.params.name);
    return (await schedules()).get(req.params.name);
  });
  app.put('/v1/containers/:name/snapshot-schedule', { schema: { tags, params: NameParam, body: ScheduleBody, response: { 200: Schedule } } }, async (req) => {
    readyRow(ctx, req.params.name);
    return (await schedules()).set(req.params.name, req.body.every, req.body.keep);
  });
  app.delete(
    '/v1/containers/:name/snapshot-schedule',
    { schema: { tags, params: NameParam, response: { 200: Type.Object({ container: Type.String(), cleared: Type.Boolean() }) } } },
    async (req) => {
      readyRow(ctx, req.params.name);
      return { container: req.params.name, cleared: await (await schedules()).clear(req.params.name) };
    },
  );
};
