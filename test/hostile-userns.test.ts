import assert from 'node:assert/strict';
import { lstat, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DockerEngine } from '../host/engine.js';
import { poolPaths } from '../host/pool.js';
import { type PrivateEngine, startPrivateEngine } from './support/engine.js';
import { startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';

interface Ports {
  http: number;
  https: number;
}

/**
 * Issue 10.9: root in a container must not be root on the host's kernel. The engine is one of the test's own,
 * started the way `hoody up` starts hoody's (test/support/engine.ts), so a daemon on it runs its containers as
 * `hoody up` would; the shared engine of the box is left alone.
 */
describe('hostile tenant: root in a container is not root on the host (issue 10.9)', () => {
  let engine: PrivateEngine | undefined;
  let d: TestDaemon | undefined;
  let ports: Ports;
  let token = '';
  let engineId = '';
  let files = '';
  let docker: DockerEngine;
  const api = (method: string, path: string, body?: unknown): Promise<Answer> =>
    call({ port: ports.http, host: 'api.u.hoody.localhost', path: `${path}?token=${token}`, method, body, headers: { 'content-type': 'application/octet-stream' } });
  const inside = async (script: string) => {
    const r = await docker.exec(engineId, { cmd: ['sh', '-c', script], timeoutMs: 10_000 });
    return { code: r.exitCode, out: r.output.trim() };
  };
  /** The host uid of the container's root: the start of the range its uid map maps 0 to. */
  let rootUid = 0;

  before(async () => {
    engine = await startPrivateEngine();
    docker = new DockerEngine(engine.socket);
    d = await startTestDaemon({ HOODY_DOCKER_SOCKET: engine.socket });
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'u', disk: '64m' })).token;
    engineId = (await d.client.call<{ engineId: string }>('GET', '/v1/containers/u')).engineId;
    files = join(poolPaths(d.stateDir).containers, 'u', 'files');
  });
  after(async () => {
    await d?.destroy().catch(() => undefined);
    await engine?.destroy();
  });

  test('the container has a user namespace: its root maps to an unprivileged host uid, not the identity map', async () => {
    const map = await inside('cat /proc/self/uid_map');
    assert.equal(map.code, 0, map.out);
    const [inner, outer, count] = map.out.split('\n')[0]!.trim().split(/\s+/).map(Number);
    assert.equal(inner, 0);
    assert.notEqual(outer, 0, `uid_map is ${JSON.stringify(map.out)}: container root is host root`);
    assert.ok(count! < 4294967295, `uid_map is ${JSON.stringify(map.out)}`);
    rootUid = outer!;
    assert.ok(rootUid >= 65536, `container root is host uid ${rootUid}`);
    assert.equal((await inside('id -u')).out, '0', 'still root inside');
  });

  test('what container root makes in /files, and on its root filesystem, is owned on the host by the mapped uid', async () => {
    const r = await inside('echo hi > /files/made-inside && mkdir /files/dir-inside && echo x > /root-file && echo ok');
    assert.equal(r.out, 'ok', r.out);
    for (const p of ['made-inside', 'dir-inside']) {
      const st = await lstat(join(files, p));
      assert.ok(st.uid >= rootUid && st.uid !== 0 && rootUid > 0, `${p} is owned by host uid ${st.uid}`);
      assert.ok(st.gid !== 0, `${p} has host gid ${st.gid}`);
    }
  });

  test('container root cannot read, change or write into what belongs to host root, even in its own /files', async () => {
    // As if the host had left a root-only file and directory where the tenant can see them.
    await writeFile(join(files, 'host-secret'), 'host secret\n', { mode: 0o600 });
    await mkdir(join(files, 'host-dir'), { mode: 0o755 });
    const read = await inside('cat /files/host-secret');
    assert.notEqual(read.code, 0, `container root read a host root-only file: ${read.out}`);
    assert.doesNotMatch(read.out, /host secret/);
    assert.notEqual((await inside('chmod 666 /files/host-secret')).code, 0, 'chmod of a host root file');
    assert.notEqual((await inside('chown 0:0 /files/host-secret')).code, 0, 'chown of a host root file');
    assert.notEqual((await inside('touch /files/host-dir/planted')).code, 0, 'write into a host root directory');
    const st = await lstat(join(files, 'host-secret'));
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o777, 0o600);
  });

  test('the files API and the container share files both ways (new files and directories get the mapped owner)', async () => {
    const put = await api('PUT', '/api/v1/files/api/deep/from-api.txt', 'from the API\n');
    assert.equal(put.status, 201, put.text);
    const st = await lstat(join(files, 'api/deep/from-api.txt'));
    assert.equal(st.uid, rootUid, 'a file the daemon writes belongs to the container root');
    assert.equal((await lstat(join(files, 'api/deep'))).uid, rootUid, 'so do the directories it makes');
    const rw = await inside('cat /files/api/deep/from-api.txt && echo more >> /files/api/deep/from-api.txt && touch /files/api/deep/next && echo ok');
    assert.equal(rw.out, 'from the API\nok', rw.out);
    assert.equal((await api('GET', '/api/v1/files/api/deep/from-api.txt')).text, 'from the API\nmore\n');

    // A file the container gave to one of its users keeps that owner when the API replaces it.
    assert.equal((await inside('echo mine > /files/app.conf && chown 1000:1000 /files/app.conf && echo ok')).out, 'ok');
    assert.equal((await api('GET', '/api/v1/files/app.conf')).text, 'mine\n');
    assert.equal((await api('PUT', '/api/v1/files/app.conf', 'replaced\n')).status, 200);
    assert.equal((await inside('stat -c %u:%g /files/app.conf && cat /files/app.conf')).out, '1000:1000\nreplaced');

    // The scripts area and a script's files.* calls go the same way.
    const script = await api('PUT', '/api/v1/scripts/w.ts', "return await files.write('from-script/out.txt', 'by a script\\n');");
    assert.equal(script.status, 201, script.text);
    const ran = await call({ port: ports.http, host: 'exec.u.hoody.localhost', path: `/scripts/w?token=${token}` });
    assert.equal(ran.status, 200, ran.text);
    const both = await inside('cat /scripts/w.ts > /dev/null && touch /scripts/from-inside.sh && echo again >> /files/from-script/out.txt && echo ok');
    assert.equal(both.out, 'ok', both.out);
    assert.equal((await api('GET', '/api/v1/files/from-script/out.txt')).text, 'by a script\nagain\n');
  });
});
