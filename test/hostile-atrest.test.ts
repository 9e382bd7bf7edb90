import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { execa } from 'execa';
import { HostCa } from '../containers/tls/ca.js';
import { loadConfig } from '../daemon/config.js';
import { ensureTestHost, startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';

interface Ports {
  http: number;
  https: number;
}

/**
 * A 136-byte static x86-64 program: exit(geteuid() & 0xff). Root gives 0, nobody (65534) gives 254. A tenant can
 * bring any binary to /files; this one needs no libc, so it runs the same on the host as in the container.
 */
function euidProgram(): Buffer {
  // mov eax,107 (geteuid); syscall; mov edi,eax; mov eax,60 (exit); syscall
  const code = Buffer.from([0xb8, 0x6b, 0, 0, 0, 0x0f, 0x05, 0x89, 0xc7, 0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05]);
  const b = Buffer.alloc(120 + code.length);
  b.write('\x7fELF', 0, 'latin1');
  b[4] = 2; // 64-bit
  b[5] = 1; // little endian
  b[6] = 1;
  b.writeUInt16LE(2, 16); // executable
  b.writeUInt16LE(0x3e, 18); // x86-64
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(0x400078n, 24); // entry: the code right after the headers
  b.writeBigUInt64LE(64n, 32); // program headers follow the ELF header
  b.writeUInt16LE(64, 52);
  b.writeUInt16LE(56, 54);
  b.writeUInt16LE(1, 56);
  b.writeUInt32LE(1, 64); // PT_LOAD
  b.writeUInt32LE(5, 68); // r-x
  b.writeBigUInt64LE(0x400000n, 80);
  b.writeBigUInt64LE(0x400000n, 88);
  b.writeBigUInt64LE(BigInt(b.length), 96);
  b.writeBigUInt64LE(BigInt(b.length), 104);
  b.writeBigUInt64LE(0x1000n, 112);
  code.copy(b, 120);
  return b;
}

const code = (a: Answer) => a.json<{ error: { code: string } }>().error.code;
const mode = async (path: string) => (await stat(path)).mode & 0o777;

/** Mount options of the mount a path is on, from /proc/self/mountinfo (via findmnt). */
async function mountOptions(path: string): Promise<{ target: string; options: string[] }> {
  const r = await execa('findmnt', ['-n', '-J', '-o', 'TARGET,VFS-OPTIONS', '-T', path]);
  const fs = (JSON.parse(r.stdout) as { filesystems: { target: string; 'vfs-options': string }[] }).filesystems[0]!;
  return { target: fs.target, options: fs['vfs-options'].split(',') };
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('hostile tenant: data at rest and unbounded growth (issue 10.8, 10.10)', () => {
  let d: TestDaemon;
  let ports: Ports;
  let tokA = '';
  let tokB = '';
  let caDir = '';
  let ca: HostCa;
  const api = (token: string, method: string, path: string, body?: unknown, host = 'api.a.hoody.localhost', headers?: Record<string, string>) =>
    call({ port: ports.http, host, path: `${path}${path.includes('?') ? '&' : '?'}token=${token}`, method, body, headers });

  before(async () => {
    const host = await ensureTestHost();
    // The daemon writes its own log here; the harness's stdout file is the same path, made 0644 before the start.
    d = await startTestDaemon({
      HOODY_LOG_FILE: 'hoodyd.log',
      HOODY_LOG_MAX_SIZE: '4k',
      HOODY_LOG_KEEP: '2',
      HOODY_MAX_CRON_ENTRIES: '3',
      HOODY_MAX_CRON_RUNS_PER_ENTRY: '10',
      HOODY_MAX_CRON_RUNS: '15',
      HOODY_MAX_ROUTES: '2',
      HOODY_MAX_CERTS: '2',
      HOODY_MAX_SCRIPTS: '3',
      HOODY_MAX_SCRIPT_SIZE: '4k',
      HOODY_MAX_EXEC_RUNS: '5',
      HOODY_MAX_REVOKED_TOKENS: '2',
    });
    assert.ok(host.stateDir);
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    tokA = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'a' })).token;
    tokB = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'b' })).token;
    caDir = await mkdtemp(join(tmpdir(), 'hoody-atrest-ca-'));
    ca = await HostCa.loadOrCreate(caDir, 'atrest test issuer');
  });
  after(async () => {
    await d?.destroy();
    if (caDir) await rm(caDir, { recursive: true, force: true });
  });

  test('state at rest is not group/world readable: state dir, keys, db + wal + shm, log, pool image, socket', async () => {
    const s = d.stateDir;
    assert.equal((await mode(s)) & 0o044, 0, `state dir ${(await mode(s)).toString(8)}`);
    assert.equal((await mode(join(s, 'keys'))) & 0o044, 0, 'keys dir');
    for (const f of ['keys/ca.key', 'hoody.db', 'hoody.db-wal', 'hoody.db-shm', 'hoodyd.log']) {
      assert.equal((await mode(join(s, f))) & 0o077, 0, `${f} is ${(await mode(join(s, f))).toString(8)}`);
    }
    assert.equal((await mode(d.socket)) & 0o007, 0, 'admin socket');
    // The shared host's loop-file pool (test state dirs live inside it).
    const shared = loadConfig({});
    assert.equal((await mode(join(shared.stateDir, 'pool.img'))) & 0o077, 0, 'pool image');
  });

  test('a daemon started on a state dir whose files are 0644 makes them private again', async () => {
    await d.stop();
    const s = d.stateDir;
    await chmod(s, 0o755);
    await chmod(join(s, 'keys'), 0o755);
    for (const f of ['keys/ca.key', 'hoody.db', 'hoodyd.log']) await chmod(join(s, f), 0o644);
    await d.restart();
    // The public listeners are on free ports, new ones after a restart.
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    assert.equal((await mode(s)) & 0o044, 0);
    assert.equal((await mode(join(s, 'keys'))) & 0o044, 0);
    for (const f of ['keys/ca.key', 'hoody.db', 'hoody.db-wal', 'hoody.db-shm', 'hoodyd.log']) {
      assert.equal((await mode(join(s, f))) & 0o077, 0, `${f} is ${(await mode(join(s, f))).toString(8)}`);
    }
  });

  test('the pool is mounted nosuid,nodev, and a setuid-root file made in /files gives no root on the host', async () => {
    const a = await d.client.call<{ engineId: string }>('GET', '/v1/containers/a');
    // Container root writes it and makes it setuid root, as a tenant would.
    const script = 'cat > /files/euid && chown 0:0 /files/euid && chmod 4755 /files/euid && stat -c %a /files/euid';
    const mk = await execa('docker', ['exec', '-i', a.engineId, 'sh', '-c', script], { input: euidProgram(), reject: false, all: true });
    assert.equal(mk.exitCode, 0, String(mk.all));
    assert.equal(String(mk.stdout).trim(), '4755', 'container root can set the bit (the mount must make it inert)');
    const inspect = JSON.parse((await execa('docker', ['inspect', a.engineId])).stdout) as { Mounts: { Source: string; Destination: string }[] }[];
    const files = inspect[0]!.Mounts.find((m) => m.Destination === '/files')!.Source;
    const onHost = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', join(files, 'euid')], { reject: false });
    assert.equal(onHost.exitCode, 254, `run as nobody on the host it must keep euid 65534 (exit 254), got ${onHost.exitCode} (0 = root): ${onHost.stderr}`);
    // Inside the container too: an unprivileged user there does not become its root.
    const inside = await execa('docker', ['exec', '-u', '65534:65534', a.engineId, '/files/euid'], { reject: false });
    assert.equal(inside.exitCode, 254, `in the container: exit ${inside.exitCode}`);
    const pool = await mountOptions(join(d.stateDir, 'pool'));
    assert.ok(pool.options.includes('nosuid') && pool.options.includes('nodev'), `${pool.target}: ${pool.options.join(',')}`);
  });

  test('cron entries: the cap refuses the next one with HOODY_CRON_ENTRY_LIMIT', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await api(tokB, 'POST', '/users/me/entries', { schedule: '@daily', command: `echo ${i}` }, 'cron.b.hoody.localhost');
      assert.equal(r.status, 201, r.text);
    }
    const over = await api(tokB, 'POST', '/users/me/entries', { schedule: '@daily', command: 'echo 4' }, 'cron.b.hoody.localhost');
    assert.equal(over.status, 409, over.text);
    assert.equal(code(over), 'HOODY_CRON_ENTRY_LIMIT');
  });

  test('cron runs are trimmed oldest first: 10 kept per entry, 15 per container', async () => {
    const cron = (method: string, path: string, body?: unknown) => api(tokA, method, path, body, 'cron.a.hoody.localhost');
    const fill = async (id: string) => {
      // While the first run sleeps, the next ones are logged `skipped` at once: 50 rows in a burst.
      for (let i = 0; i < 50; i++) assert.ok([200, 202].includes((await cron('POST', `/users/me/entries/${id}/run`)).status));
      await until('the runs to finish', async () => {
        const rows = (await cron('GET', `/users/me/entries/${id}/runs?limit=1000`)).json<{ status: string }[]>();
        return rows.every((r) => r.status !== 'running' && r.status !== 'queued') ? true : undefined;
      });
      // One more real run: its insert trims, and no older run is still exempt as `running`.
      const last = await cron('POST', `/users/me/entries/${id}/run?wait=true`);
      assert.equal(last.json<{ status: string }>().status, 'ok', last.text);
    };
    const e1 = (await cron('POST', '/users/me/entries', { schedule: '@daily', command: 'sleep 1' })).json<{ id: string }>();
    await fill(e1.id);
    const runs1 = (await cron('GET', `/users/me/entries/${e1.id}/runs?limit=1000`)).json<unknown[]>();
    assert.equal(runs1.length, 10, `${runs1.length} runs kept for one entry`);
    const e2 = (await cron('POST', '/users/me/entries', { schedule: '@daily', command: 'sleep 1' })).json<{ id: string }>();
    await fill(e2.id);
    const all = (await cron('GET', '/users/me/runs?limit=1000')).json<{ entry_id: string }[]>();
    // At most 15 (a run exempt while `running` can make it one less); the second entry's 10 are all there.
    assert.ok(all.length <= 15 && all.length >= 14, `${all.length} runs kept for the container`);
    assert.equal(all.filter((r) => r.entry_id === e2.id).length, 10);
  });

  test('proxy routes and certificates: each cap has its own code; updating an existing one still works', async () => {
    for (const h of ['r1.a.test', 'r2.a.test']) assert.equal((await api(tokA, 'PUT', `/api/v1/proxy/routes/${h}`, { port: 8080 })).status, 200);
    const over = await api(tokA, 'PUT', '/api/v1/proxy/routes/r3.a.test', { port: 8080 });
    assert.equal(over.status, 409, over.text);
    assert.equal(code(over), 'HOODY_PROXY_ROUTE_LIMIT');
    assert.equal((await api(tokA, 'PUT', '/api/v1/proxy/routes/r1.a.test', { port: 8081 })).status, 200, 'an existing route can change');
    for (const domain of ['c1.a.test', 'c2.a.test']) {
      const pem = await ca.issue([domain]);
      const r = await api(tokA, 'PATCH', '/api/v1/proxy/cert/bundle', { domain, cert: pem.cert, key: pem.key, chain: ca.certPem });
      assert.equal(r.status, 200, r.text);
    }
    const pem = await ca.issue(['c3.a.test']);
    const overCert = await api(tokA, 'PATCH', '/api/v1/proxy/cert/bundle', { domain: 'c3.a.test', cert: pem.cert, key: pem.key, chain: ca.certPem });
    assert.equal(overCert.status, 409, overCert.text);
    assert.equal(code(overCert), 'HOODY_CERT_LIMIT');
    const renew = await ca.issue(['c1.a.test']);
    assert.equal((await api(tokA, 'PATCH', '/api/v1/proxy/cert/bundle', { domain: 'c1.a.test', cert: renew.cert, key: renew.key, chain: ca.certPem })).status, 200);
  });

  test('scripts: a count cap and a size cap, each with its own code; the exec log keeps the last 5 rows', async () => {
    const put = (path: string, source: string) => api(tokA, 'PUT', `/api/v1/scripts/${path}`, source, 'api.a.hoody.localhost', { 'content-type': 'text/plain' });
    for (const p of ['hi.ts', 's1.ts', 's2.ts']) {
      const r = await put(p, "return 'hi';\n");
      assert.equal(r.status, 201, r.text);
    }
    const over = await put('s3.ts', "return 'no';\n");
    assert.equal(over.status, 409, over.text);
    assert.equal(code(over), 'HOODY_SCRIPT_LIMIT');
    assert.equal((await put('s1.ts', "return 'again';\n")).status, 200, 'rewriting an existing script is allowed');
    const big = await put('s1.ts', `// ${'x'.repeat(5000)}\nreturn 1;\n`);
    assert.equal(big.status, 413, big.text);
    assert.equal(code(big), 'HOODY_SCRIPT_TOO_LARGE');
    for (let i = 0; i < 8; i++) {
      const r = await call({ port: ports.http, host: 'exec.a.hoody.localhost', path: `/scripts/hi?token=${tokA}` });
      assert.equal(r.status, 200, r.text);
    }
    const rows = await until('the exec log', async () => {
      const r = (await api(tokA, 'GET', '/api/v1/logs?source=exec&limit=1000')).json<unknown[]>();
      return r.length > 0 ? r : undefined;
    });
    assert.equal(rows.length, 5, `${rows.length} exec log rows kept`);
  });

  test('token rotations keep only the last 2 revoked tokens of a container', async () => {
    let token = tokB;
    for (let i = 0; i < 5; i++) {
      const r = await api(token, 'POST', '/api/v1/tokens/rotate', undefined, 'api.b.hoody.localhost');
      assert.equal(r.status, 200, r.text);
      token = r.json<{ token: string }>().token;
    }
    tokB = token;
    const db = new Database(join(d.stateDir, 'hoody.db'), { readonly: true });
    try {
      const n = (db.prepare("SELECT count(*) AS n FROM tokens WHERE container = 'b' AND revoked_at IS NOT NULL").get() as { n: number }).n;
      assert.equal(n, 2, `${n} revoked tokens kept`);
    } finally {
      db.close();
    }
  });

  test('the daemon log rotates by size into at most N files, each 0600', async () => {
    // Each added-and-removed cron entry logs two lines; go on until the oldest kept file exists.
    await until(
      'two rotations',
      async () => {
        const e = (await api(tokB, 'GET', '/users/me/entries', undefined, 'cron.b.hoody.localhost')).json<{ id: string }[]>();
        await api(tokB, 'DELETE', `/users/me/entries/${e[0]!.id}`, undefined, 'cron.b.hoody.localhost');
        await api(tokB, 'POST', '/users/me/entries', { schedule: '@daily', command: 'echo again' }, 'cron.b.hoody.localhost');
        const names = await readdir(d.stateDir);
        return names.includes('hoodyd.log.2') ? names : undefined;
      },
      60_000,
    );
    const names = (await readdir(d.stateDir)).filter((n) => n.startsWith('hoodyd.log'));
    assert.deepEqual(names.sort(), ['hoodyd.log', 'hoodyd.log.1', 'hoodyd.log.2']);
    for (const n of names) {
      const p = join(d.stateDir, n);
      assert.equal((await mode(p)) & 0o077, 0, `${n} mode`);
      assert.ok((await stat(p)).size <= 4096 + 2048, `${n} is ${(await stat(p)).size} bytes`);
    }
    assert.match(await readFile(join(d.stateDir, 'hoodyd.log.1'), 'utf8'), /"svc":"hoodyd"/);
  });
});
