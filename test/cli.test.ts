import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { AdminClient } from '../daemon/client.js';
import { freePort } from '../host/free-port.js';
import { BUSYBOX_IMAGE } from '../host/images.js';
import { KEY_QUOTA, raiseKeyQuota } from '../host/keys.js';
import { poolPaths } from '../host/pool.js';
import { BtrfsDriver } from '../host/storage/btrfs.js';
import { dockerExec, HOODY, removeInstanceOf, tempStateDir } from './support/host.js';
import { call, servedCertificate } from './support/http.js';

/** The CLI entry points no other test runs: host setup, the foreground daemon and its flags, logs, rm. */

const hoody = async (args: string[], env: NodeJS.ProcessEnv = {}) => {
  const r = await execa(process.execPath, [HOODY, ...args], { env: { ...process.env, ...env }, reject: false, timeout: 300_000 });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
};

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}


describe('hoody host setup', () => {
  test('is idempotent: twice exit 0, reports the BTRFS pool, the engine already running and KSM on', async () => {
    // The kernel's default key quota (200 per user) stops commands in remapped containers past ~200 containers.
    await writeFile('/proc/sys/kernel/keys/maxkeys', '200');
    const first = await hoody(['host', 'setup', '--images', 'busybox', '--json']);
    assert.ok(Number((await readFile('/proc/sys/kernel/keys/maxkeys', 'utf8')).trim()) >= 20_000, 'the key quota raised');
    assert.equal(first.exitCode, 0, first.stderr);
    const r = JSON.parse(first.stdout) as { pool: { kind: string; paths: { root: string } }; engineStarted: boolean; ksm: boolean; imagesBuilt: string[] };
    assert.equal((await execa('findmnt', ['-no', 'FSTYPE', '--target', r.pool.paths.root])).stdout.trim(), 'btrfs');
    assert.equal(r.engineStarted, false, 'the engine already answered');
    assert.equal(r.ksm, true);
    assert.equal((await readFile('/sys/kernel/mm/ksm/run', 'utf8')).trim(), '1');
    const second = await hoody(['host', 'setup', '--images', 'busybox']);
    assert.equal(second.exitCode, 0, second.stderr);
    assert.match(second.stdout, new RegExp(`^pool ${r.pool.paths.root} \\(${r.pool.kind}\\); engine already running; KSM on$`));
  });
});

