import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { fail } from '../../containers/errors.js';
import type { ExecService, PreparedScript } from '../../containers/exec/service.js';
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
  app.get('/api/v1/scripts', list);

  app.get('/api/v1/scripts/*', async (req, reply) => {
    const path = wildcard(req);
    if (path === '') return list(req);
    authorize(req, 'exec');
    const source = await exec.readScript(req.hoody.container, path);
    return reply.type('text/plain; charset=utf-8').send(source);
  });

  app.put('/api/v1/scripts/*', { bodyLimit: scriptLimit }, async (req, reply) => {
    authorize(req, 'exec');
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const info = await exec.writeScript(req.hoody.container, wildcard(req), body);
    return reply.code(info.created ? 201 : 200).send(info);
  });

  app.delete('/api/v1/scripts/*', async (req) => {
    authorize(req, 'exec');
    const path = wildcard(req);
    await exec.deleteScript(req.hoody.container, path);
    return { path, deleted: true };
  });

  app.all('/scripts/*', { bodyLimit: runBodyLimit }, async (req: FastifyRequest, reply: FastifyReply) => {
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
  });
};
