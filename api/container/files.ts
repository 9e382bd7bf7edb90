import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { fail } from '../../containers/errors.js';
import { FileArea } from '../../containers/files.js';
import { rawBody } from '../openapi.js';
import { authorize } from './context.js';

export interface FilesRouteOptions {
  /** Largest PUT body (default 16 MiB). */
  bodyLimit?: number;
}

const TYPES: Record<string, string> = {
  json: 'application/json',
  txt: 'text/plain; charset=utf-8',
  log: 'text/plain; charset=utf-8',
  md: 'text/markdown; charset=utf-8',
  csv: 'text/csv; charset=utf-8',
  html: 'text/html; charset=utf-8',
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  mjs: 'text/javascript; charset=utf-8',
  ts: 'text/plain; charset=utf-8',
  sh: 'text/plain; charset=utf-8',
  xml: 'application/xml',
  svg: 'image/svg+xml',
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  pem: 'application/x-pem-file',
  crt: 'application/x-pem-file',
  key: 'application/x-pem-file',
};

function contentType(path: string): string {
  const ext = /\.([A-Za-z0-9]+)$/.exec(path)?.[1]?.toLowerCase();
  return (ext && TYPES[ext]) ?? 'application/octet-stream';
}

const tags = ['files'];
const FilePath = Type.Object({ '*': Type.String({ description: 'a path in the files area; it may hold / (or %2F)' }) });
const DirEntry = Type.Object({
  name: Type.String(),
  type: Type.Union([Type.Literal('file'), Type.Literal('dir'), Type.Literal('symlink'), Type.Literal('other')]),
  size: Type.Integer(),
  mtime: Type.String(),
});
const Listing = Type.Object({ path: Type.String({ description: "the directory ('' is the area itself)" }), entries: Type.Array(DirEntry) });
// A directory is listed as JSON; a file answers its bytes, typed by its extension (text/plain, image/png…).
const Read = {
  content: {
    'application/json': { schema: Listing },
    'application/octet-stream': { schema: Type.String({ format: 'binary', description: "a file's bytes" }) },
  },
};
const Written = Type.Object({
  path: Type.String(),
  size: Type.Integer(),
  mtime: Type.String(),
  created: Type.Boolean({ description: 'false when an existing file was replaced' }),
});
const Deleted = Type.Object({ path: Type.String(), deleted: Type.Boolean() });
const DeleteQuery = Type.Object({
  recursive: Type.Optional(Type.String({ maxLength: 8, description: 'true, 1, yes or empty: a directory goes with what it holds' })),
});

function wildcard(req: FastifyRequest): string {
  return (req.params as { '*'?: string })['*'] ?? '';
}

function flag(v: unknown): boolean {
  return v === '' || v === 'true' || v === '1' || v === 'yes';
}

/**
 * `GET|PUT|DELETE /api/v1/files/<path>` on the calling container's files area (scope `files`).
 * GET of a directory lists it as JSON; PUT takes the raw body of any content type and writes it atomically.
 */
export const filesRoutes: FastifyPluginAsync<FilesRouteOptions> = async (app, opts) => {
  const bodyLimit = opts.bodyLimit ?? 16 * 1024 * 1024;
  // Every body is raw bytes here, whatever its content type (this plugin's scope only).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));

  const get = async (req: FastifyRequest, reply: import('fastify').FastifyReply) => {
    authorize(req, 'files');
    const area = FileArea.of(req.hoody.container, 'files');
    const path = wildcard(req);
    const st = await area.stat(path);
    if (!st) throw fail('FILE_UNKNOWN', path || '/');
    if (st.isDirectory()) return { path: FileArea.normalize(path), entries: await area.list(path) };
    const { handle, info } = await area.openRead(path);
    return reply
      .type(contentType(info.path))
      .header('content-length', String(info.size))
      .header('last-modified', new Date(info.mtime).toUTCString())
      .send(handle.createReadStream());
  };
  app.get('/api/v1/files', { schema: { tags, description: 'lists the area', response: { 200: Read } } }, get);
  app.get('/api/v1/files/*', { schema: { tags, description: 'a file (its bytes) or a directory (a listing)', params: FilePath, response: { 200: Read } } }, get);

  const putSchema = { tags, description: 'writes a file atomically, making its parents', params: FilePath, response: { 200: Written, 201: Written } };
  app.put('/api/v1/files/*', { bodyLimit, schema: putSchema, config: rawBody(['application/octet-stream'], "the file's bytes, any content type") }, async (req, reply) => {
    authorize(req, 'files');
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const w = await FileArea.of(req.hoody.container, 'files').write(wildcard(req), body);
    return reply.code(w.created ? 201 : 200).send(w);
  });

  app.delete('/api/v1/files/*', { schema: { tags, params: FilePath, querystring: DeleteQuery, response: { 200: Deleted } } }, async (req) => {
    authorize(req, 'files');
    const path = wildcard(req);
    const recursive = flag((req.query as Record<string, unknown>).recursive);
    await FileArea.of(req.hoody.container, 'files').remove(path, { recursive });
    return { path: FileArea.normalize(path), deleted: true };
  });
};
