import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { connect } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HostCa } from '../containers/tls/ca.js';
import { call, servedCertificate } from './support/http.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';

interface Ports {
  http: number;
  https: number;
}

describe('proxy namespace: routes, live certificate swaps, isolation', () => {
  let d: TestDaemon;
  let ports: Ports;
  let tokA = '';
  let tokB = '';
  let ca: HostCa;
  let caDir = '';
  const api = (token: string, method: string, path: string, body?: unknown) =>
    call({ port: ports.http, host: 'api.a.hoody.localhost', path: `${path}?token=${token}`, method, body });
  const apiB = (token: string, method: string, path: string, body?: unknown) =>
    call({ port: ports.http, host: 'api.b.hoody.localhost', path: `${path}?token=${token}`, method, body });

  before(async () => {
    d = await startTestDaemon();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    tokA = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'a' })).token;
    tokB = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'b' })).token;
    const a = await d.client.call<{ engineId: string }>('GET', '/v1/containers/a');
    await dockerExec(a.engineId, ['sh', '-c', 'mkdir -p /files/www && echo hello-from-a > /files/www/index.html']);
    await dockerExec(a.engineId, ['busybox', 'httpd', '-p', '8080', '-h', '/files/www']);
    caDir = await mkdtemp(join(tmpdir(), 'hoody-test-ca-'));
    ca = await HostCa.loadOrCreate(caDir, 'test issuer');
  });
  after(async () => {
    await d.destroy();
    await rm(caDir, { recursive: true, force: true });
  });

  test('PUT a route: HTTP and HTTPS for the hostname reach the container port, with X-Forwarded-*', async () => {
    const put = await api(tokA, 'PUT', '/api/v1/proxy/routes/app.a.test', { port: 8080 });
    assert.equal(put.status, 200, put.text);
    assert.deepEqual((await api(tokA, 'GET', '/api/v1/proxy/routes')).json<unknown[]>().length, 1);
    const viaHttp = await call({ port: ports.http, host: 'app.a.test', path: '/index.html' });
    assert.equal(viaHttp.status, 200);
    assert.equal(viaHttp.text.trim(), 'hello-from-a');
    const viaHttps = await call({ port: ports.https, host: 'app.a.test', path: '/index.html', tls: { insecure: true } });
    assert.equal(viaHttps.text.trim(), 'hello-from-a');
    // What the container's app is told: a tiny server in a that answers with the request head it got.
    const a = await d.client.call<{ engineId: string }>('GET', '/v1/containers/a');
    const echo = `#!/bin/sh\nCR=$(printf '\\r')\nhead=''\nwhile read -r l; do l=\${l%"$CR"}; [ -z "$l" ] && break; head="$head$l\n"; done\nprintf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n%s' "\${#head}" "$head"\n`;
    await dockerExec(a.engineId, ['sh', '-c', `printf '%s' "$0" > /files/echo.sh && chmod +x /files/echo.sh`, echo]);
    await dockerExec(a.engineId, ['sh', '-c', 'nc -ll -p 9001 -e /files/echo.sh >/dev/null 2>&1 &']);
    assert.equal((await api(tokA, 'PUT', '/api/v1/proxy/routes/echo.a.test', { port: 9001 })).status, 200);
    const seen = async (secure: boolean): Promise<Record<string, string>> => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const r = await call({ port: secure ? ports.https : ports.http, host: 'echo.a.test', path: '/who', tls: secure ? { insecure: true } : undefined });
        if (r.status === 200) {
          const headers: Record<string, string> = {};
          for (const line of r.text.split('\n').slice(1)) {
            const i = line.indexOf(':');
            if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
          }
          assert.match(r.text, /^GET \/who HTTP\/1\.1/);
          return headers;
        }
        if (Date.now() > deadline) throw new Error(`the echo server never answered: ${r.status} ${r.text}`);
        await new Promise((res) => setTimeout(res, 250)); // nc may not be listening yet
      }
    };
    const plain = await seen(false);
    assert.match(plain['x-forwarded-for'] ?? '', /^(::ffff:)?127\.0\.0\.1$/, JSON.stringify(plain));
    assert.equal(plain['x-forwarded-proto'], 'http');
    assert.equal(plain['x-forwarded-host'], 'echo.a.test');
    const secure = await seen(true);
    assert.match(secure['x-forwarded-for'] ?? '', /^(::ffff:)?127\.0\.0\.1$/, JSON.stringify(secure));
    assert.equal(secure['x-forwarded-proto'], 'https');
    assert.equal(secure['x-forwarded-host'], 'echo.a.test');
    assert.equal((await api(tokA, 'DELETE', '/api/v1/proxy/routes/echo.a.test')).status, 200);
  });

  test('a hostname routed by a cannot be claimed by b (409), and b cannot delete it', async () => {
    const r = await apiB(tokB, 'PUT', '/api/v1/proxy/routes/app.a.test', { port: 80 });
    assert.equal(r.status, 409);
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_PROXY_HOSTNAME_TAKEN');
    assert.equal((await apiB(tokB, 'DELETE', '/api/v1/proxy/routes/app.a.test')).status, 404);
    // Neither attempt changed anything: a's route still forwards to a, b has no route.
    assert.deepEqual((await api(tokA, 'GET', '/api/v1/proxy/routes')).json<{ hostname: string }[]>().map((x) => x.hostname), ['app.a.test']);
    assert.deepEqual((await apiB(tokB, 'GET', '/api/v1/proxy/routes')).json<unknown[]>(), []);
    assert.equal((await call({ port: ports.http, host: 'app.a.test', path: '/index.html' })).text.trim(), 'hello-from-a');
    // Service hostnames and single labels are reserved (403); a name that is not a hostname at all is a 400.
    for (const [bad, status, code] of [['cron.a.hoody.localhost', 403, 'HOODY_NAME_RESERVED'], ['x', 403, 'HOODY_NAME_RESERVED'], ['not a host', 400, 'HOODY_PROXY_HOSTNAME_INVALID']] as const) {
      const res = await api(tokA, 'PUT', `/api/v1/proxy/routes/${encodeURIComponent(bad)}`, { port: 80 });
      assert.equal(res.status, status, bad);
      assert.equal(res.json<{ error: { code: string } }>().error.code, code, bad);
    }
  });

  test('PATCH a bundle: 200 with the fingerprint only once a fresh handshake serves it; GET lists it', async () => {
    const pem = await ca.issue(['app.a.test']);
    const r = await api(tokA, 'PATCH', '/api/v1/proxy/cert/bundle', { domain: 'app.a.test', cert: pem.cert, key: pem.key, chain: ca.certPem });
    assert.equal(r.status, 200, r.text);
    const fp = new X509Certificate(pem.cert).fingerprint256;
    assert.equal(r.json<{ fingerprint: string }>().fingerprint, fp);
    assert.equal((await servedCertificate(ports.https, 'app.a.test')).fingerprint256, fp);
    const list = (await api(tokA, 'GET', '/api/v1/proxy/cert/bundle')).json<{ domain: string; fingerprint: string; expires: string }[]>();
    assert.deepEqual(list.map((c) => [c.domain, c.fingerprint]), [['app.a.test', fp]]);
    // The proxied app verifies against the issuing CA over HTTPS.
    const viaHttps = await call({ port: ports.https, host: 'app.a.test', path: '/index.html', tls: { ca: ca.certPem } });
    assert.equal(viaHttps.text.trim(), 'hello-from-a');
  });

  test("the seed's {d, cert} shape (key and chain inside cert) is accepted", async () => {
    const pem = await ca.issue(['app.a.test']);
    const r = await api(tokA, 'PATCH', '/api/v1/proxy/cert/bundle', { d: 'app.a.test', cert: `${pem.cert}${ca.certPem}${pem.key}` });
    assert.equal(r.status, 200, r.text);
    assert.equal((await servedCertificate(ports.https, 'app.a.test')).fingerprint256, new X509Certificate(pem.cert).fingerprint256);
  });

  test('bad bundles are each a 400 with their own code and the previous certificate keeps serving', async () => {
    const before = (await servedCertificate(ports.https, 'app.a.test')).fingerprint256;
    const good = await ca.issue(['app.a.test']);
    const other = await ca.issue(['app.a.test']);
    const expired = await ca.issue(['app.a.test'], -0.5);
    const wrongName = await ca.issue(['elsewhere.test']);
    const cases: [string, Record<string, string>][] = [
      ['HOODY_CERT_KEY_MISMATCH', { domain: 'app.a.test', cert: good.cert, key: other.key }],
      ['HOODY_CERT_EXPIRED', { domain: 'app.a.test', cert: expired.cert, key: expired.key }],
      ['HOODY_CERT_NAME_MISMATCH', { domain: 'app.a.test', cert: wrongName.cert, key: wrongName.key }],
      ['HOODY_CERT_UNPARSABLE', { domain: 'app.a.test', cert: '-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----', key: good.key }],
      ['HOODY_CERT_UNPARSABLE', { domain: 'app.a.test', cert: 'garbage', key: 'garbage' }],
    ];
    for (const [code, body] of cases) {
      const r = await api(tokA, 'PATCH', '/api/v1/proxy/cert/bundle', body);
      assert.equal(r.status, 400, `${code}: ${r.text}`);
      assert.equal(r.json<{ error: { code: string } }>().error.code, code);
      assert.equal((await servedCertificate(ports.https, 'app.a.test')).fingerprint256, before);
    }
  });

  test("b's token cannot PATCH a's bundle (404), and a's certificate stays what it was", async () => {
    const before = (await servedCertificate(ports.https, 'app.a.test')).fingerprint256;
    const listed = (await api(tokA, 'GET', '/api/v1/proxy/cert/bundle')).json<unknown[]>();
    const pem = await ca.issue(['app.a.test']);
    const r = await apiB(tokB, 'PATCH', '/api/v1/proxy/cert/bundle', { domain: 'app.a.test', cert: pem.cert, key: pem.key });
    assert.equal(r.status, 404);
    const viaA = await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/proxy/cert/bundle?token=${tokB}`, method: 'PATCH', body: { domain: 'app.a.test', cert: pem.cert, key: pem.key } });
    assert.equal(viaA.status, 404);
    assert.equal((await servedCertificate(ports.https, 'app.a.test')).fingerprint256, before, 'a fresh handshake still serves a\'s certificate');
    assert.notEqual(before, new X509Certificate(pem.cert).fingerprint256);
    assert.deepEqual((await api(tokA, 'GET', '/api/v1/proxy/cert/bundle')).json<unknown[]>(), listed);
    assert.deepEqual((await apiB(tokB, 'GET', '/api/v1/proxy/cert/bundle')).json<unknown[]>(), []);
  });

  test('during bundle swaps under steady HTTPS load no request fails, and every handshake serves the old or the new certificate', async (t) => {
    // Fingerprints in the order they were PATCHed; patched[i] answered 200 at doneAt[i].
    const patched = [(await servedCertificate(ports.https, 'app.a.test')).fingerprint256];
    const doneAt = [0];
    const handshakes: { startedAt: number; fingerprint: string }[] = [];
    // No TLS session resumption: every new connection is a full handshake that shows the served certificate.
    const agent = new Agent({ keepAlive: true, maxSockets: 16, ca: ca.certPem, maxCachedSessions: 0 });
    let ok = 0;
    let failed = 0;
    const errors = new Set<string>();
    let running = true;
    const one = () =>
      new Promise<void>((resolve) => {
        const startedAt = Date.now();
        const req = request({ host: '127.0.0.1', port: ports.https, servername: 'app.a.test', path: '/index.html', headers: { host: 'app.a.test' }, agent: Math.random() < 0.3 ? false : agent, ca: ca.certPem }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) ok++;
            else {
              failed++;
              errors.add(String(res.statusCode));
            }
            resolve();
          });
        });
        // A new connection: note which certificate its handshake served (a reused one was noted when made).
        req.on('socket', (socket) => {
          const tls = socket as TLSSocket;
          if (tls.connecting)
            tls.once('secureConnect', () => {
              if (tls.isSessionReused()) errors.add('a TLS session was resumed');
              handshakes.push({ startedAt, fingerprint: tls.getPeerCertificate().fingerprint256 });
            });
        });
        req.on('error', (e) => {
          failed++;
          errors.add(e.message);
          resolve();
        });
        req.end();
      });
    const workers = Array.from({ length: 8 }, async () => {
      while (running) await one();
    });
    const started = Date.now();
    try {
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setTimeout(r, 300));
        const pem = await ca.issue(['app.a.test']);
        const r = await api(tokA, 'PATCH', '/api/v1/proxy/cert/bundle', { domain: 'app.a.test', cert: pem.cert, key: pem.key });
        assert.equal(r.status, 200, r.text);
        doneAt.push(Date.now());
        patched.push(new X509Certificate(pem.cert).fingerprint256);
      }
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      running = false;
      await Promise.all(workers);
      agent.destroy();
    }
    t.diagnostic(`swap under load: ${ok} ok, ${failed} failed, ${handshakes.length} handshakes, ${Math.round(ok / ((Date.now() - started) / 1000))} req/s (a figure, not a test)`);
    assert.ok(ok > 0 && handshakes.length > 5, `load ran: ${ok} requests, ${handshakes.length} handshakes`);
    for (const h of handshakes) {
      const served = patched.indexOf(h.fingerprint);
      assert.ok(served >= 0, `a handshake served a certificate never PATCHed: ${h.fingerprint}`);
      // A handshake begun after PATCH i answered 200 serves certificate i or a newer one, never an older.
      const newestDone = doneAt.filter((at) => at <= h.startedAt).length - 1;
      assert.ok(served >= newestDone, `a handshake begun after PATCH ${newestDone} answered served certificate ${served}`);
    }
    // Handshakes begun after the last 200 served the last certificate.
    assert.ok(handshakes.some((h) => h.startedAt >= doneAt.at(-1)! && h.fingerprint === patched.at(-1)), 'the last certificate served after its 200');
    assert.equal(failed, 0, [...errors].join(', '));
    assert.deepEqual([...errors], []);
  });

  test('after a daemon restart the same certificate is served and routes still forward', async () => {
    const before = (await servedCertificate(ports.https, 'app.a.test')).fingerprint256;
    await d.restart('SIGKILL');
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    assert.equal((await servedCertificate(ports.https, 'app.a.test')).fingerprint256, before);
    assert.equal((await call({ port: ports.http, host: 'app.a.test', path: '/index.html' })).text.trim(), 'hello-from-a');
  });

  test('https_redirect: plain HTTP for the hostname is redirected to HTTPS, HTTPS is served', async () => {
    assert.equal((await api(tokA, 'PUT', '/api/v1/proxy/routes/secure.a.test', { port: 8080, https_redirect: true })).status, 200);
    const r = await call({ port: ports.http, host: 'secure.a.test', path: '/index.html?x=1' });
    assert.equal(r.status, 308);
    assert.equal(r.headers.location, 'https://secure.a.test/index.html?x=1');
    const s = await call({ port: ports.https, host: 'secure.a.test', path: '/index.html', tls: { insecure: true } });
    assert.equal(s.text.trim(), 'hello-from-a');
    assert.equal((await api(tokA, 'DELETE', '/api/v1/proxy/routes/secure.a.test')).status, 200);
  });

  test('websocket upgrades are forwarded both ways (101, then raw bytes echoed)', async () => {
    const a = await d.client.call<{ engineId: string }>('GET', '/v1/containers/a');
    // A tiny upgrade endpoint: read the request head, answer 101 (with the accept a real server computes from the
    // key: RFC 6455's own example; HAProxy checks it), then echo whatever comes.
    const script = `#!/bin/sh\nCR=$(printf '\\r')\nwhile read -r l; do [ "$l" = "$CR" ] && break; [ -z "$l" ] && break; done\nprintf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\\r\\n\\r\\n'\nexec cat\n`;
    await dockerExec(a.engineId, ['sh', '-c', `printf '%s' "$0" > /files/ws.sh && chmod +x /files/ws.sh`, script]);
    await dockerExec(a.engineId, ['sh', '-c', 'nc -ll -p 9000 -e /files/ws.sh >/dev/null 2>&1 &']);
    assert.equal((await api(tokA, 'PUT', '/api/v1/proxy/routes/ws.a.test', { port: 9000 })).status, 200);
    const reply = await new Promise<string>((resolve, reject) => {
      const s = connect(ports.http, '127.0.0.1', () => {
        s.write('GET /chat HTTP/1.1\r\nHost: ws.a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
      });
      let buf = '';
      let sent = false;
      s.on('data', (c: Buffer) => {
        buf += c.toString('utf8');
        if (!sent && buf.includes('\r\n\r\n')) {
          sent = true;
          s.write('ping-through-proxy\n');
        }
        if (buf.includes('ping-through-proxy')) {
          s.destroy();
          resolve(buf);
        }
      });
      s.on('error', reject);
      // A deadline for a hung proxy, generous for a loaded box (not a latency bound).
      setTimeout(() => reject(new Error(`no echo; got ${JSON.stringify(buf)}`)), 30_000).unref();
    });
    assert.match(reply, /^HTTP\/1\.1 101 Switching Protocols/);
    assert.match(reply, /ping-through-proxy/);
  });

  test('deleting the route stops forwarding; the hostname then falls through to a 404', async () => {
    assert.equal((await api(tokA, 'DELETE', '/api/v1/proxy/routes/app.a.test')).status, 200);
    const r = await call({ port: ports.http, host: 'app.a.test', path: '/index.html' });
    assert.equal(r.status, 404);
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_NOT_FOUND');
  });
});

