import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { fail } from '../../containers/errors.js';
import { type LogSource, logQuery, pickSource } from '../../containers/logs.js';
import type { ContainerStore } from '../../containers/store.js';
import { NameParam } from './schemas.js';

/** `GET /v1/containers/:name/logs?source=cron|exec&since=…`: what `hoody logs` reads (and polls with --follow). */
export const adminLogRoutes: FastifyPluginAsync<{ sources: LogSource[]; store: ContainerStore }> = async (plain, { sources, store }) => {
  const app = plain.withTypeProvider<TypeBoxTypeProvider>();
  const Query = Type.Object({ source: Type.String({ maxLength: 16 }), since: Type.Optional(Type.String({ maxLength: 64 })), limit: Type.Optional(Type.Integer()) });
  // Rows of the cron log and of the exec log differ beyond their time: each passes through whole.
  const Rows = Type.Array(Type.Object({ time: Type.String() }, { additionalProperties: true }));
  app.get('/v1/containers/:name/logs', { schema: { tags: ['containers'], params: NameParam, querystring: Query, response: { 200: Rows } } }, async (req) => {
    if (!store.get(req.params.name)) throw fail('CONTAINER_UNKNOWN', req.params.name);
    return pickSource(sources, req.query.source).read(req.params.name, logQuery(req.query.since, req.query.limit));
  });
};
