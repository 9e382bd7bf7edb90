import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { restartDelay } from '../daemon/supervisor.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { call } from './support/http.js';

const CRASH_ON_DEMAND = join(dirname(fileURLToPath(import.meta.url)), 'support', 'crash-on-demand.js');

interface Ports {
  http: number;
  https: number;
}

/** What a client saw: an answer, or how the connection ended (never a hang: everything has a deadline). */
interface Seen {
  status?: number;
  text?: string;
  bytes?: number;
  error?: string;
}

/** A GET through the proxy that reads at most `maxBytes` of the body, within `deadlineMs`. */
function get(port: number, host: string, path = '/', deadlineMs = 20_000, maxBytes = Number.POSITIVE_INFINITY): Promise<Seen> {
  return new Promise((resolve) => {
    const seen: Seen = {};
    const chunks: Buffer[] = [];
    let bytes = 0;
    const timer = setTimeout(() => {
      req.destroy();
      resolve({ ...seen, bytes, error: 'client deadline: no answer or no end' });
    }, deadlineMs);
    const req = request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      seen.status = res.statusCode;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (bytes <= 64 * 1024) chunks.push(c);
        if (bytes >= maxBytes) {
          clearTimeout(timer);
          req.destroy();
          resolve({ ...seen, bytes, error: 'client stopped reading' });
        }
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ ...seen, bytes, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', (err) => {
        clearTimeout(timer);
        resolve({ ...seen, bytes, error: err.message });
      });
    });
    req.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ...seen, bytes, error: (err as NodeJS.ErrnoException).code ?? err.message });
    });
    req.end();
  });
}

function codeOf(text: string | undefined): string {
  try {
    return (JSON.parse(text ?? '') as { error: { code: string } }).error.code;
  } catch {
    return `not a JSON error: ${JSON.stringify(text?.slice(0, 200))}`;
  }
}

/** Each case: a tenant app on its own port answering every connection with these raw bytes (sh printf). */
type Expect = { status: number; code: string } | 'clean close';

/** Each case: a tenant app on its own port answering every connection with these raw bytes (sh printf). `haproxy`:
 * what HAProxy answers where it differs from hoodyd's own forwarder (it does not tell why a head was refused). */
const HOSTILE: { name: string; port: number; reply: string; expect: Expect; haproxy?: Expect }[] = [
  { name: 'status 000', port: 8101, reply: String.raw`printf 'HTTP/1.1 000 Zero\r\ncontent-length: 2\r\n\r\nok'`, expect: { status: 502, code: 'HOODY_PROXY_UPSTREAM_FAILED' } },
  { name: 'status 099', port: 8102, reply: String.raw`printf 'HTTP/1.1 099 Low\r\ncontent-length: 2\r\n\r\nok'`, expect: { status: 502, code: 'HOODY_PROXY_UPSTREAM_FAILED' } },
  { name: 'status 99999', port: 8103, reply: String.raw`printf 'HTTP/1.1 99999 Big\r\ncontent-length: 2\r\n\r\nok'`, expect: { status: 502, code: 'HOODY_PROXY_UPSTREAM_FAILED' } },
  { name: 'status 700', port: 8104, reply: String.raw`printf 'HTTP/1.1 700 High\r\ncontent-length: 2\r\n\r\nok'`, expect: { status: 502, code: 'HOODY_PROXY_UPSTREAM_FAILED' } },
  { name: 'a header name with a space', port: 8105, reply: String.raw`printf 'HTTP/1.1 200 OK\r\nbad name: 1\r\ncontent-length: 2\r\n\r\nok'`, expect: { status: 502, code: 'HOODY_PROXY_UPSTREAM_FAILED' } },
  { name: 'a header value with a bare CR', port: 8106, reply: String.raw`printf 'HTTP/1.1 200 OK\r\nx-a: 1\rset-cookie: x=1\r\ncontent-length: 2\r\n\r\nok'`, expect: { status: 502, code: 'HOODY_PROXY_UPSTREAM_FAILED' } },
  { name: 'two conflicting content-lengths', port: 8107, reply: String.raw`printf 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 9\r\n\r\nok'`, expect: { status: 502, code: 'HOODY_PROXY_UPSTREAM_FAILED' } },
  { name: 'a 101 nobody asked for', port: 8108, reply: String.raw`printf 'HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\nok'`, expect: { status: 502, code: 'HOODY_PROXY_UPSTREAM_FAILED' } },
  {
    name: 'a header block that never ends',
    port: 8109,
    reply: String.raw`printf 'HTTP/1.1 200 OK\r\nx-a: 1\r\n'; sleep 60`,
    expect: { status: 504, code: 'HOODY_PROXY_UPSTREAM_TIMEOUT' },
  },
  {
    name: 'a 40 KiB header block',
    port: 8110,
    reply: String.raw`printf 'HTTP/1.1 200 OK\r\n'; i=0; while [ $i -lt 1000 ]; do printf 'x-%d: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n' $i; i=$((i+1)); done; printf 'content-length: 2\r\n\r\nok'`,
    expect: { status: 502, code: 'HOODY_PROXY_UPSTREAM_HEADERS_TOO_LARGE' },
    haproxy: { status: 502, code: 'HOODY_PROXY_UPSTREAM_FAILED' },
  },
  { name: 'a body shorter than its content-length', port: 8111, reply: String.raw`printf 'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nok'`, expect: 'clean close' },
  { name: 'a body that stalls mid-way', port: 8112, reply: String.raw`printf 'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nok'; sleep 60`, expect: 'clean close' },
];

