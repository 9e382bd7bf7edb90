import assert from 'node:assert/strict';
import { type ClientRequest, request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';

/**
 * Issue 10.3/10.8, as a hostile tenant would try it against a real daemon: the daemon's authority for
 * in-process calls (a script's relative fetch) must never be readable, replayable or forgeable, an anonymous
 * run has no identity, the call depth cannot be reset from outside, host calls keep the caller's scopes and
 * user, and rotating one token twice at once leaves exactly one working token.
 */

interface Ports {
  http: number;
  https: number;
}



describe('hostile tenant: the daemon authority', () => {
  let d: TestDaemon;
  let ports: Ports;
  const tokens = new Map<string, string>();
  /** What script B saw of the daemon's secret on c53e2bc (the attack chain replays it from outside). */
  let leakedSecret: string | null = null;
  let ownerIdA = '';
  let ownerIdB = '';

  const api = (ctr: string, path: string, opts: { method?: string; body?: unknown; token?: string; headers?: Record<string, string> } = {}) =>
    call({
      port: ports.http,
      host: `api.${ctr}.hoody.localhost`,
      path,
      method: opts.method,
      body: opts.body,
      headers: { authorization: `Bearer ${opts.token ?? tokens.get(ctr)}`, ...opts.headers },
    });
  const put = async (ctr: string, path: string, source: string) => {
    const r = await api(ctr, `/api/v1/scripts/${path}`, { method: 'PUT', body: source, headers: { 'content-type': 'text/plain' } });
    assert.ok(r.status === 201 || r.status === 200, r.text);
  };
  const run = (ctr: string, path: string, opts: { token?: string | null; headers?: Record<string, string> } = {}): Promise<Answer> => {
    const token = opts.token === undefined ? tokens.get(ctr) : opts.token;
    return call({
      port: ports.http,
      host: `exec.${ctr}.hoody.localhost`,
      path: `/scripts/${path}`,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...opts.headers },
    });
  };
  const code = (r: Answer) => r.json<{ error?: { code: string } }>().error?.code;
  /** The token id of the latest exec run of a script, read from the exec log (where an attacker would find it). */
  const loggedTokenId = async (ctr: string, script: string): Promise<string> => {
    const rows = (await api(ctr, '/api/v1/logs?source=exec&limit=1000')).json<{ script: string; tokenId: string | null }[]>();
    const id = rows.filter((x) => x.script === script).at(-1)?.tokenId;
    assert.ok(id, `a token id for ${script} in the exec log`);
    return id;
  };

  before(async () => {
    d = await startTestDaemon();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    for (const name of ['a', 'b']) tokens.set(name, (await d.client.call<{ token: string }>('POST', '/v1/containers', { name })).token);
    await put('a', 'echo.ts', '// @auth none\nreturn { headers: request.headers };');
    await put('b', 'whoami.ts', 'return 1;');
    const w = await run('b', 'whoami');
    assert.equal(w.status, 200, w.text);
    ownerIdB = await loggedTokenId('b', 'whoami.ts');
    await api('b', '/api/v1/files/secret', { method: 'PUT', body: 'b-secret', headers: { 'content-type': 'text/plain' } });
    await api('a', '/api/v1/files/secret', { method: 'PUT', body: 'a-secret', headers: { 'content-type': 'text/plain' } });
  });
  after(() => d.destroy());

  test("(1) script A's relative fetch to script B: B sees no secret, no token id, no x-hoody-* header", async () => {
    await put('a', 'relay.ts', "const r = await fetch('/scripts/echo', { headers: { 'x-mine': 'kept' } });\nreturn await r.json();");
    const r = await run('a', 'relay');
    assert.equal(r.status, 200, r.text);
    ownerIdA = await loggedTokenId('a', 'relay.ts');
    const seen = r.json<{ headers: Record<string, string> }>().headers;
    leakedSecret = seen['x-hoody-internal'] ?? null;
    process.stdout.write(`# headers script B saw: ${JSON.stringify(Object.keys(seen))}\n`);
    assert.equal(seen['x-mine'], 'kept', "the script's own headers pass");
    assert.deepEqual(Object.keys(seen).filter((k) => k.startsWith('x-hoody-')), [], 'no x-hoody-* header reaches a script');
    assert.equal(seen.authorization, undefined);
    assert.ok(!JSON.stringify(seen).includes(ownerIdA), "the caller's token id is not in what B sees");
    // Nor do x-hoody-* headers from an outside client reach a script.
    const direct = await run('a', 'echo', { token: null, headers: { 'x-hoody-anything': 'x', 'x-hoody-token-id': ownerIdA } });
    assert.deepEqual(Object.keys(direct.json<{ headers: Record<string, string> }>().headers).filter((k) => k.startsWith('x-hoody-')), []);
  });

  test('(2) forged x-hoody-* headers from an anonymous script or an outside client gain no identity; depth cannot be reset', async () => {
    if (!ownerIdA) {
      assert.equal((await run('a', 'relay')).status, 200);
      ownerIdA = await loggedTokenId('a', 'relay.ts');
    }
    const forged = (id: string) => ({
      'x-hoody-token-id': id,
      'x-hoody-internal': leakedSecret ?? 'guess',
      'x-hoody-exec-depth': '-Infinity',
      'x-hoody-call': 'guess',
    });
    // An @auth none script sets the headers on its own relative fetch (with the owner's id from the exec log).
    const src = `// @auth none
const out: Record<string, string> = {};
const h = ${JSON.stringify(forged(ownerIdA))};
for (const [k, p] of [['files', '/api/v1/files/secret'], ['rotate', '/api/v1/tokens/rotate'], ['other', '/c/b/api/v1/files/secret']]) {
  const r = await fetch(p, { method: k === 'rotate' ? 'POST' : 'GET', headers: h });
  out[k] = r.status + ':' + (await r.text()).slice(0, 80);
}
try { out.read = 'read:' + (await files.read('secret')); } catch (e) { out.read = 'refused:' + String(e).slice(0, 80); }
return out;`;
    await put('a', 'forge.ts', src);
    const r = await run('a', 'forge', { token: null });
    assert.equal(r.status, 200, r.text);
    const out = r.json<Record<string, string>>();
    process.stdout.write(`# anonymous forge: ${JSON.stringify(out)}\n`);
    assert.match(out.files!, /^401:/, 'the forged token id gives no identity');
    assert.match(out.rotate!, /^401:/, 'no owner token minted');
    assert.match(out.other!, /^40[14]:/, 'another container is not reachable');
    assert.match(out.read!, /^refused:.*HOODY_UNAUTHORIZED/, 'an anonymous run has no files authority');
    assert.doesNotMatch(JSON.stringify(out), /hdy_|a-secret|b-secret/);

    // An outside client sends the same headers (with whatever the scripts leaked) to every service host.
    const targets: [string, string, string][] = [
      ['api.a.hoody.localhost', '/api/v1/files/secret', ownerIdA],
      ['cron.a.hoody.localhost', '/users/me/entries', ownerIdA],
      ['exec.a.hoody.localhost', '/scripts/relay', ownerIdA],
      ['127.0.0.1', '/c/a/api/v1/files/secret', ownerIdA],
      ['api.hoody.localhost', '/api/v1/files/secret', ownerIdB],
      ['cron.hoody.localhost', '/users/me/entries', ownerIdB],
      ['exec.hoody.localhost', '/scripts/whoami', ownerIdB],
      ['api.hoody.localhost', '/api/v1/tokens/rotate', ownerIdB],
    ];
    for (const [host, path, id] of targets) {
      const res = await call({ port: ports.http, host, path, method: path.endsWith('rotate') ? 'POST' : 'GET', headers: forged(id) });
      assert.equal(res.status, 401, `${host}${path}: ${res.status} ${res.text.slice(0, 120)}`);
      assert.equal(code(res), 'HOODY_UNAUTHORIZED');
    }
    assert.equal((await api('b', '/api/v1/files/secret')).text, 'b-secret', "b's owner token still the only way in");

    // A self-recursive script ends at the depth limit, whatever depth the outside request claims.
    await put('a', 'loop.ts', "// @auth none\n// @timeout 20000\nconst r = await fetch('/scripts/loop');\nreturn new Response(await r.text(), { status: r.status, headers: { 'content-type': 'application/json' } });");
    const loop = await run('a', 'loop', { token: null, headers: { 'x-hoody-exec-depth': '-Infinity' } });
    assert.equal(loop.status, 508, loop.text.slice(0, 200));
    assert.equal(code(loop), 'HOODY_SCRIPT_LOOP');
  });

  test('(3) a narrow token reads neither logs nor files it lacks the scope or user for, through a script or the logs route', async () => {
    // A fresh owner-like token: on c53e2bc the anonymous forge above rotated the owner's token away.
    const root = await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens', { user: 'root', scopes: ['cron', 'exec', 'proxy', 'files', 'admin'] });
    tokens.set('a', root.token);
    const alice = await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens', { user: 'alice', scopes: ['cron'] });
    const bob = await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens', { user: 'bob', scopes: ['exec'] });
    // A cron run of root (the owner) and one of alice.
    for (const [tok, cmd] of [[tokens.get('a')!, 'echo root-secret'], [alice.token, 'echo alice-own']] as const) {
      const e = await call({ port: ports.http, host: 'cron.a.hoody.localhost', path: '/users/me/entries', method: 'POST', body: { schedule: '@daily', command: cmd }, headers: { authorization: `Bearer ${tok}` } });
      assert.equal(e.status, 201, e.text);
      const id = e.json<{ id: string }>().id;
      const ran = await call({ port: ports.http, host: 'cron.a.hoody.localhost', path: `/users/me/entries/${id}/run?wait=true`, method: 'POST', headers: { authorization: `Bearer ${tok}` } });
      assert.equal(ran.status, 200, ran.text);
    }
    const cronLog = await api('a', '/api/v1/logs?source=cron', { token: alice.token });
    assert.equal(cronLog.status, 200, cronLog.text);
    const rows = cronLog.json<{ user: string; output: string }[]>();
    assert.ok(rows.some((x) => x.output === 'alice-own\n'), 'alice sees her own runs');
    assert.deepEqual([...new Set(rows.map((x) => x.user))], ['alice'], "alice sees no other user's runs");
    assert.equal((await api('a', '/api/v1/logs?source=exec', { token: alice.token })).status, 403, 'no exec log without the exec scope');
    const ownerLog = (await api('a', '/api/v1/logs?source=cron')).json<{ user: string }[]>();
    assert.deepEqual([...new Set(ownerLog.map((x) => x.user))].sort(), ['alice', 'root'], 'an admin token sees every user');

    const peek = `const out: Record<string, string> = {};
try { out.read = 'read:' + (await files.read('secret')); } catch (e) { out.read = 'refused:' + String(e).slice(0, 80); }
try { await files.write('planted', 'x'); out.write = 'written'; } catch (e) { out.write = 'refused:' + String(e).slice(0, 80); }
try { out.list = 'listed:' + (await files.list('')).length; } catch (e) { out.list = 'refused:' + String(e).slice(0, 80); }
for (const [k, p] of [['files', '/api/v1/files/secret'], ['cron', '/api/v1/logs?source=cron'], ['exec', '/api/v1/logs?source=exec']]) {
  out[k] = String((await fetch(p)).status);
}
try { await acme.order('x.example'); out.acme = 'ordered'; } catch (e) { out.acme = 'refused:' + String(e).slice(0, 80); }
return out;`;
    await put('a', 'peek.ts', peek);
    const asBob = await run('a', 'peek', { token: bob.token });
    assert.equal(asBob.status, 200, asBob.text);
    const b = asBob.json<Record<string, string>>();
    process.stdout.write(`# exec-only token through a script: ${JSON.stringify(b)}\n`);
    for (const k of ['read', 'write', 'list']) assert.match(b[k]!, /^refused:.*HOODY_FORBIDDEN/, `files.${k} needs the files scope`);
    assert.equal(b.files, '403');
    assert.equal(b.cron, '403');
    assert.equal(b.exec, '200', 'the exec log is the exec scope');
    assert.doesNotMatch(b.acme!, /^ordered/);
    assert.equal((await api('a', '/api/v1/files/planted')).status, 404, 'nothing was planted');
    // The owner (every scope) still can, through the same script.
    const asOwner = (await run('a', 'peek')).json<Record<string, string>>();
    assert.equal(asOwner.read, 'read:a-secret');
    assert.equal(asOwner.files, '200');
    assert.equal(asOwner.cron, '200');
  });

  test('(4) 20 concurrent rotations of one token: exactly one 200, the rest 401, one working token', async () => {
    const carol = await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens', { user: 'carol', scopes: ['cron'] });
    // Headers first, bodies later: every request is past the token check before any rotation runs (a slow
    // body is all it takes); the rotations then race for the one token.
    const held: ClientRequest[] = [];
    const pending = Array.from(
      { length: 20 },
      () =>
        new Promise<Answer>((resolve, reject) => {
          const headers = { host: 'api.a.hoody.localhost', authorization: `Bearer ${carol.token}`, 'content-type': 'application/json', 'content-length': '2' };
          const req = httpRequest({ host: '127.0.0.1', port: ports.http, path: '/api/v1/tokens/rotate', method: 'POST', headers, agent: false }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: <T>() => JSON.parse(text) as T });
            });
          });
          req.on('error', reject);
          req.flushHeaders();
          held.push(req);
        }),
    );
    await new Promise((r) => setTimeout(r, 1000));
    for (const req of held) req.end('{}');
    const answers = await Promise.all(pending);
    const statuses = answers.map((x) => x.status);
    process.stdout.write(`# rotation statuses: ${JSON.stringify(statuses)}\n`);
    assert.equal(statuses.filter((s) => s === 200).length, 1, JSON.stringify(statuses));
    assert.equal(statuses.filter((s) => s === 401).length, 19, JSON.stringify(statuses));
    const minted = answers.filter((x) => x.status === 200).map((x) => x.json<{ token: string }>().token);
    const working = [];
    for (const t of [carol.token, ...minted]) {
      const r = await call({ port: ports.http, host: 'cron.a.hoody.localhost', path: '/users/me/entries', headers: { authorization: `Bearer ${t}` } });
      if (r.status === 200) working.push(t);
    }
    assert.deepEqual(working, minted, 'only the one new token works');
  });

  test('(5) the headers a script passes on fetch are bounded: size, count, CR/LF', async () => {
    const src = `const out: Record<string, string> = {};
const tries: [string, Record<string, string>][] = [
  ['long', { 'x-big': 'a'.repeat(9000) }],
  ['many', Object.fromEntries(Array.from({ length: 65 }, (_, i) => ['x-h' + i, 'v']))],
  ['total', Object.fromEntries(Array.from({ length: 3 }, (_, i) => ['x-t' + i, 'b'.repeat(6000)]))],
  ['crlf', { 'x-evil': 'a\\r\\nx-hoody-token-id: 1' }],
  ['ok', { 'x-fine': 'yes' }],
];
for (const [k, h] of tries) {
  for (const u of ['/scripts/echo', 'https://example.invalid/']) {
    const key = k + (u.startsWith('/') ? '' : '-abs');
    try { const r = await fetch(u, { headers: h }); out[key] = 'sent:' + r.status; } catch (e) { out[key] = String(e).slice(0, 60); }
  }
}
return out;`;
    await put('a', 'bounds.ts', src);
    const r = await run('a', 'bounds');
    assert.equal(r.status, 200, r.text);
    const out = r.json<Record<string, string>>();
    process.stdout.write(`# header bounds: ${JSON.stringify(out)}\n`);
    for (const [k, c] of [['long', 'HOODY_FETCH_HEADER_TOO_LONG'], ['many', 'HOODY_FETCH_HEADERS_TOO_MANY'], ['total', 'HOODY_FETCH_HEADERS_TOO_LARGE'], ['crlf', 'HOODY_FETCH_HEADER_INVALID']]) {
      assert.match(out[k]!, new RegExp(c!), `${k}: ${out[k]}`);
      assert.match(out[`${k}-abs`]!, new RegExp(c!), `${k}-abs: ${out[`${k}-abs`]}`);
    }
    assert.equal(out.ok, 'sent:200');
  });
});
