import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { hostname, networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { checkServerIdentity, connect, type PeerCertificate } from 'node:tls';
import Database from 'better-sqlite3';
import { HostCa } from '../containers/tls/ca.js';
import { type Answer, call, servedCertificate } from './support/http.js';
import { startTestDaemon, type TestDaemon } from './support/host.js';

interface Ports {
  http: number;
  https: number;
}

/** A fresh handshake for an SNI name, verified against `ca` the way a browser would (chain and name). */
function verifiedHandshake(port: number, servername: string, ca: string): Promise<{ verified: boolean; why: string; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername, ca, rejectUnauthorized: false }, () => {
      const cert = s.getPeerCertificate() as PeerCertificate;
      const nameError = checkServerIdentity(servername, cert);
      const why = !s.authorized ? String(s.authorizationError) : nameError ? nameError.message : '';
      s.end();
      resolve({ verified: why === '', why, fingerprint: cert.fingerprint256 });
    });
    s.setTimeout(10_000, () => s.destroy(new Error('handshake timed out')));
    s.on('error', reject);
  });
}

const codeOf = (r: Answer) => r.json<{ error?: { code: string } }>().error?.code;

/** A non-loopback IPv4 address of this box (the address a client would type). */
function hostIp(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.2';
}

describe('hostile names: a tenant cannot claim names it does not own (issue 10.4)', () => {
  let d: TestDaemon;
  let ports: Ports;
  let hostCaPem = '';
  let ca: HostCa;
  let caDir = '';
  const tokens = new Map<string, string>();
  const api = (ctr: string, method: string, path: string, body?: unknown) =>
    call({ port: ports.http, host: `api.${ctr}.hoody.localhost`, path: `${path}?token=${tokens.get(ctr)}`, method, body });
  const bundle = async (ctr: string, domain: string, names: string[] = [domain]) => {
    const pem = await ca.issue(names);
    const r = await api(ctr, 'PATCH', '/api/v1/proxy/cert/bundle', { domain, cert: pem.cert, key: pem.key });
    return { r, fingerprint: new X509Certificate(pem.cert).fingerprint256 };
  };

  before(async () => {
    d = await startTestDaemon();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    for (const name of ['a', 'b']) tokens.set(name, (await d.client.call<{ token: string }>('POST', '/v1/containers', { name })).token);
    hostCaPem = await readFile(join(d.stateDir, 'keys', 'ca.crt'), 'utf8');
    caDir = await mkdtemp(join(tmpdir(), 'hoody-names-ca-'));
    ca = await HostCa.loadOrCreate(caDir, 'tenant issuer');
  });
  after(async () => {
    await d?.destroy();
    if (caDir) await rm(caDir, { recursive: true, force: true });
  });

  test("a's bundles for b's service names and hoody's domain are refused; b's service host keeps the host CA's certificate", async () => {
    const before = await verifiedHandshake(ports.https, 'api.b.hoody.localhost', hostCaPem);
    assert.ok(before.verified, before.why);
    const tokenHost = await verifiedHandshake(ports.https, 'api.hoody.localhost', hostCaPem);
    assert.ok(tokenHost.verified, tokenHost.why);
    const attacks: [string, string[]][] = [
      ['*.b.hoody.localhost', ['*.b.hoody.localhost']],
      ['*.hoody.localhost', ['*.hoody.localhost']],
      ['api.b.hoody.localhost', ['api.b.hoody.localhost']],
      ['API.B.HOODY.LOCALHOST.', ['api.b.hoody.localhost']],
      ['hoody.localhost', ['hoody.localhost']],
      ['*.localhost', ['*.localhost']],
    ];
    for (const [domain, names] of attacks) {
      const { r } = await bundle('a', domain, names);
      assert.equal(r.status, 403, `${domain}: ${r.text}`);
      assert.equal(codeOf(r), 'HOODY_NAME_RESERVED', domain);
      for (const [name, was] of [['api.b.hoody.localhost', before], ['api.hoody.localhost', tokenHost]] as const) {
        const now = await verifiedHandshake(ports.https, name, hostCaPem);
        assert.ok(now.verified, `${name} after ${domain}: ${now.why}`);
        assert.equal(now.fingerprint, was.fingerprint, `${name} after ${domain}`);
      }
    }
    assert.deepEqual((await api('a', 'GET', '/api/v1/proxy/cert/bundle')).json(), []);
  });

  test("routes for IP literals, localhost, the host's own names and names under hoody's domain are refused", async () => {
    const reserved = [
      '127.0.0.1',
      '[::1]',
      '::1',
      hostIp(),
      hostname(),
      '127.1',
      '0x7f.0.0.1',
      'localhost',
      'app.localhost',
      'hoody.localhost',
      'x.b.hoody.localhost',
      'deep.x.b.hoody.localhost',
      'API.B.HOODY.LOCALHOST.',
      'api.b.hoody.localhost:443',
    ];
    for (const name of reserved) {
      const r = await api('a', 'PUT', `/api/v1/proxy/routes/${encodeURIComponent(name)}`, { port: 8080 });
      assert.equal(r.status, 403, `${name}: ${r.text}`);
      assert.equal(codeOf(r), 'HOODY_NAME_RESERVED', name);
    }
    assert.deepEqual((await api('a', 'GET', '/api/v1/proxy/routes')).json(), []);
  });

  test("http://<ip>/c/b/… reaches b's API whatever a tried, even with a reserved route left in the database", async () => {
    await api('a', 'PUT', '/api/v1/proxy/routes/127.0.0.1', { port: 8080 });
    await api('a', 'PUT', `/api/v1/proxy/routes/${hostIp()}`, { port: 8080 });
    const reachB = async (host: string) => {
      const r = await call({ port: ports.http, host, path: `/c/b/api/v1/proxy/routes?token=${tokens.get('b')}` });
      assert.equal(r.status, 200, `${host}: ${r.status} ${r.text.slice(0, 200)}`);
      assert.ok(Array.isArray(r.json<unknown>()), host);
    };
    for (const host of ['127.0.0.1', `127.0.0.1:${ports.http}`, `${hostIp()}:${ports.http}`]) await reachB(host);
    // A row an older hoodyd accepted is not served after a restart.
    const db = new Database(join(d.stateDir, 'hoody.db'));
    try {
      db.prepare('INSERT INTO proxy_routes (hostname, container, port, https_redirect, created_at) VALUES (?, ?, ?, 0, ?)').run('127.0.0.1', 'a', 8080, new Date().toISOString());
    } finally {
      db.close();
    }
    await d.restart();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    await reachB(`127.0.0.1:${ports.http}`);
  });

  test("a tenant's wildcard never covers a hostname another container routes", async () => {
    // Refused when it would (409), ...
    assert.equal((await api('b', 'PUT', '/api/v1/proxy/routes/www.example.test', { port: 80 })).status, 200);
    const grab = await bundle('a', '*.example.test');
    assert.equal(grab.r.status, 409, grab.r.text);
    assert.equal(codeOf(grab.r), 'HOODY_CERT_WILDCARD_CONFLICT');
    const own = await bundle('b', 'www.example.test');
    assert.equal(own.r.status, 200, own.r.text);
    assert.equal((await servedCertificate(ports.https, 'www.example.test')).fingerprint256, own.fingerprint);
    // ... and never served for a name routed after it.
    const wild = await bundle('a', '*.other.test');
    assert.equal(wild.r.status, 200, wild.r.text);
    assert.equal((await servedCertificate(ports.https, 'app.other.test')).fingerprint256, wild.fingerprint);
    assert.equal((await api('b', 'PUT', '/api/v1/proxy/routes/www.other.test', { port: 80 })).status, 200);
    for (const sni of ['www.other.test', 'WWW.OTHER.TEST', 'www.other.test.']) {
      assert.notEqual((await servedCertificate(ports.https, sni)).fingerprint256, wild.fingerprint, sni);
    }
    // A hostname routed by b cannot get a certificate from a; b's own certificate is served.
    const steal = await bundle('a', 'www.other.test');
    assert.equal(steal.r.status, 404, steal.r.text);
    const mine = await bundle('b', 'www.other.test');
    assert.equal(mine.r.status, 200, mine.r.text);
    assert.equal((await servedCertificate(ports.https, 'www.other.test')).fingerprint256, mine.fingerprint);
  });

  test('operator grants restrict routes, bundles and ACME orders (CLI and admin API)', async () => {
    const created = await d.hoody(['create', 'c', '--domain', 'granted.test', '--domain', '*.Granted.test.', '--json']);
    assert.equal(created.exitCode, 0, created.stderr);
    tokens.set('c', JSON.parse(created.stdout).token);
    assert.deepEqual((await d.client.call<{ domains: string[] }>('GET', '/v1/containers/c/domains')).domains, ['*.granted.test', 'granted.test']);
    for (const h of ['granted.test', 'app.granted.test', 'deep.app.granted.test']) assert.equal((await api('c', 'PUT', `/api/v1/proxy/routes/${h}`, { port: 80 })).status, 200, h);
    const outside = await api('c', 'PUT', '/api/v1/proxy/routes/elsewhere.test', { port: 80 });
    assert.equal(outside.status, 403, outside.text);
    assert.equal(codeOf(outside), 'HOODY_NAME_NOT_GRANTED');
    const foreign = await bundle('c', 'elsewhere.test');
    assert.equal(codeOf(foreign.r), 'HOODY_NAME_NOT_GRANTED', foreign.r.text);
    const wild = await bundle('c', '*.granted.test');
    assert.equal(wild.r.status, 200, wild.r.text);
    // ACME orders: reserved and ungranted names are refused before any CA is asked.
    const src = `const out: Record<string, string> = {};
for (const d of ['elsewhere.test', 'x.b.hoody.localhost', '127.0.0.1']) {
  try { await acme.order(d); out[d] = 'ordered'; } catch (e) { out[d] = String((e as Error).message); }
}
return out;`;
    const put = await call({ port: ports.http, host: 'api.c.hoody.localhost', path: `/api/v1/scripts/order.ts?token=${tokens.get('c')}`, method: 'PUT', body: src, headers: { 'content-type': 'text/plain' } });
    assert.equal(put.status, 201, put.text);
    const ran = await call({ port: ports.http, host: 'exec.c.hoody.localhost', path: `/scripts/order?token=${tokens.get('c')}` });
    assert.equal(ran.status, 200, ran.text);
    const orders = ran.json<Record<string, string>>();
    assert.match(orders['elsewhere.test']!, /HOODY_NAME_NOT_GRANTED/);
    assert.match(orders['x.b.hoody.localhost']!, /HOODY_NAME_RESERVED/);
    assert.match(orders['127.0.0.1']!, /HOODY_NAME_RESERVED/);
    // Narrowing the grants drops what they no longer cover, at once.
    const narrowed = await d.hoody(['domains', 'c', 'app.granted.test', '--json']);
    assert.equal(narrowed.exitCode, 0, narrowed.stderr);
    const change = JSON.parse(narrowed.stdout) as { domains: string[]; dropped: { routes: string[]; certs: string[] } };
    assert.deepEqual(change.domains, ['app.granted.test']);
    assert.deepEqual(change.dropped, { routes: ['deep.app.granted.test', 'granted.test'], certs: ['*.granted.test'] });
    assert.deepEqual((await api('c', 'GET', '/api/v1/proxy/routes')).json<{ hostname: string }[]>().map((r) => r.hostname), ['app.granted.test']);
    assert.notEqual((await servedCertificate(ports.https, 'x.granted.test')).fingerprint256, wild.fingerprint);
    // No grants: any name that is not reserved (the default).
    await d.client.call('PUT', '/v1/containers/c/domains', { domains: [] });
    assert.equal((await api('c', 'PUT', '/api/v1/proxy/routes/elsewhere.test', { port: 80 })).status, 200);
    const bad = await d.client.call('POST', '/v1/containers', { name: 'nope', domains: ['*.'] }).catch((err: Error & { code?: string }) => err);
    assert.match(String((bad as Error & { code?: string }).code ?? (bad as Error).message), /DOMAIN_GRANT_INVALID/);
    assert.equal((await d.client.call<{ name: string }[]>('GET', '/v1/containers')).some((c) => c.name === 'nope'), false);
  });
});
