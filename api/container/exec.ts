import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';
import { fail } from '../../containers/errors.js';
import type { ExecService, PreparedScript } from '../../containers/exec/service.js';
import { rawBody } from '../openapi.js';
import { authorize } from './context.js';

export interface ExecRouteOptions {
  exec: ExecService;
  /** Largest script source accepted by PUT (default 1 MiB). */
  scriptLimit?: number;
  /** Largest request body a script run accepts (default 4 MiB). */
  runBodyLimit?: number;
}

function wildcard(req: FastifyRequest): string {
  return (req.params as { '*'?: string })['*'] ?? '';
}

function flag(v: unknown): boolean {
  const s = Array.isArray(v) ? v[v.length - 1] : v;
  return s === '' || s === 'true' || s === '1' || s === 'yes';
}

const PREFLIGHT_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';
// A script runs for any method; OpenAPI 3.0 can say "a body" only of these, and name no others (QUERY).
const RUN_WITHOUT_BODY: HTTPMethods[] = ['GET', 'HEAD', 'DELETE', 'OPTIONS'];
const RUN_WITH_BODY: HTTPMethods[] = ['POST', 'PUT', 'PATCH'];

const tags = ['exec'];
const ScriptPath = Type.Object({ '*': Type.String({ description: 'a path in the scripts area, e.g. certs/renew.ts; it may hold / (or %2F)' }) });
const RunPath = Type.Object({ '*': Type.String({ description: 'the script without its .ts/.js, e.g. certs/renew; it may hold / (or %2F)' }) });
// Directives may grow: the listing passes every one through.
const Directives = Type.Object(
  {
    runtime: Type.String({ description: 'isolate or bun' }),
    mode: Type.String({ description: 'serverless or persistent' }),
    idleMs: Type.Integer(),
    timeoutMs: Type.Integer(),
    memoryMb: Type.Integer(),
    cors: Type.Union([Type.String(), Type.Null()]),
    auth: Type.String({ description: 'token or none' }),
  },
  { additionalProperties: true },
);
const ScriptInfo = Type.Object({
  path: Type.String(),
  size: Type.Integer(),
  mtime: Type.String(),
  runnable: Type.Boolean({ description: '.ts and .js files run; others (shell scripts for cron) are only stored' }),
  directives: Type.Union([Directives, Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()], { description: "why a runnable file's magic comments do not parse" }),
});
const ScriptWritten = Type.Composite([ScriptInfo, Type.Object({ created: Type.Boolean() })]);
const ScriptDeleted = Type.Object({ path: Type.String(), deleted: Type.Boolean() });
const Source = { content: { 'text/plain': { schema: Type.String({ description: "the script's source" }) } } };
const Answer = {
  description: 'what the script returned: an object as JSON, a Response-like as it is (status, headers, body)',
  content: {
    'application/json': { schema: Type.Unknown({ description: 'an object the script returned' }) },
    '*/*': { schema: Type.String({ format: 'binary' }) },
  },
};
// Unknown, not a string: the query is the script's, passed as sent (a repeated dry_run stays an array, last one wins).
const DryRun = Type.Object({
  dry_run: Type.Optional(Type.Unknown({ description: 'true, 1, yes or empty: request.dry_run is set and acme uses the staging directory' })),
});

/**
 * Exec routes (scope `exec`): the scripts write API `GET /api/v1/scripts`, `PUT|GET|DELETE /api/v1/scripts/<path>`
 * and the runner `ANY /scripts/<path>`, which runs `<path>.ts` (or `.js`) and answers with what it returns.
 * A script saying `// @auth none` runs without a token; `// @cors <origin>` answers preflights without running.
 */
