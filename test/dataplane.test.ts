import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect as http2Connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { HostCa } from '../containers/tls/ca.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { call, servedCertificate } from './support/http.js';
import { until } from './support/wait.js';

interface Ports {
  http: number;
  https: number;
}

const codeOf = (text: string) => {
  try {
    return (JSON.parse(text) as { error: { code: string } }).error.code;
  } catch {
    return `not a JSON error: ${text.slice(0, 200)}`;
  }
};

/** A GET from a chosen local address (127.0.0.0/8 is all loopback), with extra headers. */
function getFrom(localAddress: string, port: number, host: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, localAddress, headers: { host, ...headers }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('data plane: HAProxy serves tenants while hoodyd is down, and hoodyd keeps it serving (issue 13.1)', () => {
  let d: TestDaemon;
  let ports: Ports;
  let token = '';
  let dir = '';
  let refuse = '';
  let tenantFingerprint = '';
  /** The live HAProxy's pid (0: none runs). */
  const planePid = async () => {
    const pid = Number((await readFile(join(d.stateDir, 'dataplane', 'haproxy.pid'), 'utf8').catch(() => '0')).trim());
    try {
      if (pid) process.kill(pid, 0);
      return pid;
    } catch {
      return 0;
    }
  };
  const api = (method: string, path: string, body?: unknown) => call({ port: ports.http, host: 'api.a.hoody.localhost', path: `${path}?token=${token}`, method, body });
  const routed = () => call({ port: ports.http, host: 'app.a.test', path: '/index.html' });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hoody-dataplane-'));
    refuse = join(dir, 'refuse');
    // HAProxy as hoodyd starts it, except while the test makes it impossible (a box where it cannot start).
    const wrapper = join(dir, 'haproxy');
    await writeFile(wrapper, `#!/bin/sh\n[ -e ${refuse} ] && { echo "haproxy refused by the test" >&2; exit 1; }\nexec haproxy "$@"\n`);
    await chmod(wrapper, 0o755);
    d = await startTestDaemon({ HOODY_HAPROXY_BIN: wrapper, HOODY_TOKEN_FAILURE_LIMIT: '5' });
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'a' })).token;
    const a = await d.client.call<{ engineId: string }>('GET', '/v1/containers/a');
    await dockerExec(a.engineId, ['sh', '-c', 'mkdir -p /files/www && echo hello-from-a > /files/www/index.html']);
    await dockerExec(a.engineId, ['busybox', 'httpd', '-p', '8080', '-h', '/files/www']);
    assert.equal((await api('PUT', '/api/v1/proxy/routes/app.a.test', { port: 8080 })).status, 200);
    const ca = await HostCa.loadOrCreate(join(dir, 'ca'), 'test issuer');
    const pem = await ca.issue(['app.a.test']);
    const put = await api('PATCH', '/api/v1/proxy/cert/bundle', { domain: 'app.a.test', cert: pem.cert, key: pem.key });
    assert.equal(put.status, 200, put.text);
    tenantFingerprint = new X509Certificate(pem.cert).fingerprint256;
    assert.equal((await routed()).text.trim(), 'hello-from-a');
  });
  after(async () => {
    await d.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  test('hoodyd SIGKILLed under load: routed HTTP and HTTPS keep answering (not one request fails); the API answers 503 HOODY_DAEMON_UNAVAILABLE until hoodyd is back', async () => {
    const before = await planePid();
    assert.ok(before > 0);
    let ok = 0;
    let whileDown = 0;
    let down = false;
    const failures: string[] = [];
    let running = true;
    // New connections each time, plain and TLS in turn: nothing may depend on hoodyd's process.
    const load = (async () => {
      for (let i = 0; running; i++) {
        const secure = i % 2 === 1;
        try {
          const r = await call({ port: secure ? ports.https : ports.http, host: 'app.a.test', path: '/index.html', tls: secure ? { insecure: true } : undefined });
          if (r.status === 200 && r.text.trim() === 'hello-from-a') {
            ok++;
            if (down) whileDown++;
          } else failures.push(`${r.status} ${r.text.slice(0, 100)}`);
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    })();
    await until('some requests served', () => ok >= 20);
    await d.stop('SIGKILL');
    down = true;
    const unavailable = await api('GET', '/api/v1/proxy/routes');
    assert.equal(unavailable.status, 503, unavailable.text);
    assert.equal(codeOf(unavailable.text), 'HOODY_DAEMON_UNAVAILABLE');
    await until('routed requests served while hoodyd is down', () => whileDown >= 50);
    down = false;
    await d.restart();
    const afterRestart = ok;
    await until('requests served after the restart', () => ok >= afterRestart + 20);
    running = false;
    await load;
    assert.deepEqual(failures, [], `${failures.length} of ${ok + failures.length} requests failed`);
    assert.equal(await planePid(), before, 'the same HAProxy kept serving (adopted, not restarted)');
    const routes = await api('GET', '/api/v1/proxy/routes');
    assert.equal(routes.status, 200, routes.text);
    assert.deepEqual(routes.json<{ hostname: string }[]>().map((r) => r.hostname), ['app.a.test']);
  });

  test('HAProxy killed: hoodyd starts it again from its saved files; the route and the tenant certificate are served again', async () => {
    const before = await planePid();
    process.kill(before, 'SIGKILL');
    await until('a new HAProxy serving the route', async () => (await planePid()) !== before && (await routed()).status === 200, { timeoutMs: 30_000 });
    assert.equal((await servedCertificate(ports.https, 'app.a.test')).fingerprint256, tenantFingerprint);
    const info = await d.client.call<{ listeners: { data_plane: { kind: string; pid: number } } }>('GET', '/v1/host');
    assert.deepEqual(info.listeners.data_plane, { kind: 'haproxy', pid: await planePid() }, 'host info names the HAProxy that serves');
  });

  test('HAProxy alive but not answering its admin socket for a while (stopped 6 s): left running, not reloaded; it serves on', async () => {
    // A reload of a live HAProxy resets the connections in its accept queue (a CI flake: "socket hang up" on a
    // loaded box, where the admin socket answered late): only a gone HAProxy is started again.
    const before = await planePid();
    process.kill(before, 'SIGSTOP');
    try {
      await sleep(6_000); // three of the watch's 2 s rounds, each finding the admin socket silent
    } finally {
      process.kill(before, 'SIGCONT');
    }
    assert.equal((await routed()).status, 200);
    await sleep(2_500);
    assert.equal(await planePid(), before, 'the same HAProxy serves');
    assert.match(await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8'), /slow to answer its admin socket; left running/);
  });

  test('the API sees the real client through the data plane: a forged X-Forwarded-For changes nothing; another address is another client', async () => {
    const bad = (from: string, i: number) =>
      getFrom(from, ports.http, 'api.a.hoody.localhost', '/api/v1/proxy/routes?token=hdy_wrong', { 'x-forwarded-for': `10.9.${i}.1` });
    const seen: number[] = [];
    for (let i = 0; i < 7; i++) seen.push((await bad('127.0.0.1', i)).status);
    assert.equal(seen[0], 401);
    assert.equal(seen.at(-1), 429, `bad tokens from one address are limited whatever X-Forwarded-For says: ${seen.join(',')}`);
    // Positive control: the limit is per client, and the client is the address HAProxy saw.
    assert.equal((await bad('127.0.0.2', 99)).status, 401);
  });

  test('HTTP/2 to clients on routed hostnames; the per-container API keeps HTTP/1.1 (HAProxy ends TLS for every name)', async () => {
    const session = http2Connect(`https://127.0.0.1:${ports.https}`, { servername: 'app.a.test', rejectUnauthorized: false });
    try {
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = session.request({ ':path': '/index.html', ':authority': 'app.a.test' });
        let body = '';
        let status = 0;
        req.setEncoding('utf8');
        req.on('response', (h) => (status = Number(h[':status'])));
        req.on('data', (c: string) => (body += c));
        req.on('end', () => resolve({ status, body }));
        req.on('error', reject);
        req.end();
      });
      assert.equal(status, 200);
      assert.equal(body.trim(), 'hello-from-a');
      assert.equal(session.alpnProtocol, 'h2');
    } finally {
      session.close();
    }
    const alpnOf = (servername: string) =>
      new Promise<string | false>((resolve, reject) => {
        const s = tlsConnect({ host: '127.0.0.1', port: ports.https, servername, ALPNProtocols: ['h2', 'http/1.1'], rejectUnauthorized: false }, () => {
          resolve(s.alpnProtocol ?? false);
          s.end();
        });
        s.on('error', reject);
      });
    // A token host is on the host's `*.<domain>` line (HTTP/1.1 only); a container's service host gets a certificate
    // HAProxy signs on the spot, which carries no ALPN at all: either way a client offering h2 speaks HTTP/1.1.
    assert.equal(await alpnOf('api.hoody.localhost'), 'http/1.1');
    assert.equal(await alpnOf('api.a.hoody.localhost'), false);
  });

  test('the data plane cannot take a change: 503 HOODY_DATA_PLANE_UNAVAILABLE and nothing of it is kept; once HAProxy is back, the change applies', async () => {
    // With HAProxy down the public ports are down too; the admin API (its own socket) still changes the tables.
    await writeFile(refuse, '');
    process.kill(await planePid(), 'SIGKILL');
    await until('HAProxy gone', async () => (await planePid()) === 0);
    const narrow = () => d.client.call<{ dropped: { routes: string[] } }>('PUT', '/v1/containers/a/domains', { domains: ['other.test'] });
    await assert.rejects(narrow(), (err: { status?: number; code?: string }) => err.status === 503 && err.code === 'HOODY_DATA_PLANE_UNAVAILABLE');
    assert.deepEqual((await d.client.call<{ domains: string[] }>('GET', '/v1/containers/a/domains')).domains, [], 'the grants are unchanged');
    await rm(refuse);
    await until('HAProxy back, serving the route it had', async () => (await routed()).status === 200, { timeoutMs: 30_000 });
    assert.deepEqual((await narrow()).dropped.routes, ['app.a.test']);
    const gone = await routed();
    assert.equal(gone.status, 404, 'a dropped route is no longer served');
    assert.equal(codeOf(gone.text), 'HOODY_NOT_FOUND');
  });
});
