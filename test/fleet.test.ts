import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { ApiError } from '../daemon/client.js';
import { startEtcdCluster, type EtcdCluster } from './support/etcd.js';
import { type FleetTestHost, startFleetHosts } from './support/fleet.js';
import { call } from './support/http.js';
import { until } from './support/wait.js';

type Host = FleetTestHost;
interface FleetHost {
  host: string;
  healthy: boolean;
  record: { capacity: { poolFreeBytes: number | null; memoryAvailableBytes: number; containers: number; draining: boolean }; ports: { http: number } } | null;
}
interface Placement {
  name: string;
  host: string;
  state: string;
  user?: string;
}
interface Created {
  name: string;
  token: string;
}

const fleetName = `t${randomBytes(3).toString('hex')}`;
const prefix = `hoody/${fleetName}/`;

/** POST /v1/containers, answered as status + body (a 409 or 503 is an answer here, not a failure). */
async function create(h: Host, name: string): Promise<{ status: number; code?: string; body?: Created; ms: number }> {
  const t0 = Date.now();
  try {
    // Pinned to the host asked: these cases are about the directory, not placement (fleet-routing.test.ts).
    const body = await h.d.client.call<Created>('POST', '/v1/containers', { name, memory: '32m', host: h.name });
    return { status: 201, body, ms: Date.now() - t0 };
  } catch (err) {
    if (err instanceof ApiError) return { status: err.status, code: err.code, ms: Date.now() - t0 };
    throw err;
  }
}

const hostsOf = (h: Host) => h.d.client.call<FleetHost[]>('GET', '/v1/fleet/hosts');
const placement = (h: Host, name: string) => h.d.client.call<Placement>('GET', `/v1/fleet/directory/${name}`);
const resolve = (h: Host, token: string) => h.d.client.call<Placement>('POST', '/v1/fleet/resolve', { token });