export const execRoutes: FastifyPluginAsync<ExecRouteOptions> = async (app, opts) => {
  const { exec } = opts;
  const scriptLimit = opts.scriptLimit ?? 1024 * 1024;
  const runBodyLimit = opts.runBodyLimit ?? 4 * 1024 * 1024;
  // Raw bytes for every content type: script sources as they are; run bodies are parsed by the exec service.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: Math.max(scriptLimit, runBodyLimit) }, (_req, body, done) =>
    done(null, body),
  );

  const list = async (req: FastifyRequest) => {
    authorize(req, 'exec');
    return exec.listScripts(req.hoody.container);
  };
  app.get('/api/v1/scripts', { schema: { tags, response: { 200: Type.Array(ScriptInfo) } } }, list);

  app.get('/api/v1/scripts/*', { schema: { tags, params: ScriptPath, response: { 200: Source } } }, async (req, reply) => {
    const path = wildcard(req);
    if (path === '') return list(req);
    authorize(req, 'exec');
    const source = await exec.readScript(req.hoody.container, path);
    return reply.type('text/plain; charset=utf-8').send(source);
  });

  const source = rawBody(['text/plain', 'application/octet-stream'], 'the source (UTF-8 for .ts and .js: checked and compiled before it is kept)');
  const putSchema = { tags, params: ScriptPath, response: { 200: ScriptWritten, 201: ScriptWritten } };
  app.put('/api/v1/scripts/*', { bodyLimit: scriptLimit, schema: putSchema, config: source }, async (req, reply) => {
    authorize(req, 'exec');
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const info = await exec.writeScript(req.hoody.container, wildcard(req), body);
    return reply.code(info.created ? 201 : 200).send(info);
  });

  app.delete('/api/v1/scripts/*', { schema: { tags, params: ScriptPath, response: { 200: ScriptDeleted } } }, async (req) => {
    authorize(req, 'exec');
    const path = wildcard(req);
    await exec.deleteScript(req.hoody.container, path);
    return { path, deleted: true };
  });

  const run = async (req: FastifyRequest, reply: FastifyReply) => {
    const row = req.hoody.container;
    const path = wildcard(req);
    // The script's magic comments decide auth and CORS, so it is read first; until the caller is known to
    // be allowed, a missing or broken script answers like any unauthorized request (no existence leak).
    let prepared: PreparedScript | null = null;
    let broken: unknown = null;
    try {
      prepared = await exec.prepare(row, path);
    } catch (err) {
      broken = err;
    }
    const cors = prepared?.directives.cors ?? null;
    if (cors) {
      reply.header('access-control-allow-origin', cors);
      if (cors !== '*') reply.header('vary', 'Origin');
      if (req.method === 'OPTIONS')
        return reply
          .code(204)
          .header('access-control-allow-methods', PREFLIGHT_METHODS)
          .header('access-control-allow-headers', req.headers['access-control-request-headers'] ?? 'authorization, content-type')
          .header('access-control-max-age', '600')
          .send();
    }
    const token = prepared?.directives.auth === 'none' ? req.hoody.token : authorize(req, 'exec');
    if (broken) throw broken;
    if (!prepared) throw fail('SCRIPT_UNKNOWN', path);
    const query = req.query as Record<string, string | string[] | undefined>;
    const result = await exec.run(row, prepared, {
      method: req.method,
      path: req.url.split('?')[0]!,
      query,
      headers: req.headers,
      body: Buffer.isBuffer(req.body) ? req.body : null,
      dryRun: flag(query.dry_run),
      caller: token ? { id: token.id, user: token.user, scopes: token.scopes } : null,
      depth: req.hoody.depth,
    });
    return reply.code(result.status).headers(result.headers).send(result.body);
  };
  // `ANY /scripts/<path>`, in three registrations only so the document can tell body methods from the others.
  const runSchema = {
    tags,
    description: 'runs <path>.ts (or .js); a script saying // @auth none needs no token',
    params: RunPath,
    querystring: DryRun,
    // No token at all is valid for a `@auth none` script (the empty requirement).
    security: [{ urlToken: [] }, { bearer: [] }, {}] as Record<string, string[]>[],
    response: { 200: Answer },
  };
  const url = '/scripts/*';
  app.route({ method: RUN_WITHOUT_BODY, url, bodyLimit: runBodyLimit, schema: runSchema, handler: run });
  app.route({ method: RUN_WITH_BODY, url, bodyLimit: runBodyLimit, schema: runSchema, config: rawBody(['*/*'], 'handed to the script as request.body', true), handler: run });
  const rest = app.supportedMethods.filter((m) => !RUN_WITHOUT_BODY.includes(m as HTTPMethods) && !RUN_WITH_BODY.includes(m as HTTPMethods));
  app.route({ method: rest as HTTPMethods[], url, bodyLimit: runBodyLimit, schema: { hide: true }, handler: run });
};
