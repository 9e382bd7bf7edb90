import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Snap {
  name: string;
  createdAt: string;
  exclusiveBytes: number | null;
  referencedBytes: number | null;
  auto: boolean;
}

describe('snapshots an operator can use: restore, list with sizes, delete, a schedule with retention', () => {
  let d: TestDaemon;
  let port = 0;
  let token = '';

  const files = (method: string, path: string, body?: string): Promise<Answer> =>
    call({ port, host: 'api.snap.hoody.localhost', path: `/api/v1/files/${path}?token=${token}`, method, body, headers: body === undefined ? {} : { 'content-type': 'text/plain' } });
  const list = () => d.client.call<Snap[]>('GET', '/v1/containers/snap/snapshots');
  const engineId = async () => (await d.client.call<{ engineId: string; state: string }>('GET', '/v1/containers/snap')).engineId;

  before(async () => {
    d = await startTestDaemon({ HOODY_SNAPSHOT_MIN_EVERY_S: '1' });
    port = (await d.client.call<{ listeners: { http: number } }>('GET', '/v1/host')).listeners.http;
    token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'snap' })).token;
  });
  after(async () => {
    await d?.destroy();
  });

  test('restore puts the data back (the running container sees it), keeps what it replaced, and can itself be undone', async () => {
    assert.equal((await files('PUT', 'note.txt', 'v1')).status, 201);
    const taken = await d.hoody(['snapshot', 'snap', 'one']);
    assert.equal(taken.exitCode, 0, taken.stderr);
    assert.equal((await files('PUT', 'note.txt', 'v2')).status, 200);
    assert.equal((await files('PUT', 'extra.txt', 'x'.repeat(200_000))).status, 201);
    const id = await engineId();

    const r = await d.hoody(['snapshot', 'restore', 'snap', 'one', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const { restored, kept } = JSON.parse(r.stdout) as { restored: string; kept: string };
    assert.equal(restored, 'one');
    assert.match(kept, /^pre-restore-\d{8}T\d{6}Z$/);
    assert.equal((await files('GET', 'note.txt')).text, 'v1');
    assert.equal((await files('GET', 'extra.txt')).status, 404);
    // The same engine container, running again, sees the restored volume.
    const v = await d.client.call<{ engineId: string; state: string }>('GET', '/v1/containers/snap');
    assert.deepEqual([v.engineId, v.state], [id, 'running']);
    assert.equal((await dockerExec(id, ['cat', '/files/note.txt'])).output, 'v1');

    // ls: oldest first, with sizes; the kept one holds the 200 KB file.
    const snaps = await list();
    assert.deepEqual(snaps.map((s) => s.name), ['one', kept]);
    assert.ok((snaps[1]!.referencedBytes ?? 0) > 200_000, JSON.stringify(snaps));
    assert.deepEqual(snaps.map((s) => s.auto), [false, false]);
    const ls = await d.hoody(['snapshot', 'ls', 'snap']);
    assert.match(ls.stdout, /SNAPSHOT\s+CREATED\s+EXCLUSIVE\s+REFERENCED\s+BY\n.*one\s.*operator/);

    // Undo the restore: back to what it held.
    const back = await d.hoody(['snapshot', 'restore', 'snap', kept]);
    assert.equal(back.exitCode, 0, back.stderr);
    assert.equal((await files('GET', 'note.txt')).text, 'v2');
    assert.equal((await files('GET', 'extra.txt')).text.length, 200_000);
  });

  test('a stopped container stays stopped; rm deletes a snapshot; unknown names are clear errors', async () => {
    assert.equal((await d.hoody(['stop', 'snap'])).exitCode, 0);
    const r = await d.client.call<{ restored: string }>('POST', '/v1/containers/snap/snapshots/one/restore', {});
    assert.equal(r.restored, 'one');
    assert.equal((await d.client.call<{ state: string }>('GET', '/v1/containers/snap')).state, 'stopped');
    assert.equal((await d.hoody(['start', 'snap'])).exitCode, 0);
    assert.equal((await files('GET', 'note.txt')).text, 'v1');

    const rm = await d.hoody(['snapshot', 'rm', 'snap', 'one']);
    assert.equal(rm.exitCode, 0, rm.stderr);
    assert.ok(!(await list()).some((s) => s.name === 'one'));
    const again = await d.hoody(['snapshot', 'rm', 'snap', 'one']);
    assert.match(again.stderr, /HOODY_SNAPSHOT_UNKNOWN/);
    const restoreGone = await d.hoody(['snapshot', 'restore', 'snap', 'one']);
    assert.match(restoreGone.stderr, /HOODY_SNAPSHOT_UNKNOWN/);
    const reserved = await d.hoody(['snapshot', 'snap', 'auto-mine']);
    assert.match(reserved.stderr, /HOODY_SNAPSHOT_NAME_INVALID/);
  });

  test('a schedule takes auto- snapshots and keeps the newest --keep; the operator snapshots are never pruned', async () => {
    for (const [every, keep] of [['0s', '2'], ['1x', '2'], ['1s', '0'], ['31d', '2']] as const) {
      const bad = await d.hoody(['snapshot', 'schedule', 'snap', '--every', every, '--keep', keep]);
      assert.match(bad.stderr, /HOODY_SNAPSHOT_SCHEDULE_INVALID/, `${every} ${keep}`);
    }
    const operator = (await list()).map((s) => s.name);
    const set = await d.hoody(['snapshot', 'schedule', 'snap', '--every', '1s', '--keep', '2']);
    assert.equal(set.exitCode, 0, set.stderr);
    assert.match(set.stdout, /a snapshot every 1s, keeping 2/);
    await sleep(4500);
    const off = await d.hoody(['snapshot', 'schedule', 'snap', '--off']);
    assert.equal(off.exitCode, 0, off.stderr);
    const snaps = await list();
    const autos = snaps.filter((s) => s.auto).map((s) => s.name);
    assert.equal(autos.length, 2, JSON.stringify(snaps));
    assert.ok(autos.every((n) => /^auto-\d{8}T\d{6}Z$/.test(n)));
    assert.deepEqual(snaps.filter((s) => !s.auto).map((s) => s.name), operator);
    await sleep(1500);
    assert.deepEqual((await list()).filter((s) => s.auto).map((s) => s.name), autos, 'no more after --off');
    assert.match((await d.hoody(['snapshot', 'schedule', 'snap'])).stdout, /no snapshot schedule/);
    // A scheduled snapshot can be restored like any other.
    const r = await d.client.call<{ restored: string }>('POST', `/v1/containers/snap/snapshots/${autos[1]}/restore`, {});
    assert.equal(r.restored, autos[1]);
  });
});
