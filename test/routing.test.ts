import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect } from 'node:tls';
import { execa } from 'execa';
import { startTestDaemon, type TestDaemon } from './support/host.js';

interface Ports {
  http: number;
  https: number;
}

/** curl against the public listeners; --cacert trusts the daemon's host CA (no -k anywhere). */
async function curl(d: TestDaemon, args: string[]): Promise<{ status: number; body: { error?: { code: string } } & Record<string, unknown> }> {
  const r = await execa('curl', ['-sS', '--cacert', join(d.stateDir, 'keys', 'ca.crt'), '-o', '-', '-w', '\n%{http_code}', ...args]);
  const lines = r.stdout.split('\n');
  const status = Number(lines.pop());
  const text = lines.join('\n');
  return { status, body: text ? JSON.parse(text) : {} };
}

describe('public listeners: routing by host, path and token; TLS from the host CA', () => {
  let d: TestDaemon;
  let ports: Ports;
  let tokA = '';
  let tokB = '';
  before(async () => {
    d = await startTestDaemon();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    tokA = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'a' })).token;
    tokB = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'b' })).token;
  });
  after(() => d.destroy());

  const rotate = (url: string, token?: string, headers: string[] = []) =>
    curl(d, ['-X', 'POST', ...headers, token ? `${url}${url.includes('?') ? '&' : '?'}token=${token}` : url]);

  test('GET /v1/host reports the listeners\' actual ports', () => {
    assert.ok(ports.http > 0 && ports.https > 0 && ports.http !== ports.https);
  });

  test('HTTPS on a service host verifies against the host CA, with a certificate for that name', async () => {
    const cert = await new Promise<{ subjectaltname?: string; issuer: { CN?: string } }>((resolve, reject) => {
      const s = connect({ port: ports.https, host: '127.0.0.1', servername: 'cron.a.hoody.localhost', ca: [] }, () => {
        resolve(s.getPeerCertificate() as unknown as { subjectaltname?: string; issuer: { CN?: string } });
        s.end();
      });
      s.on('error', reject);
    }).catch(() => null);
    // Without the CA the handshake must fail verification…
    assert.equal(cert, null);
    const ca = await readFile(join(d.stateDir, 'keys', 'ca.crt'), 'utf8');
    const ok = await new Promise<{ subjectaltname?: string }>((resolve, reject) => {
      const s = connect({ port: ports.https, host: '127.0.0.1', servername: 'cron.a.hoody.localhost', ca }, () => {
        resolve(s.getPeerCertificate());
        s.end();
      });
      s.on('error', reject);
    });
    // …and with it, it verifies and names the host (HAProxy signs one per service host with the host CA).
    assert.equal(ok.subjectaltname, 'DNS:cron.a.hoody.localhost');
  });

  test('the same route answers on <svc>.<ctr>.<domain>, on /c/<ctr>/ and on <svc>.<domain> with the token alone', async () => {
    let r = await rotate(`https://api.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, tokA);
    assert.equal(r.status, 200);
    assert.equal(r.body.container, 'a');
    tokA = r.body.token as string;
    r = await rotate(`http://127.0.0.1:${ports.http}/c/a/api/v1/tokens/rotate`, tokA);
    assert.equal(r.status, 200);
    tokA = r.body.token as string;
    r = await rotate(`https://api.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, undefined, ['-H', `Authorization: Bearer ${tokA}`]);
    assert.equal(r.status, 200);
    assert.equal(r.body.container, 'a');
    tokA = r.body.token as string;
  });

  test('a missing or wrong token is 401; a token of another container is 404 on hosts and paths', async () => {
    const cases: [string, string | undefined, number, string][] = [
      [`https://api.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, undefined, 401, 'HOODY_UNAUTHORIZED'],
      [`https://api.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, 'hdy_wrong', 401, 'HOODY_UNAUTHORIZED'],
      [`https://api.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, undefined, 401, 'HOODY_UNAUTHORIZED'],
      [`https://api.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, tokB, 404, 'HOODY_CONTAINER_UNKNOWN'],
      [`http://127.0.0.1:${ports.http}/c/a/api/v1/tokens/rotate`, tokB, 404, 'HOODY_CONTAINER_UNKNOWN'],
      [`https://api.nope.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, tokB, 404, 'HOODY_CONTAINER_UNKNOWN'],
      [`http://127.0.0.1:${ports.http}/api/v1/tokens/rotate`, tokA, 404, 'HOODY_NOT_FOUND'],
    ];
    for (const [url, token, status, code] of cases) {
      const r = await rotate(url, token);
      assert.equal(r.status, status, `${url} with ${token ? 'a token' : 'no token'}`);
      assert.equal(r.body.error?.code, code, url);
    }
    // The 404 for another container's token reads the same as for a container that does not exist.
    const other = await rotate(`https://api.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, tokB);
    const none = await rotate(`https://api.zz.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, tokB);
    assert.equal(JSON.stringify(other.body).replace(/\ba\b/, 'X'), JSON.stringify(none.body).replace(/\bzz\b/, 'X'));
  });

  test('after rotation the old token is 401 everywhere and the new one works', async () => {
    const old = tokA;
    const r = await rotate(`https://api.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, old);
    assert.equal(r.status, 200);
    const fresh = r.body.token as string;
    for (const url of [
      `https://api.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`,
      `https://cron.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`,
      `https://exec.hoody.localhost:${ports.https}/api/v1/tokens/rotate`,
      `http://127.0.0.1:${ports.http}/c/a/api/v1/tokens/rotate`,
    ]) {
      assert.equal((await rotate(url, old)).status, 401, url);
    }
    const admin = await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens/rotate', { user: 'root' });
    assert.equal((await rotate(`https://api.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, fresh)).status, 401);
    assert.equal((await rotate(`https://api.a.hoody.localhost:${ports.https}/api/v1/tokens/rotate`, admin.token)).status, 200);
  });

  test('inside a container, https://api.<ctr>.hoody.localhost verifies TLS with no -k', async () => {
    const c = await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'web', image: 'hoody/base' });
    const v = await d.client.call<{ engineId: string }>('GET', '/v1/containers/web');
    const r = await execa('docker', ['exec', v.engineId, 'curl', '-fsS', '-X', 'POST', `https://api.web.hoody.localhost:${ports.https}/api/v1/tokens/rotate?token=${c.token}`], { reject: false, all: true });
    assert.equal(r.exitCode, 0, r.all);
    assert.equal((JSON.parse(String(r.stdout)) as { container: string }).container, 'web');
    // And again after a restart (a new network namespace): the start event re-applies the redirect.
    await d.client.call('POST', '/v1/containers/web/restart', {});
    const token = (JSON.parse(String(r.stdout)) as { token: string }).token;
    let ok = false;
    for (let i = 0; i < 40 && !ok; i++) {
      const again = await execa('docker', ['exec', v.engineId, 'curl', '-fsS', '-X', 'POST', `https://api.web.hoody.localhost:${ports.https}/api/v1/tokens/rotate?token=${token}`], { reject: false });
      ok = again.exitCode === 0;
      if (!ok) await new Promise((res) => setTimeout(res, 250));
    }
    assert.ok(ok, 'in-container HTTPS works after a restart');
  });
  test('a JSON body is not coerced: a wrong type is 400 HOODY_BODY_INVALID naming the field; query strings still are', async () => {
    const put = (body: string) =>
      curl(d, ['-X', 'PUT', '-H', 'content-type: application/json', '--data', body, `http://127.0.0.1:${ports.http}/c/b/api/v1/proxy/routes/web.example.org?token=${tokB}`]);
    for (const body of ['{"port": true}', '{"port": "8080"}', '{"port": 8080, "https_redirect": "yes"}']) {
      const r = await put(body);
      assert.equal(r.status, 400, `${body}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error?.code, 'HOODY_BODY_INVALID');
      assert.match((r.body.error as { message?: string }).message ?? '', /port|https_redirect/);
    }
    const routes = await curl(d, [`http://127.0.0.1:${ports.http}/c/b/api/v1/proxy/routes?token=${tokB}`]);
    assert.ok(!JSON.stringify(routes.body).includes('web.example.org'), 'no route was made from a coerced body');
    const ok = await put('{"port": 8080}');
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.port, 8080);
    // The admin API too: {"pids": "100"} was taken as 100.
    await assert.rejects(d.client.call('POST', '/v1/containers', { name: 'coerced', pids: '100' }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'HOODY_BODY_INVALID');
      assert.match(err.message, /pids/);
      return true;
    });
    // Query strings are text: ?limit=2 is still the number 2.
    const logs = await curl(d, [`http://127.0.0.1:${ports.http}/c/b/api/v1/logs?source=exec&limit=2&token=${tokB}`]);
    assert.equal(logs.status, 200, JSON.stringify(logs.body));
  });
});
