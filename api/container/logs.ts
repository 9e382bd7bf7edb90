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

/** `GET /api/v1/logs?source=cron|exec&since=…&format=ndjson`: the container's cron or exec log. */
export const logRoutes: FastifyPluginAsync<{ sources: LogSource[] }> = async (plain, { sources }) => {
  const app = plain.withTypeProvider<TypeBoxTypeProvider>();
  app.get('/api/v1/logs', { schema: { querystring: LogsQuery } }, async (req, reply) => {
    const source = pickSource(sources, req.query.source);
    authorize(req, source.name);
    const rows = source.read(req.hoody.container.name, logQuery(req.query.since, req.query.limit));
    if (req.query.format === 'ndjson') return reply.type('application/x-ndjson').send(rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
    return rows;
  });
};
