import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { HostCa } from '../containers/tls/ca.js';
import { startEtcdCluster, type EtcdCluster } from './support/etcd.js';
import { type FleetTestHost, startFleetHosts } from './support/fleet.js';
import { dockerExec } from './support/host.js';
import { servedCertificate } from './support/http.js';
import { until } from './support/wait.js';

type Host = FleetTestHost;
interface Reply {
  status: number;
  text: string;
  code: string | undefined;
  ms: number;
}
interface FleetHost {
  host: string;
  healthy: boolean;
  record: { hop?: { port: number }; capacity?: { draining: boolean } } | null;
}

const execFileP = promisify(execFile);
const fleetName = `r${randomBytes(3).toString('hex')}`;
const DOMAIN = 'hoody.localhost';

function codeOf(text: string): string | undefined {
  try {
    return (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

/** One HTTP request to a host's public port (HAProxy), from a chosen loopback address (127.0.0.0/8). */
function send(port: number, opts: { host: string; path: string; method?: string; body?: string; headers?: Record<string, string>; from?: string }): Promise<Reply> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { host: opts.host, ...(opts.headers ?? {}) };
    if (opts.body !== undefined) headers['content-length'] = Buffer.byteLength(opts.body);
    const req = httpRequest(
      { host: '127.0.0.1', port, path: opts.path, method: opts.method ?? 'GET', headers, agent: false, localAddress: opts.from ?? '127.0.0.1' },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, code: codeOf(text), ms: Date.now() - t0 }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const httpsPorts = new Map<string, number>();
async function httpsPort(h: Host): Promise<number> {
  if (!httpsPorts.has(h.name)) httpsPorts.set(h.name, (await h.d.client.call<{ listeners: { https: number } }>('GET', '/v1/host')).listeners.https);
  return httpsPorts.get(h.name)!;
}

/** A GET over HTTPS to a host's public port, trusting only `ca` for `servername`. */
function httpsGet(port: number, servername: string, path: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path, servername, ca, agent: false, headers: { host: servername } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve(text));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('fleet routing: any host answers for any container (issue 12.4), dead hosts answer 503 (12.6)', { timeout: 180_000 }, () => {
  let etcd: EtcdCluster;
  const hosts: Host[] = [];
  let token = '';
  let tenantFp = '';
  const a = () => hosts[0]!;
  const b = () => hosts[1]!;
  const c = () => hosts[2]!;

  before(async () => {
    etcd = await startEtcdCluster(3);
    await etcd.healthy();
    // HOODY_TOKEN_FAILURE_LIMIT: three bad tokens from one client are enough to see the limiter count it.
    hosts.push(...(await startFleetHosts(etcd.endpoints, fleetName, { HOODY_FLEET_PUBLISH_MS: '500', HOODY_TOKEN_FAILURE_LIMIT: '3' })));
    token = (await a().d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'web', memory: '32m', host: 'a' })).token;
    // Every host knows web, its token and every host's hop before the cases run.
    for (const h of hosts) {
      await until(`${h.name} knows the fleet`, async () => {
        const list = await h.d.client.call<FleetHost[]>('GET', '/v1/fleet/hosts');
        const p = await h.d.client.call<{ host: string; state: string }>('GET', '/v1/fleet/directory/web').catch(() => null);
        const t = await h.d.client.call<{ name: string }>('POST', '/v1/fleet/resolve', { token }).catch(() => null);
        return list.filter((x) => x.healthy && x.record?.hop).length === 3 && p?.state === 'ready' && t?.name === 'web';
      }, { timeoutMs: 30_000, everyMs: 100 });
    }
  });

  after(async () => {
    await Promise.allSettled(hosts.map((h) => h.d.destroy()));
    await etcd?.stop();
  });

  test('web (on A) is reached through B and C by service host, by /c/ path and by token-only host', async () => {
    for (const h of [b(), c()]) {
      const byHost = await send(h.http, { host: `api.web.${DOMAIN}`, path: `/api/v1/scripts?token=${token}` });
      assert.equal(byHost.status, 200, `${h.name} by host: ${byHost.text}`);
      const byPath = await send(h.http, { host: '127.0.0.1', path: '/c/web/api/v1/scripts', headers: { authorization: `Bearer ${token}` } });
      assert.equal(byPath.status, 200, `${h.name} by path: ${byPath.text}`);
      const byToken = await send(h.http, { host: `api.${DOMAIN}`, path: '/api/v1/scripts', headers: { authorization: `Bearer ${token}` } });
      assert.equal(byToken.status, 200, `${h.name} by token: ${byToken.text}`);
      // The owner still decides: a wrong token is its 401, a container nobody has is this host's 404.
      const wrong = await send(h.http, { host: `api.web.${DOMAIN}`, path: '/api/v1/scripts?token=hdy_wrong', from: '127.0.0.9' });
      assert.equal(wrong.status, 401, wrong.text);
      // A container nobody has: this host answers as a lone host would (web's token is not one of its own).
      const none = await send(h.http, { host: `api.nobody.${DOMAIN}`, path: `/api/v1/scripts?token=${token}`, from: '127.0.0.10' });
      assert.equal(none.status, 401, none.text);
    }
    // Method, path and body go through: a file written through B is read back through C and on A itself.
    const body = `hello ${randomBytes(8).toString('hex')}\n`.repeat(2000);
    const put = await send(b().http, { host: `api.web.${DOMAIN}`, path: `/api/v1/files/hello.txt?token=${token}`, method: 'PUT', body, headers: { 'content-type': 'application/octet-stream' } });
    assert.ok(put.status >= 200 && put.status < 300, put.text);
    for (const h of [c(), a()]) {
      const got = await send(h.http, { host: `api.web.${DOMAIN}`, path: `/api/v1/files/hello.txt?token=${token}` });
      assert.equal(got.status, 200);
      assert.equal(got.text, body, `${h.name} reads what B wrote`);
    }
  });

  test("the client's address reaches the owner through the hop, and a client cannot forge it", async () => {
    const bad = (from: string, headers: Record<string, string> = {}) =>
      send(b().http, { host: '127.0.0.1', path: '/c/web/api/v1/scripts', from, headers: { authorization: 'Bearer hdy_bad-token', ...headers } });
    // A counts bad tokens per client: 127.0.0.3's three failures (forwarded by B) block 127.0.0.3 only.
    for (let i = 0; i < 3; i++) assert.equal((await bad('127.0.0.3')).status, 401);
    const blocked = await bad('127.0.0.3');
    assert.equal(blocked.status, 429, blocked.text);
    assert.equal(blocked.code, 'HOODY_RATE_LIMITED');
    const other = await send(b().http, { host: '127.0.0.1', path: '/c/web/api/v1/scripts', from: '127.0.0.4', headers: { authorization: `Bearer ${token}` } });
    assert.equal(other.status, 200, 'another client through the same host B is not blocked: A saw the client, not B');
    // The blocked client claims another address in the hop's own headers: dropped at B's listener, still blocked.
    const forged = await bad('127.0.0.3', { 'x-hoody-client': '127.0.0.77', 'x-hoody-hop': `v1 a ${Date.now()} n0nce AAAA`, 'x-forwarded-for': '127.0.0.78' });
    assert.equal(forged.status, 429, forged.text);
    // And a forged address in X-Forwarded-For never unblocks anyone either (A trusts nothing a client sends).
    const viaXff = await send(a().http, { host: `api.web.${DOMAIN}`, path: '/api/v1/scripts', from: '127.0.0.3', headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': '127.0.0.4' } });
    assert.equal(viaXff.status, 429, viaXff.text);
  });

  test('the hop itself refuses a tenant: no signature, or a forged one', async () => {
    const list = await a().d.client.call<FleetHost[]>('GET', '/v1/fleet/hosts');
    const hopPort = list.find((h) => h.host === 'a')!.record!.hop!.port;
    const direct = (headers: Record<string, string>, path = '/c/web/api/v1/scripts') =>
      new Promise<Reply>((resolve, reject) => {
        const t0 = Date.now();
        const req = httpsRequest({ host: '127.0.0.1', port: hopPort, path, rejectUnauthorized: false, agent: false, headers: { host: `api.web.${DOMAIN}`, authorization: `Bearer ${token}`, ...headers } }, (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text, code: codeOf(text), ms: Date.now() - t0 }));
        });
        req.on('error', reject);
        req.end();
      });
    const attempts: Record<string, string>[] = [{}, { 'x-hoody-client': '6.6.6.6' }, { 'x-hoody-client': '6.6.6.6', 'x-hoody-hop': `v1 b ${Date.now()} abc ${Buffer.alloc(32).toString('base64url')}` }];
    for (const headers of attempts) {
      const r = await direct(headers);
      assert.equal(r.status, 401, r.text);
      assert.equal(r.code, 'HOODY_FLEET_HOP_UNAUTHORIZED');
      assert.doesNotMatch(r.text, /scripts/, 'nothing of the container leaks');
    }
  });

  test('placement: `hoody create --host` pins, a plain create lands on some host and answers where; no capacity is 507', async () => {
    const pinned = await a().d.hoody(['create', 'pinned', '--host', 'b', '--memory', '32m', '--json']);
    assert.equal(pinned.exitCode, 0, pinned.stderr);
    const p = JSON.parse(pinned.stdout) as { name: string; host: string; token: string };
    assert.equal(p.host, 'b');
    assert.equal((await b().d.client.call<{ name: string }>('GET', '/v1/containers/pinned')).name, 'pinned', 'it lives on B');
    // Made on B from A, and reached through A at once (A learnt it from the directory).
    await until('A reaches pinned', async () => (await send(a().http, { host: `api.pinned.${DOMAIN}`, path: `/api/v1/scripts?token=${p.token}` })).status === 200, { timeoutMs: 10_000, everyMs: 100 });
    const text = await c().d.hoody(['create', 'placed', '--memory', '32m']);
    assert.equal(text.exitCode, 0, text.stderr);
    const where = /on host ([abc])\b/.exec(text.stdout)?.[1];
    assert.ok(where, text.stdout);
    assert.equal((await hosts.find((h) => h.name === where)!.d.client.call<{ name: string }>('GET', '/v1/containers/placed')).name, 'placed');
    const huge = await a().d.client.call('POST', '/v1/containers', { name: 'huge', memory: '64t' }).catch((e: { status: number; code: string }) => e);
    assert.deepEqual([(huge as { status: number }).status, (huge as { code: string }).code], [507, 'HOODY_FLEET_NO_CAPACITY']);
    const nowhere = await a().d.client.call('POST', '/v1/containers', { name: 'nowhere', host: 'zz', memory: '32m' }).catch((e: { status: number; code: string }) => e);
    assert.deepEqual([(nowhere as { status: number }).status, (nowhere as { code: string }).code], [503, 'HOODY_FLEET_HOST_DOWN']);
    // Fan-out: every live host's containers, from any host.
    const ls = await b().d.hoody(['ls', '--fleet', '--json']);
    assert.equal(ls.exitCode, 0, ls.stderr);
    const all = JSON.parse(ls.stdout) as { hosts: { host: string; result: { name: string }[] }[]; partial: boolean };
    assert.equal(all.partial, false);
    const names = Object.fromEntries(all.hosts.map((h) => [h.host, h.result.map((x) => x.name).sort()]));
    assert.ok(names.a?.includes('web') && names.b?.includes('pinned') && names[where]?.includes('placed'), JSON.stringify(names));
    const stats = await c().d.hoody(['stats', '--fleet', '--json']);
    assert.equal(stats.exitCode, 0, stats.stderr);
    const s = JSON.parse(stats.stdout) as { hosts: { host: string; result: { containers: { name: string }[] } }[]; partial: boolean };
    assert.deepEqual(s.hosts.map((h) => h.host), ['a', 'b', 'c']);
    assert.ok(s.hosts.find((h) => h.host === 'a')!.result.containers.some((x) => x.name === 'web'));
    const human = await a().d.hoody(['ls', '--fleet']);
    assert.match(human.stdout, /^b\s+pinned\s/m);
  });

  test('drain: with A draining, ten plain creates (from A, B and C) never land on A; `--host a` still does; --off opens it', async () => {
    const drainedOn = (h: Host, on: boolean) =>
      until(`${h.name} sees a ${on ? 'draining' : 'open'}`, async () => (await h.d.client.call<FleetHost[]>('GET', '/v1/fleet/hosts')).find((x) => x.host === 'a')?.record?.capacity?.draining === on, { timeoutMs: 10_000, everyMs: 100 });
    const on = await a().d.hoody(['fleet', 'drain', '--json']);
    assert.equal(on.exitCode, 0, on.stderr);
    assert.deepEqual(JSON.parse(on.stdout), { host: 'a', draining: true });
    const t0 = Date.now();
    for (const h of hosts) await drainedOn(h, true);
    console.log(`# every cache had A draining ${Date.now() - t0} ms after the drain answered`);
    assert.match((await b().d.hoody(['fleet', 'ls'])).stdout, /^a\s+draining\s/m);
    const landed: string[] = [];
    for (let i = 0; i < 10; i++) {
      const made = await hosts[i % 3]!.d.client.call<{ host: string }>('POST', '/v1/containers', { name: `drained${i}`, memory: '32m' });
      landed.push(made.host);
    }
    console.log(`# ten plain creates with A draining landed on ${landed.join(',')}`);
    assert.ok(!landed.includes('a'), landed.join(','));
    // An explicit pin is the operator's choice: it lands on the draining host.
    const pinned = await b().d.hoody(['create', 'pinned-a', '--host', 'a', '--memory', '32m', '--json']);
    assert.equal(pinned.exitCode, 0, pinned.stderr);
    assert.equal((JSON.parse(pinned.stdout) as { host: string }).host, 'a');
    const off = await a().d.hoody(['fleet', 'drain', '--off']);
    assert.equal(off.exitCode, 0, off.stderr);
    assert.match(off.stdout, /host a takes new containers again/);
    for (const h of hosts) await drainedOn(h, false);
  });

  test('placement: a chosen host that refuses hands the create over to the next candidate', async () => {
    // B and C drain; a host `zz` registers with far more room than A but no hop yet (as a host still starting would):
    // placement ranks zz first, its refusal (503 HOODY_FLEET_HOST_DOWN) hands the create over to A.
    for (const h of [b(), c()]) assert.equal((await h.d.hoody(['fleet', 'drain'])).exitCode, 0);
    const store = new Etcd3({ hosts: etcd.endpoints });
    const zz = `hoody/${fleetName}/hosts/zz`;
    try {
      const now = new Date().toISOString();
      const capacity = { poolFreeBytes: 2 ** 50, memoryAvailableBytes: 2 ** 50, ksmSavedBytes: 0, containers: 0, draining: false };
      await store.put(zz).value(JSON.stringify({ host: 'zz', addresses: ['127.0.0.1'], ports: { http: 1, https: 1 }, capacity, version: 'test', startedAt: now, updatedAt: now }));
      await until('b sees zz and the drains', async () => {
        const list = await b().d.client.call<FleetHost[]>('GET', '/v1/fleet/hosts');
        return list.some((x) => x.host === 'zz') && list.filter((x) => x.record?.capacity?.draining).length === 2;
      }, { timeoutMs: 10_000, everyMs: 100 });
      const made = await b().d.client.call<{ host: string }>('POST', '/v1/containers', { name: 'handed', memory: '32m' });
      assert.equal(made.host, 'a');
      const log = await readFile(join(b().d.stateDir, 'hoodyd.log'), 'utf8');
      assert.match(log, /"host":"zz".*the host refused; trying the next one/);
    } finally {
      await store.delete().key(zz);
      store.close();
      for (const h of [b(), c()]) await h.d.hoody(['fleet', 'drain', '--off']);
    }
  });

  test("a tenant's routed hostname on A is reached through B and C (their HAProxy hands unknown names to hoodyd)", async () => {
    const web = await a().d.client.call<{ engineId: string }>('GET', '/v1/containers/web');
    await dockerExec(web.engineId, ['sh', '-c', 'mkdir -p /files/www && echo hello-from-web > /files/www/index.html']);
    await dockerExec(web.engineId, ['busybox', 'httpd', '-p', '8080', '-h', '/files/www']);
    const route = await send(a().http, { host: `api.web.${DOMAIN}`, path: `/api/v1/proxy/routes/app.web.test?token=${token}`, method: 'PUT', body: '{"port":8080}', headers: { 'content-type': 'application/json' } });
    assert.equal(route.status, 200, route.text);
    const t0 = Date.now();
    for (const h of hosts) {
      const r = await until(`${h.name} serves app.web.test`, async () => {
        const x = await send(h.http, { host: 'app.web.test', path: '/index.html' });
        return x.status === 200 && x;
      }, { timeoutMs: 15_000, everyMs: 100 });
      assert.equal(r.text, 'hello-from-web\n');
    }
    console.log(`# a new route answered on every host within ${Date.now() - t0} ms`);
    // A name nobody routes is still B's own 404.
    assert.equal((await send(b().http, { host: 'nobody.web.test', path: '/' })).status, 404);
    // Routed names are the fleet's: a tenant on B cannot take app.web.test, which A routes.
    const rival = await b().d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'rival', memory: '32m', host: 'b' });
    const taken = await send(b().http, { host: `api.rival.${DOMAIN}`, path: `/api/v1/proxy/routes/app.web.test?token=${rival.token}`, method: 'PUT', body: '{"port":8080}', headers: { 'content-type': 'application/json' } });
    assert.equal(taken.status, 409, taken.text);
    assert.equal(taken.code, 'HOODY_PROXY_HOSTNAME_TAKEN');
    assert.match(taken.text, /on host a\b/);
    assert.equal((await send(c().http, { host: 'app.web.test', path: '/index.html' })).text, 'hello-from-web\n', 'still routed to web on A');

    // web's own certificate for app.web.test (on A) is served by B and C too, fetched over the hop; HTTPS works there.
    const ca = await HostCa.loadOrCreate(join(a().d.stateDir, 'tenant-ca'));
    const pem = await ca.issue(['app.web.test']);
    tenantFp = new X509Certificate(pem.cert).fingerprint256;
    const bundle = await send(a().http, { host: `api.web.${DOMAIN}`, path: `/api/v1/proxy/cert/bundle?token=${token}`, method: 'PATCH', body: JSON.stringify({ domain: 'app.web.test', cert: pem.cert, key: pem.key }), headers: { 'content-type': 'application/json' } });
    assert.equal(bundle.status, 200, bundle.text);
    const t1 = Date.now();
    for (const h of [b(), c()]) {
      await until(`${h.name} serves web's certificate`, async () => (await servedCertificate(await httpsPort(h), 'app.web.test')).fingerprint256 === tenantFp, { timeoutMs: 15_000, everyMs: 100 });
      const got = await httpsGet(await httpsPort(h), 'app.web.test', '/index.html', ca.certPem);
      assert.equal(got, 'hello-from-web\n', `${h.name} over HTTPS`);
    }
    console.log(`# web's certificate was served by B and C ${Date.now() - t1} ms after its PATCH on A`);
    // A tenant on B can neither put a certificate for web's name nor a wildcard over it (as on one host).
    const stolen = await ca.issue(['app.web.test']);
    const steal = await send(b().http, { host: `api.rival.${DOMAIN}`, path: `/api/v1/proxy/cert/bundle?token=${rival.token}`, method: 'PATCH', body: JSON.stringify({ domain: 'app.web.test', cert: stolen.cert, key: stolen.key }), headers: { 'content-type': 'application/json' } });
    assert.equal(steal.code, 'HOODY_CERT_UNKNOWN', steal.text);
    const wild = await ca.issue(['*.web.test']);
    const over = await send(b().http, { host: `api.rival.${DOMAIN}`, path: `/api/v1/proxy/cert/bundle?token=${rival.token}`, method: 'PATCH', body: JSON.stringify({ domain: '*.web.test', cert: wild.cert, key: wild.key }), headers: { 'content-type': 'application/json' } });
    assert.equal(over.code, 'HOODY_CERT_WILDCARD_CONFLICT', over.text);
    assert.equal((await servedCertificate(await httpsPort(c()), 'app.web.test')).fingerprint256, tenantFp);
  });

  test("an upgrade (a websocket's handshake, then both directions) to a routed name on A works through B", async () => {
    const web = await a().d.client.call<{ engineId: string }>('GET', '/v1/containers/web');
    // A minimal upgrade server: answers 101 to any request, then echoes every byte back.
    const script = "#!/bin/sh\nwhile IFS= read -r l; do l=$(printf '%s' \"$l\" | tr -d '\\r'); [ -z \"$l\" ] && break; done\nprintf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: echo\\r\\nConnection: Upgrade\\r\\n\\r\\n'\nexec cat\n";
    const put = await send(a().http, { host: `api.web.${DOMAIN}`, path: `/api/v1/files/up.sh?token=${token}`, method: 'PUT', body: script, headers: { 'content-type': 'application/octet-stream' } });
    assert.ok(put.status < 300, put.text);
    const started = await dockerExec(web.engineId, ['sh', '-c', 'chmod +x /files/up.sh && (nc -ll -p 8081 -e /files/up.sh >/dev/null 2>&1 &)']);
    assert.equal(started.exitCode, 0, started.output);
    const route = await send(a().http, { host: `api.web.${DOMAIN}`, path: `/api/v1/proxy/routes/echo.web.test?token=${token}`, method: 'PUT', body: '{"port":8081}', headers: { 'content-type': 'application/json' } });
    assert.equal(route.status, 200, route.text);
    const upgrade = (port: number) =>
      new Promise<string>((resolve, reject) => {
        const sock = connect({ host: '127.0.0.1', port });
        let got = '';
        let sent = false;
        const timer = setTimeout(() => {
          sock.destroy();
          resolve(got);
        }, 3000);
        sock.on('error', reject);
        sock.on('data', (d: Buffer) => {
          got += d.toString('latin1');
          if (!sent && got.includes('\r\n\r\n') && got.startsWith('HTTP/1.1 101')) {
            sent = true;
            sock.write('ping-through-the-hop\n');
          }
          if (got.includes('ping-through-the-hop\n')) {
            clearTimeout(timer);
            sock.destroy();
            resolve(got);
          }
        });
        sock.write('GET /ws HTTP/1.1\r\nHost: echo.web.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
      });
    const through = await until('B passes the upgrade through to A', async () => {
      const got = await upgrade(b().http);
      return got.includes('ping-through-the-hop\n') && got;
    }, { timeoutMs: 15_000, everyMs: 200 });
    assert.match(through, /^HTTP\/1\.1 101/);
  });

  test('hoody move: refused while running, with snapshots, to itself; a disk that refuses undoes it all; then web goes from A to B whole, asked of C, and reads through every host never fail', async () => {
    const moveOn = (h: Host, host: string) => h.d.client.call<{ name: string; from: string; to: string; bytes: number; ms: number }>('POST', '/v1/containers/web/move', { host });
    const refused = async (p: Promise<unknown>, code: string, re: RegExp) =>
      assert.rejects(p, (err: { code?: string; message?: string }) => {
        assert.equal(err.code, code, String(err.message));
        assert.match(String(err.message), re);
        return true;
      });
    // Running: refused (asked of C, answered by A, the owner).
    await refused(moveOn(c(), 'b'), 'HOODY_CONTAINER_RUNNING', /hoody stop web/);
    const cron = await send(a().http, { host: `cron.web.${DOMAIN}`, path: `/users/root/entries?token=${token}`, method: 'POST', body: '{"schedule":"@daily","command":"echo moved-along"}', headers: { 'content-type': 'application/json' } });
    assert.equal(cron.status, 201, cron.text);
    assert.equal((await a().d.client.call<{ state: string }>('POST', '/v1/containers/web/stop')).state, 'stopped');
    await refused(moveOn(a(), 'a'), 'HOODY_MOVE_REFUSED', /on host a already/);
    await refused(moveOn(a(), 'nowhere'), 'HOODY_MOVE_REFUSED', /not a live host/);
    // A snapshot does not move: refused until it is deleted.
    await a().d.client.call('POST', '/v1/containers/web/snapshots', { name: 'keep' });
    await refused(moveOn(a(), 'b'), 'HOODY_MOVE_REFUSED', /snapshot.*keep/);
    await a().d.client.call('DELETE', '/v1/containers/web/snapshots/keep');
    const hello = (await send(a().http, { host: `api.web.${DOMAIN}`, path: `/api/v1/files/hello.txt?token=${token}` })).text;
    assert.ok(hello.length > 1000);
    // B's disk refuses the stream (its staging directory made immutable): every step is undone, web stays on A.
    const bStaging = join(b().d.stateDir, 'pool', 'moving');
    await mkdir(bStaging, { recursive: true });
    await execFileP('chattr', ['+i', bStaging]);
    try {
      await refused(moveOn(c(), 'b'), 'HOODY_STORAGE_FAILED', /host b: [\s\S]*btrfs receive[\s\S]*Operation not permitted/);
    } finally {
      await execFileP('chattr', ['-i', bStaging]);
    }
    assert.equal((await a().d.client.call<{ state: string }>('GET', '/v1/containers/web')).state, 'stopped');
    await refused(b().d.client.call('GET', '/v1/containers/web'), 'HOODY_CONTAINER_UNKNOWN', /web/);
    assert.deepEqual(await readdir(join(a().d.stateDir, 'pool', 'moving')), [], "A's staged snapshot is gone");
    for (const h of hosts) assert.equal((await h.d.client.call<{ host: string }>('GET', '/v1/fleet/directory/web')).host, 'a');
    assert.equal((await send(b().http, { host: `api.web.${DOMAIN}`, path: `/api/v1/files/hello.txt?token=${token}` })).text, hello);

    // Clients keep reading a file through every host, by service host, by path and by token alone.
    const seen: { host: string; how: string; at: number; status: number; ok: boolean; text: string }[] = [];
    let stop = false;
    const loop = async (h: Host) => {
      const ways: [string, { host: string; path: string; headers?: Record<string, string> }][] = [
        ['host', { host: `api.web.${DOMAIN}`, path: `/api/v1/files/hello.txt?token=${token}` }],
        ['path', { host: '127.0.0.1', path: '/c/web/api/v1/files/hello.txt', headers: { authorization: `Bearer ${token}` } }],
        ['token', { host: `api.${DOMAIN}`, path: '/api/v1/files/hello.txt', headers: { authorization: `Bearer ${token}` } }],
      ];
      for (let i = 0; !stop; i++) {
        const [how, req] = ways[i % ways.length]!;
        const at = Date.now();
        const r = await send(h.http, req).catch((err: Error) => ({ status: 0, text: err.message }));
        seen.push({ host: h.name, how, at, status: r.status, ok: r.status === 200 && r.text === hello, text: r.text.slice(0, 200) });
      }
    };
    const loops = hosts.map(loop);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const moved = await moveOn(c(), 'b');
    const answered = Date.now();
    assert.deepEqual([moved.name, moved.from, moved.to], ['web', 'a', 'b']);
    assert.ok(moved.bytes > hello.length, `${moved.bytes} bytes sent`);
    await new Promise((r) => setTimeout(r, 1500));
    stop = true;
    await Promise.all(loops);
    const during = seen.filter((s) => s.at >= t0 && s.at < answered);
    const after = seen.filter((s) => s.at >= answered);
    const failed = seen.filter((s) => !s.ok);
    console.log(`# move of web a -> b: ${moved.bytes} bytes in ${moved.ms} ms (asked of c: ${answered - t0} ms); ${seen.length} reads, ${during.length} during the move, ${after.length} after, ${failed.length} failed`);
    assert.ok(during.length > 0 && after.length > 30, 'reads ran during and after the move');
    assert.deepEqual(failed, [], 'no read failed');

    // B has it (stopped, its rows with it); A has nothing left of it; every host's directory says b.
    assert.equal((await b().d.client.call<{ state: string }>('GET', '/v1/containers/web')).state, 'stopped');
    await refused(a().d.client.call('GET', '/v1/containers/web'), 'HOODY_CONTAINER_UNKNOWN', /web/);
    assert.equal(existsSync(join(a().d.stateDir, 'pool', 'containers', 'web')), false, "A's volume is gone");
    for (const h of hosts) {
      await until(`${h.name} places web on b`, async () => (await h.d.client.call<{ host: string }>('GET', '/v1/fleet/directory/web')).host === 'b', { timeoutMs: 10_000, everyMs: 100 });
    }
    const entries = await send(c().http, { host: `cron.web.${DOMAIN}`, path: `/users/root/entries?token=${token}` });
    assert.equal(entries.status, 200, entries.text);
    assert.match(entries.text, /moved-along/);
    // Started on B, its routed name answers again on every host (the route moved with it).
    const started = await b().d.client.call<{ state: string; engineId: string }>('POST', '/v1/containers/web/start');
    assert.equal(started.state, 'running');
    await dockerExec(started.engineId, ['busybox', 'httpd', '-p', '8080', '-h', '/files/www']);
    for (const h of hosts) {
      const r = await until(`${h.name} serves app.web.test from b`, async () => {
        const x = await send(h.http, { host: 'app.web.test', path: '/index.html' });
        return x.status === 200 && x;
      }, { timeoutMs: 15_000, everyMs: 100 });
      assert.equal(r.text, 'hello-from-web\n');
    }
    // Its certificate moved with it: A, which held it, now fetches it from B and still serves it.
    await until("A serves web's certificate from B", async () => (await servedCertificate(await httpsPort(a()), 'app.web.test')).fingerprint256 === tenantFp, { timeoutMs: 15_000, everyMs: 100 });
  });

  test('kill -9 of C: its container answers 503 HOODY_FLEET_HOST_DOWN on A and B, fast, before and after its lease expires', async () => {
    const made = await c().d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'doomed', memory: '32m', host: 'c' });
    // By name and by the token alone: the token's hash is published by C's reconcile, which may come after its name.
    for (const h of [a(), b()]) {
      await until(`${h.name} reaches doomed`, async () => (await send(h.http, { host: `api.doomed.${DOMAIN}`, path: `/api/v1/scripts?token=${made.token}` })).status === 200, { timeoutMs: 15_000, everyMs: 100 });
      await until(`${h.name} resolves doomed's token`, async () => (await send(h.http, { host: `api.${DOMAIN}`, path: '/api/v1/scripts', headers: { authorization: `Bearer ${made.token}` } })).status === 200, { timeoutMs: 15_000, everyMs: 100 });
    }
    await c().d.stop('SIGKILL');
    // Before the lease expires: the connect fails (refused) and the answer is a quick 503 naming the host.
    const early = await send(a().http, { host: `api.doomed.${DOMAIN}`, path: `/api/v1/scripts?token=${made.token}` });
    assert.equal(early.status, 503, early.text);
    assert.equal(early.code, 'HOODY_FLEET_HOST_DOWN');
    assert.match(early.text, /host c\b/);
    assert.ok(early.ms < 3000, `${early.ms} ms`);
    // Fan-out while C is still listed: the others answer, C is reported, the answer is marked partial.
    const partial = await a().d.client.call<{ hosts: { host: string }[]; partial: boolean; failed: { host: string; code: string }[] }>('GET', '/v1/fleet/containers?timeout_ms=1000');
    assert.equal(partial.partial, true, JSON.stringify(partial));
    assert.deepEqual(partial.failed.map((f) => [f.host, f.code]), [['c', 'HOODY_FLEET_HOST_DOWN']]);
    assert.deepEqual(partial.hosts.map((h) => h.host), ['a', 'b']);
    const t0 = Date.now();
    await until('a sees c down', async () => !(await a().d.client.call<FleetHost[]>('GET', '/v1/fleet/hosts')).find((h) => h.host === 'c')?.healthy, { timeoutMs: 20_000, everyMs: 200 });
    console.log(`# c's lease expired ${Date.now() - t0} ms after its kill -9`);
    for (const h of [a(), b()]) {
      for (const r of [
        await send(h.http, { host: `api.doomed.${DOMAIN}`, path: `/api/v1/scripts?token=${made.token}` }),
        await send(h.http, { host: '127.0.0.1', path: '/c/doomed/api/v1/scripts', headers: { authorization: `Bearer ${made.token}` } }),
        await send(h.http, { host: `api.${DOMAIN}`, path: '/api/v1/scripts', headers: { authorization: `Bearer ${made.token}` } }),
      ]) {
        assert.equal(r.status, 503, r.text);
        assert.equal(r.code, 'HOODY_FLEET_HOST_DOWN');
        assert.match(r.text, /host c\b.*lease expired/);
        assert.ok(r.ms < 1000, `${r.ms} ms`);
      }
    }
    // A's own container is not affected.
    assert.equal((await send(b().http, { host: `api.web.${DOMAIN}`, path: `/api/v1/scripts?token=${token}` })).status, 200);
  });
});
