import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { Validator } from '@seriousme/openapi-schema-validator';
import { execa } from 'execa';
import { BtrfsDriver } from '../host/storage/btrfs.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { errorShape, send } from './support/reliability.js';

interface View {
  name: string;
  state: string;
  engineId: string;
  diskBytes: number | null;
  memoryBytes: number;
}

const btrfs = new BtrfsDriver();

describe('containers through the daemon and the CLI', () => {
  let d: TestDaemon;
  let pool: string;
  const inspect = async (name: string) => JSON.parse((await d.hoody(['inspect', name])).stdout) as View;

  before(async () => {
    d = await startTestDaemon();
    pool = join(d.stateDir, 'pool', 'containers');
  });
  after(() => d.destroy());

  test('hoody create a and b --memory 128m --disk 512m: both run, each with its own subvolume and qgroup limit', async () => {
    const a = await d.hoody(['create', 'a', '--json']);
    assert.equal(a.exitCode, 0, a.stderr);
    const created = JSON.parse(a.stdout) as { name: string; id: string; state: string; token: string };
    assert.equal(created.name, 'a');
    assert.equal(created.state, 'running');
    assert.match(created.token, /^hdy_/);
    const b = await d.hoody(['create', 'b', '--memory', '128m', '--disk', '512m']);
    assert.equal(b.exitCode, 0, b.stderr);
    assert.match(b.stdout, /token: hdy_/);

    for (const [name, limit] of [
      ['a', 2 * 1024 ** 3],
      ['b', 512 * 1024 ** 2],
    ] as const) {
      const v = await inspect(name);
      assert.equal(v.state, 'running');
      assert.ok(await btrfs.isVolume(join(pool, name)), `${name} has a subvolume`);
      assert.equal((await btrfs.usage(join(pool, name))).limitBytes, limit);
    }
    assert.notEqual(await btrfs.subvolumeId(join(pool, 'a')), await btrfs.subvolumeId(join(pool, 'b')));
    assert.equal((await inspect('b')).memoryBytes, 128 * 1024 ** 2);
  });

  test("the container's main process is KSM merge-eligible (ksm_merge_any: yes)", async () => {
    const v = await inspect('a');
    const pid = Number((await execa('docker', ['inspect', '-f', '{{.State.Pid}}', v.engineId])).stdout);
    assert.ok(pid > 0);
    assert.match(await readFile(`/proc/${pid}/ksm_stat`, 'utf8'), /ksm_merge_any: yes/);
  });

  test('writing 600 MB into the files area of b fails with a quota error; the pool is unharmed', async () => {
    const v = await inspect('b');
    const r = await dockerExec(v.engineId, ['dd', 'if=/dev/urandom', 'of=/files/big', 'bs=1M', 'count=600']);
    assert.notEqual(r.exitCode, 0);
    assert.match(r.output, /quota exceeded/i);
    const a = await inspect('a');
    const w = await dockerExec(a.engineId, ['sh', '-c', 'echo ok > /files/after-quota && cat /files/after-quota']);
    assert.equal(w.output.trim(), 'ok');
    await dockerExec(v.engineId, ['rm', '-f', '/files/big']);
  });

  test('a file written in a is in hoody clone a c; a change in c does not appear in a', async () => {
    const a = await inspect('a');
    await dockerExec(a.engineId, ['sh', '-c', 'echo from-a > /files/note']);
    const c = await d.hoody(['clone', 'a', 'c', '--json']);
    assert.equal(c.exitCode, 0, c.stderr);
    const cv = await inspect('c');
    assert.equal(cv.state, 'running');
    assert.equal((await dockerExec(cv.engineId, ['cat', '/files/note'])).output.trim(), 'from-a');
    await dockerExec(cv.engineId, ['sh', '-c', 'echo from-c > /files/note']);
    assert.equal((await dockerExec(a.engineId, ['cat', '/files/note'])).output.trim(), 'from-a');
  });

  test('hoody snapshot keeps a read-only copy of the data volume', async () => {
    const r = await d.hoody(['snapshot', 'c', 'before', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { path: string };
    assert.equal(await readFile(join(s.path, 'files', 'note'), 'utf8'), 'from-c\n');
    assert.deepEqual((JSON.parse((await d.hoody(['inspect', 'c'])).stdout) as { snapshots: string[] }).snapshots, ['before']);
    const dup = await d.hoody(['snapshot', 'c', 'before']);
    assert.equal(dup.exitCode, 1);
    assert.match(dup.stderr, /HOODY_SNAPSHOT_TAKEN/);
  });

  test('hoody rm leaves no container, subvolume, qgroup or row (snapshots included)', async () => {
    const v = await inspect('c');
    const qgroup = `0/${await btrfs.subvolumeId(join(pool, 'c'))}`;
    const snapPath = join(d.stateDir, 'pool', 'snapshots', 'c', 'before');
    const r = await d.hoody(['rm', 'c']);
    assert.equal(r.exitCode, 0, r.stderr);
    const ps = await execa('docker', ['ps', '-aq', '--no-trunc', '--filter', `id=${v.engineId}`]);
    assert.equal(ps.stdout.trim(), '');
    assert.equal(existsSync(join(pool, 'c')), false);
    assert.equal(existsSync(snapPath), false);
    assert.equal((await btrfs.qgroupIds(pool)).has(qgroup), false);
    const db = new Database(join(d.stateDir, 'hoody.db'), { readonly: true });
    try {
      for (const table of ['containers', 'tokens', 'snapshots']) {
        const col = table === 'containers' ? 'name' : 'container';
        assert.equal((db.prepare(`SELECT count(*) AS n FROM ${table} WHERE ${col} = 'c'`).get() as { n: number }).n, 0, table);
      }
    } finally {
      db.close();
    }
    const again = await d.hoody(['inspect', 'c']);
    assert.equal(again.exitCode, 1);
    assert.match(again.stderr, /HOODY_CONTAINER_UNKNOWN/);
  });

  test('a create with an unknown image answers 400 HOODY_IMAGE_UNKNOWN and leaves no subvolume', async () => {
    const r = await d.hoody(['create', 'ghost', '--image', 'hoody/no-such-image']);
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /HOODY_IMAGE_UNKNOWN/);
    assert.equal(existsSync(join(pool, 'ghost')), false);
    const ls = JSON.parse((await d.hoody(['ls', '--json'])).stdout) as View[];
    assert.deepEqual(ls.map((c) => c.name), ['a', 'b']);
  });

  test('bad input: invalid names, a duplicate, an unknown container; error bodies and CLI exit codes', async () => {
    for (const name of ['Upper', 'has space', '..', 'a'.repeat(64), '-lead', 'a_b']) {
      await assert.rejects(d.client.call('POST', '/v1/containers', { name }), (e: { status: number; code: string }) => {
        assert.equal(e.status, 400);
        assert.equal(e.code, 'HOODY_NAME_INVALID');
        return true;
      });
    }
    await assert.rejects(d.client.call('POST', '/v1/containers', { name: 'a' }), { status: 409, code: 'HOODY_NAME_TAKEN' });
    await assert.rejects(d.client.call('GET', '/v1/containers/nope'), { status: 404, code: 'HOODY_CONTAINER_UNKNOWN' });
    await assert.rejects(d.client.call('DELETE', '/v1/containers/nope'), { status: 404, code: 'HOODY_CONTAINER_UNKNOWN' });
    await assert.rejects(d.client.call('POST', '/v1/containers', { name: 'x', memory: 'lots' }), { status: 400, code: 'HOODY_SIZE_INVALID' });
    await assert.rejects(d.client.call('POST', '/v1/containers', { nom: 'x' }), { status: 400, code: 'HOODY_BODY_INVALID' });

    const raw = await execa('curl', ['-s', '--unix-socket', d.socket, '-H', 'content-type: application/json', '-d', '{"name":', 'http://hoody/v1/containers']);
    const body = JSON.parse(raw.stdout) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'HOODY_BODY_INVALID');
    assert.ok(body.error.message.length > 0);

    const bad = await d.hoody(['create', 'Bad Name']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /HOODY_NAME_INVALID/);
    const unknown = await d.hoody(['stop', 'nope']);
    assert.equal(unknown.exitCode, 1);
    assert.match(unknown.stderr, /no container nope/);
    const usage = await d.hoody(['create']);
    assert.equal(usage.exitCode, 2);
    assert.match(usage.stderr, /missing required argument/);
    const noDaemon = await execa(process.execPath, [join(process.cwd(), 'dist/daemon/cli/hoody.js'), '--socket', '/nonexistent.sock', 'ls'], { reject: false });
    assert.equal(noDaemon.exitCode, 1);
    assert.match(noDaemon.stderr, /hoodyd does not answer/);
  });

  test('stop, start and restart change the engine state (running flag and StartedAt from the engine)', async () => {
    const engine = async () => {
      const out = (await execa('docker', ['inspect', '-f', '{{.State.Running}} {{.State.StartedAt}} {{.State.Pid}}', (await inspect('b')).engineId])).stdout.trim();
      const [running, startedAt, pid] = out.split(' ');
      return { running: running === 'true', startedAt: startedAt!, pid: Number(pid) };
    };
    const first = await engine();
    assert.equal(first.running, true);
    assert.equal(JSON.parse((await d.hoody(['stop', 'b', '--json'])).stdout).state, 'stopped');
    assert.equal((await engine()).running, false, 'the engine stopped it');
    assert.equal(JSON.parse((await d.hoody(['start', 'b', '--json'])).stdout).state, 'running');
    const started = await engine();
    assert.equal(started.running, true);
    assert.notEqual(started.startedAt, first.startedAt, 'start started it again');
    assert.equal(JSON.parse((await d.hoody(['restart', 'b', '--json'])).stdout).state, 'running');
    const restarted = await engine();
    assert.equal(restarted.running, true);
    assert.notEqual(restarted.startedAt, started.startedAt, 'restart started a new process');
    assert.notEqual(restarted.pid, started.pid);
  });

  test("tokens: extra tokens for other users, rotation replaces a user's tokens and the old one is refused everywhere", async () => {
    const { listeners } = await d.client.call<{ listeners: { http: number } }>('GET', '/v1/host');
    const cronAs = (token: string, host = 'cron.a.hoody.localhost', path = '/users/me/entries') =>
      send({ port: listeners.http, host, path, headers: { authorization: `Bearer ${token}` } });
    const t = JSON.parse((await d.hoody(['token', 'a', '--user', 'alice', '--scope', 'cron', '--json'])).stdout) as { user: string; scopes: string[]; token: string };
    assert.equal(t.user, 'alice');
    assert.deepEqual(t.scopes, ['cron']);
    assert.equal((await cronAs(t.token)).status, 200, 'the new token works');
    const r = JSON.parse((await d.hoody(['token', 'a', '--user', 'alice', '--rotate', '--json'])).stdout) as { token: string; scopes: string[] };
    assert.notEqual(r.token, t.token);
    assert.deepEqual(r.scopes, ['cron']);
    assert.equal((await cronAs(r.token)).status, 200, 'the rotated token works');
    for (const [host, path] of [
      ['cron.a.hoody.localhost', '/users/me/entries'],
      ['cron.hoody.localhost', '/users/me/entries'],
      ['127.0.0.1', '/c/a/users/me/entries'],
    ] as const) {
      const old = await cronAs(t.token, host, path);
      assert.equal(old.status, 401, `the old token on ${host}${path}`);
      assert.equal(errorShape(old)?.code, 'HOODY_UNAUTHORIZED');
    }
    const bad = await d.hoody(['token', 'a', '--scope', 'root']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /HOODY_SCOPE_INVALID/);
  });

  test('restarting the daemon leaves containers running and hoody ls --json unchanged', async () => {
    const before = (await d.hoody(['ls', '--json'])).stdout;
    await d.restart('SIGTERM');
    assert.equal((await d.hoody(['ls', '--json'])).stdout, before);
    await d.restart('SIGKILL');
    assert.equal((await d.hoody(['ls', '--json'])).stdout, before);
    for (const c of JSON.parse(before) as View[]) assert.equal(c.state, 'running');
  });

  test('docker rm -f of a container behind the daemon\'s back makes it missing, not a crash', async () => {
    const v = await inspect('b');
    await execa('docker', ['rm', '-f', v.engineId]);
    const ls = JSON.parse((await d.hoody(['ls', '--json'])).stdout) as View[];
    assert.equal(ls.find((c) => c.name === 'b')?.state, 'missing');
    // stop and restart need the engine container (start rebuilds it: test/recover.test.ts).
    const stop = await d.hoody(['stop', 'b']);
    assert.equal(stop.exitCode, 1);
    assert.match(stop.stderr, /HOODY_CONTAINER_MISSING.*hoody recover b/);
    await d.restart('SIGTERM');
    const after = JSON.parse((await d.hoody(['ls', '--json'])).stdout) as View[];
    assert.equal(after.find((c) => c.name === 'b')?.state, 'missing');
    assert.equal(after.find((c) => c.name === 'a')?.state, 'running');
    const rm = await d.hoody(['rm', 'b']);
    assert.equal(rm.exitCode, 0, rm.stderr);
    assert.equal(existsSync(join(pool, 'b')), false);
  });

  test('hoody stats reports memory, KSM eligibility and disk per container', async () => {
    const s = JSON.parse((await d.hoody(['stats', '--json'])).stdout) as {
      containers: { name: string; rssBytes: number; pssBytes: number; shimPssBytes: number; mergeAny: boolean; diskExclusiveBytes: number }[];
      ksm: { available: boolean };
    };
    const a = s.containers.find((c) => c.name === 'a');
    assert.ok(a);
    assert.ok(a.rssBytes > 0 && a.pssBytes > 0);
    assert.ok(a.shimPssBytes > 512 * 1024, `the shim is counted: ${a.shimPssBytes}`);
    assert.equal(a.mergeAny, true);
    assert.ok(a.diskExclusiveBytes > 0);
    assert.equal(s.ksm.available, true);
  });

  test('GET /metrics is Prometheus text and /v1/openapi.json documents the admin routes', async () => {
    const metrics = await execa('curl', ['-s', '--unix-socket', d.socket, 'http://hoody/metrics']);
    assert.match(metrics.stdout, /^hoody_containers\{state="running"\} 1$/m);
    assert.match(metrics.stdout, /^hoody_ksm_pages_sharing \d+/m);
    const doc = await d.client.call<{ openapi: string; paths: Record<string, unknown> }>('GET', '/v1/openapi.json');
    assert.match(doc.openapi, /^3\./);
    for (const p of ['/v1/containers', '/v1/containers/{name}', '/v1/containers/{name}/clone', '/v1/host', '/metrics', '/v1/containers/{name}/recover', '/v1/containers/{name}/snapshots/{snapshot}/restore'])
      assert.ok(p in doc.paths, `${p} documented`);
    // Checked against the OpenAPI specification's own JSON schema by a real validator.
    const validator = new Validator();
    const verdict = await validator.validate(doc as unknown as Parameters<Validator['validate']>[0]);
    assert.equal(verdict.valid, true, JSON.stringify(verdict.errors, null, 1)?.slice(0, 2000));
    assert.equal(validator.version, '3.0');
    // The validator is strict: a 3.0 document with a JSON Schema `type: null` (valid only from 3.1) fails it.
    const bad = structuredClone(doc) as unknown as { components: { schemas: Record<string, unknown> } };
    bad.components.schemas['def-0'] = { type: 'null' };
    assert.equal((await new Validator().validate(bad as unknown as Parameters<Validator['validate']>[0])).valid, false);
  });

  test('hoody create x --count 20 shows progress and ends with the provisioning rate', async () => {
    const r = await d.hoody(['create', 'x', '--count', '20']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stderr, /creating \[.*\] \d+\/20/);
    const m = /created 20 containers in ([\d.]+) s \(([\d.]+) containers\/s\)/.exec(r.stdout);
    assert.ok(m, r.stdout);
    process.stdout.write(`# provisioning: 20 containers in ${m[1]} s = ${m[2]} containers/s\n`);
    const ls = JSON.parse((await d.hoody(['ls', '--json'])).stdout) as View[];
    assert.equal(ls.filter((c) => c.name.startsWith('x-') && c.state === 'running').length, 20);
  });
});