describe('proxy namespace with hoodyd as the data plane (HOODY_DATA_PLANE=node): certificates served from their PEM', () => {
  let d: TestDaemon;
  let ports: Ports;
  let tok = '';
  let ca: HostCa;
  let caDir = '';
  const api = (method: string, path: string, body?: unknown) => call({ port: ports.http, host: 'api.n.hoody.localhost', path: `${path}?token=${tok}`, method, body });

  before(async () => {
    d = await startTestDaemon({ HOODY_DATA_PLANE: 'node' });
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    tok = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'n' })).token;
    caDir = await mkdtemp(join(tmpdir(), 'hoody-test-ca-'));
    ca = await HostCa.loadOrCreate(caDir, 'test issuer');
  });
  after(async () => {
    await d.destroy();
    await rm(caDir, { recursive: true, force: true });
  });

  test("hoodyd's own listener serves each bundle (exact and wildcard) and the next one after a swap", async () => {
    // The secure context is made on the name's first handshake: a swap must serve the new bundle, not the first one made.
    for (const [domain, probe] of [
      ['app.n.test', 'app.n.test'],
      ['app.n.test', 'app.n.test'],
      ['*.w.n.test', 'x.w.n.test'],
    ] as const) {
      const pem = await ca.issue([domain]);
      const r = await api('PATCH', '/api/v1/proxy/cert/bundle', { domain, cert: pem.cert, key: pem.key, chain: ca.certPem });
      assert.equal(r.status, 200, r.text);
      const fp = new X509Certificate(pem.cert).fingerprint256;
      assert.equal((await servedCertificate(ports.https, probe)).fingerprint256, fp, domain);
    }
  });
});