describe('fleet: membership and the directory on a 3-member etcd (3 hoodyd on one engine)', { timeout: 240_000 }, () => {
  let etcd: EtcdCluster;
  let store: Etcd3;
  const hosts: Host[] = [];
  let web: Created;

  before(async () => {
    // etcd is not running yet: the daemons must start and serve anyway, and join once it is there.
    etcd = await startEtcdCluster(3, { start: false });
    store = new Etcd3({ hosts: etcd.endpoints });
    hosts.push(...(await startFleetHosts(etcd.endpoints, fleetName)));
    const status = await hosts[0]!.d.client.call<{ joined: boolean; membership: { registered: boolean } }>('GET', '/v1/fleet');
    assert.equal(status.joined, true);
    assert.equal(status.membership.registered, false, 'registered with no etcd running?');
    await etcd.startAll();
    await etcd.healthy();
  });

  after(async () => {
    await Promise.allSettled(hosts.map((h) => h.d.destroy()));
    store?.close();
    await etcd?.stop();
  });

  test('every host sees every host in `fleet ls`, with its capacity', async () => {
    for (const h of hosts) {
      const list = await until(`${h.name} lists 3 healthy hosts`, async () => {
        const l = await hostsOf(h);
        return l.length === 3 && l.every((x) => x.healthy && x.record) && l;
      }, { timeoutMs: 20_000 });
      assert.deepEqual(list.map((x) => x.host), ['a', 'b', 'c']);
      for (const x of list) {
        assert.ok((x.record!.capacity.poolFreeBytes ?? 0) > 0, `${x.host}: pool free bytes`);
        assert.ok(x.record!.capacity.memoryAvailableBytes > 0, `${x.host}: memory available`);
        assert.equal(x.record!.capacity.draining, false);
      }
    }
    const cli = await hosts[1]!.d.hoody(['fleet', 'ls']);
    assert.equal(cli.exitCode, 0, cli.stderr);
    assert.match(cli.stdout, /^a\s+up\s+127\.0\.0\.1:/m);
    const json = JSON.parse((await hosts[1]!.d.hoody(['fleet', 'ls', '--json'])).stdout) as FleetHost[];
    assert.equal(json.length, 3);
  });

  test("a container made on A is in B's and C's directory caches, and its token resolves there", async () => {
    const r = await create(hosts[0]!, 'web');
    assert.equal(r.status, 201, r.code);
    web = r.body!;
    const t0 = Date.now();
    for (const h of hosts.slice(1)) {
      const p = await until(`${h.name} knows web`, async () => {
        const x = await placement(h, 'web');
        return x.state === 'ready' && x;
      }, { timeoutMs: 10_000, everyMs: 50 });
      assert.equal(p.host, 'a');
      const t = await until(`${h.name} resolves web's token`, () => resolve(h, web.token), { timeoutMs: 10_000, everyMs: 50 });
      assert.equal(t.name, 'web');
      assert.equal(t.host, 'a');
    }
    console.log(`# web reached B's and C's caches in ${Date.now() - t0} ms`);
    await assert.rejects(resolve(hosts[1]!, 'hdy_not-a-token'), (e: ApiError) => e.status === 401);
    await assert.rejects(placement(hosts[1]!, 'nope'), (e: ApiError) => e.status === 404 && e.code === 'HOODY_FLEET_NAME_UNKNOWN');
    // A rotation is published too: the new token resolves elsewhere, the old one no longer does.
    const rotated = await hosts[0]!.d.client.call<{ token: string }>('POST', '/v1/containers/web/tokens/rotate', { user: 'root' });
    await until('b resolves the rotated token and forgets the old one', async () => {
      const fresh = await resolve(hosts[1]!, rotated.token).catch(() => null);
      const old = await resolve(hosts[1]!, web.token).catch((e: ApiError) => e.status);
      return fresh?.name === 'web' && old === 401;
    }, { timeoutMs: 10_000 });
    web = { ...web, token: rotated.token };
  });

  test('two hosts racing for one name: exactly one 201, the other 409 HOODY_NAME_TAKEN', async () => {
    const [b, c] = await Promise.all([create(hosts[1]!, 'race'), create(hosts[2]!, 'race')]);
    const statuses = [b.status, c.status].sort();
    assert.deepEqual(statuses, [201, 409], JSON.stringify({ b, c }));
    assert.equal([b, c].find((x) => x.status === 409)!.code, 'HOODY_NAME_TAKEN');
    const winner = b.status === 201 ? 'b' : 'c';
    const p = await until('a sees the winner', async () => {
      const x = await placement(hosts[0]!, 'race');
      return x.state === 'ready' && x;
    });
    assert.equal(p.host, winner);
    // The name is taken fleet-wide: A may not have it either.
    const again = await create(hosts[0]!, 'race');
    assert.equal(again.status, 409);
    assert.equal(again.code, 'HOODY_NAME_TAKEN');
  });

  test('a create that fails after taking the name gives it back: another host may take it', async () => {
    const t0 = Date.now();
    const failed = await hosts[0]!.d.client.call('POST', '/v1/containers', { name: 'ghost', image: 'hoody-test/absent:none', host: 'a' }).catch((e: ApiError) => e);
    assert.ok(failed instanceof ApiError && failed.code === 'HOODY_IMAGE_UNKNOWN', String(failed));
    assert.equal((await store.get(`${prefix}names/ghost`).string()) ?? null, null, 'the reservation was released');
    const r = await create(hosts[1]!, 'ghost');
    assert.equal(r.status, 201, JSON.stringify(r));
    await hosts[1]!.d.client.call('DELETE', '/v1/containers/ghost');
    await until('ghost leaves the directory when deleted', async () => (await store.get(`${prefix}names/ghost`).string()) === null, { timeoutMs: 5000 });
    await until('and leaves the caches', () => placement(hosts[0]!, 'ghost').then(() => false, (e: ApiError) => e.status === 404), { timeoutMs: 5000 });
    console.log(`# failed create, release, create elsewhere, delete: ${Date.now() - t0} ms`);
  });

  test('quorum lost: A still serves its container, creates and moves fail fast with 503; quorum back: creates work', async () => {
    // A stopped container to move while etcd has no quorum (made while it has).
    assert.equal((await create(hosts[0]!, 'parked')).status, 201);
    await hosts[0]!.d.client.call('POST', '/v1/containers/parked/stop');
    await etcd.kill(1);
    await etcd.kill(2);
    const answer = await call({ port: hosts[0]!.http, host: '127.0.0.1', path: '/c/web/api/v1/scripts', headers: { authorization: `Bearer ${web.token}` } });
    assert.equal(answer.status, 200, answer.text);
    const r = await create(hosts[0]!, 'late');
    assert.equal(r.status, 503, JSON.stringify(r));
    // NO_LEADER when the member reached says so, UNAVAILABLE when none answered in time (a killed one was tried).
    assert.ok(['HOODY_FLEET_NO_LEADER', 'HOODY_FLEET_UNAVAILABLE'].includes(r.code ?? ''), r.code);
    assert.ok(r.ms < 5000, `the create took ${r.ms} ms`);
    console.log(`# create without quorum: ${r.status} ${r.code} in ${r.ms} ms`);
    // The failed create left nothing behind on A.
    await assert.rejects(hosts[0]!.d.client.call('GET', '/v1/containers/late'), (e: ApiError) => e.status === 404);
    // A move needs the directory's word: refused fast, the container untouched where it was.
    const t0 = Date.now();
    await assert.rejects(hosts[0]!.d.client.call('POST', '/v1/containers/parked/move', { host: 'b' }), (e: ApiError) => {
      assert.equal(e.status, 503, e.message);
      assert.ok(['HOODY_FLEET_NO_LEADER', 'HOODY_FLEET_UNAVAILABLE'].includes(e.code), e.code);
      return true;
    });
    assert.ok(Date.now() - t0 < 5000, `the move took ${Date.now() - t0} ms`);
    console.log(`# move without quorum refused in ${Date.now() - t0} ms`);
    assert.equal((await hosts[0]!.d.client.call<{ state: string }>('GET', '/v1/containers/parked')).state, 'stopped');
    await assert.rejects(hosts[1]!.d.client.call('GET', '/v1/containers/parked'), (e: ApiError) => e.status === 404);
    // Still cached: lookups never wait on etcd.
    assert.equal((await placement(hosts[2]!, 'web')).host, 'a');
    await etcd.start(1);
    await etcd.start(2);
    await etcd.healthy();
    const ok = await until('a create succeeds again', async () => {
      const x = await create(hosts[0]!, 'late');
      return x.status === 201 && x;
    }, { timeoutMs: 30_000, everyMs: 200 });
    assert.equal(ok.body!.name, 'late');
    await hosts[0]!.d.client.call('DELETE', '/v1/containers/parked');
  });

  test('the prefix wiped: every host republishes and the directory comes back everywhere', async () => {
    const wiped = Number((await store.delete().prefix(prefix)).header.revision);
    // Each cache must have seen the wipe (its revision past it) and hold everything again.
    for (const h of hosts) {
      await until(`${h.name}'s directory is back`, async () => {
        const s = await h.d.client.call<{ directory: { revision: number } }>('GET', '/v1/fleet');
        if (s.directory.revision <= wiped) return false;
        const [w, l, list] = await Promise.all([placement(h, 'web'), placement(h, 'late'), hostsOf(h)]);
        const t = await resolve(h, web.token);
        return w.host === 'a' && l.host === 'a' && t.name === 'web' && list.filter((x) => x.healthy).length === 3;
      }, { timeoutMs: 20_000, everyMs: 100 });
    }
    // And etcd itself holds it again, written after the wipe.
    const all = await store.getAll().prefix(prefix).exec();
    const kinds = (k: string) => all.kvs.filter((kv) => kv.key.toString().startsWith(`${prefix}${k}/`));
    assert.deepEqual(kinds('names').map((kv) => kv.key.toString()).sort(), [`${prefix}names/late`, `${prefix}names/race`, `${prefix}names/web`]);
    assert.equal(kinds('hosts').length, 3);
    assert.equal(kinds('tokens').length, 3, 'one owner token per container');
    for (const kv of all.kvs) assert.ok(Number(kv.create_revision) > wiped);
    // The hop's fleet secret is put back too (by whichever host checks first; they all hold the same one).
    await until('the fleet secret is back', async () => (await store.get(`${prefix}secret`).string()) !== null, { timeoutMs: 15_000, everyMs: 200 });
  });

  test("a killed host's lease expires: `fleet ls` shows it down, its names stay reserved", async () => {
    const c = hosts[2]!;
    await c.d.stop('SIGKILL');
    const t0 = Date.now();
    const list = await until('a sees c unhealthy', async () => {
      const l = await hostsOf(hosts[0]!);
      const x = l.find((h) => h.host === 'c');
      return !x?.healthy && l;
    }, { timeoutMs: 20_000, everyMs: 200 });
    console.log(`# c's lease expired ${Date.now() - t0} ms after its kill -9`);
    assert.ok(list.find((h) => h.host === 'a')?.healthy);
    const cli = await hosts[0]!.d.hoody(['fleet', 'ls']);
    assert.equal(cli.exitCode, 0, cli.stderr);
    assert.doesNotMatch(cli.stdout, /^c\s+up/m);
    // A dead host's names are not free for the taking.
    const p = await placement(hosts[0]!, 'race');
    if (p.host === 'c') {
      assert.equal(p.state, 'ready');
      const r = await create(hosts[0]!, 'race');
      assert.equal(r.code, 'HOODY_NAME_TAKEN');
    }
  });

  test('leave and join again, live (hoody fleet leave / join)', async () => {
    const b = hosts[1]!;
    // A drain ends with the membership: b joins again open to placement.
    assert.equal((await b.d.hoody(['fleet', 'drain'])).exitCode, 0);
    const left = await b.d.hoody(['fleet', 'leave']);
    assert.equal(left.exitCode, 0, left.stderr);
    await until('a no longer lists b', async () => !(await hostsOf(hosts[0]!)).some((h) => h.host === 'b'));
    const status = await b.d.client.call<{ joined: boolean }>('GET', '/v1/fleet');
    assert.equal(status.joined, false);
    await assert.rejects(hostsOf(b), (e: ApiError) => e.status === 409 && e.code === 'HOODY_FLEET_NOT_JOINED');
    const bad = await b.d.hoody(['fleet', 'join', 'not an endpoint']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /HOODY_FLEET_CONFIG_INVALID/);
    const joined = await b.d.hoody(['fleet', 'join', etcd.endpoints.join(','), '--host', 'b', '--fleet', fleetName]);
    assert.equal(joined.exitCode, 0, joined.stderr);
    await until('a lists b again', async () => (await hostsOf(hosts[0]!)).some((h) => h.host === 'b' && h.healthy && h.record?.capacity.draining === false));
    // Saved for the next start (read when neither --fleet-etcd nor HOODY_FLEET_ETCD names a fleet).
    const saved = JSON.parse(await readFile(join(b.d.stateDir, 'fleet.json'), 'utf8')) as { endpoints: string[]; host: string };
    assert.equal(saved.host, 'b');
    assert.equal(saved.endpoints.length, 3);
  });

  test('a drain outlives a restart (a marker in the state dir) until `fleet drain --off`', async () => {
    const a = hosts[0]!;
    const startedAt = async () => ((await hostsOf(hosts[1]!)).find((h) => h.host === 'a')?.record as { startedAt?: string } | null)?.startedAt;
    const draining = (on: boolean, since?: string) =>
      until(`b sees a ${on ? 'draining' : 'open'}`, async () => {
        const x = (await hostsOf(hosts[1]!)).find((h) => h.host === 'a');
        return x?.healthy === true && x.record?.capacity.draining === on && (since === undefined || (x.record as { startedAt?: string }).startedAt !== since);
      }, { timeoutMs: 20_000, everyMs: 100 });
    assert.equal((await a.d.hoody(['fleet', 'drain'])).exitCode, 0);
    await draining(true);
    const before = await startedAt();
    await a.d.restart('SIGTERM');
    // The record of the new process (another startedAt) says draining: the flag came from the state dir.
    await draining(true, before);
    const off = await a.d.hoody(['fleet', 'drain', '--off', '--json']);
    assert.equal(off.exitCode, 0, off.stderr);
    assert.deepEqual(JSON.parse(off.stdout), { host: 'a', draining: false });
    await draining(false);
  });
});
