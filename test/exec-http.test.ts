import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { type AddressInfo, isIPv4 } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
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

    await put('a', 'open.js', '// @auth none\n// @cors *\nconsole.log("ran", request.method);\nreturn { dry: request.dry_run };');
    const openRuns = async () =>
      (await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/logs?source=exec&token=${tokens.get('a')}` })).json<{ script: string; method: string }[]>().filter((l) => l.script === 'open.js');
    const pre = await run('a', 'open', '', {
      method: 'OPTIONS',
      token: null,
      headers: { origin: 'https://x.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, x-k' },
    });
    // The effect of a preflight: the browser is allowed the method and headers it asked for, and the script never ran.
    assert.equal(pre.status, 204, pre.text);
    assert.equal(pre.text, '');
    assert.equal(pre.headers['access-control-allow-origin'], '*');
    assert.match(String(pre.headers['access-control-allow-methods']), /\bPOST\b/);
    assert.equal(pre.headers['access-control-allow-headers'], 'content-type, x-k');
    assert.deepEqual(await openRuns(), [], 'a preflight does not run the script');
    const open = await run('a', 'open', 'dry_run=true', { token: null });
    assert.equal(open.status, 200);
    assert.equal(open.headers['access-control-allow-origin'], '*');
    assert.deepEqual(open.json(), { dry: true });
    assert.deepEqual((await openRuns()).map((l) => l.method), ['GET'], 'the real request ran it once');
    assert.equal((await run('a', 'renew', '', { token: null })).status, 401);
  });

  test('the real router: 401 without a token (even for a missing script), 404 with one, 403 without the exec scope; the caller is logged, its token never reaches the script', async () => {
    const code = (r: Answer) => r.json<{ error: { code: string } }>().error.code;
    assert.equal((await put('a', 'whoami.ts', 'return { query: request.query, auth: request.headers.authorization ?? null };')).status, 201);
    assert.equal((await put('a', 'anon.ts', '// @auth none\nreturn 1;')).status, 201);
    const byQuery = await run('a', 'whoami', 'k=v');
    assert.equal(byQuery.status, 200, byQuery.text);
    assert.deepEqual(byQuery.json(), { query: { k: 'v' }, auth: null });
    const byBearer = await run('a', 'whoami', 'k=w', { token: null, headers: { authorization: `Bearer ${tokens.get('a')}` } });
    assert.deepEqual(byBearer.json(), { query: { k: 'w' }, auth: null });
    for (const [what, r, status, expected] of [
      ['no token', await run('a', 'whoami', '', { token: null }), 401, 'HOODY_UNAUTHORIZED'],
      ['no token, missing script', await run('a', 'no/such', '', { token: null }), 401, 'HOODY_UNAUTHORIZED'],
      ['wrong token', await run('a', 'whoami', '', { token: 'hdy_not-a-token' }), 401, 'HOODY_UNAUTHORIZED'],
      ["b's token", await run('a', 'whoami', '', { token: tokens.get('b')! }), 404, 'HOODY_CONTAINER_UNKNOWN'],
      ['missing script', await run('a', 'no/such'), 404, 'HOODY_SCRIPT_UNKNOWN'],
    ] as const) {
      assert.equal(r.status, status, `${what}: ${r.text}`);
      assert.equal(code(r), expected, what);
    }
    const filesOnly = await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens', { user: 'root', scopes: ['files'] });
    const forbidden = await run('a', 'whoami', '', { token: filesOnly.token });
    assert.equal(forbidden.status, 403, forbidden.text);
    assert.equal(code(forbidden), 'HOODY_FORBIDDEN');
    const execOnly = await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens', { user: 'root', scopes: ['exec'] });
    assert.equal((await run('a', 'whoami', '', { token: execOnly.token })).status, 200);
    assert.equal((await run('a', 'anon', '', { token: null })).status, 200);
    const log = (await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/logs?source=exec&token=${tokens.get('a')}` })).json<{ script: string; tokenId: string | null }[]>();
    const who = log.filter((l) => l.script === 'whoami.ts').map((l) => l.tokenId);
    assert.equal(who.length, 3, JSON.stringify(who));
    assert.ok(who[0] && who[0] === who[1], 'both owner runs name the owner token');
    assert.ok(who[2] && who[2] !== who[0], 'the exec-only token is logged as itself');
    assert.deepEqual(log.filter((l) => l.script === 'anon.ts').map((l) => l.tokenId), [null], 'an @auth none run has no caller');
  });

  test("fetch reaches this container's own files; every outside target that would answer is refused by the policy (HOODY_FETCH_REFUSED)", async () => {
    const tb = tokens.get('b')!;
    await call({ port: ports.http, host: 'api.a.hoody.localhost', path: `/api/v1/files/x?token=${tokens.get('a')}`, method: 'PUT', body: 'mine', headers: { 'content-type': 'text/plain' } });
    await call({ port: ports.http, host: 'api.b.hoody.localhost', path: `/api/v1/files/x?token=${tb}`, method: 'PUT', body: 'theirs', headers: { 'content-type': 'text/plain' } });
    // Targets that answer when nothing stops the fetch: a host service on loopback, the daemon's own listener
    // with b's valid token, and an HTTP server in container b on its bridge address.
    const hostService = createServer((_req, res) => res.end('host secret'));
    await new Promise<void>((r) => hostService.listen(0, '127.0.0.1', r));
    const hostPort = (hostService.address() as AddressInfo).port;
    const b = await d.client.call<{ engineId: string }>('GET', '/v1/containers/b');
    const served = await dockerExec(b.engineId, ['sh', '-c', 'mkdir -p /tmp/www && echo theirs-httpd > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && hostname -i']);
    assert.equal(served.exitCode, 0, served.output);
    const bIp = served.output.trim().split(/\s+/).find((w) => isIPv4(w))!;
    assert.ok(bIp, served.output);
    const theirs = `/c/b/api/v1/files/x?token=${tb}`;
    const targets: Record<string, [url: string, expect: RegExp]> = {
      hostLoopback: [`http://127.0.0.1:${hostPort}/`, /^HOODY_FETCH_REFUSED: fetch refused: 127\.0\.0\.1 is a loopback/],
      daemonLoopback: [`http://127.0.0.1:${ports.http}${theirs}`, /^HOODY_FETCH_REFUSED: fetch refused: 127\.0\.0\.1 is a loopback/],
      daemonLocalhost: [`http://localhost:${ports.http}${theirs}`, /^HOODY_FETCH_REFUSED: fetch refused: localhost is loopback/],
      daemonHttps: [`https://127.0.0.1:${ports.https}${theirs}`, /^HOODY_FETCH_REFUSED: fetch refused: 127\.0\.0\.1 is a loopback/],
      otherContainer: [`http://${bIp}:8080/index.html`, new RegExp(`^HOODY_FETCH_REFUSED: fetch refused: ${bIp.replaceAll('.', '\\.')} is a loopback, link-local, private or reserved`)],
      // No wildcard DNS for *.hoody.localhost on the host: the hoody-domain rule must be what refuses, by name.
      otherHost: [`http://api.b.hoody.localhost:${ports.http}/api/v1/files/x?token=${tb}`, /^HOODY_FETCH_REFUSED: fetch refused: api\.b\.hoody\.localhost is under the hoody domain/],
      metadata: ['http://169.254.169.254/latest/meta-data/', /^HOODY_FETCH_REFUSED: fetch refused: 169\.254\.169\.254 is a loopback, link-local/],
      file: ['file:///etc/passwd', /^HOODY_FETCH_REFUSED: fetch refused: only http and https URLs/],
    };
    try {
      // The controls: from outside the policy each target does answer.
      const direct = async (u: string) => {
        const r = await fetch(u);
        return `${r.status}:${(await r.text()).trim()}`;
      };
      assert.equal(await direct(targets.hostLoopback![0]), '200:host secret');
      assert.equal(await direct(targets.daemonLoopback![0]), '200:theirs');
      assert.equal(await direct(targets.daemonLocalhost![0]), '200:theirs');
      assert.equal(await direct(targets.otherContainer![0]), '200:theirs-httpd');
      const probe = `// @timeout 20000
const out: Record<string, string> = {};
const tries: Record<string, string> = ${JSON.stringify(Object.fromEntries(Object.entries(targets).map(([k, [u]]) => [k, u])))};
out.own = await (await fetch('/api/v1/files/x')).text();
// A relative URL stays on this container, and a token the script adds does not switch it to b.
const other = await fetch('/c/b/api/v1/files/x?token=${tb}');
out.otherPath = other.status + ':' + (await other.json()).error.code;
out.ownWithTheirToken = await (await fetch('/api/v1/files/x?token=${tb}')).text();
for (const [k, u] of Object.entries(tries)) {
  try { const r = await fetch(u); out[k] = 'fetched ' + r.status + ':' + (await r.text()).slice(0, 60); } catch (e) { out[k] = (e as Error).message; }
}
return out;`;
      assert.equal((await put('a', 'probe.ts', probe)).status, 201);
      const r = await run('a', 'probe');
      assert.equal(r.status, 200, r.text);
      const out = r.json<Record<string, string>>();
      process.stdout.write(`# fetch probe: ${JSON.stringify(out)}\n`);
      assert.equal(out.own, 'mine');
      assert.equal(out.otherPath, '404:HOODY_NOT_FOUND');
      assert.equal(out.ownWithTheirToken, 'mine');
      for (const [k, [, expect]] of Object.entries(targets)) assert.match(out[k]!, expect, `${k}: ${out[k]}`);
    } finally {
      hostService.close();
    }
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