// Both data planes: HAProxy (the default) and hoodyd's own forwarder (HOODY_DATA_PLANE=node).
for (const plane of ['haproxy', 'node'] as const) describe(`hostile tenant (${plane} data plane): nothing an upstream or a script answers takes the daemon or the data plane down (issue 10.2)`, () => {
  let d: TestDaemon;
  let ports: Ports;
  let pid = 0;
  let planePid = 0;
  const haproxyPid = async () => Number((await readFile(join(d.stateDir, 'dataplane', 'haproxy.pid'), 'utf8').catch(() => '0')).trim());
  let tokA = '';
  let tokB = '';
  let engineA = '';

  /** The daemon that served the attack is the same process, and another tenant's API still answers. */
  const assertSurvived = async (what: string) => {
    assert.equal(await d.daemonPid(), pid, `${what}: hoodyd was replaced`);
    assert.equal(d.process.exitCode, null, `${what}: hoodyd exited`);
    if (plane === 'haproxy') assert.equal(await haproxyPid(), planePid, `${what}: the data plane was replaced`);
    const other = await call({ port: ports.http, host: 'api.b.hoody.localhost', path: `/api/v1/files/?token=${tokB}` });
    assert.equal(other.status, 200, `${what}: the other tenant's API: ${other.text}`);
  };

  before(async () => {
    // A short upstream timeout so the stalled cases finish quickly (default 60 s).
    d = await startTestDaemon({ HOODY_PROXY_UPSTREAM_TIMEOUT: '2s', HOODY_HEADERS_TIMEOUT: '2s', HOODY_DATA_PLANE: plane });
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    pid = await d.daemonPid();
    planePid = plane === 'haproxy' ? await haproxyPid() : 0;
    if (plane === 'haproxy') assert.ok(planePid > 0, 'HAProxy runs');
    tokA = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'a' })).token;
    tokB = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'b' })).token;
    engineA = (await d.client.call<{ engineId: string }>('GET', '/v1/containers/a')).engineId;
    // One busybox `nc -ll -e` server per case: it reads the request head, then answers with crafted bytes.
    const apps = [...HOSTILE, { port: 8120, reply: String.raw`printf 'HTTP/1.1 200 OK\r\n\r\n'; cat /dev/zero` }, { port: 8121, reply: String.raw`printf 'garbage\r\n\r\n'` }, { port: 8122, reply: String.raw`printf 'HTTP/1.1 401 Unauthorized\r\ncontent-length: 100000\r\n\r\n'; head -c 100000 /dev/zero` }];
    const start: string[] = [];
    for (const c of apps) {
      const script = `#!/bin/sh\nwhile IFS= read -r l; do [ "\${#l}" -le 1 ] && break; done\n${c.reply}\n`;
      const put = await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/files/h/${c.port}.sh?token=${tokA}`, method: 'PUT', body: script, headers: { 'content-type': 'application/octet-stream' } });
      assert.ok(put.status === 200 || put.status === 201, put.text);
      start.push(`chmod +x /files/h/${c.port}.sh && (nc -ll -p ${c.port} -e /files/h/${c.port}.sh >/dev/null 2>&1 &)`);
    }
    const r = await dockerExec(engineA, ['sh', '-c', start.join('\n')]);
    assert.equal(r.exitCode, 0, r.output);
    for (const c of [...HOSTILE.map((h) => h.port), 8120, 8121, 8122]) {
      const put = await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/proxy/routes/p${c}.a.test?token=${tokA}`, method: 'PUT', body: { port: c } });
      assert.equal(put.status, 200, put.text);
    }
  });
  after(() => d.destroy());

  for (const c of HOSTILE) {
    const expect = plane === 'haproxy' ? (c.haproxy ?? c.expect) : c.expect;
    test(`upstream answers with ${c.name}: ${expect === 'clean close' ? 'the client connection closes' : `${expect.status} ${expect.code}`}, the daemon lives`, async () => {
      const seen = await get(ports.http, `p${c.port}.a.test`);
      if (expect === 'clean close') {
        assert.equal(seen.status, 200, JSON.stringify(seen));
        assert.ok(seen.error && !seen.error.startsWith('client deadline'), `the connection must close, not hang: ${JSON.stringify(seen)}`);
      } else {
        assert.equal(seen.status, expect.status, JSON.stringify(seen));
        assert.equal(codeOf(seen.text), expect.code);
      }
      await assertSurvived(c.name);
    });
  }

  test('an endless body: the client reads what it wants and leaves; the container side is closed too', async () => {
    const seen = await get(ports.http, 'p8120.a.test', '/', 20_000, 4 * 1024 * 1024);
    assert.equal(seen.status, 200);
    assert.equal(seen.error, 'client stopped reading');
    // The daemon dropped its upstream connection: the tenant's `cat /dev/zero` gets EPIPE and exits.
    const deadline = Date.now() + 15_000;
    let ps = '';
    while (Date.now() < deadline) {
      ps = (await dockerExec(engineA, ['sh', '-c', 'ps -o args | grep "^cat /dev/zero" || true'])).output.trim();
      if (!ps) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(ps, '', 'the upstream stream was left running');
    await assertSurvived('endless body');
  });

  test('a websocket upgrade answered with garbage: the client gets a 502 JSON error, not the garbage', async () => {
    const raw = await new Promise<string>((resolve, reject) => {
      const s = connect(ports.http, '127.0.0.1', () =>
        s.write('GET /ws HTTP/1.1\r\nhost: p8121.a.test\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'),
      );
      let got = '';
      s.setTimeout(15_000, () => s.destroy(new Error(`no answer; got ${JSON.stringify(got)}`)));
      s.on('data', (c) => (got += c.toString('latin1')));
      s.on('end', () => resolve(got));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });
    assert.match(raw, /^HTTP\/1\.1 502 /, raw);
    assert.equal(codeOf(raw.slice(raw.indexOf('\r\n\r\n') + 4)), 'HOODY_PROXY_UPSTREAM_FAILED');
    await assertSurvived('upgrade garbage');
  });

  // HAProxy 2.6 answers an incomplete header block with its own 408 page (it skips error files there: haproxy#3032).
  test(`a client that never finishes its header block: 408${plane === 'node' ? ' HOODY_REQUEST_TIMEOUT' : ''}, then the connection is closed`, async () => {
    const got = await new Promise<string>((resolve) => {
      const s = connect(ports.http, '127.0.0.1', () => s.write('GET /api/v1/files/ HTTP/1.1\r\nHost: api.a.hoody.localhost\r\nX-Slow: '));
      let buf = '';
      s.on('data', (c: Buffer) => (buf += c.toString('latin1')));
      s.on('error', () => undefined);
      s.on('close', () => resolve(buf));
      setTimeout(() => s.destroy(), 15_000).unref();
    });
    assert.match(got, /^HTTP\/1\.1 408 /, got.slice(0, 200));
    if (plane === 'node') assert.match(got, /"code":"HOODY_REQUEST_TIMEOUT"/);
    await assertSurvived('slow client');
  });

  test(`not HTTP at all: 400${plane === 'node' ? ' HOODY_BAD_REQUEST' : ''}, then the connection is closed`, async () => {
    const got = await new Promise<string>((resolve) => {
      const s = connect(ports.http, '127.0.0.1', () => s.write('NOT HTTP AT ALL\r\n\r\n'));
      let buf = '';
      s.on('data', (c: Buffer) => (buf += c.toString('latin1')));
      s.on('error', () => undefined);
      s.on('close', () => resolve(buf));
      setTimeout(() => s.destroy(), 15_000).unref();
    });
    assert.match(got, /^HTTP\/1\.1 400 /, got.slice(0, 200));
    if (plane === 'node') assert.match(got, /"code":"HOODY_BAD_REQUEST"/);
    await assertSurvived('not HTTP');
  });

  // hoodyd's forwarder holds a refusal in memory, so it bounds it; HAProxy streams it like any answer.
  const refusal = plane === 'node' ? '502 HOODY_PROXY_UPSTREAM_BODY_TOO_LARGE, the body is not relayed' : 'the 401 is streamed to the client like any answer';
  test(`a websocket upgrade refused with a 100 KB body: ${refusal}`, async () => {
    const raw = await new Promise<string>((resolve, reject) => {
      const s = connect(ports.http, '127.0.0.1', () =>
        s.write('GET /ws HTTP/1.1\r\nhost: p8122.a.test\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'),
      );
      let got = '';
      s.setTimeout(15_000, () => s.destroy(new Error(`no answer; got ${JSON.stringify(got.slice(0, 200))}`)));
      s.on('data', (c) => {
        got += c.toString('latin1');
        // A relayed answer keeps the connection open (keep-alive): done once its whole body is in.
        if (got.indexOf('\r\n\r\n') >= 0 && got.length - got.indexOf('\r\n\r\n') - 4 >= 100_000) s.destroy();
      });
      s.on('end', () => resolve(got));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });
    if (plane === 'node') {
      assert.match(raw, /^HTTP\/1\.1 502 /, raw.slice(0, 200));
      assert.equal(codeOf(raw.slice(raw.indexOf('\r\n\r\n') + 4)), 'HOODY_PROXY_UPSTREAM_BODY_TOO_LARGE');
      assert.ok(raw.length < 4096, `the refused body was not relayed (${raw.length} bytes)`);
    } else {
      assert.match(raw, /^HTTP\/1\.1 401 /, raw.slice(0, 200));
      assert.equal(raw.length - (raw.indexOf('\r\n\r\n') + 4), 100_000, 'the whole body, streamed');
    }
    await assertSurvived('upgrade refusal with a large body');
  });

  // Scripts do not go through the data plane: once is enough.
  if (plane === 'haproxy') test('exec results Node would refuse are catalogued 5xx answers, never a crash or an internal error', async () => {
    const cases: [string, string, number, string][] = [
      ['status0', "return new Response('x', { status: 0 });", 500, 'HOODY_SCRIPT_ERROR'],
      ['status1000', "return { status: 1000, body: 'x' };", 502, 'HOODY_SCRIPT_RESPONSE_INVALID'],
      ['status99', "return { status: 99, headers: {}, body: 'x' };", 502, 'HOODY_SCRIPT_RESPONSE_INVALID'],
      ['badname', "return { status: 200, headers: { 'bad name': 'x' }, body: 'x' };", 502, 'HOODY_SCRIPT_RESPONSE_INVALID'],
      ['crlf', "return { status: 200, headers: { 'x-a': 'a\\r\\nset-cookie: pwned=1' }, body: 'x' };", 502, 'HOODY_SCRIPT_RESPONSE_INVALID'],
      ['ctl', "return new Response('x', { headers: { 'x-a': 'a\\u0001b' } });", 502, 'HOODY_SCRIPT_RESPONSE_INVALID'],
      ['unicode', "return new Response('x', { headers: { 'x-a': '\\u20ac' } });", 502, 'HOODY_SCRIPT_RESPONSE_INVALID'],
      ['huge', '// @memory 128\nreturn new Uint8Array(40 * 1024 * 1024);', 502, 'HOODY_SCRIPT_RESPONSE_TOO_LARGE'],
    ];
    for (const [name, source, status, code] of cases) {
      const put = await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/scripts/${name}.js?token=${tokA}`, method: 'PUT', body: source, headers: { 'content-type': 'text/plain' } });
      assert.ok(put.status === 201 || put.status === 200, put.text);
      const r = await call({ port: ports.http, host: 'exec.a.hoody.localhost', path: `/scripts/${name}?token=${tokA}` });
      assert.equal(r.status, status, `${name}: ${r.text.slice(0, 300)}`);
      assert.equal(codeOf(r.text), code, name);
      await assertSurvived(`script ${name}`);
    }
  });
});

describe('supervisor: hoodyd comes back by itself (issue 10.2)', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ NODE_OPTIONS: `--import ${CRASH_ON_DEMAND}` }, { supervised: true });
  });
  after(() => d.destroy());

  test('SIGKILL of hoodyd: the admin API answers again within 5 s, an acknowledged cron entry is there', async () => {
    const ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    const tok = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 's' })).token;
    const made = await call({ port: ports.http, host: 'cron.s.hoody.localhost', path: `/users/me/entries?token=${tok}`, method: 'POST', body: { schedule: '@daily', command: 'echo kept' } });
    assert.equal(made.status, 201, made.text);
    const id = made.json<{ id: string }>().id;
    const before = await d.daemonPid();
    assert.ok(before > 0 && before !== d.process.pid);
    process.kill(before, 'SIGKILL');
    const t0 = performance.now();
    let back = 0;
    while (performance.now() - t0 < 30_000) {
      const pid = await d.daemonPid();
      if (pid && pid !== before && (await d.client.alive())) {
        back = performance.now() - t0;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    // The promise is 5 s on a box with CPU to spare (CI). hoodyd needs ~3 s of CPU to start, so on a box
    // overloaded by other work its start is stretched by the run queue: then only the 30 s bound holds.
    const load = loadavg()[0]! / cpus().length;
    console.log(`hoodyd back after SIGKILL in ${Math.round(back)} ms (load per cpu ${load.toFixed(1)})`);
    assert.ok(back > 0, 'hoodyd did not come back within 30 s');
    if (load < 2) assert.ok(back < 5_000, `hoodyd came back after ${Math.round(back)} ms (limit 5000)`);
    const ports2 = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    const kept = await call({ port: ports2.http, host: 'cron.s.hoody.localhost', path: `/users/me/entries/${id}?token=${tok}` });
    assert.equal(kept.status, 200, kept.text);
    assert.equal(kept.json<{ command: string }>().command, 'echo kept');
    const log = await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8');
    assert.match(log, /"signal":"SIGKILL".*"msg":"hoodyd exited; restarting"/);
  });

  test('an uncaught exception: logged with its stack as "hoodyd crashed", exit 70, and hoodyd is back', async () => {
    const before = await d.daemonPid();
    await writeFile(join(d.stateDir, 'crash.now'), '');
    const deadline = Date.now() + 60_000;
    let after = before;
    while (Date.now() < deadline) {
      after = await d.daemonPid();
      if (after && after !== before && (await d.client.alive())) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.notEqual(after, before, 'hoodyd was not restarted after its crash');
    const log = await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8');
    assert.match(log, /"stack":"Error: crash on demand \(test\)[^"]*".*"msg":"hoodyd crashed: uncaught exception/);
    assert.match(log, /"code":70,.*"msg":"hoodyd exited; restarting"/);
  });

  test('restart back-off: the first restart at once, then doubling from 250 ms, capped at 5 s', () => {
    assert.deepEqual(
      Array.from({ length: 9 }, (_, i) => restartDelay(i)),
      [0, 250, 500, 1000, 2000, 4000, 5000, 5000, 5000],
    );
  });

  test('SIGTERM to the supervisor stops hoodyd too, with no restart', async () => {
    const daemon = await d.daemonPid();
    const supervisor = d.process;
    const exited = new Promise<number | null>((r) => supervisor.once('exit', (code) => r(code)));
    supervisor.kill('SIGTERM');
    assert.equal(await exited, 0);
    const gone = (pid: number) => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    };
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && !gone(daemon)) await new Promise((r) => setTimeout(r, 100));
    assert.ok(gone(daemon), 'hoodyd still runs after its supervisor stopped');
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(await d.client.alive(), false, 'something restarted hoodyd');
  });
});
