import assert from 'node:assert/strict';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { checkOutcome, parseRunnerMessage } from '../containers/exec/bun-channel.js';
import { serverlessModule, splitImports } from '../containers/exec/bun-module.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The seed's renew.ts shape without a CA: loop, call our own API (with the caller's authority), log, return.
const RENEW = `// @timeout 20000
interface Route { hostname: string; port: number }
const hosts: string[] = ['one.test', 'two.test'];
let n = 0;
for (const h of hosts) {
  if (request.dry_run) { console.log('dry run: would route', h); continue; }
  const r = await fetch('/api/v1/proxy/routes/' + h, { method: 'PUT', body: JSON.stringify({ port: 8000 + hosts.indexOf(h) }) });
  if (!r.ok) throw new Error('PUT ' + h + ': ' + r.status + ' ' + (await r.text()));
  n++;
}
const back = ((await (await fetch('/api/v1/proxy/routes')).json()) as Route[]).find((x) => x.hostname === 'two.test');
await files.write('renewed.txt', 'renewed ' + n);
console.log('renewed', n);
return { renewed: n, dry_run: request.dry_run, port: back ? back.port : null, read: await files.read('renewed.txt') };
`;

const COUNTER = `// @runtime bun
// @mode persistent
// @idle 3s
// @timeout 10000
let n = 0;
export default {
  async fetch(req: Request) {
    const url = new URL(req.url);
    if (url.searchParams.get('crash')) process.exit(3);
    n++;
    console.log('hit', n);
    return Response.json({ n, pid: process.pid, version: 1, method: req.method, body: req.method === 'POST' ? await req.text() : null });
  },
};
`;

describe('exec: a Bun script as a module, and what a runner may send', () => {
  test('leading imports stay at the top, the rest becomes the body; dynamic import and import.meta are code; lines keep their numbers', () => {
    const src = `#!/usr/bin/env bun
// @runtime bun
import pad from 'leftpad';
import type { X } from "./types";
/* a comment */ import {
  a,
  b as c,
} from './multi.js';
import './side-effect.js';
const m = await import('dyn');
console.log(import.meta.url);
return 1;`;
    const { imports, body } = splitImports(src);
    assert.match(imports, /import pad[\s\S]*side-effect\.js';$/);
    assert.ok(body.startsWith('\nconst m = await import'), body);
    const mod = serverlessModule(src);
    assert.equal(mod.split('\n').length, src.split('\n').length + 2);
    assert.equal(mod.split('\n').findIndex((l) => l.includes("import('dyn')")), src.split('\n').findIndex((l) => l.includes("import('dyn')")));
    assert.deepEqual(splitImports('return 1;'), { imports: '', body: 'return 1;' });
    assert.deepEqual(splitImports("import('x'); return 1;").imports, '');
  });

  test('what a runner sends is checked: malformed answers, unknown host calls and unknown kinds are refused', () => {
    const bad = (line: string) =>
      assert.throws(() => parseRunnerMessage(line), (e: Error & { code?: string }) => e.code === 'HOODY_SCRIPT_RESPONSE_INVALID' || e instanceof SyntaxError, line);
    bad('{"t":"done","id":1,"outcome":{"kind":"response","status":"200"}}');
    bad('{"t":"done","id":1,"outcome":{"kind":"json","body":5}}');
    bad('{"t":"done","id":1,"outcome":{"kind":"response","status":200,"headers":{"x":1}}}');
    bad('{"t":"done","id":-1,"outcome":{"kind":"empty"}}');
    bad('{"t":"call","id":1,"call":1,"op":"exec.shell","args":{}}');
    bad('{"t":"become-root"}');
    bad('not json');
    assert.deepEqual(parseRunnerMessage('{"t":"done","id":7,"outcome":{"kind":"bytes","body":{"$b64":"aGk="}},"cpuMs":1,"rss":5}'), {
      t: 'done',
      id: 7,
      outcome: { kind: 'bytes', body: new Uint8Array(Buffer.from('hi')) },
      cpuMs: 1,
      rss: 5,
    });
    assert.equal(parseRunnerMessage(`{"t":"log","id":1,"level":"log","text":"${'x'.repeat(40_000)}"}`).t, 'log');
    assert.deepEqual(checkOutcome({ kind: 'response', status: 201, headers: { a: 'b' }, body: 'x' }), { kind: 'response', status: 201, headers: { a: 'b' }, body: 'x' });
  });
});

describe('exec: the Bun runtime, serverless and persistent, in real containers', () => {
  let d: TestDaemon;
  let port = 0;
  let token = '';
  let tokenB = '';
  let engineId = '';
  let scriptsDir = '';

  const api = (method: string, path: string, body?: unknown, tok = token, name = 'bunny') =>
    call({ port, host: `api.${name}.hoody.localhost`, path: `${path}${path.includes('?') ? '&' : '?'}token=${tok}`, method, body, headers: typeof body === 'string' ? { 'content-type': 'text/plain' } : {} });
  const put = async (path: string, source: string) => api('PUT', `/api/v1/scripts/${path}`, source);
  const exec = (path: string, opts: { method?: string; body?: string } = {}): Promise<Answer> =>
    call({ port, host: 'exec.bunny.hoody.localhost', path: `/scripts/${path}${path.includes('?') ? '&' : '?'}token=${token}`, method: opts.method, body: opts.body, headers: opts.body ? { 'content-type': 'text/plain' } : {} });
  const inContainer = async (script: string) => (await dockerExec(engineId, ['sh', '-c', script])).output;
  const persistent = async () =>
    (await d.client.call<{ containers: { name: string; persistent: { script: string; pid: number | null; rssBytes: number | null; requests: number; restarts: number; state: string }[] }[] }>('GET', '/v1/stats')).containers.find((c) => c.name === 'bunny')!.persistent;

  before(async () => {
    d = await startTestDaemon();
    port = (await d.client.call<{ listeners: { http: number } }>('GET', '/v1/host')).listeners.http;
    token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'bunny', image: 'hoody/base' })).token;
    tokenB = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'other', image: 'hoody/base' })).token;
    engineId = (await d.client.call<{ engineId: string }>('GET', '/v1/containers/bunny')).engineId;
    scriptsDir = join(d.stateDir, 'pool', 'containers', 'bunny', 'scripts');
  });
  after(async () => {
    await d?.destroy();
  });

  test('the renew.ts shape gives the same answer in an isolate and in Bun (dry run too); the exec log says where it ran', async () => {
    assert.equal((await put('renew-iso.ts', RENEW)).status, 201);
    const bun = await put('renew-bun.ts', `// @runtime bun\n${RENEW}`);
    assert.equal(bun.status, 201, bun.text);
    assert.equal(bun.json<{ directives: { runtime: string; mode: string } }>().directives.runtime, 'bun');
    for (const q of ['', 'dry_run=true']) {
      const iso = await exec(`renew-iso?${q}`);
      const b = await exec(`renew-bun?${q}`);
      assert.equal(iso.status, 200, iso.text);
      assert.equal(b.status, 200, b.text);
      assert.deepEqual(b.json(), iso.json());
    }
    assert.deepEqual(await exec('renew-bun').then((r) => r.json()), { renewed: 2, dry_run: false, port: 8001, read: 'renewed 2' });
    const log = (await api('GET', '/api/v1/logs?source=exec')).json<{ script: string; runtime: string; mode: string; console: string; status: number; memoryBytes: number | null }[]>();
    const rows = log.filter((e) => e.script === 'renew-bun.ts');
    assert.ok(rows.length >= 3, JSON.stringify(log).slice(0, 500));
    assert.ok(rows.every((r) => r.runtime === 'bun' && r.mode === 'serverless' && r.status === 200));
    assert.ok(rows.some((r) => /dry run: would route one\.test/.test(r.console)) && rows.some((r) => /renewed 2/.test(r.console)), JSON.stringify(rows));
    assert.ok(rows.every((r) => (r.memoryBytes ?? 0) > 1024 * 1024), 'the Bun process reported its memory');
    const cli = await d.hoody(['logs', 'bunny', '--exec']);
    assert.match(cli.stdout, /exec GET renew-bun\.ts 200 \d+ms cpu=[\d.]+ms bun\/serverless mem=\d+\.\dMiB/);
    assert.match(cli.stdout, /exec GET renew-iso\.ts 200 \d+ms cpu=[\d.]+ms\n/);
  });

  test('a Bun script imports a package vendored in /scripts/node_modules, runs as the caller, reads and writes /files', async () => {
    const pkg = join(scriptsDir, 'node_modules', 'leftpad');
    await mkdir(pkg, { recursive: true });
    await writeFile(join(pkg, 'package.json'), '{"name":"leftpad","version":"1.0.0","type":"module","main":"index.js"}');
    await writeFile(join(pkg, 'index.js'), 'export default (s, n) => String(s).padStart(n, "0");\n');
    const src = `// @runtime bun
import pad from 'leftpad';
import { readFileSync, writeFileSync } from 'node:fs';
import { execSync } from 'node:child_process';
writeFileSync('/files/from-bun.txt', pad(request.query.n, 6));
return { padded: readFileSync('/files/from-bun.txt', 'utf8'), user: execSync('id -un').toString().trim(), cwd: process.cwd() };
`;
    const w = await put('tools/pad.ts', src);
    assert.equal(w.status, 201, w.text);
    const r = await exec('tools/pad?n=42');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { padded: '000042', user: 'root', cwd: '/scripts/tools' });
    // The file is in the container's files area, as the files API sees it.
    assert.equal((await api('GET', '/api/v1/files/from-bun.txt')).text, '000042');
    // Another user's token: the process runs as that user (made in the container on first use).
    const issued = await d.client.call<{ token: string }>('POST', '/v1/containers/bunny/tokens', { user: 'carol', scopes: ['exec'] });
    const asCarol = await call({ port, host: 'exec.bunny.hoody.localhost', path: `/scripts/tools/pad?n=7&token=${issued.token}` });
    assert.equal(asCarol.status, 500, asCarol.text); // carol may not write root's /files/from-bun.txt ...
    assert.match(asCarol.text, /EACCES|permission denied/i); // ... because she is carol, not root
    // Her relative fetch has her authority (exec only: no proxy scope), the owner's has the owner's; @auth none runs as nobody.
    const who = `// @runtime bun\n// @auth none\nimport { execSync } from 'node:child_process';\nreturn { user: execSync('id -un').toString().trim(), routes: (await fetch('/api/v1/proxy/routes')).status };\n`;
    assert.equal((await put('whoami.ts', who)).status, 201);
    const whoAs = async (tok: string) => (await call({ port, host: 'exec.bunny.hoody.localhost', path: `/scripts/whoami${tok ? `?token=${tok}` : ''}` })).json();
    assert.deepEqual(await whoAs(issued.token), { user: 'carol', routes: 403 });
    assert.deepEqual(await whoAs(token), { user: 'root', routes: 200 });
    assert.deepEqual(await whoAs(''), { user: 'nobody', routes: 401 });
  });

  test('a Bun script cannot see the host, the daemon or another container, and cannot take over the exec socket', async () => {
    await writeFile(join(d.stateDir, 'pool', 'containers', 'other', 'files', 'secret.txt'), 'other tenant');
    const src = `// @runtime bun
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
const env = readFileSync('/proc/self/environ', 'utf8').split('\\0');
const key = (env.find((l) => l.startsWith('HOODY_RUN=')) ?? '').slice(10);
// The run's own key, replayed on a second connection: refused (one hello per key).
const replay = await new Promise((resolve) => {
  const s = connect('/.hoody/exec.sock');
  let got = '';
  s.on('data', (c) => { got += c; });
  s.on('close', () => resolve(got === '' ? 'closed' : got));
  s.write(JSON.stringify({ t: 'hello', run: key, pid: 1 }) + '\\n' + JSON.stringify({ t: 'call', id: 1, call: 1, op: 'files.read', args: { path: 'x' } }) + '\\n');
  setTimeout(() => resolve('open'), 2000);
});
return {
  keyLen: key.length,
  replay,
  stateDir: existsSync(${JSON.stringify(d.stateDir)}),
  adminSocket: existsSync(${JSON.stringify(d.socket)}),
  dockerSocket: existsSync('/var/run/docker.sock') || existsSync('/run/docker.sock'),
  hoody: readdirSync('/.hoody').sort(),
  files: readdirSync('/files').includes('secret.txt'),
};
`;
    assert.equal((await put('peek.ts', src)).status, 201);
    const r = await exec('peek');
    assert.equal(r.status, 200, r.text);
    const v = r.json<Record<string, unknown>>();
    assert.ok((v.keyLen as number) > 10, 'the run key was visible to the script (and useless to it)');
    assert.equal(v.replay, 'closed');
    assert.deepEqual([v.stateDir, v.adminSocket, v.dockerSocket, v.files], [false, false, false, false]);
    assert.deepEqual(v.hoody, ['bun', 'bun-runner.mjs', 'exec.sock', 'hoody-agent', 'hoody.sock']);
    // One Bun on the host, whatever the count: the other container's /.hoody/bun is the same inode.
    const w = await api('PUT', '/api/v1/scripts/one.ts', '// @runtime bun\nreturn Bun.version;', tokenB, 'other');
    assert.equal(w.status, 201, w.text);
    const v2 = await call({ port, host: 'exec.other.hoody.localhost', path: `/scripts/one?token=${tokenB}` });
    assert.equal(v2.json(), '1.4.4');
    const inode = async (p: string) => (await stat(p)).ino;
    const agents = join(d.stateDir, 'agents');
    assert.equal(await inode(join(agents, 'bunny', 'bun')), await inode(join(agents, 'other', 'bun')));
    assert.equal(await inode(join(agents, 'bunny', 'bun')), await inode(join(d.stateDir, 'agent', 'bun-1.4.4')));
    // /.hoody is read-only: the runner and Bun cannot be swapped.
    assert.match(await inContainer('echo x > /.hoody/bun-runner.mjs 2>&1; touch /.hoody/new 2>&1; true'), /Read-only file system/);
  });

  test("a script that takes over its runner's socket and forges an answer gets a clear error; the daemon carries on", async () => {
    // The runner writes what JSON.stringify gives it: the script replaces it and sends lines of its own choosing.
    const src = `// @runtime bun
const real = JSON.stringify;
let id = 0;
JSON.stringify = function (v: unknown, ...rest: unknown[]) {
  const text = (real as Function).call(JSON, v, ...rest) as string;
  const m = /"id":(\\d+)/.exec(text);
  if (m && id === 0) id = Number(m[1]);
  return text;
} as typeof JSON.stringify;
console.log('hello'); // learns its run id
const forged = [
  { t: 'call', id: id + 1000, call: 1, op: 'files.read', args: { path: 'x' } }, // another run's authority
  { t: 'done', id, outcome: { kind: 'response', status: 'teapot', headers: {} } },
];
for (const f of forged) {
  JSON.stringify = (() => real(f)) as typeof JSON.stringify;
  console.log('forged');
}
JSON.stringify = real;
await new Promise((r) => setTimeout(r, 3000));
return 'not reached';
`;
    assert.equal((await put('forge.ts', src)).status, 201);
    const r = await exec('forge');
    assert.equal(r.status, 500, r.text);
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_SCRIPT_ERROR');
    assert.match(r.text, /before answering/);
    assert.equal((await exec('tools/pad?n=1')).status, 200, 'the runtime still serves');
    assert.equal(d.process.exitCode, null);
  });

  test('persistent: a counter kept across requests, restarted after a crash, reloaded on rewrite, stopped when idle', async () => {
    const w = await put('counter.ts', COUNTER);
    assert.equal(w.status, 201, w.text);
    const first = (await exec('counter')).json<{ n: number; pid: number }>();
    const second = await exec('counter', { method: 'POST', body: 'hello' });
    assert.equal(second.status, 200, second.text);
    assert.deepEqual(second.json(), { n: 2, pid: first.pid, version: 1, method: 'POST', body: 'hello' });
    assert.equal(first.n, 1);
    let p = await persistent();
    assert.equal(p.length, 1);
    assert.equal(p[0]!.script, 'counter.ts');
    assert.equal(p[0]!.requests, 2);
    assert.ok((p[0]!.rssBytes ?? 0) > 1024 * 1024, JSON.stringify(p));
    const stats = await d.hoody(['stats']);
    assert.match(stats.stdout, /persistent scripts:[\s\S]*bunny\s+counter\.ts\s+root\s+running/);

    // A crash: that request fails, the next one finds it restarted (fresh state).
    const crash = await exec('counter?crash=1');
    assert.equal(crash.status, 500, crash.text);
    assert.match(crash.json<{ error: { code: string } }>().error.code, /HOODY_SCRIPT_ERROR/);
    const after = await exec('counter');
    assert.equal(after.status, 200, after.text);
    assert.equal(after.json<{ n: number }>().n, 1);
    p = await persistent();
    assert.equal(p[0]!.restarts, 1);

    // Rewritten: the next request runs the new version.
    assert.equal((await put('counter.ts', COUNTER.replace('version: 1', 'version: 2'))).status, 200);
    const v2 = (await exec('counter')).json<{ version: number; n: number }>();
    assert.deepEqual([v2.version, v2.n], [2, 1]);

    // Idle for @idle 3s: stopped, the process gone from the container.
    const pid = (await exec('counter')).json<{ pid: number }>().pid;
    assert.match(await inContainer(`cat /proc/${pid}/cmdline | tr '\\0' ' '`), /bun-runner/);
    await sleep(4500);
    assert.deepEqual(await persistent(), []);
    assert.equal((await inContainer(`test -e /proc/${pid} && echo alive || echo gone`)).trim(), 'gone');
    const log = await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8');
    assert.match(log, /persistent script idle: stopped/);
  });

  test('timeouts kill the whole process tree, serverless and persistent', async () => {
    const hang = `// @runtime bun\n// @timeout 1500\nBun.spawn(['sleep', '1002']);\nawait new Promise(() => {});\n`;
    assert.equal((await put('hang.ts', hang)).status, 201);
    const r = await exec('hang');
    assert.equal(r.status, 504, r.text);
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_SCRIPT_TIMEOUT');
    await sleep(500);
    assert.doesNotMatch(await inContainer('ps -eo args 2>/dev/null || cat /proc/[0-9]*/cmdline'), /sleep 1002/);

    const slow = COUNTER.replace('@timeout 10000', '@timeout 1500').replace("if (url.searchParams.get('crash'))", "if (url.searchParams.get('hang')) { Bun.spawn(['sleep', '1001']); await new Promise(() => {}); }\n    if (url.searchParams.get('crash'))");
    assert.equal((await put('slow.ts', slow)).status, 201);
    const before = (await exec('slow')).json<{ pid: number }>();
    const t = await exec('slow?hang=1');
    assert.equal(t.status, 504, t.text);
    await sleep(500);
    const left = await inContainer(`test -e /proc/${before.pid} && echo alive || echo gone; for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done`);
    assert.match(left, /^gone/);
    assert.doesNotMatch(left, /sleep 1001/);
    // The next request starts it again.
    assert.equal((await exec('slow')).json<{ n: number }>().n, 1);
  });

  test('bad combinations are refused when written, with their own code; an image without glibc answers RUNTIME_UNAVAILABLE', async () => {
    for (const src of ['// @mode persistent\nexport default {};', '// @runtime deno\nreturn 1;', '// @runtime isolate\n// @mode persistent\nreturn 1;', '// @runtime bun\n// @idle 5m\nreturn 1;']) {
      const r = await put('bad.ts', src);
      assert.equal(r.status, 400, `${src}: ${r.text}`);
      assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_SCRIPT_RUNTIME_INVALID', src);
    }
    const syntax = await put('bad.ts', "// @runtime bun\nimport x from 'y';\nconst a: number = ;\n");
    assert.equal(syntax.status, 400);
    assert.match(syntax.text, /HOODY_SCRIPT_SYNTAX.*line 3/);
    // hoody/busybox has no glibc: Bun cannot start there, and says so.
    await d.client.call('POST', '/v1/containers', { name: 'tiny' });
    const tiny = (await d.client.call<{ token: string }>('POST', '/v1/containers/tiny/tokens', { user: 'root', scopes: ['exec'] })).token;
    const w = await call({ port, host: 'api.tiny.hoody.localhost', path: `/api/v1/scripts/x.ts?token=${tiny}`, method: 'PUT', body: '// @runtime bun\nreturn 1;', headers: { 'content-type': 'text/plain' } });
    assert.equal(w.status, 201, w.text);
    const r = await call({ port, host: 'exec.tiny.hoody.localhost', path: `/scripts/x?token=${tiny}` });
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_RUNTIME_UNAVAILABLE');
  });
});
