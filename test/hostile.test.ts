import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestDaemon, type TestDaemon } from './support/host.js';
import { call } from './support/http.js';

interface Ports {
  http: number;
  https: number;
}

/** A raw request on a fresh socket: what a hostile client can send that fetch would not. */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.end(text));
    const chunks: Buffer[] = [];
    s.on('data', (c) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.on('error', reject);
  });
}

describe('hostile input on the public listeners', () => {
  let d: TestDaemon;
  let ports: Ports;
  let tokA = '';
  let tokB = '';
  before(async () => {
    d = await startTestDaemon({ HOODY_TOKEN_FAILURE_LIMIT: '30' });
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    tokA = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'a' })).token;
    tokB = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'b' })).token;
  });
  after(() => d.destroy());

  test('an oversize body is a 413 with the catalogue shape, every time, and nothing is written', async () => {
    const big = 'x'.repeat(17 * 1024 * 1024);
    // Twenty times: when hoodyd closed at once, about one in seven of these lost its 413 to a reset behind HAProxy.
    for (let i = 0; i < 20; i++) {
      const r = await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/files/big?token=${tokA}`, method: 'PUT', body: big, headers: { 'content-type': 'text/plain' } });
      assert.equal(r.status, 413);
      assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_BODY_TOO_LARGE');
    }
    const after = await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/files/big?token=${tokA}` });
    assert.equal(after.status, 404);
  });

  test('oversize headers are a 431 with the catalogue shape', async () => {
    const text = await raw(ports.http, `GET /api/v1/files/ HTTP/1.1\r\nHost: api.a.hoody.localhost\r\nX-Big: ${'y'.repeat(20_000)}\r\n\r\n`);
    assert.match(text, /^HTTP\/1\.1 431/);
    assert.match(text, /"code":"HOODY_HEADERS_TOO_LARGE"/);
    // Not HTTP at all: HAProxy's parser refuses it before a request exists, with its own 400 page (HAProxy 2.6
    // does not use error files there: haproxy#3032); the connection is closed either way.
    const garbage = await raw(ports.http, 'NOT HTTP AT ALL\r\n\r\n');
    assert.match(garbage, /^HTTP\/1\.1 400/);
    assert.match(garbage, /\r\nconnection: close\r\n/i);
  });

  test('Host header games: unknown hosts, IP literals, another container\'s token on a container host', async () => {
    for (const host of ['evil.example', '127.0.0.1', '[::1]', 'cron.nope.hoody.localhost', 'x.y.cron.a.hoody.localhost', '']) {
      const r = await call({ port: ports.http, host, path: `/users/me/entries?token=${tokA}` });
      assert.equal(r.status, 404, `host ${JSON.stringify(host)}`);
      assert.ok(r.json<{ error: { code: string } }>().error.code.startsWith('HOODY_'));
    }
    const cross = await call({ port: ports.http, host: 'cron.a.hoody.localhost', path: `/users/me/entries?token=${tokB}` });
    assert.equal(cross.status, 404);
    const mixed = await call({ port: ports.http, host: 'cron.b.hoody.localhost', path: `/c/a/users/me/entries?token=${tokA}` });
    assert.equal(mixed.status, 404, 'a /c/<ctr>/ path must agree with the container host');
    const forged = await call({ port: ports.http, host: 'cron.a.hoody.localhost', path: '/users/me/entries', headers: { 'x-hoody-internal': 'guess', 'x-hoody-token-id': 'x' } });
    assert.equal(forged.status, 401, 'the in-process authority header cannot be forged');
  });

  test('brute force on tokens: past the limit the address gets 429 (even with a good token), and it is logged', async () => {
    let limited = 0;
    for (let i = 0; i < 40; i++) {
      const r = await call({ port: ports.http, host: 'cron.hoody.localhost', path: `/users/me/entries?token=hdy_guess${i}` });
      if (r.status === 429) limited++;
      else assert.equal(r.status, 401);
    }
    assert.ok(limited >= 9, `${limited} limited`);
    const good = await call({ port: ports.http, host: 'cron.a.hoody.localhost', path: `/users/me/entries?token=${tokA}` });
    assert.equal(good.status, 429);
    assert.equal(good.json<{ error: { code: string } }>().error.code, 'HOODY_RATE_LIMITED');
    const log = await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8');
    assert.match(log, /token brute force\? address blocked/);
    // The admin API (unix socket) is not affected.
    assert.equal((await d.client.call<unknown[]>('GET', '/v1/containers')).length, 2);
  });
});
