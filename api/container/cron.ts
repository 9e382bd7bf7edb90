import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { CronService } from '../../containers/cron/service.js';
import { authorizeUser, effectiveUser } from './context.js';

// A command may be up to 64 KiB, checked by the service (HOODY_CRON_COMMAND_TOO_LONG): the body limit stays
// well above it, so an oversized command reaches that check instead of a generic 413.
const BODY_LIMIT = 4 * 1024 * 1024;
const tags = ['cron'];

const UserParam = Type.Object({ user: Type.String({ minLength: 1, maxLength: 64 }) });
const EntryParam = Type.Object({
  user: Type.String({ minLength: 1, maxLength: 64 }),
  id: Type.String({ minLength: 1, maxLength: 64 }),
});

// Types only: lengths, schedules, time zones and unknown properties are the service's checks, each with its own code.
const entryFields = {
  schedule: Type.String({ description: '5 fields (minute hour day month weekday), a macro like @daily, or @reboot' }),
  command: Type.String({ minLength: 1, description: 'run inside the container as the user, with sh -c (at most 64 KiB)' }),
  comment: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  enabled: Type.Optional(Type.Boolean()),
  expires_at: Type.Optional(Type.Union([Type.String({ description: 'ISO 8601 date-time with a zone' }), Type.Null()])),
  timezone: Type.Optional(Type.String({ description: 'IANA name; default UTC' })),
};
const NewEntry = Type.Object(entryFields, { additionalProperties: true });
const EntryPatch = Type.Partial(Type.Object(entryFields), { additionalProperties: true });

const NullableString = Type.Union([Type.String(), Type.Null()]);
const Entry = Type.Object({
  id: Type.String(),
  user: Type.String(),
  schedule: Type.String(),
  command: Type.String(),
  comment: NullableString,
  enabled: Type.Boolean(),
  timezone: Type.String(),
  expires_at: NullableString,
  expired: Type.Boolean(),
  next_run: NullableString,
  created_at: Type.String(),
  updated_at: Type.String(),
});
const Run = Type.Object({
  id: Type.Integer(),
  entry_id: Type.String(),
  user: Type.String(),
  trigger: Type.String({ enum: ['schedule', 'manual', 'reboot'] }),
  status: Type.String({ enum: ['queued', 'running', 'ok', 'failed', 'skipped', 'expired', 'timeout', 'late'] }),
  started_at: Type.String(),
  finished_at: NullableString,
  exit_code: Type.Union([Type.Integer(), Type.Null()]),
  output: Type.String(),
  truncated: Type.Boolean(),
  triggered_by: Type.String(),
  scheduled_for: NullableString,
});
const Deleted = Type.Object({ id: Type.String(), deleted: Type.Boolean() });

// Query strings arrive as strings unless the app coerces; accept both.
const Limit = Type.Union([Type.Integer({ minimum: 1 }), Type.String({ pattern: '^[1-9][0-9]{0,6}$' })]);
const RunsQuery = Type.Object({
  limit: Type.Optional(Limit),
  since: Type.Optional(Type.String({ maxLength: 64, description: 'ISO 8601 date-time' })),
});
const RunNowQuery = Type.Object({
  wait: Type.Optional(Type.Union([Type.Boolean(), Type.String({ enum: ['true', 'false', '1', '0'] })])),
});

function runs(q: { limit?: number | string; since?: string }): { limit?: number; since?: string } {
  return { limit: q.limit === undefined ? undefined : Number(q.limit), since: q.since };
}

/** The cron namespace (DESIGN.md "Cron"): thin handlers, one CronService call each. */
export const cronRoutes: FastifyPluginAsync<{ cron: CronService }> = async (plain, { cron }) => {
  const app = plain.withTypeProvider<TypeBoxTypeProvider>();

  app.post(
    '/users/:user/entries',
    { bodyLimit: BODY_LIMIT, schema: { tags, params: UserParam, body: NewEntry, response: { 201: Entry } } },
    async (req, reply) => {
      const token = authorizeUser(req, 'cron', req.params.user);
      const entry = cron.add(req.hoody.container.name, effectiveUser(token, req.params.user), req.body, token.id);
      return reply.code(201).send(entry);
    },
  );

  app.get('/users/:user/entries', { schema: { tags, params: UserParam, response: { 200: Type.Array(Entry) } } }, async (req) => {
    const token = authorizeUser(req, 'cron', req.params.user);
    return cron.list(req.hoody.container.name, effectiveUser(token, req.params.user));
  });

  app.get('/users/:user/entries/:id', { schema: { tags, params: EntryParam, response: { 200: Entry } } }, async (req) => {
    const token = authorizeUser(req, 'cron', req.params.user);
    return cron.get(req.hoody.container.name, effectiveUser(token, req.params.user), req.params.id);
  });

  app.patch(
    '/users/:user/entries/:id',
    { bodyLimit: BODY_LIMIT, schema: { tags, params: EntryParam, body: EntryPatch, response: { 200: Entry } } },
    async (req) => {
      const token = authorizeUser(req, 'cron', req.params.user);
      return cron.patch(req.hoody.container.name, effectiveUser(token, req.params.user), req.params.id, req.body);
    },
  );

  app.delete('/users/:user/entries/:id', { schema: { tags, params: EntryParam, response: { 200: Deleted } } }, async (req) => {
    const token = authorizeUser(req, 'cron', req.params.user);
    cron.remove(req.hoody.container.name, effectiveUser(token, req.params.user), req.params.id);
    return { id: req.params.id, deleted: true };
  });

  // 202 with the run as started; `?wait=true` answers 200 once it finished (bounded by the run timeout).
  app.post(
    '/users/:user/entries/:id/run',
    { schema: { tags, params: EntryParam, querystring: RunNowQuery, response: { 200: Run, 202: Run } } },
    async (req, reply) => {
      const token = authorizeUser(req, 'cron', req.params.user);
      const wait = req.query.wait === true || req.query.wait === 'true' || req.query.wait === '1';
      const run = await cron.runNow(req.hoody.container.name, effectiveUser(token, req.params.user), req.params.id, token.id, { wait });
      return reply.code(run.status === 'running' ? 202 : 200).send(run);
    },
  );

  app.get(
    '/users/:user/entries/:id/runs',
    { schema: { tags, params: EntryParam, querystring: RunsQuery, response: { 200: Type.Array(Run) } } },
    async (req) => {
      const token = authorizeUser(req, 'cron', req.params.user);
      return cron.runsOf(req.hoody.container.name, effectiveUser(token, req.params.user), req.params.id, runs(req.query));
    },
  );

  app.get(
    '/users/:user/runs',
    { schema: { tags, params: UserParam, querystring: RunsQuery, response: { 200: Type.Array(Run) } } },
    async (req) => {
      const token = authorizeUser(req, 'cron', req.params.user);
      return cron.runsOfUser(req.hoody.container.name, effectiveUser(token, req.params.user), runs(req.query));
    },
  );
};
