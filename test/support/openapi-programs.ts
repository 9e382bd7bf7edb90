/**
 * Client programs compiled by test/openapi-clients.test.ts against types that openapi-typescript generated from the
 * live documents (`./admin.js`, `./container.js` in the same temp dir). Each prints one JSON line. Every
 * `@ts-expect-error` makes the compile fail if the document were loose (an untyped path, body or field).
 */

/** A fetch over node:http: to a unix socket (the admin API), or to 127.0.0.1 keeping the URL's Host (service hosts). */
export const TRANSPORT = `import { request } from 'node:http';

export function httpFetch(dial: { socketPath: string } | { loopback: true }): (req: Request) => Promise<Response> {
  return async (req) => {
    const url = new URL(req.url);
    const body = req.body ? Buffer.from(await req.arrayBuffer()) : undefined;
    const headers: Record<string, string> = { host: url.host };
    req.headers.forEach((value, key) => {
      headers[key] = value;
    });
    if (body) headers['content-length'] = String(body.length);
    const where = 'socketPath' in dial ? { socketPath: dial.socketPath } : { host: '127.0.0.1', port: Number(url.port || 80) };
    return new Promise<Response>((resolve, reject) => {
      const r = request({ ...where, method: req.method, path: url.pathname + url.search, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const out = new Headers();
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') out.set(k, v);
          const status = res.statusCode ?? 0;
          resolve(new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), { status, headers: out }));
        });
      });
      r.on('error', reject);
      r.end(body);
    });
  };
}
`;

/** Admin API: `node admin.js <socket> <container>` creates the container, lists it, reads it, and one 404. */
export const ADMIN_PROGRAM = `import createClient from 'openapi-fetch';
import type { paths } from './admin.js';
import { httpFetch } from './transport.js';

const [socketPath, name] = process.argv.slice(2) as [string, string];
const client = createClient<paths>({ baseUrl: 'http://hoody', fetch: httpFetch({ socketPath }) });

const host = await client.GET('/v1/host');
if (!host.data) throw new Error('GET /v1/host: ' + JSON.stringify(host.error));
const http: number | null = host.data.listeners.http;
// @ts-expect-error the document types a listener's port as number | null, never a string
const wrong: string = host.data.listeners.https;

const created = await client.POST('/v1/containers', { body: { name, memory: '128m' } });
if (!created.data) throw new Error('POST /v1/containers: ' + JSON.stringify(created.error));
const token: string = created.data.token;
// @ts-expect-error the document requires a container's name
await client.POST('/v1/containers', { body: { image: 'x' } }).catch(() => undefined);

const list = await client.GET('/v1/containers');
const listed = (list.data ?? []).some((c) => c.name === name && c.state === 'running');
const one = await client.GET('/v1/containers/{name}', { params: { path: { name } } });
const memoryBytes: number | undefined = one.data?.memoryBytes;
const missing = await client.GET('/v1/containers/{name}', { params: { path: { name: 'no-such-' + name } } });
const missingCode: string | undefined = missing.error?.error.code;
// @ts-expect-error no such path in the admin document
await client.GET('/v1/no-such-path').catch(() => undefined);

void wrong;
console.log(JSON.stringify({ http, token, listed, memoryBytes, missingStatus: missing.response.status, missingCode }));
`;

/**
 * Per-container API: \`node container.js <http port> <container> <token>\`: a file, a cron entry, a script and its
 * run, a 404, and a rotation, through the service host api.<container>.hoody.localhost and the /c/<container> prefix.
 */
export const CONTAINER_PROGRAM = `import createClient from 'openapi-fetch';
import type { paths } from './container.js';
import { httpFetch } from './transport.js';

const [port, name, token] = process.argv.slice(2) as [string, string, string];
const auth = { Authorization: 'Bearer ' + token };
const api = createClient<paths>({ baseUrl: 'http://api.' + name + '.hoody.localhost:' + port, fetch: httpFetch({ loopback: true }), headers: auth });
const raw = { bodySerializer: (b: string) => b };

const put = await api.PUT('/api/v1/files/{path}', {
  params: { path: { path: 'notes/hello.txt' } },
  body: 'hello from a generated client',
  headers: { 'content-type': 'application/octet-stream' },
  ...raw,
});
if (!put.data) throw new Error('PUT file: ' + JSON.stringify(put.error));
const created: boolean = put.data.created;
const read = await api.GET('/api/v1/files/{path}', { params: { path: { path: 'notes/hello.txt' } }, parseAs: 'text' });
const missing = await api.GET('/api/v1/files/{path}', { params: { path: { path: 'nothing/here.txt' } } });
const missingCode: string | undefined = missing.error?.error.code;

// The other server of the document: any host, /c/<container>/ (here with Node's own fetch, to 127.0.0.1).
const byPrefix = createClient<paths>({ baseUrl: 'http://127.0.0.1:' + port + '/c/' + name, headers: auth });
const root = await byPrefix.GET('/api/v1/files');
const listing = root.data && typeof root.data === 'object' ? root.data.entries.map((e) => e.name + ':' + e.type) : [];

const entry = await api.POST('/users/{user}/entries', {
  params: { path: { user: 'me' } },
  body: { schedule: '@daily', command: 'true', comment: 'made by a generated client' },
});
if (!entry.data) throw new Error('POST entry: ' + JSON.stringify(entry.error));
const nextRun: string | null = entry.data.next_run;
// @ts-expect-error next_run is a string or null in the document, not a number
const wrongRun: number = entry.data.next_run;
// @ts-expect-error a schedule is a string
await api.POST('/users/{user}/entries', { params: { path: { user: 'me' } }, body: { schedule: 5, command: 'true' } }).catch(() => undefined);
const entries = await api.GET('/users/{user}/entries', { params: { path: { user: 'me' } } });
const listed = (entries.data ?? []).map((e) => e.id).includes(entry.data.id);

const script = await api.PUT('/api/v1/scripts/{path}', {
  params: { path: { path: 'tools/sum.ts' } },
  body: 'return { sum: 1 + 2, method: request.method };',
  headers: { 'content-type': 'text/plain' },
  ...raw,
});
const runnable: boolean | undefined = script.data?.runnable;
const run = await api.GET('/scripts/{path}', { params: { path: { path: 'tools/sum' } } });

const rotated = await api.POST('/api/v1/tokens/rotate');
const fresh: string | undefined = rotated.data?.token;
const stale = await api.GET('/users/{user}/entries', { params: { path: { user: 'me' } } });

void wrongRun;
console.log(JSON.stringify({
  created, read: read.data, missingStatus: missing.response.status, missingCode, listing,
  nextRun, listed, runnable, run: run.data, rotated: typeof fresh === 'string' && fresh !== token,
  staleStatus: stale.response.status, staleCode: stale.error?.error.code,
}));
`;
