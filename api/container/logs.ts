import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { type LogSource, logQuery, pickSource } from '../../containers/logs.js';
import { authorize } from './context.js';

export const LogsQuery = Type.Object({
  source: Type.String({ maxLength: 16 }),
  since: Type.Optional(Type.String({ maxLength: 64 })),
  limit: Type.Optional(Type.Integer()),
  format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('ndjson')])),
  token: Type.Optional(Type.String()),
});
// Cron and exec rows differ beyond their time: each passes through whole.
const Rows = {
  content: {
    'application/json': { schema: Type.Array(Type.Object({ time: Type.String() }, { additionalProperties: true })) },
    'application/x-ndjson': { schema: Type.String({ description: 'format=ndjson: one JSON row a line' }) },
  },
};

/**
 * `GET /api/v1/logs?source=cron|exec&since=…&format=ndjson`: the container's cron log (scope cron; the caller's
 * own user's runs, every user's with admin) or exec log (scope exec; the whole container's, as its scripts are).
 */
export const logRoutes: FastifyPluginAsync<{ sources: LogSource[] }> = async (plain, { sources }) => {
  const app = plain.withTypeProvider<TypeBoxTypeProvider>();
  app.get('/api/v1/logs', { schema: { tags: ['logs'], querystring: LogsQuery, response: { 200: Rows } } }, async (req, reply) => {
    const source = pickSource(sources, req.query.source);
    const token = authorize(req, source.name);
    // As on the cron routes: a token sees its own user's runs; another user's need an admin-scoped token.
    const user = token.scopes.includes('admin') ? undefined : token.user;
    const rows = source.read(req.hoody.container.name, logQuery(req.query.since, req.query.limit), user);
    if (req.query.format === 'ndjson') return reply.type('application/x-ndjson').send(rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
    return rows;
  });
};
