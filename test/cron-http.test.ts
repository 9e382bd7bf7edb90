import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';

interface Ports {
  http: number;
  https: number;
}
interface Entry {
  id: string;
  schedule: string;
  enabled: boolean;
  next_run: string | null;
  expired: boolean;
  comment: string | null;
}
interface Run {
  entry_id: string;
  trigger: string;
  status: string;
  exit_code: number | null;
  triggered_by: string;
  scheduled_for: string | null;
  started_at: string;
  output: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('cron over the public API of a real daemon', () => {
  let d: TestDaemon;
  let ports: Ports;
  let tokA = '';
  let tokB = '';
  const cron = (token: string, method: string, path: string, body?: unknown, host = 'cron.a.hoody.localhost'): Promise<Answer> =>
    call({ port: ports.http, host, path: `${path}${path.includes('?') ? '&' : '?'}token=${token}`, method, body });
  const code = (a: Answer) => a.json<{ error: { code: string } }>().error.code;

  before(async () => {
    d = await startTestDaemon();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    tokA = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'a' })).token;
    tokB = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'b' })).token;
  });
  after(() => d.destroy());

  test("the seed's call answers 201 with id, schedule, enabled; @weekly is accepted; GET lists them", async () => {
    const seed = await cron(tokA, 'POST', '/users/me/entries', {
      schedule: '0 4 * * 0',
      command: 'curl -fsS https://exec.a.hoody.localhost/scripts/certs/renew?token=x',
      comment: 'weekly TLS renewal',
      enabled: true,
    });
    assert.equal(seed.status, 201, seed.text);
    const e = seed.json<Entry>();
    assert.ok(e.id);
    assert.equal(e.schedule, '0 4 * * 0');
    assert.equal(e.enabled, true);
    assert.equal(e.comment, 'weekly TLS renewal');
    const weekly = await cron(tokA, 'POST', '/users/me/entries', { schedule: '@weekly', command: 'true' });
    assert.equal(weekly.status, 201, weekly.text);
    const list = (await cron(tokA, 'GET', '/users/me/entries')).json<Entry[]>();
    assert.deepEqual(list.map((x) => x.schedule).sort(), ['0 4 * * 0', '@weekly']);
    for (const x of list) assert.equal((await cron(tokA, 'DELETE', `/users/me/entries/${x.id}`)).status, 200);
  });

  test('invalid entries are each a 400 with their own code, and nothing is stored', async () => {
    const base = { command: 'true' };
    const cases: [unknown, string][] = [
      [{ ...base, schedule: '61 * * * *' }, 'HOODY_CRON_SCHEDULE_INVALID'],
      [{ ...base, schedule: '* * *' }, 'HOODY_CRON_FIELD_COUNT'],
      [{ ...base, schedule: '@every_minute' }, 'HOODY_CRON_MACRO_UNKNOWN'],
      [{ ...base, schedule: '* * * * *', timezone: 'Mars/Olympus' }, 'HOODY_CRON_TIMEZONE_UNKNOWN'],
      [{ ...base, schedule: '* * * * *', expires_at: '2001-01-01T00:00:00Z' }, 'HOODY_CRON_EXPIRES_PAST'],
      [{ schedule: '* * * * *', command: 'x'.repeat(2 * 1024 * 1024) }, 'HOODY_CRON_COMMAND_TOO_LONG'],
    ];
    const seen = new Set<string>();
    for (const [body, expected] of cases) {
      const r = await cron(tokA, 'POST', '/users/me/entries', body);
      assert.equal(r.status, 400, expected);
      assert.equal(code(r), expected);
      seen.add(code(r));
    }
    assert.equal(seen.size, cases.length, 'each case has its own code');
    const notJson = await call({ port: ports.http, host: 'cron.a.hoody.localhost', path: `/users/me/entries?token=${tokA}`, method: 'POST', body: '{"schedule": ', headers: { 'content-type': 'application/json' } });
    assert.equal(notJson.status, 400);
    assert.equal(code(notJson), 'HOODY_BODY_INVALID');
    assert.deepEqual((await cron(tokA, 'GET', '/users/me/entries')).json(), []);
  });

  test("alice's token cannot see root's entries; b's token on a's hosts and paths is 404", async () => {
    const mine = (await cron(tokA, 'POST', '/users/me/entries', { schedule: '@daily', command: 'true' })).json<Entry>();
    const alice = await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens', { user: 'alice', scopes: ['cron'] });
    assert.deepEqual((await cron(alice.token, 'GET', '/users/me/entries')).json(), []);
    assert.equal((await cron(alice.token, 'GET', '/users/root/entries')).status, 403);
    assert.equal((await cron(alice.token, 'GET', `/users/me/entries/${mine.id}`)).status, 404);
    assert.equal((await cron(alice.token, 'DELETE', `/users/me/entries/${mine.id}`)).status, 404);
    // The owner (admin scope) may reach alice's entries.
    const hers = await cron(alice.token, 'POST', '/users/me/entries', { schedule: '@daily', command: 'id -un' });
    assert.equal(hers.status, 201);
    assert.equal((await cron(tokA, 'GET', '/users/alice/entries')).json<Entry[]>().length, 1);
    for (const [host, path] of [
      ['cron.a.hoody.localhost', '/users/me/entries'],
      ['127.0.0.1', '/c/a/users/me/entries'],
    ]) {
      const r = await cron(tokB, 'GET', path!, undefined, host);
      assert.equal(r.status, 404, `${host}${path}`);
    }
    const alicesRun = await cron(alice.token, 'POST', `/users/me/entries/${hers.json<Entry>().id}/run?wait=true`);
    assert.equal(alicesRun.json<Run>().output.trim(), 'alice', 'runs as its user inside the container');
  });

  test('after rotation the old token gets 401 on every route and the new one works', async () => {
    const rotated = await cron(tokA, 'POST', '/api/v1/tokens/rotate', undefined, 'api.a.hoody.localhost');
    const fresh = rotated.json<{ token: string }>().token;
    const entry = (await cron(fresh, 'GET', '/users/me/entries')).json<Entry[]>()[0]!;
    const routes: [string, string][] = [
      ['GET', '/users/me/entries'],
      ['POST', '/users/me/entries'],
      ['GET', `/users/me/entries/${entry.id}`],
      ['PATCH', `/users/me/entries/${entry.id}`],
      ['DELETE', `/users/me/entries/${entry.id}`],
      ['POST', `/users/me/entries/${entry.id}/run`],
      ['GET', `/users/me/entries/${entry.id}/runs`],
      ['GET', '/users/me/runs'],
      ['GET', '/api/v1/logs?source=cron'],
      ['GET', '/api/v1/scripts'],
      ['GET', '/api/v1/proxy/routes'],
      ['GET', '/api/v1/files/'],
      ['POST', '/api/v1/tokens/rotate'],
    ];
    for (const [method, path] of routes) {
      for (const host of ['cron.a.hoody.localhost', 'cron.hoody.localhost']) {
        const r = await cron(tokA, method, path, method === 'GET' || method === 'DELETE' ? undefined : {}, host);
        assert.equal(r.status, 401, `${method} ${host}${path}`);
      }
    }
    assert.equal((await cron(fresh, 'GET', '/users/me/entries')).status, 200);
    tokA = fresh;
  });

  test('from inside a container, curl https://cron.<ctr>.hoody.localhost/users/me/entries works (TLS verified, no -k)', async () => {
    const c = await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'deb', image: 'hoody/base' });
    const v = await d.client.call<{ engineId: string }>('GET', '/v1/containers/deb');
    const r = await execa('docker', ['exec', v.engineId, 'curl', '-fsS', `https://cron.deb.hoody.localhost:${ports.https}/users/me/entries?token=${c.token}`], { reject: false, all: true });
    assert.equal(r.exitCode, 0, r.all);
    assert.deepEqual(JSON.parse(String(r.stdout)), []);
  });

  test('@reboot entries run when the container restarts', async () => {
    const e = (await cron(tokA, 'POST', '/users/me/entries', { schedule: '@reboot', command: 'echo booted >> /files/reboots' })).json<Entry>();
    await d.client.call('POST', '/v1/containers/a/restart', {});
    let runs: Run[] = [];
    for (let i = 0; i < 40 && !runs.length; i++) {
      await sleep(250);
      runs = (await cron(tokA, 'GET', `/users/me/entries/${e.id}/runs`)).json<Run[]>().filter((r) => r.status !== 'running' && r.status !== 'queued');
    }
    assert.equal(runs.length, 1);
    assert.equal(runs[0]!.trigger, 'reboot');
    assert.equal(runs[0]!.exit_code, 0);
    assert.equal(await readFile(join(d.stateDir, 'pool', 'containers', 'a', 'files', 'reboots'), 'utf8'), 'booted\n');
    await cron(tokA, 'DELETE', `/users/me/entries/${e.id}`);
  });

  test('minute entries: two lines in ~130 s, expiry, overlap skip, and a kill -9 restart fires no slot twice', async () => {
    const every = (await cron(tokA, 'POST', '/users/me/entries', { schedule: '* * * * *', command: 'date >> /files/dates' })).json<Entry>();
    const expiresAt = new Date(Date.now() + 70_000).toISOString();
    const expiring = (await cron(tokA, 'POST', '/users/me/entries', { schedule: '* * * * *', command: 'echo x >> /files/expiring', expires_at: expiresAt })).json<Entry>();
    const slow = (await cron(tokA, 'POST', '/users/me/entries', { schedule: '* * * * *', command: 'sleep 90' })).json<Entry>();
    const boundariesBeforeExpiry = Math.floor(new Date(expiresAt).getTime() / 60_000) - Math.floor(Date.now() / 60_000);

    // Kill the daemon hard right after a slot was claimed (its run row exists): the schedule must resume with
    // every entry and fire no slot twice. Waiting for the row makes sure the kill lands after real firing.
    const firstDeadline = Date.now() + 90_000;
    let before: Run[] = [];
    let expBefore: Run[] = [];
    while (Date.now() < firstDeadline && (before.length === 0 || expBefore.length === 0)) {
      await sleep(250);
      before = (await cron(tokA, 'GET', `/users/me/entries/${every.id}/runs`)).json<Run[]>();
      expBefore = (await cron(tokA, 'GET', `/users/me/entries/${expiring.id}/runs`)).json<Run[]>();
    }
    assert.ok(before.length >= 1 && expBefore.length >= 1, 'a slot of each fired before the kill');
    await d.restart('SIGKILL');
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    const listed = (await cron(tokA, 'GET', '/users/me/entries')).json<Entry[]>().map((e) => e.id);
    for (const id of [every.id, expiring.id, slow.id]) assert.ok(listed.includes(id));

    const deadline = Date.now() + 150_000;
    let runs: Run[] = [];
    let slowRuns: Run[] = [];
    while (Date.now() < deadline) {
      await sleep(5000);
      runs = (await cron(tokA, 'GET', `/users/me/entries/${every.id}/runs`)).json<Run[]>();
      slowRuns = (await cron(tokA, 'GET', `/users/me/entries/${slow.id}/runs`)).json<Run[]>();
      if (runs.filter((r) => r.status === 'ok').length >= 2 && slowRuns.some((r) => r.status === 'skipped')) break;
    }
    const dates = (await readFile(join(d.stateDir, 'pool', 'containers', 'a', 'files', 'dates'), 'utf8')).trim().split('\n');
    const ok = runs.filter((r) => r.status === 'ok');
    assert.ok(dates.length >= 2, `two lines, got ${dates.length}`);
    // The kill lands while a run is in flight: its command may still finish in the container after the daemon died,
    // and that run is then not logged `ok`. Every line comes from a fired slot, and every `ok` run wrote its line.
    const fired = runs.filter((r) => r.status !== 'skipped');
    assert.ok(ok.length <= dates.length && dates.length <= fired.length, `${ok.length} ok runs, ${dates.length} lines, ${fired.length} slots fired`);
    for (const r of ok) {
      assert.equal(r.exit_code, 0);
      assert.equal(r.trigger, 'schedule');
      assert.equal(r.triggered_by, 'scheduler');
      const late = Date.parse(r.started_at) - Date.parse(r.scheduled_for ?? '');
      assert.ok(late >= 0 && late < 2000, `fired ${late} ms after its slot`);
    }
    const slots = runs.map((r) => r.scheduled_for);
    assert.equal(new Set(slots).size, slots.length, 'no slot fired twice');

    const expired = (await cron(tokA, 'GET', `/users/me/entries/${expiring.id}`)).json<Entry>();
    assert.equal(expired.expired, true);
    assert.equal(expired.next_run, null);
    // Rows for slots (a row without scheduled_for is the log's note about the entry, not a slot that fired).
    const expRuns = (await cron(tokA, 'GET', `/users/me/entries/${expiring.id}/runs`)).json<Run[]>().filter((r) => r.scheduled_for);
    // It fired while it was valid (its first slot is the one fired before the kill: a run the kill cut short is
    // fired but not `ok`), and never after.
    const expFired = expRuns.filter((r) => r.status !== 'skipped').length;
    const expOk = expRuns.filter((r) => r.status === 'ok').length;
    const expSeen = JSON.stringify(expRuns.map((r) => [r.scheduled_for, r.status]));
    assert.ok(expFired >= 1 && expOk <= boundariesBeforeExpiry, `expiring entry: ${expFired} fired, ${expOk} ok, ${boundariesBeforeExpiry} slots before expiry: ${expSeen}`);
    for (const r of expRuns) assert.ok(Date.parse(r.scheduled_for ?? '') < Date.parse(expiresAt), `no run for a slot after expiry: ${r.scheduled_for}`);
    assert.ok(slots.some((x) => before.some((b) => b.scheduled_for === x)), 'the slot fired before the kill is in the log once');

    assert.ok(slowRuns.some((r) => r.status === 'skipped'), JSON.stringify(slowRuns.map((r) => r.status)));
    for (const id of [every.id, expiring.id, slow.id]) await cron(tokA, 'DELETE', `/users/me/entries/${id}`);
  });
});
