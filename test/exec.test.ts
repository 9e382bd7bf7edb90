import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { authorize, type CallerContext } from '../api/container/context.js';
import { execRoutes } from '../api/container/exec.js';
import { filesRoutes } from '../api/container/files.js';
import { installErrorHandling } from '../api/errors.js';
import { CALL_HEADER, CallAuthority } from '../api/public/authority.js';
import { parseDirectives } from '../containers/exec/directives.js';
import { addressRefusal, urlRefusal } from '../containers/exec/outbound.js';
import { ExecLog, execMigrations } from '../containers/exec/schema.js';
import { type AcmeHook, ExecService, type SelfFetch } from '../containers/exec/service.js';
import { createContainer } from '../containers/provision.js';
import type { ContainerRow, TokenRow } from '../containers/store.js';
import { issueToken } from '../containers/token-service.js';
import { hashToken } from '../containers/tokens.js';
import { migrate } from '../daemon/db.js';
import { type TestContext, testContext } from './support/host.js';
import { until } from './support/wait.js';

/**
 * Exec against the real things: a busybox container on the BTRFS pool, its data volume, the exec worker
 * process with real isolates, and the routes behind a fastify app driven over real HTTP.
 *
 * This harness is the extra, not the proof: its onRequest hook and call header stand in for the public router,
 * and its ACME hook is a fake. What depends on them is tested against a real daemon over real HTTP as well:
 * token resolution, scopes, the caller in the log, no token reaching a script, preflights and fetch policy in
 * exec-http.test.ts; caller authority, forged headers and the depth limit in hostile-authority.test.ts;
 * acme.order from a script against pebble (issued, and dry run) in pipeline.test.ts.
 */

interface Harness {
  t: TestContext;
  row: ContainerRow;
  token: string;
  owner: TokenRow;
  app: FastifyInstance;
  base: string;
  exec: ExecService;
  /** Bodies the test's PATCH /api/v1/proxy/cert/bundle route received, with the caller's token id. */
  patched: { body: unknown; tokenId: string }[];
  acmeCalls: { domains: string[]; dryRun: boolean }[];
}

async function harness(): Promise<Harness> {
  const t = await testContext();
  migrate(t.db, [execMigrations]);
  const name = `ex-${randomBytes(3).toString('hex')}`;
  const created = await createContainer(t.ctx, { name });
  const row = created.row;
  const owner = t.ctx.store.activeTokens(row.name)[0]!;
  const app = Fastify({ logger: false });
  const patched: Harness['patched'] = [];
  const acmeCalls: Harness['acmeCalls'] = [];
  // selfFetch as the daemon does it: an inject into the public app with the caller's authority.
  const calls = new CallAuthority();
  const selfFetch: SelfFetch = async (call, req) => {
    assert.equal(call.container, row.name);
    const handle = calls.issue(call);
    try {
      const res = await app.inject({
        method: req.method as 'GET',
        url: req.path,
        headers: { ...req.headers, [CALL_HEADER]: handle },
        payload: req.body ?? undefined,
      });
      return { status: res.statusCode, headers: res.headers, body: res.rawPayload };
    } finally {
      calls.release(handle);
    }
  };
  const acme: AcmeHook = {
    async order(container, domains, opts) {
      assert.equal(container, row.name);
      acmeCalls.push({ domains: [...domains], dryRun: opts.dryRun });
      return { cert: `CERT ${domains.join(',')}`, key: 'KEY' };
    },
  };
  // A queue deep enough for the 200-concurrent-requests test below (the default budget would refuse most of them).
  const exec = new ExecService({ db: t.db, log: pino({ level: 'silent' }), selfFetch, acme, budget: { containerQueue: 256 } });
  installErrorHandling(app);
  app.decorateRequest('hoody', null as unknown as CallerContext);
  // Stands in for the public router: resolves the token (Bearer, ?token=, or the in-process call's token id).
  app.addHook('onRequest', async (req) => {
    const call = calls.take(req);
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const query = new URL(req.url, 'http://x').searchParams.get('token');
    const presented = bearer ?? query;
    let token: TokenRow | null = null;
    if (presented) token = t.ctx.store.tokenByHash(hashToken(presented)) ?? null;
    if (call?.tokenId) token = t.ctx.store.activeTokens(row.name).find((x) => x.id === call.tokenId) ?? null;
    if (token && (token.container !== row.name || token.revokedAt)) token = null;
    req.hoody = { container: row, token, service: 'exec', depth: call?.depth ?? 0 };
  });
  app.patch('/api/v1/proxy/cert/bundle', async (req) => {
    const tok = authorize(req, 'proxy');
    patched.push({ body: req.body, tokenId: tok.id });
    return { ok: true };
  });
  await app.register(filesRoutes);
  await app.register(execRoutes, { exec });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  return { t, row, token: created.token, owner, app, base: `http://127.0.0.1:${port}`, exec, patched, acmeCalls };
}

