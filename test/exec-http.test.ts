import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';

interface Ports {
  http: number;
  https: number;
}

describe('exec through a real daemon over HTTP', () => {
  let d: TestDaemon;
  let ports: Ports;
  const tokens = new Map<string, string>();
  const put = (ctr: string, path: string, source: string) =>
    call({ port: ports.http, host: `api.${ctr}.hoody.localhost`, path: `/api/v1/scripts/${path}?token=${tokens.get(ctr)}`, method: 'PUT', body: source, headers: { 'content-type': 'text/plain' } });
  const run = (ctr: string, path: string, query = '', opts: { method?: string; token?: string | null; headers?: Record<string, string> } = {}): Promise<Answer> => {
    const token = opts.token === undefined ? tokens.get(ctr) : opts.token;
    const q = [query, token ? `token=${token}` : ''].filter(Boolean).join('&');
    return call({ port: ports.http, host: `exec.${ctr}.hoody.localhost`, path: `/scripts/${path}${q ? `?${q}` : ''}`, method: opts.method ?? 'GET', headers: opts.headers });
  };

  before(async () => {
    d = await startTestDaemon();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    for (const name of ['a', 'b']) tokens.set(name, (await d.client.call<{ token: string }>('POST', '/v1/containers', { name })).token);
  });
  after(() => d.destroy());

  test("the seed's script shape: a loop of relative PATCHes to the container's own API, then { renewed: n }", async () => {
    await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/proxy/routes/one.a.test?token=${tokens.get('a')}`, method: 'PUT', body: { port: 80 } });
    const src = `// @timeout 20000
const domains: string[] = ['one.a.test', 'nothing.a.test'];
let n = 0;
for (const d of domains) {
  const r = await fetch('/api/v1/proxy/routes/' + d, { method: 'PUT', body: JSON.stringify({ port: 8080 }) });
  if (r.ok) n++;
}
return { renewed: n };`;
    assert.equal((await put('a', 'renew.ts', src)).status, 201);
    const r = await run('a', 'renew');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { renewed: 2 });
    const routes = (await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/proxy/routes?token=${tokens.get('a')}` })).json<{ hostname: string; port: number }[]>();
    assert.deepEqual(routes.map((x) => [x.hostname, x.port]), [['nothing.a.test', 8080], ['one.a.test', 8080]]);
  });

  test('an endless loop after an await is a 504 in well under a second, while the API, cron and the admin API keep serving', async () => {
    assert.equal((await put('a', 'spin.ts', '// @timeout 500\nawait new Promise((r) => setTimeout(r, 10));\nfor (;;) {}')).status, 201);
    assert.equal((await put('a', 'sync-spin.js', '// @timeout 500\nwhile (true) {}')).status, 201);
    const entry = (await call({ port: ports.http, host: 'cron.a.hoody.localhost', path: `/users/me/entries?token=${tokens.get('a')}`, method: 'POST', body: { schedule: '@daily', command: 'echo alive' } })).json<{ id: string }>();
    for (const script of ['spin', 'sync-spin']) {
      const t0 = performance.now();
      const spinning = run('a', script);
      // Meanwhile: the admin API, a cron run, and another script all answer.
      const [admin, cronRun] = await Promise.all([
        d.client.call<unknown[]>('GET', '/v1/containers'),
        call({ port: ports.http, host: 'cron.a.hoody.localhost', path: `/users/me/entries/${entry.id}/run?wait=true&token=${tokens.get('a')}`, method: 'POST' }),
      ]);
      assert.equal(admin.length, 2);
      assert.equal(cronRun.json<{ output: string }>().output, 'alive\n');
      const r = await spinning;
      const ms = performance.now() - t0;
      assert.equal(r.status, 504, r.text);
      assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_SCRIPT_TIMEOUT');
      assert.ok(ms < 1500, `${script} answered in ${Math.round(ms)} ms`);
    }
    assert.deepEqual((await run('a', 'renew')).json(), { renewed: 2 }, 'the daemon lives on');
  });

  test('a memory bomb is a 5xx with its code; the next request to the same script succeeds', async () => {
    const bomb = `// @memory 16
if (request.query.bomb) { const a: string[] = []; for (;;) a.push('x'.repeat(1 << 16) + a.length); }
return { ok: true };`;
    assert.equal((await put('a', 'bomb.ts', bomb)).status, 201);
    const r = await run('a', 'bomb', 'bomb=1');
    assert.ok(r.status >= 500, r.text);
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_SCRIPT_MEMORY');
    assert.deepEqual((await run('a', 'bomb')).json(), { ok: true });
  });

  test('throw, @cors, @auth none, dry_run', async () => {
    await put('a', 'boom.js', 'throw new Error("boom")');
    const boom = await run('a', 'boom');
    assert.equal(boom.status, 500);
    assert.match(boom.text, /boom/);
    const log = (await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/logs?source=exec&token=${tokens.get('a')}` })).json<{ script: string; error: string | null }[]>();
    assert.match(log.find((l) => l.script === 'boom.js')?.error ?? '', /boom/);

    await put('a', 'open.js', '// @auth none\n// @cors *\nreturn { dry: request.dry_run };');
    const pre = await run('a', 'open', '', { method: 'OPTIONS', token: null, headers: { origin: 'https://x.example', 'access-control-request-method': 'POST' } });
    assert.ok(pre.status === 204 || pre.status === 200, String(pre.status));
    assert.equal(pre.headers['access-control-allow-origin'], '*');
    const open = await run('a', 'open', 'dry_run=true', { token: null });
    assert.equal(open.status, 200);
    assert.equal(open.headers['access-control-allow-origin'], '*');
    assert.deepEqual(open.json(), { dry: true });
    assert.equal((await run('a', 'renew', '', { token: null })).status, 401);
  });

  test("fetch reaches this container's own files, never another container's namespace, the admin API or metadata", async () => {
    await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/files/x?token=${tokens.get('a')}`, method: 'PUT', body: 'mine', headers: { 'content-type': 'text/plain' } });
    await call({ port: ports.http, host: 'api.b.hoody.localhost', path: `/api/v1/files/x?token=${tokens.get('b')}`, method: 'PUT', body: 'theirs', headers: { 'content-type': 'text/plain' } });
    const probe = `const out: Record<string, string> = {};
const tries: [string, string][] = [
  ['own', '/api/v1/files/x'],
  ['other-path', '/c/b/api/v1/files/x'],
  ['other-host', 'http://api.b.hoody.localhost:${ports.http}/api/v1/files/x'],
  ['other-https', 'https://api.b.hoody.localhost:${ports.https}/api/v1/files/x'],
  ['loopback', 'http://127.0.0.1:${ports.http}/c/b/api/v1/files/x'],
  ['admin', 'http://localhost/v1/containers'],
  ['metadata', 'http://169.254.169.254/latest/meta-data/'],
];
for (const [k, u] of tries) {
  try { const r = await fetch(u); out[k] = r.status + ':' + (await r.text()); } catch (e) { out[k] = 'refused:' + String(e).slice(0, 60); }
}
return out;`;
    assert.equal((await put('a', 'probe.ts', probe)).status, 201);
    const out = (await run('a', 'probe')).json<Record<string, string>>();
    process.stdout.write(`# fetch probe: ${JSON.stringify(out)}\n`);
    assert.equal(out.own, '200:mine');
    for (const k of ['other-path', 'other-host', 'other-https', 'loopback', 'admin', 'metadata']) assert.doesNotMatch(out[k]!, /theirs|^200/, `${k}: ${out[k]}`);
  });

  test('process, require, import(fs) and constructor.constructor give nothing usable', async () => {
    const src = `const out: Record<string, string> = {};
out.process = typeof (globalThis as any).process;
out.require = typeof (globalThis as any).require;
try { await import('fs'); out.import = 'loaded'; } catch { out.import = 'refused'; }
try { const p = (this as any).constructor.constructor('return typeof process')(); out.escape = String(p); } catch { out.escape = 'refused'; }
return out;`;
    assert.equal((await put('a', 'escape.ts', src)).status, 201);
    const out = (await run('a', 'escape')).json<Record<string, string>>();
    assert.equal(out.process, 'undefined');
    assert.equal(out.require, 'undefined');
    assert.equal(out.import, 'refused');
    assert.ok(out.escape === 'undefined' || out.escape === 'refused', out.escape);
  });

  test('200 concurrent requests across 20 containers all answer correctly', async () => {
    const names = Array.from({ length: 18 }, (_, i) => `c${i}`);
    for (const name of names) tokens.set(name, (await d.client.call<{ token: string }>('POST', '/v1/containers', { name })).token);
    const all = ['a', 'b', ...names];
    for (const name of all) assert.equal((await put(name, 'who.ts', 'return { me: request.path, n: Number(request.query.n) };')).status, 201);
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => {
        const ctr = all[i % all.length]!;
        return run(ctr, 'who', `n=${i}`).then((r) => ({ ctr, i, r }));
      }),
    );
    for (const { i, r } of results) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json<{ n: number }>().n, i);
    }
  });
});
