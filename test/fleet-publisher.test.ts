/**
 * The fleet publisher against a real etcd and a real state database, without daemons: it publishes at once when
 * it starts and when a token is issued or rotated, not only on its period (set to a minute here, so a publish
 * within a second can only come from those hooks).
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import pino from 'pino';
import { issueOwnerToken, OWNER_USER, rotateTokens } from '../containers/token-service.js';
import { hashToken } from '../containers/tokens.js';
import { DirectoryCache } from '../daemon/fleet/directory.js';
import { type EtcdClients, etcdClients } from '../daemon/fleet/etcd.js';
import { fleetKeys } from '../daemon/fleet/keys.js';
import { Publisher } from '../daemon/fleet/publisher.js';
import { type EtcdCluster, startEtcdCluster } from './support/etcd.js';
import { type TestContext, testContext } from './support/host.js';
import { until } from './support/wait.js';

describe('fleet publisher: tokens reach the directory at once', { timeout: 60_000 }, () => {
  let etcd: EtcdCluster;
  let t: TestContext;
  let clients: EtcdClients;
  let store: Etcd3;
  let cache: DirectoryCache;
  let publisher: Publisher;
  const keys = fleetKeys(`p${randomBytes(3).toString('hex')}`);
  const log = pino({ level: 'silent' });

  before(async () => {
    etcd = await startEtcdCluster(1);
    await etcd.healthy();
    t = await testContext();
    clients = etcdClients(etcd.endpoints);
    store = new Etcd3({ hosts: etcd.endpoints });
    cache = new DirectoryCache(clients.relaxed, keys, 60_000, log, () => undefined);
  });

  after(async () => {
    publisher?.close();
    await cache?.close();
    clients?.close();
    store?.close();
    await t?.cleanup();
    await etcd?.stop();
  });

  const inEtcd = async (key: string) => (await store.get(key).string()) !== null;

  test('a started publisher publishes its containers within a second, and a rotated token at once (its period is a minute)', async () => {
    const name = `pub${randomBytes(2).toString('hex')}`;
    t.ctx.store.insert({
      name,
      id: randomUUID(),
      engineId: null,
      layerDir: null,
      shimGroup: null,
      image: 'none',
      memoryBytes: 32 * 2 ** 20,
      nanoCpus: 1e8,
      diskBytes: null,
      pidsLimit: 64,
      volume: '/nonexistent',
      phase: 'ready',
      desired: 'stopped',
      clonedFrom: null,
      createdAt: new Date().toISOString(),
    });
    const first = issueOwnerToken(t.ctx.store, name);
    cache.start();
    publisher = new Publisher(clients, keys, 'h1', cache, t.ctx.store, t.ctx.busy, 60_000, log);
    const t0 = Date.now();
    publisher.start();
    await until('the name and its token are published', async () => (await inEtcd(keys.name(name))) && (await inEtcd(keys.token(hashToken(first)))), { timeoutMs: 5_000, everyMs: 50 });
    const started = Date.now() - t0;
    assert.ok(started < 2_000, `published ${started} ms after start`);

    const t1 = Date.now();
    const rotated = rotateTokens(t.ctx.store, name, OWNER_USER);
    await until('the new token is published and the old one gone', async () => (await inEtcd(keys.token(hashToken(rotated.token)))) && !(await inEtcd(keys.token(hashToken(first)))), {
      timeoutMs: 5_000,
      everyMs: 20,
    });
    const took = Date.now() - t1;
    console.log(`# published ${started} ms after start; a rotation ${took} ms after it`);
    assert.ok(took < 1_000, `a rotation reached etcd after ${took} ms`);
    t.ctx.store.delete(name);
  });
});