let h: Harness;

function auth(extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${h.token}`, ...extra };
}

async function put(path: string, source: string): Promise<Response> {
  return fetch(`${h.base}/api/v1/scripts/${path}`, { method: 'PUT', headers: auth({ 'content-type': 'text/plain' }), body: source });
}

async function putOk(path: string, source: string): Promise<void> {
  const r = await put(path, source);
  assert.ok(r.status === 201 || r.status === 200, `PUT ${path}: ${r.status} ${await r.text()}`);
}

async function call(path: string, init: RequestInit = {}): Promise<{ status: number; json: unknown; text: string; headers: Headers; ms: number }> {
  const t0 = Date.now();
  const r = await fetch(`${h.base}${path}`, { ...init, headers: { ...auth(), ...(init.headers as Record<string, string>) } });
  const text = await r.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: r.status, json, text, headers: r.headers, ms: Date.now() - t0 };
}

function errorCode(json: unknown): string | undefined {
  return (json as { error?: { code?: string } } | null)?.error?.code;
}

describe('exec', { timeout: 300_000 }, () => {
  before(async () => {
    h = await harness();
  });
  after(async () => {
    await h?.exec.close();
    await h?.app.close();
    await h?.t.cleanup();
  });

  it('runs the seed shape: a loop of PATCHes to its own API, then returns { renewed: n }', async () => {
    await putOk(
      'certs/renew.ts',
      [
        '// scripts/certs/renew.ts',
        '// @mode serverless',
        '// @timeout 120000',
        'const domains = ["your-app.com", "api.your-app.com", "www.your-app.com"];',
        'for (const d of domains) {',
        '  const res = await fetch("/api/v1/proxy/cert/bundle", { method: "PATCH", body: JSON.stringify({ d, cert: "PEM " + d }) });',
        '  if (!res.ok) throw new Error("PATCH answered " + res.status + " " + (await res.text()));',
        '}',
        'return { "renewed": domains.length };',
      ].join('\n'),
    );
    const r = await call('/scripts/certs/renew');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, '{"renewed":3}');
    assert.equal(r.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.deepEqual(
      h.patched.map((p) => p.body),
      ['your-app.com', 'api.your-app.com', 'www.your-app.com'].map((d) => ({ d, cert: `PEM ${d}` })),
    );
    assert.ok(h.patched.every((p) => p.tokenId === h.owner.id), 'the PATCHes carry the caller’s authority');
    const log = h.exec.logs(h.row.name).filter((e) => e.script === 'certs/renew.ts');
    assert.equal(log.length, 1);
    assert.equal(log[0]!.status, 200);
    assert.equal(log[0]!.tokenId, h.owner.id);
    assert.equal(log[0]!.dryRun, false);
    assert.ok(log[0]!.cpuMs >= 0 && log[0]!.durationMs >= 0);
  });

  it('strips types from a .ts file and hands the request to the script', async () => {
    await putOk(
      'typed.ts',
      [
        'interface Point { x: number; y: number }',
        'type Op = (p: Point) => number;',
        'enum Kind { A = "a", B = "b" }',
        'const norm: Op = (p: Point): number => Math.hypot(p.x, p.y);',
        'class Box<T> { constructor(private readonly v: T) {} get(): T { return this.v; } }',
        'const body = request.body as { p: Point };',
        'return { norm: norm(body.p), kind: Kind.B, box: new Box<string>("x").get(), method: request.method,',
        '  query: request.query, path: request.path, ct: request.headers["content-type"], auth: request.headers.authorization ?? null };',
      ].join('\n'),
    );
    const r = await call('/scripts/typed?a=1&a=2&b=x', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ p: { x: 3, y: 4 } }),
    });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, {
      norm: 5,
      kind: 'b',
      box: 'x',
      method: 'POST',
      query: { a: ['1', '2'], b: 'x' },
      path: '/scripts/typed',
      ct: 'application/json',
      auth: null,
    });
  });

  it('answers with a Response or a Response-like object as is', async () => {
    await putOk('resp.js', 'return new Response("hi there", { status: 201, headers: { "x-a": "1" } });');
    await putOk('resp-like.ts', 'return { status: 202, headers: { "x-b": "2" }, body: { a: 1 } };');
    await putOk('nothing.ts', 'const x = 1;');
    const a = await call('/scripts/resp');
    assert.equal(a.status, 201);
    assert.equal(a.text, 'hi there');
    assert.equal(a.headers.get('x-a'), '1');
    const b = await call('/scripts/resp-like');
    assert.equal(b.status, 202);
    assert.deepEqual(b.json, { a: 1 });
    assert.equal(b.headers.get('x-b'), '2');
    const c = await call('/scripts/nothing');
    assert.equal(c.status, 204);
  });

  it('ends an endless loop after an await at its @timeout (504) while other requests are served', async () => {
    await putOk('slow.ts', '// @timeout 1500\nawait files.write("slow.started", "1");\nawait new Promise((r) => setTimeout(r, 20));\nwhile (true) {}');
    await putOk('quick.ts', 'return { quick: true };');
    await call('/scripts/quick'); // warm
    let slowDoneAt = 0;
    const slow = call('/scripts/slow').then((r) => {
      slowDoneAt = Date.now();
      return r;
    });
    await until('the slow script to run', async () => (await call('/api/v1/files/slow.started')).status === 200, { timeoutMs: 10_000, everyMs: 20 });
    const quick = await call('/scripts/quick');
    const quickDoneAt = Date.now();
    assert.equal(quick.status, 200);
    const s = await slow;
    assert.equal(s.status, 504, s.text);
    assert.equal(errorCode(s.json), 'HOODY_SCRIPT_TIMEOUT');
    // At its own @timeout, not at some later default; the slack is for a loaded box (latency lives in bench/).
    assert.ok(s.ms >= 1500 && s.ms < 6000, `timed out after ${s.ms} ms`);
    assert.ok(quickDoneAt < slowDoneAt, 'the quick script answered while the slow one still ran');
    const again = await call('/scripts/quick');
    assert.equal(again.status, 200);
  });

  it('ends a synchronous endless loop at its @timeout', async () => {
    await putOk('spin.js', '// @timeout 500\nwhile (true) {}');
    const s = await call('/scripts/spin');
    assert.equal(s.status, 504, s.text);
    assert.equal(errorCode(s.json), 'HOODY_SCRIPT_TIMEOUT');
    assert.ok(s.ms >= 500 && s.ms < 5000, `timed out after ${s.ms} ms`);
  });

  it('answers a memory bomb with HOODY_SCRIPT_MEMORY, and the next request runs in a new isolate', async () => {
    await putOk(
      'bomb.ts',
      '// @memory 16\nif (request.query.bomb) { const a: number[][] = []; while (true) a.push(new Array(100000).fill(Math.random())); }\nreturn { ok: true };',
    );
    assert.equal((await call('/scripts/bomb')).status, 200);
    const b = await call('/scripts/bomb?bomb=1');
    assert.ok(b.status >= 500, b.text);
    assert.equal(errorCode(b.json), 'HOODY_SCRIPT_MEMORY');
    const next = await call('/scripts/bomb');
    assert.equal(next.status, 200, next.text);
    assert.deepEqual(next.json, { ok: true });
  });

  it('turns a throw into a 500 with the message, logged with the console output', async () => {
    await putOk('boom.ts', 'console.log("about to fail", { n: 1 });\nconsole.warn("careful");\nthrow new Error("boom");');
    const r = await call('/scripts/boom');
    assert.equal(r.status, 500);
    assert.equal(errorCode(r.json), 'HOODY_SCRIPT_ERROR');
    assert.match((r.json as { error: { message: string } }).error.message, /boom/);
    const row = h.exec.logs(h.row.name).filter((e) => e.script === 'boom.ts').at(-1)!;
    assert.equal(row.status, 500);
    assert.match(row.error ?? '', /boom/);
    assert.equal(row.console, 'about to fail {"n":1}\n[warn] careful');
  });

  it('caps console output per run', async () => {
    await putOk('chatty.ts', 'for (let i = 0; i < 100000; i++) console.log("line " + i + " " + "x".repeat(50));\nreturn 1;');
    const r = await call('/scripts/chatty');
    assert.equal(r.status, 200);
    const row = h.exec.logs(h.row.name).filter((e) => e.script === 'chatty.ts').at(-1)!;
    assert.ok(row.console.length <= 16 * 1024 + 64, `console kept ${row.console.length} chars`);
    assert.match(row.console, /\[console output truncated\]$/);
  });

  it('@cors answers preflights without running or a token, and marks real responses', async () => {
    await putOk('cors.ts', '// @cors *\nreturn { cors: true };');
    await putOk('cors-origin.ts', '// @cors https://app.example\nthrow new Error("nope");');
    const pre = await fetch(`${h.base}/scripts/cors`, {
      method: 'OPTIONS',
      headers: { origin: 'https://x.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, x-k' },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), '*');
    assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/);
    assert.equal(pre.headers.get('access-control-allow-headers'), 'content-type, x-k');
    const real = await call('/scripts/cors', { headers: { origin: 'https://x.example' } });
    assert.equal(real.status, 200);
    assert.equal(real.headers.get('access-control-allow-origin'), '*');
    const failed = await call('/scripts/cors-origin', { headers: { origin: 'https://app.example' } });
    assert.equal(failed.status, 500);
    assert.equal(failed.headers.get('access-control-allow-origin'), 'https://app.example');
    assert.equal(failed.headers.get('vary'), 'Origin');
  });

  it('@auth none runs without a token; other scripts answer 401 without one', async () => {
    await putOk('public.ts', '// @auth none\nreturn { open: true };');
    const open = await fetch(`${h.base}/scripts/public`);
    assert.equal(open.status, 200);
    assert.deepEqual(await open.json(), { open: true });
    assert.equal(h.exec.logs(h.row.name).filter((e) => e.script === 'public.ts').at(-1)!.tokenId, null);
    const closed = await fetch(`${h.base}/scripts/typed`);
    assert.equal(closed.status, 401);
    assert.equal(errorCode(await closed.json()), 'HOODY_UNAUTHORIZED');
    const missing = await fetch(`${h.base}/scripts/no/such/script`);
    assert.equal(missing.status, 401, 'no existence leak to callers without a token');
    assert.equal((await call('/scripts/no/such/script')).status, 404);
    const withQueryToken = await fetch(`${h.base}/scripts/quick?token=${encodeURIComponent(h.token)}`);
    assert.equal(withQueryToken.status, 200);
    const narrow = issueToken(h.t.ctx.store, h.row.name, 'root', ['files']);
    const forbidden = await fetch(`${h.base}/scripts/quick`, { headers: { authorization: `Bearer ${narrow.token}` } });
    assert.equal(forbidden.status, 403);
  });

  it('?dry_run=true sets request.dry_run and reaches acme.order', async () => {
    await putOk('dry.ts', 'const c = await acme.order(["a.example", "b.example"]);\nreturn { dry: request.dry_run, cert: c.cert };');
    const wet = await call('/scripts/dry');
    assert.deepEqual(wet.json, { dry: false, cert: 'CERT a.example,b.example' });
    const dry = await call('/scripts/dry?dry_run=true');
    assert.deepEqual(dry.json, { dry: true, cert: 'CERT a.example,b.example' });
    assert.deepEqual(h.acmeCalls.slice(-2), [
      { domains: ['a.example', 'b.example'], dryRun: false },
      { domains: ['a.example', 'b.example'], dryRun: true },
    ]);
    assert.equal(h.exec.logs(h.row.name).filter((e) => e.script === 'dry.ts').at(-1)!.dryRun, true);
  });

  it('fetch of a relative URL reads this container’s own files; loopback, metadata and hoody hosts are refused', async () => {
    const w = await fetch(`${h.base}/api/v1/files/notes/x.txt`, { method: 'PUT', headers: auth(), body: 'hello from files' });
    assert.equal(w.status, 201);
    const port = new URL(h.base).port;
    await putOk(
      'net.ts',
      [
        'const refused = async (u: string) => { try { await fetch(u); return "fetched"; } catch (e) { return (e as Error).message; } };',
        'const own = await fetch("/api/v1/files/notes/x.txt");',
        'return {',
        '  own: await own.text(), status: own.status,',
        '  meta: await refused("http://169.254.169.254/latest/meta-data/"),',
        `  loop: await refused("http://127.0.0.1:${port}/scripts/quick"),`,
        `  local: await refused("http://localhost:${port}/"),`,
        '  v6: await refused("http://[::1]/"),',
        '  mapped: await refused("http://[::ffff:127.0.0.1]/"),',
        '  priv: await refused("http://10.1.2.3/"),',
        '  hoody: await refused("http://exec.other.hoody.localhost/scripts/x"),',
        '  unix: await refused("file:///etc/passwd"),',
        '};',
      ].join('\n'),
    );
    const r = await call('/scripts/net');
    assert.equal(r.status, 200, r.text);
    const j = r.json as Record<string, unknown>;
    assert.equal(j.own, 'hello from files');
    assert.equal(j.status, 200);
    for (const k of ['meta', 'loop', 'local', 'v6', 'mapped', 'priv', 'hoody', 'unix'])
      assert.match(String(j[k]), /^HOODY_FETCH_REFUSED: fetch refused: /, `${k}: ${j[k]}`);
  });

  it('stops scripts that call themselves through fetch after a few levels (508)', async () => {
    await putOk('loop.ts', 'const r = await fetch("/scripts/loop");\nif (r.status === 508) return "bottom";\nreturn await r.json();');
    const r = await call('/scripts/loop');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json, 'bottom');
  });

  it('gives scripts files.* confined to the files area', async () => {
    await mkdir(join(h.row.volume, 'files'), { recursive: true });
    await symlink('/etc', join(h.row.volume, 'files', 'etc-link')).catch(() => undefined);
    await putOk(
      'fs.ts',
      [
        'await files.write("out/a.json", JSON.stringify({ v: 1 }));',
        'const back = JSON.parse(await files.read("out/a.json"));',
        'const names = (await files.list("out")).map((e: { name: string }) => e.name);',
        'const tryIt = async (f: () => Promise<unknown>) => { try { await f(); return "ok"; } catch (e) { return (e as Error).message; } };',
        'return { back, names,',
        '  up: await tryIt(() => files.read("../scripts/fs.ts")),',
        '  abs: await tryIt(() => files.read("/etc/passwd")),',
        '  link: await tryIt(() => files.read("etc-link/passwd")),',
        '  del: await tryIt(() => files.delete("out/a.json")) };',
      ].join('\n'),
    );
    const r = await call('/scripts/fs');
    assert.equal(r.status, 200, r.text);
    const j = r.json as Record<string, unknown>;
    assert.deepEqual(j.back, { v: 1 });
    assert.deepEqual(j.names, ['a.json']);
    for (const k of ['up', 'abs', 'link']) assert.match(String(j[k]), /HOODY_PATH_INVALID/, `${k}: ${j[k]}`);
    assert.equal(j.del, 'ok');
  });

  it('gives scripts nothing of the host: no process, require, import() or constructor escape', async () => {
    await putOk(
      'escape.ts',
      [
        'const attempt = (f: () => unknown) => { try { const v = f(); return typeof v === "string" ? v : typeof v; } catch (e) { return "threw " + (e as Error).name; } };',
        'const self = this as unknown as { constructor: { constructor: (s: string) => () => unknown } };',
        'return {',
        '  process: typeof process, require: typeof require, globalProcess: typeof (globalThis as Record<string, unknown>).process,',
        '  imp: await import("fs").then(() => "loaded", (e) => "refused: " + e.message),',
        '  ctor: attempt(() => self.constructor.constructor("return process")()),',
        '  ctorGlobal: attempt(() => (self.constructor.constructor("return this")() as Record<string, unknown>).process),',
        '  fnCtor: attempt(() => (console.log as unknown as { constructor: (s: string) => () => unknown }).constructor("return typeof process")()),',
        '  raw: [typeof (globalThis as Record<string, unknown>).__hoody_call, typeof (globalThis as Record<string, unknown>).__hoody_log],',
        '  background: [typeof (globalThis as Record<string, unknown>).FinalizationRegistry, typeof (Atomics as unknown as Record<string, unknown>).waitAsync],',
        '};',
      ].join('\n'),
    );
    const r = await call('/scripts/escape');
    assert.equal(r.status, 200, r.text);
    const j = r.json as Record<string, unknown>;
    assert.equal(j.process, 'undefined');
    assert.equal(j.require, 'undefined');
    assert.equal(j.globalProcess, 'undefined');
    assert.match(String(j.imp), /^refused/);
    assert.ok(j.ctor === 'threw ReferenceError' || j.ctor === 'undefined', `constructor escape gave ${JSON.stringify(j.ctor)}`);
    assert.equal(j.ctorGlobal, 'undefined');
    assert.equal(j.fnCtor, 'undefined'); // a host function's constructor is the isolate's own Function
    assert.deepEqual(j.raw, ['undefined', 'undefined']);
    assert.deepEqual(j.background, ['undefined', 'undefined']);
  });

  it('refuses bad magic comments, syntax errors and path escapes with their codes', async () => {
    const cases: [string, string, string, RegExp][] = [
      ['bad1.ts', '// @timeout soon\nreturn 1;', 'HOODY_SCRIPT_DIRECTIVE_INVALID', /line 1/],
      ['bad2.ts', '// comment\n// @bogus yes\nreturn 1;', 'HOODY_SCRIPT_DIRECTIVE_INVALID', /line 2.*@bogus/],
      ['bad3.ts', '// @cors https://app.example/path\nreturn 1;', 'HOODY_SCRIPT_DIRECTIVE_INVALID', /origin/],
      ['bad4.ts', '// @auth maybe\nreturn 1;', 'HOODY_SCRIPT_DIRECTIVE_INVALID', /token or none/],
      ['bad5.ts', '// @memory 99999\nreturn 1;', 'HOODY_SCRIPT_MEMORY_CEILING', /ceiling of 128 MB/],
      ['bad5b.ts', '// @memory 4\nreturn 1;', 'HOODY_SCRIPT_DIRECTIVE_INVALID', /between/],
      ['bad6.ts', 'const x: number = ;\nreturn x;', 'HOODY_SCRIPT_SYNTAX', /line 1/],
      ['bad7.js', 'const x: number = 1;', 'HOODY_SCRIPT_SYNTAX', /line 1/],
      ['bad8.ts', 'return 1;\n}\n{', 'HOODY_SCRIPT_SYNTAX', /line/],
    ];
    for (const [path, source, code, message] of cases) {
      const r = await put(path, source);
      const j = (await r.json()) as { error: { code: string; message: string } };
      assert.equal(r.status, 400, `${path}: ${JSON.stringify(j)}`);
      assert.equal(j.error.code, code, path);
      assert.match(j.error.message, message, path);
      assert.equal((await call(`/api/v1/scripts/${path}`)).status, 404, `${path} was not written`);
    }
    for (const p of ['..%2Fescape.ts', 'a/..%2F..%2Fescape.ts', '%2Fetc%2Fescape.ts', 'x%00y.ts']) {
      const r = await put(p, 'return 1;');
      assert.equal(r.status, 400, p);
      assert.equal(errorCode(await r.json()), 'HOODY_PATH_INVALID', p);
    }
    await symlink('/tmp', join(h.row.volume, 'scripts', 'out-link')).catch(() => undefined);
    const viaLink = await put('out-link/evil.ts', 'return 1;');
    assert.equal(viaLink.status, 400);
    assert.equal(errorCode(await viaLink.json()), 'HOODY_PATH_INVALID');
    const runLink = await call('/scripts/out-link/evil');
    assert.equal(runLink.status, 400);
  });

  it('lists, reads and deletes scripts through the write API', async () => {
    await putOk('admin/tool.ts', '// @timeout 2000\n// @cors *\nreturn 1;');
    await putOk('renew.sh', '#!/bin/sh\necho renew\n');
    const list = (await call('/api/v1/scripts')).json as { path: string; size: number; mtime: string; runnable: boolean; directives: unknown }[];
    const tool = list.find((s) => s.path === 'admin/tool.ts')!;
    assert.ok(tool.size > 0 && !Number.isNaN(Date.parse(tool.mtime)));
    assert.deepEqual(tool.directives, { ...parseDirectives(''), timeoutMs: 2000, cors: '*' });
    assert.equal(list.find((s) => s.path === 'renew.sh')!.runnable, false);
    const src = await call('/api/v1/scripts/admin/tool.ts');
    assert.equal(src.text, '// @timeout 2000\n// @cors *\nreturn 1;');
    assert.equal((await call('/api/v1/scripts/admin/tool.ts', { method: 'DELETE' })).status, 200);
    assert.equal((await call('/api/v1/scripts/admin/tool.ts')).status, 404);
    assert.equal((await call('/scripts/admin/tool')).status, 404);
    const replaced = await put('quick.ts', 'return { quick: "v2" };');
    assert.equal(replaced.status, 200);
    assert.deepEqual((await call('/scripts/quick')).json, { quick: 'v2' });
  });

  it('says acme is unavailable when the host has no ACME hook', async () => {
    const bare = new ExecService({ db: h.t.db, log: pino({ level: 'silent' }), selfFetch: async () => ({ status: 500, headers: {}, body: Buffer.alloc(0) }) });
    try {
      await putOk('acme-missing.ts', 'return await acme.order("x.example");');
      await assert.rejects(
        bare.run(h.row, 'acme-missing', { method: 'GET', path: '/scripts/acme-missing', query: {}, headers: {}, body: null, dryRun: false, caller: null }),
        (err: Error & { code?: string }) => err.code === 'HOODY_SCRIPT_ERROR' && /acme is not available/.test(err.message),
      );
    } finally {
      await bare.close();
    }
  });

  it('survives the worker dying mid-run: the run fails with 502, the next one gets a new worker', async () => {
    await putOk('wait.ts', '// @timeout 20000\nawait files.write("wait.started", "1");\nawait new Promise((r) => setTimeout(r, 15000));\nreturn 1;');
    await call('/scripts/quick');
    const pid = h.exec.workerPid;
    assert.ok(pid);
    const pending = call('/scripts/wait');
    // Killed mid-run: once the run is under way (it wrote its mark), not after a guessed delay.
    await until('the run to be under way', async () => (await call('/api/v1/files/wait.started')).status === 200, { timeoutMs: 10_000, everyMs: 20 });
    process.kill(pid, 'SIGKILL');
    const r = await pending;
    assert.equal(r.status, 502, r.text);
    assert.equal(errorCode(r.json), 'HOODY_EXEC_WORKER_FAILED');
    const next = await call('/scripts/quick');
    assert.equal(next.status, 200);
    assert.notEqual(h.exec.workerPid, pid);
  });

  it('runs each request in a fresh context, reusing the script’s isolate', async () => {
    await putOk('counter.ts', 'const g = globalThis as { n?: number };\ng.n = (g.n ?? 0) + 1;\nreturn g.n;');
    const svc = new ExecService({ db: h.t.db, log: pino({ level: 'silent' }), selfFetch: async () => ({ status: 500, headers: {}, body: Buffer.alloc(0) }) });
    const input = { method: 'GET', path: '/scripts/counter', query: {}, headers: {}, body: null, dryRun: false, caller: null };
    try {
      for (let i = 0; i < 30; i++) assert.equal((await svc.run(h.row, 'counter', input)).body.toString(), '1');
      // Back-to-back runs of one script may take turns on a second isolate, never more.
      const live = (await svc.stats()).liveIsolates;
      assert.ok(live >= 1 && live <= 2, `${live} isolates for 30 runs of one script`);
    } finally {
      await svc.close();
    }
  });

  it('runs a script rewritten behind the API at once, even at the same size with its times put back', async () => {
    // The daemon keeps a prepared script while the file's version (inode, size, times) stays; a process in the
    // container can rewrite the file in place and reset its mtime, but not its change time.
    const file = join(h.row.volume, 'scripts', 'inplace.ts');
    await putOk('inplace.ts', "return 'AAAA';\n");
    assert.equal((await call('/scripts/inplace')).json, 'AAAA');
    await new Promise((r) => setTimeout(r, 100)); // past the settle time: this version is kept from the next run on
    assert.equal((await call('/scripts/inplace')).json, 'AAAA');
    const before = await stat(file, { bigint: true });
    await writeFile(file, "return 'BBBB';\n", { flag: 'r+' });
    const ns = before.mtimeNs % 1_000_000_000n;
    await execa('touch', ['-m', '-d', `@${before.mtimeNs / 1_000_000_000n}.${String(ns).padStart(9, '0')}`, file]);
    const after = await stat(file, { bigint: true });
    assert.equal(after.ino, before.ino, 'the same inode');
    assert.equal(after.size, before.size, 'the same size');
    assert.equal(after.mtimeNs, before.mtimeNs, 'the same mtime, to the nanosecond');
    assert.notEqual(after.ctimeNs, before.ctimeNs, 'only the change time tells');
    assert.equal((await call('/scripts/inplace')).json, 'BBBB', 'the new content runs');
    await new Promise((r) => setTimeout(r, 100));
    await writeFile(file, "return 'CCCC';\n", { flag: 'r+' });
    assert.equal((await call('/scripts/inplace')).json, 'CCCC', 'and a rewrite right after a run, too');
  });

  it('caps live isolates (least recently used out), disposes idle ones and a closed container’s; their compiled code outlives them', async () => {
    const pick = (c: { hits: number; misses: number } | null | undefined) => ({ hits: c?.hits, misses: c?.misses });
    for (let i = 0; i < 6; i++) await putOk(`cap/s${i}.ts`, `return ${i};`);
    const svc = new ExecService({
      db: h.t.db,
      log: pino({ level: 'silent' }),
      selfFetch: async () => ({ status: 500, headers: {}, body: Buffer.alloc(0) }),
      maxLiveIsolates: 3,
      idleMs: 1000,
    });
    const input = { method: 'GET', path: '/', query: {}, headers: {}, body: null, dryRun: false, caller: null };
    try {
      for (let i = 0; i < 6; i++) assert.equal((await svc.run(h.row, `cap/s${i}`, input)).body.toString(), String(i));
      assert.equal((await svc.stats()).liveIsolates, 3);
      await until('idle isolates to be disposed', async () => (await svc.stats()).liveIsolates === 0, { timeoutMs: 15_000 });
      assert.deepEqual(pick((await svc.stats()).codeCache), { hits: 0, misses: 6 });
      await svc.run(h.row, 'cap/s0', input);
      await svc.run(h.row, 'cap/s1', input);
      assert.equal((await svc.stats()).liveIsolates, 2);
      // The new isolates compiled from the code the dropped ones left in the cache.
      assert.deepEqual(pick((await svc.stats()).codeCache), { hits: 2, misses: 6 });
      await svc.close(h.row);
      assert.equal((await svc.stats()).liveIsolates, 0, 'a closed container keeps no isolate');
    } finally {
      await svc.close();
    }
  });

  it('answers 200 concurrent requests across 20 scripts correctly', async () => {
    for (let i = 0; i < 20; i++)
      await putOk(`many/s${i}.ts`, `const k: string = String(request.query.k);\nawait new Promise((r) => setTimeout(r, ${i % 5}));\nreturn { script: ${i}, k };`);
    const jobs = Array.from({ length: 200 }, (_, j) => {
      const i = j % 20;
      return call(`/scripts/many/s${i}?k=${j}`).then((r) => ({ r, i, j }));
    });
    const results = await Promise.all(jobs);
    for (const { r, i, j } of results) {
      assert.equal(r.status, 200, `request ${j}: ${r.text}`);
      assert.deepEqual(r.json, { script: i, k: String(j) });
    }
  });
});

describe('exec policy and log (units)', () => {
  it('refuses loopback, link-local, private and hoody hosts; allows public addresses', () => {
    for (const a of ['127.0.0.1', '10.0.0.1', '172.20.1.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', 'fe80::1', 'fd00::1', '::ffff:10.0.0.1', '224.0.0.1'])
      assert.ok(addressRefusal(a), a);
    for (const a of ['1.1.1.1', '93.184.216.34', '2606:4700:4700::1111']) assert.equal(addressRefusal(a), null, a);
    assert.ok(urlRefusal(new URL('http://api.c1.hoody.localhost/'), 'hoody.localhost'));
    assert.ok(urlRefusal(new URL('https://exec.box.example.com./'), 'box.example.com'));
    assert.ok(urlRefusal(new URL('http://2130706433/'), 'hoody.localhost'), 'decimal loopback');
    assert.equal(urlRefusal(new URL('https://acme.example.org/dir'), 'hoody.localhost'), null);
  });

  it('keeps the last N log rows per container', async () => {
    const t = await testContext();
    try {
      migrate(t.db, [execMigrations]);
      t.db
        .prepare(`INSERT INTO containers (name, id, image, memory_bytes, nano_cpus, pids_limit, volume, phase, created_at)
                  VALUES ('c1', 'id1', 'img', 1, 1, 8, '/v', 'ready', 'now'), ('c2', 'id2', 'img', 1, 1, 8, '/v', 'ready', 'now')`)
        .run();
      const log = new ExecLog(t.db, (err) => assert.fail(String(err)), 3);
      const entry = (container: string, i: number) => ({
        container, script: `s${i}.ts`, method: 'GET', time: new Date(1_700_000_000_000 + i).toISOString(), status: 200,
        durationMs: 1, cpuMs: 0.5, tokenId: null, dryRun: false, console: '', error: null, runtime: 'isolate', mode: 'serverless', memoryBytes: null,
      });
      for (let i = 0; i < 10; i++) log.add(entry('c1', i));
      log.add(entry('c2', 0));
      log.add(entry('gone', 0)); // a container deleted meanwhile: dropped, not an error
      assert.deepEqual(log.query('c1').map((e) => e.script), ['s7.ts', 's8.ts', 's9.ts']);
      assert.deepEqual(log.query('c1', { limit: 1 }).map((e) => e.script), ['s9.ts']);
      assert.deepEqual(log.query('c1', { since: new Date(1_700_000_000_008).toISOString() }).map((e) => e.script), ['s8.ts', 's9.ts']);
      assert.deepEqual(log.query('c1', { since: new Date(0).toISOString(), limit: 2 }).map((e) => e.script), ['s7.ts', 's8.ts']);
      assert.equal(log.query('c2').length, 1);
      // A larger cap is trimmed every twentieth of it: never more than 5% over on disk, the query shows the cap.
      const wide = new ExecLog(t.db, (err) => assert.fail(String(err)), 40);
      const onDisk = () => (t.db.prepare("SELECT count(*) AS n FROM exec_runs WHERE container = 'c2'").get() as { n: number }).n;
      let most = 0;
      for (let i = 1; i <= 100; i++) {
        wide.add(entry('c2', i));
        wide.flush();
        most = Math.max(most, onDisk());
      }
      assert.ok(most <= 42, `${most} rows on disk for a cap of 40`);
      assert.deepEqual(wide.query('c2', { limit: 1000 }).map((e) => e.script), Array.from({ length: 40 }, (_, i) => `s${61 + i}.ts`));
    } finally {
      await t.cleanup();
    }
  });
});
