import assert from 'node:assert/strict';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { execa } from 'execa';
import { ROOT, startTestDaemon, type TestDaemon } from './support/host.js';
import { call } from './support/http.js';
import { ADMIN_PROGRAM, CONTAINER_PROGRAM, TRANSPORT } from './support/openapi-programs.js';

type Doc = { openapi: string; paths: Record<string, Record<string, unknown>>; components: { schemas: Record<string, unknown>; securitySchemes?: Record<string, unknown> } };

const bin = (name: string) => join(ROOT, 'node_modules', '.bin', name);

/** The strict OpenAPI 3.0.3 check: the specification's own JSON schema, by a real validator. */
async function assertValid(doc: Doc, what: string): Promise<void> {
  const validator = new Validator();
  const verdict = await validator.validate(doc as unknown as Parameters<Validator['validate']>[0]);
  assert.equal(verdict.valid, true, `${what}: ${JSON.stringify(verdict.errors, null, 1)?.slice(0, 3000)}`);
  assert.equal(validator.version, '3.0');
  assert.equal(doc.openapi, '3.0.3');
}

describe('OpenAPI documents of both APIs, and clients generated from them', () => {
  let d: TestDaemon;
  let http = 0;
  let dir = '';
  let admin: Doc;
  let container: Doc;
  let containerText = '';
  let tscErrors: string[] = [];
  const name = 'oaclient';

  before(async () => {
    d = await startTestDaemon();
    http = (await d.client.call<{ listeners: { http: number } }>('GET', '/v1/host')).listeners.http;
    dir = await mkdtemp(join(tmpdir(), 'hoody-openapi-'));
    // The programs import openapi-fetch and @types/node from the project's own node_modules.
    await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    await writeFile(join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
  });
  after(async () => {
    await d?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the admin document (/v1/openapi.json) is valid OpenAPI 3.0.3 with the error shape as a component', async () => {
    admin = await d.client.call<Doc>('GET', '/v1/openapi.json');
    await assertValid(admin, 'admin');
    assert.ok(admin.components.schemas.Error, 'Error component');
    const create = admin.paths['/v1/containers']?.post as { responses: Record<string, { content: Record<string, { schema: { $ref?: string } }> }> };
    assert.equal(create.responses['4XX']?.content['application/json']?.schema.$ref, '#/components/schemas/Error');
  });

  test('every container API host serves one document, with no token, the same for any container', async () => {
    const host = `api.${name}.hoody.localhost`;
    const served = await call({ port: http, host, path: '/api/v1/openapi.json' });
    assert.equal(served.status, 200, served.text);
    assert.match(String(served.headers['content-type']), /^application\/json/);
    containerText = served.text;
    container = served.json<Doc>();
    // Not one byte of it depends on the container, the host or the way in: it can tell nothing to a stranger.
    for (const other of [
      { host: 'api.no-such-container.hoody.localhost', path: '/api/v1/openapi.json' },
      { host: 'api.hoody.localhost', path: '/api/v1/openapi.json' },
      { host: `exec.${name}.hoody.localhost`, path: '/api/v1/openapi.json' },
      { host: 'example.org', path: `/c/${name}/api/v1/openapi.json` },
    ]) {
      const again = await call({ port: http, ...other });
      assert.equal(again.status, 200, `${other.host}${other.path}: ${again.text}`);
      assert.equal(again.text, containerText, `${other.host}${other.path} serves the same document`);
    }
    assert.equal((await call({ port: http, host: '127.0.0.1', path: '/api/v1/openapi.json' })).status, 404, 'not on hosts outside hoody');
    assert.doesNotMatch(containerText, new RegExp(`${name}|hoody\\.localhost`), 'no container name or domain in it');
  });

  test('the per-container document is valid OpenAPI 3.0.3 and describes every namespace, its auth and its errors', async () => {
    await assertValid(container, 'per-container');
    for (const p of [
      '/users/{user}/entries',
      '/users/{user}/entries/{id}/run',
      '/api/v1/files/{path}',
      '/api/v1/scripts/{path}',
      '/scripts/{path}',
      '/api/v1/proxy/routes/{hostname}',
      '/api/v1/proxy/cert/bundle',
      '/api/v1/tokens/rotate',
      '/api/v1/logs',
    ])
      assert.ok(p in container.paths, `${p} documented`);
    assert.deepEqual(Object.keys(container.components.securitySchemes ?? {}).sort(), ['bearer', 'urlToken']);
    const put = container.paths['/api/v1/files/{path}']?.put as { requestBody: { content: Record<string, unknown> }; responses: Record<string, unknown> };
    assert.deepEqual(Object.keys(put.requestBody.content), ['application/octet-stream']);
    assert.deepEqual(Object.keys(put.responses).sort(), ['200', '201', '4XX', '5XX']);
    // The validator is strict: the same document with a 3.1-only `type: null` fails it.
    const bad = structuredClone(container);
    bad.components.schemas.Error = { type: 'null' };
    assert.equal((await new Validator().validate(bad as unknown as Parameters<Validator['validate']>[0])).valid, false);
  });

  test('clients generated by openapi-typescript compile strictly against openapi-fetch and make real calls', async () => {
    // A third program is the first one against a document without the files routes: tsc must refuse that one only.
    const broken = structuredClone(container);
    delete broken.paths['/api/v1/files/{path}'];
    const docs = { admin: JSON.stringify(admin), container: containerText, 'container-broken': JSON.stringify(broken) };
    for (const [api, text] of Object.entries(docs)) {
      await writeFile(join(dir, `${api}.json`), text);
      await execa(bin('openapi-typescript'), [join(dir, `${api}.json`), '-o', join(dir, `${api}.d.ts`)]);
    }
    await writeFile(join(dir, 'transport.ts'), TRANSPORT);
    await writeFile(join(dir, 'admin-client.ts'), ADMIN_PROGRAM);
    await writeFile(join(dir, 'container-client.ts'), CONTAINER_PROGRAM);
    await writeFile(join(dir, 'broken-client.ts'), CONTAINER_PROGRAM.replace("from './container.js'", "from './container-broken.js'"));
    const options = { strict: true, target: 'ES2022', lib: ['ES2023'], module: 'NodeNext', moduleResolution: 'NodeNext', types: ['node'], noEmit: false, outDir: 'out', rootDir: '.', skipLibCheck: true, noUnusedLocals: true };
    const files = ['admin-client.ts', 'container-client.ts', 'broken-client.ts'];
    await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: options, files }));
    // One compile for the three (tsc costs seconds): it still emits the good programs when the broken one fails.
    const tsc = await execa(bin('tsc'), ['-p', join(dir, 'tsconfig.json')], { reject: false, all: true });
    const errors = String(tsc.all).split('\n').filter((l) => /error TS\d+/.test(l));
    tscErrors = errors.filter((l) => l.includes('broken-client.ts'));
    assert.deepEqual(errors.filter((l) => !l.includes('broken-client.ts')), [], String(tsc.all));

    const a = await execa(process.execPath, [join(dir, 'out', 'admin-client.js'), d.socket, name], { reject: false, all: true });
    assert.equal(a.exitCode, 0, String(a.all));
    const adminOut = JSON.parse(String(a.stdout)) as { http: number; token: string; listed: boolean; memoryBytes: number; missingStatus: number; missingCode: string };
    assert.equal(adminOut.http, http);
    assert.match(adminOut.token, /.{20,}/);
    assert.equal(adminOut.listed, true);
    assert.equal(adminOut.memoryBytes, 128 * 1024 * 1024);
    assert.deepEqual([adminOut.missingStatus, adminOut.missingCode], [404, 'HOODY_CONTAINER_UNKNOWN']);

    const c = await execa(process.execPath, [join(dir, 'out', 'container-client.js'), String(http), name, adminOut.token], { reject: false, all: true });
    assert.equal(c.exitCode, 0, String(c.all));
    const out = JSON.parse(String(c.stdout)) as Record<string, unknown>;
    assert.equal(out.created, true);
    assert.equal(out.read, 'hello from a generated client');
    assert.deepEqual([out.missingStatus, out.missingCode], [404, 'HOODY_FILE_UNKNOWN']);
    assert.deepEqual(out.listing, ['notes:dir']);
    assert.equal(typeof out.nextRun, 'string');
    assert.equal(out.listed, true);
    assert.equal(out.runnable, true);
    assert.deepEqual(out.run, { sum: 3, method: 'GET' });
    assert.equal(out.rotated, true);
    assert.deepEqual([out.staleStatus, out.staleCode], [401, 'HOODY_UNAUTHORIZED']);
  });

  test('a client of a wrong document does not compile: the types are the check', () => {
    assert.ok(tscErrors.length > 0, 'compiled against a document without the files routes');
    assert.ok(
      tscErrors.some((l) => l.includes('"/api/v1/files/{path}"')),
      tscErrors.join('\n'),
    );
  });
});
