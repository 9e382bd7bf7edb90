import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createServer as createTlsServer } from 'node:tls';
import { execa } from 'execa';
import Fastify from 'fastify';
import { installErrorHandling } from '../api/errors.js';
import { errors, isHoodyError } from '../containers/errors.js';
import { ProxyNamespace } from '../containers/proxy/namespace.js';
import { proxyMigrations } from '../containers/proxy/schema.js';
import { HostCa } from '../containers/tls/ca.js';
import { startPrivateEngine } from './support/engine.js';
import { ROOT, startTestDaemon, type TestDaemon, testContext } from './support/host.js';
import { consistencyProblems, errorShape, type Reply, send } from './support/reliability.js';

interface Ports {
  http: number;
  https: number;
}

/** Asserts a catalogued error: its status, its code and the JSON shape. */
function expectError(r: Reply, status: number, code: string, what: string): void {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.text().slice(0, 200)}`);
  assert.equal(errorShape(r)?.code, code, `${what}: ${r.text().slice(0, 200)}`);
}

describe('the error catalogue', () => {
  test('every code in the catalogue is asserted by at least one test', async () => {
    const dir = join(ROOT, 'test');
    const files = [...(await readdir(dir)).filter((f) => f.endsWith('.ts')).map((f) => join(dir, f))];
    const sources = (await Promise.all(files.map((f) => readFile(f, 'utf8')))).join('\n');
    // This file's own list of names does not count: only a code written out as HOODY_X in some test does.
    const missing = Object.keys(errors).filter((name) => !new RegExp(`HOODY_${name}\\b`).test(sources));
    assert.deepEqual(missing, [], `codes no test asserts: ${missing.join(', ')}`);
  });

  test('an unexpected error is a logged 500 HOODY_INTERNAL with no internals in the body (real fastify, real HTTP)', async () => {
    const app = Fastify({ logger: false });
    installErrorHandling(app);
    app.get('/boom', async () => {
      throw new TypeError('secret internal detail /var/lib/hoody');
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const port = (app.server.address() as { port: number }).port;
      const r = await send({ port, path: '/boom' });
      expectError(r, 500, 'HOODY_INTERNAL', 'a thrown TypeError');
      assert.doesNotMatch(r.text(), /secret|TypeError|\/var\/lib/);
    } finally {
      await app.close();
    }
  });

  test('a bundle the listener does not serve after the swap is a 500 HOODY_CERT_NOT_SERVED (a real handshake with another server)', async () => {
    // The proxy confirms a swap with a fresh handshake on its HTTPS port; here that port belongs to another TLS
    // server (what an operator would see if something else held the port), so the handshake never returns it.
    const t = await testContext({}, [proxyMigrations]);
    const ca = await HostCa.loadOrCreate(join(t.config.stateDir, 'cat-ca'));
    const other = await ca.issue(['elsewhere.example']);
    const server = createTlsServer({ cert: other.cert, key: other.key });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as { port: number }).port;
      // The certificate's owner must be a container row (no engine container is needed for this path).
      t.ctx.store.insert({ name: 'k', id: 'cat-k', engineId: null, layerDir: null, shimGroup: null, image: 'hoody/busybox', memoryBytes: 64 * 1024 * 1024, nanoCpus: 1e9, diskBytes: null, pidsLimit: 64, volume: join(t.config.stateDir, 'none'), phase: 'ready', desired: 'running', clonedFrom: null, createdAt: new Date().toISOString() });
      const proxy = new ProxyNamespace(t.db, t.ctx, 'hoody.localhost', () => port, { hostNames: () => new Set() });
      const mine = await ca.issue(['served.example']);
      const err = await proxy.service.putCert('k', { domain: 'served.example', cert: mine.cert, key: mine.key }).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(isHoodyError(err), `putCert must fail: ${String(err)}`);
      assert.equal(err.code, 'HOODY_CERT_NOT_SERVED');
      assert.equal(err.status, 500);
    } finally {
      server.close();
      await t.cleanup();
    }
  });
});

describe('an engine whose storage driver cannot bound a root filesystem', () => {
  test('a create with a disk limit is a 500 HOODY_ROOT_QUOTA_UNSUPPORTED and is undone (a private dockerd on vfs)', async () => {
    const engine = await startPrivateEngine('vfs');
    let d: TestDaemon | undefined;
    try {
      d = await startTestDaemon({ HOODY_DOCKER_SOCKET: engine.socket });
      const r = await send({ socketPath: d.socket, path: '/v1/containers', method: 'POST', body: { name: 'v', disk: '64m' }, timeoutMs: 120_000 });
      expectError(r, 500, 'HOODY_ROOT_QUOTA_UNSUPPORTED', 'a disk limit on vfs');
      assert.equal((await d.client.call<unknown[]>('GET', '/v1/containers')).length, 0, 'nothing half created');
      assert.deepEqual(await consistencyProblems(d), []);
    } finally {
      await d?.destroy();
      await engine.destroy();
    }
  });
});

describe('exec: runs cut short by the host', () => {
  test('a run in flight when its container is deleted is a 503 HOODY_SCRIPT_ABORTED; a nested run with no isolate left is a 503 HOODY_EXEC_OVERLOADED', async () => {
    // One live isolate for the whole host: a script that calls another script leaves none for the inner run.
    const d = await startTestDaemon({ HOODY_EXEC_MAX_ISOLATES: '1' });
    try {
      const { listeners } = await d.client.call<{ listeners: Ports }>('GET', '/v1/host');
      const token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'x' })).token;
      const api = (method: string, path: string, body?: string, host = 'api.x.hoody.localhost') =>
        send({ port: listeners.http, host, path, method, body, headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, timeoutMs: 60_000 });
      assert.equal((await api('PUT', '/api/v1/scripts/inner.ts', 'return 1;')).status, 201);
      assert.equal((await api('PUT', '/api/v1/scripts/outer.ts', "const r = await fetch('/scripts/inner');\nreturn { status: r.status, body: await r.text() };")).status, 201);
      const outer = await api('GET', '/scripts/outer', undefined, 'exec.x.hoody.localhost');
      // The refusal reaches the client either as the outer run's own answer or as what its fetch got.
      const refused = outer.status === 200 ? outer.json<{ status: number; body: string }>() : { status: outer.status, body: outer.text() };
      assert.equal(refused.status, 503, refused.body);
      assert.equal(JSON.parse(refused.body).error.code, 'HOODY_EXEC_OVERLOADED');

      // A run that says when it is running, then waits; the container is deleted under it.
      assert.equal((await api('PUT', '/api/v1/scripts/slow.ts', "// @timeout 60000\nawait files.write('running', 'yes');\nawait new Promise((r) => setTimeout(r, 30000));\nreturn 'late';")).status, 201);
      const slow = api('GET', '/scripts/slow', undefined, 'exec.x.hoody.localhost');
      const deadline = Date.now() + 30_000;
      while ((await api('GET', '/api/v1/files/running')).status !== 200) {
        assert.ok(Date.now() < deadline, 'the slow run never started');
        await new Promise((r) => setTimeout(r, 100));
      }
      const deleting = d.client.call('DELETE', '/v1/containers/x');
      const r = await slow;
      await deleting;
      expectError(r, 503, 'HOODY_SCRIPT_ABORTED', 'a run whose container was deleted');
    } finally {
      await d.destroy();
    }
  });
});

describe('errors an operator or a tenant can provoke, each with its code', () => {
  let d: TestDaemon;
  let ports: Ports;
  let token = '';
  const admin = (method: string, path: string, body?: object | string) =>
    send({ socketPath: d.socket, path, method, body, ...(typeof body === 'string' ? { headers: { 'content-type': 'application/json' } } : {}), timeoutMs: 60_000 });
  const api = (method: string, path: string, body?: object | string, host = 'api.k.hoody.localhost') =>
    send({ port: ports.http, host, path, method, body, headers: { authorization: `Bearer ${token}` }, timeoutMs: 30_000 });

  before(async () => {
    d = await startTestDaemon();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'k' })).token;
  });
  after(() => d?.destroy());

  test('admin: limits, snapshot names, users and image references each have their own 400', async () => {
    expectError(await admin('POST', '/v1/containers', { name: 'l1', memory: '1m' }), 400, 'HOODY_LIMIT_INVALID', 'memory 1m');
    expectError(await admin('POST', '/v1/containers', { name: 'l2', cpus: 0 }), 400, 'HOODY_LIMIT_INVALID', 'cpus 0');
    expectError(await admin('POST', '/v1/containers/k/snapshots', { name: '../up' }), 400, 'HOODY_SNAPSHOT_NAME_INVALID', 'snapshot ../up');
    expectError(await admin('POST', '/v1/containers/k/tokens', { user: 'no such user!' }), 400, 'HOODY_USER_INVALID', 'user with spaces');
    expectError(await admin('POST', '/v1/containers', { name: 'l3', image: 'UPPER/Case:!!' }), 400, 'HOODY_IMAGE_INVALID', 'image UPPER/Case:!!');
    assert.deepEqual(await consistencyProblems(d), [], 'no refused create left anything');
  });

  test('admin: the engine refusing a spec is a 502 HOODY_ENGINE_FAILED and nothing is left behind', async () => {
    // The engine name hoody will ask for is already taken (by a container hoody does not own): the engine refuses.
    // (More CPUs than the host has used to be this case; hoody refuses those itself now, a 400.)
    const instance = createHash('sha256').update(resolve(d.stateDir)).digest('hex').slice(0, 6);
    const squatter = `hoody-${instance}-e1`;
    await execa('docker', ['create', '--name', squatter, 'hoody/busybox', 'true']);
    try {
      const r = await admin('POST', '/v1/containers', { name: 'e1' });
      expectError(r, 502, 'HOODY_ENGINE_FAILED', 'an engine name already in use');
      assert.match(errorShape(r)!.message, /already in use/);
      assert.equal((await admin('GET', '/v1/containers/e1')).status, 404);
      assert.deepEqual(await consistencyProblems(d), []);
    } finally {
      await execa('docker', ['rm', '-f', squatter]);
    }
  });

  test('admin: a storage step that fails is a 500 HOODY_STORAGE_FAILED, undone, and the next create works', async () => {
    const parent = join(d.stateDir, 'pool', 'containers');
    await execa('chattr', ['+i', parent]);
    try {
      const r = await admin('POST', '/v1/containers', { name: 's1' });
      expectError(r, 500, 'HOODY_STORAGE_FAILED', 'create into an immutable containers dir');
      assert.match(errorShape(r)!.message, /btrfs/, 'the message names the command');
    } finally {
      await execa('chattr', ['-i', parent]);
    }
    assert.equal((await admin('GET', '/v1/containers/s1')).status, 404);
    assert.deepEqual(await consistencyProblems(d), []);
    assert.equal((await admin('POST', '/v1/containers', { name: 's1' })).status, 201);
  });

  test('admin: an action on a container that is still being created is a 409 HOODY_CONTAINER_BUSY', async () => {
    const creating = admin('POST', '/v1/containers', { name: 'b1' });
    let busy: Reply | undefined;
    let done = false;
    void creating.finally(() => {
      done = true;
    });
    while (!done && !busy) {
      const r = await admin('POST', '/v1/containers/b1/start');
      if (r.status === 409) busy = r;
    }
    assert.equal((await creating).status, 201);
    assert.ok(busy, 'a start during the create was refused');
    expectError(busy, 409, 'HOODY_CONTAINER_BUSY', 'start during create');
  });

  test('per-container: unknown routes, ports, certificates and scripts have their own codes', async () => {
    expectError(await api('DELETE', '/api/v1/proxy/routes/never.example'), 404, 'HOODY_PROXY_ROUTE_UNKNOWN', 'delete a route never made');
    expectError(await api('PUT', '/api/v1/proxy/routes/port.example', { port: 70000 }), 400, 'HOODY_PROXY_PORT_INVALID', 'port 70000');
    expectError(await api('PUT', '/api/v1/proxy/routes/not_a_host!', { port: 80 }), 400, 'HOODY_PROXY_HOSTNAME_INVALID', 'hostname not_a_host!');
    expectError(await api('PATCH', '/api/v1/proxy/cert/bundle', { domain: 'not a domain', cert: 'x', key: 'y' }), 400, 'HOODY_CERT_DOMAIN_INVALID', 'domain with spaces');
    expectError(await api('GET', '/scripts/never', undefined, 'exec.k.hoody.localhost'), 404, 'HOODY_SCRIPT_UNKNOWN', 'run a script never written');
    expectError(await api('GET', '/api/v1/scripts/never.ts'), 404, 'HOODY_SCRIPT_UNKNOWN', 'read a script never written');
    expectError(await api('GET', `/c/${'k'.repeat(600)}/api/v1/files/`, undefined, '127.0.0.1'), 414, 'HOODY_URI_TOO_LONG', 'a 600-character path segment');
    expectError(await api('PUT', `/api/v1/files/${'d/'.repeat(257)}x`, 'deep'), 400, 'HOODY_PATH_TOO_DEEP', 'a path of 258 segments');
  });

  test('names: a certificate for a name another container routes is 404 HOODY_CERT_UNKNOWN; a bad grant is 400', async () => {
    const other = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'k2' })).token;
    const route = await send({ port: ports.http, host: 'api.k2.hoody.localhost', path: '/api/v1/proxy/routes/owned.example', method: 'PUT', body: { port: 80 }, headers: { authorization: `Bearer ${other}` } });
    assert.equal(route.status, 200, route.text());
    const ca = await HostCa.loadOrCreate(join(d.stateDir, 'cat-ca'));
    const pem = await ca.issue(['owned.example']);
    expectError(await api('PATCH', '/api/v1/proxy/cert/bundle', { domain: 'owned.example', cert: pem.cert, key: pem.key }), 404, 'HOODY_CERT_UNKNOWN', "a bundle for k2's name");
    expectError(await admin('PUT', '/v1/containers/k/domains', { domains: ['not a domain!'] }), 400, 'HOODY_DOMAIN_GRANT_INVALID', 'grant "not a domain!"');
  });
});