describe('the kernel key quota (units)', () => {
  test('is raised to KEY_QUOTA where lower, and kept where higher', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hoody-keys-'));
    try {
      await writeFile(join(dir, 'maxkeys'), '200\n');
      await writeFile(join(dir, 'maxbytes'), '50000000\n');
      assert.deepEqual(await raiseKeyQuota(dir), { maxkeys: KEY_QUOTA.maxkeys, maxbytes: 50_000_000 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('hoody daemon (foreground) with flags and HOODY_* defaults', () => {
  let stateDir = '';
  let socket = '';
  let child: ChildProcess;
  let client: AdminClient;
  let ports = { http: 0, https: 0 };
  const env: NodeJS.ProcessEnv = {};
  const tokens = new Map<string, string>();
  const domain = 'alt.test';
  const mib = 1024 * 1024;
  const cli = (args: string[]) => hoody(['--socket', socket, ...args], env);
  const cronApi = (ctr: string, method: string, path: string, body?: unknown) =>
    call({ port: ports.http, host: `cron.${ctr}.${domain}`, path, method, body, headers: { authorization: `Bearer ${tokens.get(ctr)}` } });

  before(async () => {
    stateDir = await tempStateDir();
    socket = join(stateDir, 'admin.sock');
    ports = { http: await freePort(), https: await freePort() };
    Object.assign(env, {
      HOODY_DOMAIN: domain,
      HOODY_DEFAULT_MEMORY: '96m',
      HOODY_DEFAULT_CPUS: '0.25',
      HOODY_DEFAULT_DISK: '48m',
      HOODY_DEFAULT_PIDS: '64',
      // The --admin-socket flag must win over this (flags override env).
      HOODY_ADMIN_SOCKET: '/nonexistent/flag-wins.sock',
    });
    const out = openSync(join(stateDir, 'hoodyd.log'), 'a');
    const args = ['daemon', '--state-dir', stateDir, '--admin-socket', socket, '--http-port', String(ports.http), '--https-port', String(ports.https), '--image', BUSYBOX_IMAGE];
    child = spawn(process.execPath, ['--no-node-snapshot', HOODY, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', out, out] });
    client = new AdminClient(socket);
    await until('the admin socket to answer', async () => {
      if (child.exitCode !== null) throw new Error(`hoody daemon exited ${child.exitCode}; see ${stateDir}/hoodyd.log`);
      return client.alive();
    }, 120_000).catch((err) => {
      if (child.exitCode !== null) throw new Error(`hoody daemon exited ${child.exitCode}; see ${stateDir}/hoodyd.log`);
      throw err;
    });
    const created = await cli(['create', 'w', '--json']);
    assert.equal(created.exitCode, 0, created.stderr);
    tokens.set('w', JSON.parse(created.stdout).token);
  });

  after(async () => {
    if (child && child.exitCode === null) {
      for (const c of await client.call<{ name: string }[]>('GET', '/v1/containers').catch(() => [])) await client.call('DELETE', `/v1/containers/${c.name}`).catch(() => undefined);
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    if (stateDir) await removeInstanceOf(env, stateDir);
    // What it made on the pool: subvolumes first, then the directory (only our own temp state dir).
    const storage = new BtrfsDriver();
    const paths = poolPaths(stateDir);
    for (const parent of [paths.containers, paths.templates]) for (const v of await storage.listVolumes(parent).catch(() => [] as string[])) await storage.deleteVolume(v).catch(() => undefined);
    if (stateDir.includes('/pool/tests/')) await rm(stateDir, { recursive: true, force: true });
  });

  test('the listener flags and HOODY_DOMAIN are what the daemon serves: service hosts under the new domain only', async () => {
    const host = await client.call<{ listeners: { http: number; https: number; domain: string; data_plane: { kind: string } } }>('GET', '/v1/host');
    const { data_plane, ...listeners } = host.listeners;
    assert.deepEqual(listeners, { http: ports.http, https: ports.https, domain });
    assert.equal(data_plane.kind, 'haproxy');
    const files = (h: string, https = false) =>
      call({ port: https ? ports.https : ports.http, host: h, path: '/api/v1/files/', headers: { authorization: `Bearer ${tokens.get('w')}` }, tls: https ? { insecure: true } : undefined });
    assert.equal((await files(`api.w.${domain}`)).status, 200);
    assert.equal((await files(`api.w.${domain}`, true)).status, 200);
    assert.match((await servedCertificate(ports.https, `api.w.${domain}`)).subjectaltname ?? '', new RegExp(`DNS:(api|\\*)\\.w\\.${domain.replace(/\./g, '\\.')}`));
    const old = await files('api.w.hoody.localhost');
    assert.equal(old.status, 404, `the default domain is not served: ${old.status} ${old.text}`);
  });

  test('HOODY_DEFAULT_MEMORY/_CPUS/_PIDS are in docker inspect, HOODY_DEFAULT_DISK is the qgroup limit', async () => {
    const w = await client.call<{ engineId: string; memoryBytes: number; diskBytes: number }>('GET', '/v1/containers/w');
    const i = JSON.parse((await execa('docker', ['inspect', w.engineId])).stdout)[0] as { HostConfig: Record<string, unknown> };
    assert.equal(i.HostConfig.Memory, 96 * mib);
    assert.equal(i.HostConfig.NanoCpus, 0.25e9);
    assert.equal(i.HostConfig.PidsLimit, 64);
    const usage = await new BtrfsDriver().usage(join(poolPaths(stateDir).containers, 'w'));
    assert.equal(usage.limitBytes, 48 * mib);
  });

  test('hardening, seen by the engine and from inside: no-new-privileges, all capabilities dropped but a few', async () => {
    const w = await client.call<{ engineId: string }>('GET', '/v1/containers/w');
    const hc = (JSON.parse((await execa('docker', ['inspect', w.engineId])).stdout)[0] as { HostConfig: { SecurityOpt: string[]; CapDrop: string[]; CapAdd: string[] } }).HostConfig;
    // no-new-privileges, and the engine's default seccomp profile with the BTRFS subvolume ioctls taken out (issue 10.5).
    assert.equal(hc.SecurityOpt.length, 2, hc.SecurityOpt.map((o) => o.slice(0, 40)).join(' | '));
    assert.equal(hc.SecurityOpt[0], 'no-new-privileges');
    const seccomp = JSON.parse(hc.SecurityOpt[1]!.replace(/^seccomp=/, '')) as { defaultAction: string; syscalls: { names: string[]; args?: unknown[] }[] };
    assert.equal(seccomp.defaultAction, 'SCMP_ACT_ERRNO');
    assert.ok(seccomp.syscalls.some((r) => r.names.includes('ioctl') && (r.args?.length ?? 0) > 0), 'ioctl is allowed only by argument');
    assert.deepEqual(hc.CapDrop, ['ALL']);
    const small = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'NET_BIND_SERVICE'];
    assert.deepEqual([...hc.CapAdd].map((c) => c.replace(/^CAP_/, '')).sort(), [...small].sort());
    const status = (await dockerExec(w.engineId, ['cat', '/proc/self/status'])).output;
    assert.match(status, /^NoNewPrivs:\s+1$/m);
    // CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7, NET_BIND_SERVICE 10.
    const mask = [0, 1, 3, 4, 5, 6, 7, 10].reduce((m, bit) => m | (1 << bit), 0).toString(16).padStart(16, '0');
    assert.match(status, new RegExp(`^CapEff:\\s+${mask}$`, 'm'));
    assert.match(status, new RegExp(`^CapBnd:\\s+${mask}$`, 'm'));
    assert.notEqual((await dockerExec(w.engineId, ['ip', 'link', 'set', 'lo', 'down'])).exitCode, 0, 'no NET_ADMIN');
  });

  test('a fork bomb stops at the pids limit; the container and the daemon carry on', async () => {
    const w = await client.call<{ engineId: string }>('GET', '/v1/containers/w');
    const pid = Number((await execa('docker', ['inspect', '-f', '{{.State.Pid}}', w.engineId])).stdout);
    const line = (await readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n').find((l) => /:pids:/.test(l));
    const cg = line ? join('/sys/fs/cgroup/pids', line.split(':')[2]!) : join('/sys/fs/cgroup', (await readFile(`/proc/${pid}/cgroup`, 'utf8')).trim().split('::')[1] ?? '');
    assert.equal((await readFile(join(cg, 'pids.max'), 'utf8')).trim(), '64');
    const refused = async () => Number(/max (\d+)/.exec(await readFile(join(cg, 'pids.events'), 'utf8'))?.[1] ?? 0);
    const before = await refused();
    // Bounded: 200 short sleepers in the background, far over the limit; each one ends by itself.
    const bomb = await dockerExec(w.engineId, ['sh', '-c', 'i=0; while [ $i -lt 200 ]; do (sleep 6) & i=$((i+1)); done 2>/dev/null; echo spawned; wait']);
    assert.ok((await refused()) > before, `the kernel refused forks (pids.events): ${bomb.output.slice(0, 200)}`);
    assert.ok(Number((await readFile(join(cg, 'pids.current'), 'utf8')).trim()) <= 64);
    assert.ok(await client.alive(), 'the daemon is fine');
    assert.equal(child.exitCode, null);
    // The sleepers end by themselves; then the container has its pids back and runs commands again.
    await until('the bomb to be over', async () => Number((await readFile(join(cg, 'pids.current'), 'utf8')).trim()) <= 4, 60_000);
    assert.equal((await dockerExec(w.engineId, ['sh', '-c', 'echo $(echo ok)'])).output.trim(), 'ok');
    assert.equal((await client.call<{ state: string }>('GET', '/v1/containers/w')).state, 'running');
  });

  test('hoody logs: --since, --json and --follow show the cron runs', async () => {
    const entry = (await cronApi('w', 'POST', '/users/me/entries', { schedule: '@daily', command: 'echo run-$(cat /proc/sys/kernel/random/uuid)' })).json<{ id: string }>().id;
    const runNow = async () => {
      const r = await cronApi('w', 'POST', `/users/me/entries/${entry}/run?wait=true`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json<{ status: string }>().status, 'ok', r.text);
      return r.json<{ id: number; output: string; status: string }>();
    };
    const first = await runNow();
    const all = await cli(['logs', 'w', '--json']);
    assert.equal(all.exitCode, 0, all.stderr);
    const rows = all.stdout.trim().split('\n').map((l) => JSON.parse(l) as { time: string; entry_id: string; output: string; status: string });
    const firstRow = rows.find((r) => r.output === first.output);
    assert.ok(firstRow, all.stdout);
    assert.equal(firstRow.entry_id, entry);
    assert.equal(firstRow.status, 'ok');
    const plain = await cli(['logs', 'w']);
    assert.match(plain.stdout, new RegExp(`cron ${entry} manual ok exit=0`));
    assert.ok(plain.stdout.includes(first.output.trim()));

    // --follow: a run made after it started appears in its stream.
    const follow = execa(process.execPath, [HOODY, '--socket', socket, 'logs', 'w', '--follow', '--json'], { env: { ...process.env, ...env }, reject: false, buffer: false });
    let streamed = '';
    follow.stdout?.on('data', (c: Buffer) => {
      streamed += c.toString('utf8');
    });
    try {
      await until('the follower to print the existing rows', async () => streamed.includes(first.output.trim()), 30_000);
      const second = await runNow();
      await until('the new run in the --follow stream', async () => streamed.includes(second.output.trim()), 30_000);
      // --since: from the second run's time on, the first is not there.
      const secondRow = streamed
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { time: string; output: string })
        .find((r) => r.output === second.output)!;
      const since = await cli(['logs', 'w', '--since', secondRow.time, '--json']);
      assert.equal(since.exitCode, 0, since.stderr);
      assert.ok(since.stdout.includes(second.output.trim()), since.stdout);
      assert.ok(!since.stdout.includes(first.output.trim()), `--since ${secondRow.time} still shows the first run: ${since.stdout}`);
    } finally {
      follow.kill('SIGTERM');
      await follow;
    }
  });

  test('hoody rm a b c removes all three: rows, engine containers, volumes', async () => {
    await Promise.all(['ra', 'rb', 'rc', 'rd'].map((name) => client.call('POST', '/v1/containers', { name })));
    const ids = await Promise.all(['ra', 'rb', 'rc'].map(async (n) => (await client.call<{ engineId: string }>('GET', `/v1/containers/${n}`)).engineId));
    const r = await cli(['rm', 'ra', 'rb', 'rc']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'removed ra\nremoved rb\nremoved rc');
    const left = (await client.call<{ name: string }[]>('GET', '/v1/containers')).map((c) => c.name);
    assert.deepEqual(left.sort(), ['rd', 'w']);
    for (const id of ids) assert.notEqual((await execa('docker', ['inspect', id], { reject: false })).exitCode, 0, `engine container ${id} is gone`);
    for (const n of ['ra', 'rb', 'rc']) assert.ok(!existsSync(join(poolPaths(stateDir).containers, n)), `${n}'s volume is gone`);
    // A name that is not there: exit 1, and the ones before it were still removed.
    const partial = await cli(['rm', 'rd', 'nope']);
    assert.equal(partial.exitCode, 1);
    assert.ok(!(await client.call<{ name: string }[]>('GET', '/v1/containers')).some((c) => c.name === 'rd'));
  });

  test('SIGTERM: the foreground daemon exits 0 and its socket stops answering', async () => {
    for (const c of await client.call<{ name: string }[]>('GET', '/v1/containers')) await client.call('DELETE', `/v1/containers/${c.name}`);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.equal(await client.alive(), false);
  });
});
