import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { BUSYBOX_IMAGE } from '../host/images.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';

interface View {
  name: string;
  state: string;
  engineId: string | null;
}

// An image that is not hoody's own: a recover cannot build it, the operator brings it back.
const FOREIGN = 'hoody-recover-test/img:1';

describe("recover: hoody's state is the truth, a container removed behind its back is rebuilt from its volume", () => {
  let d: TestDaemon;
  let port = 0;
  const tokens = new Map<string, string>();

  const api = (name: string, method: string, path: string, body?: unknown, service = 'api', tok = tokens.get(name)!): Promise<Answer> =>
    call({ port, host: `${service}.${name}.hoody.localhost`, path: `${path}${path.includes('?') ? '&' : '?'}token=${tok}`, method, body, headers: typeof body === 'string' ? { 'content-type': 'text/plain' } : {} });
  const view = (name: string) => d.client.call<View>('GET', `/v1/containers/${name}`);
  const make = async (name: string, image?: string) => {
    tokens.set(name, (await d.client.call<{ token: string }>('POST', '/v1/containers', { name, ...(image ? { image } : {}) })).token);
    return (await view(name)).engineId!;
  };
  const removeBehindBack = async (name: string) => {
    await execa('docker', ['rm', '-f', (await view(name)).engineId!]);
    assert.equal((await view(name)).state, 'missing');
  };

  before(async () => {
    await execa('docker', ['tag', BUSYBOX_IMAGE, FOREIGN]);
    d = await startTestDaemon();
    port = (await d.client.call<{ listeners: { http: number } }>('GET', '/v1/host')).listeners.http;
  });
  after(async () => {
    await d?.destroy();
    await execa('docker', ['rmi', '-f', FOREIGN], { reject: false });
  });

  test('files, tokens, cron entries and routes are as they were; the cron entry runs in the rebuilt container', async () => {
    const oldEngineId = await make('rec');
    assert.equal((await api('rec', 'PUT', '/api/v1/files/note.txt', 'kept')).status, 201);
    const dave = (await d.client.call<{ token: string }>('POST', '/v1/containers/rec/tokens', { user: 'dave', scopes: ['files', 'cron'] })).token;
    const entry = await api('rec', 'POST', '/users/me/entries', { schedule: '0 4 * * 0', command: 'cat /files/note.txt; echo; hostname', comment: 'weekly' }, 'cron');
    assert.equal(entry.status, 201, entry.text);
    const entryId = entry.json<{ id: string }>().id;
    assert.equal((await api('rec', 'PUT', '/api/v1/proxy/routes/rec.test', { port: 8080 })).status, 200);

    await removeBehindBack('rec');
    const ls = await d.hoody(['ls']);
    assert.match(ls.stdout, /rec\s+missing/);
    const r = await d.hoody(['recover', 'rec']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'rec: rebuilt, running');
    const v = await view('rec');
    assert.equal(v.state, 'running');
    assert.notEqual(v.engineId, oldEngineId);

    assert.equal((await api('rec', 'GET', '/api/v1/files/note.txt')).text, 'kept');
    assert.equal((await call({ port, host: 'api.rec.hoody.localhost', path: `/api/v1/files/note.txt?token=${dave}` })).text, 'kept');
    const entries = (await api('rec', 'GET', '/users/me/entries', undefined, 'cron')).json<{ id: string; comment: string }[]>();
    assert.deepEqual(entries.map((e) => [e.id, e.comment]), [[entryId, 'weekly']]);
    const run = await api('rec', 'POST', `/users/me/entries/${entryId}/run?wait=true`, undefined, 'cron');
    assert.equal(run.status, 200, run.text);
    assert.deepEqual(
      [run.json<{ status: string }>().status, run.json<{ output: string }>().output.trim()],
      ['ok', 'kept\nrec'],
    );
    assert.deepEqual((await api('rec', 'GET', '/api/v1/proxy/routes')).json<{ hostname: string }[]>().map((x) => x.hostname), ['rec.test']);
    // The rebuilt container has hoody's mounts and limits as made the first time.
    const inspect = JSON.parse((await execa('docker', ['inspect', v.engineId!])).stdout)[0];
    assert.ok(inspect.HostConfig.Binds.some((b: string) => b.endsWith(':/files')), JSON.stringify(inspect.HostConfig.Binds));
    assert.equal(inspect.Config.Labels['io.hoody.name'], 'rec');

    // Not missing: nothing to do.
    const again = await d.client.call<{ recovered: boolean; container: View }>('POST', '/v1/containers/rec/recover', {});
    assert.deepEqual([again.recovered, again.container.engineId], [false, v.engineId]);
  });

  test('`hoody start` of a missing container rebuilds it; `recover --all` rebuilds every missing one', async () => {
    await removeBehindBack('rec');
    const s = await d.hoody(['start', 'rec']);
    assert.equal(s.exitCode, 0, s.stderr);
    assert.equal(s.stdout.trim(), 'rec: running');
    assert.equal((await api('rec', 'GET', '/api/v1/files/note.txt')).text, 'kept');

    await make('rec-b');
    await removeBehindBack('rec');
    await removeBehindBack('rec-b');
    const all = await d.hoody(['recover', '--all', '--json']);
    assert.equal(all.exitCode, 0, all.stderr);
    const out = JSON.parse(all.stdout) as { recovered: boolean; container: View }[];
    assert.deepEqual(out.map((o) => [o.container.name, o.recovered, o.container.state]).sort(), [
      ['rec', true, 'running'],
      ['rec-b', true, 'running'],
    ]);
    const none = await d.hoody(['recover', '--all']);
    assert.equal(none.stdout.trim(), 'no container is missing');
    const both = await dockerExec((await view('rec-b')).engineId!, ['cat', '/etc/hostname']);
    assert.equal(both.output.trim(), 'rec-b');
  });

  test('an image the engine lost and hoody cannot build: a clear IMAGE_UNKNOWN, nothing half-done; with the image back it works', async () => {
    const before = await make('rec-img', FOREIGN);
    await removeBehindBack('rec-img');
    await execa('docker', ['rmi', '-f', FOREIGN]);
    const r = await d.client.call('POST', '/v1/containers/rec-img/recover', {}).catch((e: Error) => e);
    assert.ok(r instanceof Error);
    assert.equal((r as Error & { code?: string }).code, 'HOODY_IMAGE_UNKNOWN', r.message);
    const v = await view('rec-img');
    assert.deepEqual([v.state, v.engineId], ['missing', before]);
    const strays = (await execa('docker', ['ps', '-aq', '--filter', 'label=io.hoody.name=rec-img'])).stdout.trim();
    assert.equal(strays, '');
    await execa('docker', ['tag', BUSYBOX_IMAGE, FOREIGN]);
    const ok = await d.client.call<{ recovered: boolean; container: View }>('POST', '/v1/containers/rec-img/recover', {});
    assert.deepEqual([ok.recovered, ok.container.state], [true, 'running']);
  });

  test('a container whose volume is gone too cannot be rebuilt: 409 CONTAINER_UNRECOVERABLE, and rm still cleans up', async () => {
    await make('rec-gone');
    await removeBehindBack('rec-gone');
    await execa('btrfs', ['subvolume', 'delete', join(d.stateDir, 'pool', 'containers', 'rec-gone')]);
    const r = await d.hoody(['recover', 'rec-gone']);
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /HOODY_CONTAINER_UNRECOVERABLE/);
    assert.match(r.stderr, /data volume .* is gone/);
    assert.equal((await view('rec-gone')).state, 'missing');
    const rm = await d.hoody(['rm', 'rec-gone']);
    assert.equal(rm.exitCode, 0, rm.stderr);
    const unknown = await d.hoody(['recover', 'nope']);
    assert.match(unknown.stderr, /HOODY_CONTAINER_UNKNOWN/);
  });
});
