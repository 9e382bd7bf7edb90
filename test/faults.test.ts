import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { loadConfig } from '../daemon/config.js';
import { openDatabase } from '../daemon/db.js';
import { DockerEngine } from '../host/engine.js';
import { poolPaths } from '../host/pool.js';
import { type PrivateEngine, startPrivateEngine } from './support/engine.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { alive, checkDatabase, consistencyProblems, errorShape, type Reply, send } from './support/reliability.js';

interface Ports {
  http: number;
  https: number;
}
interface Run {
  id: number;
  trigger: string;
  status: string;
  exit_code: number | null;
  output: string;
}
interface View {
  name: string;
  state: string;
  engineId: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 30_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A daemon and helpers for one container's public API. */
function client(d: TestDaemon, ports: () => Ports) {
  const tokens = new Map<string, string>();
  return {
    tokens,
    async create(name: string, body: Record<string, unknown> = {}): Promise<View> {
      const c = await d.client.call<{ token: string }>('POST', '/v1/containers', { name, ...body });
      tokens.set(name, c.token);
      return d.client.call<View>('GET', `/v1/containers/${name}`);
    },
    api(ctr: string, method: string, path: string, body?: Buffer | string | object, service = 'api'): Promise<Reply> {
      return send({ port: ports().http, host: `${service}.${ctr}.hoody.localhost`, path, method, body, headers: { authorization: `Bearer ${tokens.get(ctr)}` } });
    },
    admin(method: string, path: string, body?: object): Promise<Reply> {
      return send({ socketPath: d.socket, path, method, body });
    },
  };
}

describe('faults: a full pool', () => {
  // A state dir off the shared pool: the daemon makes its own small loop pool there.
  let stateDir = '';
  let d: TestDaemon;
  let ports: Ports;
  let c: ReturnType<typeof client>;
  before(async () => {
    stateDir = await mkdtemp('/tmp/hoody-faults-pool-');
    d = await startTestDaemon({ HOODY_STATE_DIR: stateDir, HOODY_POOL_SIZE: '400M' });
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    c = client(d, () => ports);
  });
  after(async () => {
    await d?.destroy().catch(() => undefined);
    const pool = poolPaths(stateDir).root;
    if (existsSync(pool)) await execa('umount', [pool], { reject: false });
    await rm(stateDir, { recursive: true, force: true });
  });

  test('a quota is a 507 HOODY_DISK_QUOTA_EXCEEDED (not POOL_FULL), the file keeps its old bytes, and no temp file is left', async () => {
    await c.create('q', { disk: '32m' });
    const mib = (n: number, fill: number) => Buffer.alloc(n * 1024 * 1024, fill);
    assert.equal((await c.api('q', 'PUT', '/api/v1/files/one', mib(12, 1))).status, 201);
    assert.equal((await c.api('q', 'PUT', '/api/v1/files/two', mib(12, 2))).status, 201);
    const over = await c.api('q', 'PUT', '/api/v1/files/one', mib(14, 3));
    assert.equal(over.status, 507, over.text());
    assert.equal(errorShape(over)?.code, 'HOODY_DISK_QUOTA_EXCEEDED');
    assert.ok((await c.api('q', 'GET', '/api/v1/files/one')).body.equals(mib(12, 1)), 'the old content is intact');
    const names = (await c.api('q', 'GET', '/api/v1/files/')).json<{ entries: { name: string }[] }>().entries.map((e) => e.name);
    assert.deepEqual(names, ['one', 'two']);
    // Space comes back once a file goes (qgroup accounting lags a commit behind).
    assert.equal((await c.api('q', 'DELETE', '/api/v1/files/two')).status, 200);
    await until('the quota to free up', async () => (await c.api('q', 'PUT', '/api/v1/files/one', mib(14, 3))).status === 200, 20_000, 500);
  });

  test('a full pool: file and script writes are a clear 507, creates answer 507 or succeed whole, and all recovers once space returns', async (t) => {
    // `"disk": null` (no quota) is valid input: this container is bounded by the pool alone.
    await c.create('p', { disk: null });
    assert.equal((await d.client.call<{ diskBytes: number | null }>('GET', '/v1/containers/p')).diskBytes, null);
    assert.equal((await c.api('p', 'PUT', '/api/v1/files/keep.txt', 'original')).status, 201);
    const pool = poolPaths(stateDir).root;
    const filler = join(pool, 'filler');
    // Take every free byte (fallocate: instant, real allocation).
    for (let size = Number((await execa('findmnt', ['-bno', 'AVAIL', pool])).stdout.trim()); size > 0; size -= 4 * 1024 * 1024) {
      if ((await execa('fallocate', ['-l', String(size), filler], { reject: false })).exitCode === 0) break;
    }
    await execa('btrfs', ['filesystem', 'sync', pool]);

    const big = Buffer.alloc(2 * 1024 * 1024, 7);
    const file = await c.api('p', 'PUT', '/api/v1/files/new.bin', big);
    assert.equal(file.status, 507, file.text());
    assert.equal(errorShape(file)?.code, 'HOODY_POOL_FULL');
    const overwrite = await c.api('p', 'PUT', '/api/v1/files/keep.txt', big);
    assert.equal(overwrite.status, 507);
    assert.equal((await c.api('p', 'GET', '/api/v1/files/keep.txt')).text(), 'original', 'a failed overwrite leaves the old file');
    assert.equal((await c.api('p', 'GET', '/api/v1/files/new.bin')).status, 404, 'nothing half written');
    const script = await c.api('p', 'PUT', '/api/v1/scripts/big.ts', `// ${'x'.repeat(900 * 1024)}\nreturn 1;\n`);
    assert.equal(script.status, 507, script.text());
    assert.equal(errorShape(script)?.code, 'HOODY_POOL_FULL');
    const entries = await readdir(join(pool, 'containers', 'p', 'files'));
    assert.deepEqual(entries, ['keep.txt'], 'no temp file left behind');

    // A create needs only a snapshot's metadata on this pool (the engine's data lives elsewhere), so BTRFS may
    // still find room for it: then it must be a whole, usable container; otherwise a 507 that left nothing.
    const created = await c.admin('POST', '/v1/containers', { name: 'r' });
    t.diagnostic(`a create on the full pool answered ${created.status} ${errorShape(created)?.code ?? ''}`);
    assert.deepEqual(await consistencyProblems(d), [], 'no half-created container');
    const listed = (await d.client.call<View[]>('GET', '/v1/containers')).map((v) => v.name);
    if (created.status === 201) {
      c.tokens.set('r', created.json<{ token: string }>().token);
      assert.equal((await d.client.call<View>('GET', '/v1/containers/r')).state, 'running');
      const entry = await c.api('r', 'POST', '/users/me/entries', { schedule: '@daily', command: 'echo usable; cat /etc/hostname' }, 'cron');
      assert.equal(entry.status, 201, entry.text());
      const run = await c.api('r', 'POST', `/users/me/entries/${entry.json<{ id: string }>().id}/run?wait=true`, undefined, 'cron');
      assert.equal(run.json<Run>().status, 'ok', run.text());
      assert.match(run.json<Run>().output, /^usable\n/);
      assert.equal((await c.api('r', 'GET', '/api/v1/files/')).status, 200);
      assert.equal((await c.admin('DELETE', '/v1/containers/r')).status, 200);
    } else {
      assert.equal(created.status, 507, created.text());
      assert.equal(errorShape(created)?.code, 'HOODY_POOL_FULL');
      assert.ok(!listed.includes('r'), 'a refused create is not listed');
      assert.ok(!existsSync(join(pool, 'containers', 'r')), 'a refused create left no volume');
      assert.deepEqual((await execa('docker', ['ps', '-aq', '--filter', 'label=io.hoody.name=r', '--filter', `label=io.hoody.instance=${loadConfig({}, d.env).instance}`])).stdout, '');
    }
    // The daemon still serves everything that needs no space.
    assert.equal((await c.api('p', 'GET', '/api/v1/files/keep.txt')).status, 200);
    assert.equal((await c.api('p', 'POST', '/users/me/entries', { schedule: '@daily', command: 'true' }, 'cron')).status, 201);
    assert.ok(alive(d));

    await rm(filler);
    await execa('btrfs', ['filesystem', 'sync', pool]);
    await until('writes to work again', async () => (await c.api('p', 'PUT', '/api/v1/files/new.bin', big)).status === 201, 20_000, 500);
    assert.ok((await c.api('p', 'GET', '/api/v1/files/new.bin')).body.equals(big));
    assert.equal((await c.admin('POST', '/v1/containers', { name: 's' })).status, 201);
    assert.deepEqual(await consistencyProblems(d), []);
    await d.stop('SIGKILL');
    assert.deepEqual(checkDatabase(join(stateDir, 'hoody.db')), { integrity: 'ok', foreignKeyViolations: 0 });
    await d.restart();
  });
});

describe('faults: containers that die, vanish or hang', () => {
  let d: TestDaemon;
  let ports: Ports;
  let c: ReturnType<typeof client>;
  const runNow = async (ctr: string, entry: string): Promise<Run> => {
    const r = await c.api(ctr, 'POST', `/users/me/entries/${entry}/run?wait=true`, undefined, 'cron');
    assert.equal(r.status, 200, r.text());
    return r.json<Run>();
  };
  const addEntry = async (ctr: string, schedule: string, command: string): Promise<string> => {
    const r = await c.api(ctr, 'POST', '/users/me/entries', { schedule, command }, 'cron');
    assert.equal(r.status, 201, r.text());
    return r.json<{ id: string }>().id;
  };
  const runsOf = async (ctr: string, entry: string): Promise<Run[]> =>
    (await c.api(ctr, 'GET', `/users/me/entries/${entry}/runs`, undefined, 'cron')).json<Run[]>();

  before(async () => {
    d = await startTestDaemon({ HOODY_CRON_RUN_TIMEOUT: '2s' });
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    c = client(d, () => ports);
  });
  after(() => d?.destroy());

  test('OOM: a command past the memory limit is logged failed (137); a container OOM-killed is restarted and seen to start', async () => {
    const m = await c.create('m', { memory: '32m' });
    const hog = await addEntry('m', '@daily', `awk 'BEGIN{s="xxxxxxxxxxxxxxxx"; while(1) s=s s}'`);
    const boot = await addEntry('m', '@reboot', 'echo up >> /files/boots');
    const run = await runNow('m', hog);
    assert.equal(run.status, 'failed');
    assert.equal(run.exit_code, 137, run.output);

    // Now the container itself: its init made the OOM killer's first pick, then two hogs.
    const before = await new DockerEngine(loadConfig({}, d.env).dockerSocket).docker.getContainer(m.engineId).inspect();
    await dockerExec(m.engineId, [
      'sh',
      '-c',
      `echo 1000 > /proc/1/oom_score_adj; for i in 1 2 3; do awk 'BEGIN{s="xxxxxxxxxxxxxxxx"; while(length(s) < 8388608) s=s s; system("sleep 5")}' & done; wait`,
    ]);
    const states = new Set<string>();
    const restarted = await until('the container to be restarted by its policy', async () => {
      const i = await new DockerEngine(loadConfig({}, d.env).dockerSocket).docker.getContainer(m.engineId).inspect();
      states.add((await d.client.call<View>('GET', '/v1/containers/m')).state);
      return i.State.StartedAt !== before.State.StartedAt && i.State.Running ? i : null;
    });
    assert.equal(restarted.State.OOMKilled, true);
    assert.ok(!states.has('missing'), `never reported missing: ${[...states]}`);
    // The daemon saw the start: the @reboot entry ran in the new incarnation.
    const boots = await until('the @reboot entry to run', async () => {
      const r = (await runsOf('m', boot)).filter((x) => x.status === 'ok');
      return r.length ? r : null;
    });
    assert.equal(boots[0]!.trigger, 'reboot');
    assert.equal((await d.client.call<View>('GET', '/v1/containers/m')).state, 'running');
    assert.ok(alive(d));
  });

  test('deleted behind the daemon\'s back: reported missing, cron runs logged failed, stop is a 409, rm cleans up', async () => {
    const g = await c.create('g');
    const entry = await addEntry('g', '@daily', 'echo hi');
    await execa('docker', ['rm', '-f', g.engineId]);
    assert.equal((await d.client.call<View>('GET', '/v1/containers/g')).state, 'missing');
    assert.equal((await d.client.call<View[]>('GET', '/v1/containers')).find((v) => v.name === 'g')?.state, 'missing');
    const run = await runNow('g', entry);
    assert.equal(run.status, 'failed');
    assert.match(run.output, /missing from the engine/);
    // stop needs the engine container (start would rebuild it from the volume: test/recover.test.ts).
    const stop = await c.admin('POST', '/v1/containers/g/stop');
    assert.equal(stop.status, 409);
    assert.equal(errorShape(stop)?.code, 'HOODY_CONTAINER_MISSING');
    // Files are still served (the volume is the daemon's), and a restart of the daemon keeps reporting it.
    assert.equal((await c.api('g', 'PUT', '/api/v1/files/note', 'still here')).status, 201);
    await d.restart('SIGKILL');
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    assert.equal((await d.client.call<View>('GET', '/v1/containers/g')).state, 'missing');
    const log = await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8');
    assert.match(log, /"missing":\["g"\]/);
    assert.equal((await c.admin('DELETE', '/v1/containers/g')).status, 200);
    assert.deepEqual(await consistencyProblems(d), []);
    assert.ok(alive(d));
  });

  test('a kill while a create made the root layer a subvolume (layer moved aside): the next start undoes the create whole', async () => {
    const k = await c.create('k', { disk: '64m' });
    const layer = (await execa('docker', ['inspect', '-f', '{{.GraphDriver.Data.UpperDir}}', k.engineId])).stdout.replace(/\/diff$/, '');
    await d.stop('SIGKILL');
    // The state adoptDirectory leaves when killed right after its first rename: the layer aside, a plain directory,
    // nothing at its path (the engine's inspect then fails), and the row still 'creating'.
    await execa('cp', ['-a', '--', layer, `${layer}.hoody-adopt`]);
    await execa('btrfs', ['subvolume', 'delete', layer]);
    assert.notEqual((await execa('docker', ['inspect', k.engineId], { reject: false })).exitCode, 0, 'the engine cannot inspect it');
    const db = openDatabase(join(d.stateDir, 'hoody.db'));
    db.prepare(`UPDATE containers SET phase = 'creating' WHERE name = 'k'`).run();
    db.close();
    await d.restart();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    assert.equal((await c.admin('GET', '/v1/containers/k')).status, 404);
    assert.match(await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8'), /"undoneCreates":\["k"\]/);
    assert.equal((await execa('docker', ['ps', '-aq', '--filter', `id=${k.engineId}`])).stdout, '', 'the engine container is gone');
    assert.ok(!existsSync(layer) && !existsSync(`${layer}.hoody-adopt`), 'the layer is gone, aside copy too');
    assert.deepEqual(await consistencyProblems(d), []);
    assert.ok(alive(d));
  });

  test('a stuck command: HOODY_CRON_RUN_TIMEOUT kills it in the container and logs timeout', async () => {
    const s = await c.create('s');
    const entry = await addEntry('s', '@daily', 'sleep 1000 & sleep 1001; echo never');
    const t0 = Date.now();
    const run = await runNow('s', entry);
    const took = Date.now() - t0;
    assert.equal(run.status, 'timeout');
    assert.equal(run.exit_code, null);
    assert.match(run.output, /killed after 2000 ms \(run timeout\)/);
    assert.ok(took < 10_000, `answered after ${took} ms`);
    const ps = await dockerExec(s.engineId, ['ps', '-o', 'pid,args']);
    assert.doesNotMatch(ps.output, /sleep 100[01]/, 'the command and its children are gone');
    assert.ok(alive(d));
  });
});

describe('faults: the Docker engine restarted under a running daemon', () => {
  // An engine of this test's own: stopping it disturbs nobody else on the box, so the test never skips.
  let engine: PrivateEngine | undefined;
  let d: TestDaemon | undefined;
  let ports: Ports;
  let c: ReturnType<typeof client>;
  before(async () => {
    engine = await startPrivateEngine();
    const daemon = await startTestDaemon({ HOODY_DOCKER_SOCKET: engine.socket });
    d = daemon;
    ports = (await daemon.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    c = client(daemon, () => ports);
  });
  after(async () => {
    // Even when the test failed with the engine down: bring it back so the daemon can remove what it made.
    if (engine && !engine.pid()) await engine.start().catch(() => undefined);
    await d?.destroy().catch(() => undefined);
    await engine?.destroy();
  });

  test('503 HOODY_ENGINE_UNAVAILABLE while it is down; afterwards events resume, the start hooks fire, nothing is missing', async () => {
    const dockerd = engine!;
    const daemon = d!;
    assert.equal(loadConfig({}, daemon.env).dockerSocket, dockerd.socket);
    const docker = new DockerEngine(dockerd.socket).docker;
    const e = await c.create('e');
    assert.ok((await docker.getContainer(e.engineId).inspect()).State.Running, "e runs on the test's own engine");
    const boot = (await c.api('e', 'POST', '/users/me/entries', { schedule: '@reboot', command: 'echo up >> /files/boots' }, 'cron')).json<{ id: string }>().id;
    const manual = (await c.api('e', 'POST', '/users/me/entries', { schedule: '@daily', command: 'echo hi' }, 'cron')).json<{ id: string }>().id;
    const reboots = async () => (await c.api('e', 'GET', `/users/me/entries/${boot}/runs`, undefined, 'cron')).json<Run[]>().filter((r) => r.trigger === 'reboot').length;
    // The start hook's work inside the network namespace: the loopback redirects (the egress policy itself lives on the host).
    const netnsRules = async (pid: number) => (await execa('nsenter', [`--net=/proc/${pid}/ns/net`, 'iptables-save', '-t', 'nat'])).stdout;
    const pidOf = async () => (await docker.getContainer(e.engineId).inspect()).State.Pid;
    assert.match(await netnsRules(await pidOf()), /-A HOODY-LO /);

    await dockerd.stop();
    try {
      for (const [method, path, body] of [
        ['GET', '/v1/containers', undefined],
        ['GET', '/v1/containers/e', undefined],
        ['POST', '/v1/containers/e/restart', undefined],
        ['POST', '/v1/containers', { name: 'n' }],
      ] as const) {
        const r = await c.admin(method, path, body);
        assert.equal(r.status, 503, `${method} ${path}: ${r.status} ${r.text()}`);
        assert.equal(errorShape(r)?.code, 'HOODY_ENGINE_UNAVAILABLE');
      }
      const host = (await c.admin('GET', '/v1/host')).json<{ engine: { available: boolean } }>();
      assert.equal(host.engine.available, false);
      assert.equal((await c.admin('GET', '/metrics')).status, 200);
      const run = (await c.api('e', 'POST', `/users/me/entries/${manual}/run?wait=true`, undefined, 'cron')).json<Run>();
      assert.equal(run.status, 'failed', 'a cron run while the engine is down is logged failed');
      assert.equal((await c.api('e', 'GET', '/api/v1/files/')).status, 200, 'the API that needs no engine still answers');
      assert.ok(alive(daemon));
    } finally {
      // Back as it was: same data root, socket and bridge.
      await dockerd.start();
    }
    const first = await until('the admin API to see the engine', async () => {
      const r = await c.admin('GET', '/v1/containers/e');
      return r.status === 200 ? r.json<View>() : null;
    }, 60_000);
    assert.notEqual(first.state, 'missing', 'not falsely missing once the engine is back');
    await until('e to run again (restart policy)', async () => (await daemon.client.call<View>('GET', '/v1/containers/e')).state === 'running', 60_000);
    // The container started while the daemon's event stream was down: its start hooks still ran.
    await until('the @reboot entry to run after the engine restart', async () => (await reboots()) >= 1, 30_000);
    assert.match(await netnsRules(await pidOf()), /-A HOODY-LO /, 'the loopback redirects are back in the new network namespace');
    // And the stream is live again: the next start fires the hook once more.
    await daemon.client.call('POST', '/v1/containers/e/restart');
    await until('the @reboot entry to run after a restart', async () => (await reboots()) >= 2, 30_000);
    assert.equal((await c.admin('POST', '/v1/containers', { name: 'n' })).status, 201);
    assert.deepEqual(await consistencyProblems(daemon), []);
    assert.ok(alive(daemon));
  });
});
