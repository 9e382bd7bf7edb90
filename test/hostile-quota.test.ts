import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { BtrfsDriver } from '../host/storage/btrfs.js';
import { BTRFS_IOC_SNAP_CREATE, BTRFS_IOC_SUBVOL_CREATE, ioctlElf } from './support/ioctl-elf.js';
import { send } from './support/reliability.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';

const MiB = 1024 * 1024;
const LIMIT = 64 * MiB;
// Metadata, the qgroup's reserve granularity and the box's own writes (it is shared): what "about" allows.
const SLACK = 40 * MiB;
const btrfs = new BtrfsDriver();

/** Ids of the subvolumes below `path` (any depth), read from the pool's own subvolume list. */
async function nestedIds(path: string): Promise<number[]> {
  const top = await btrfs.subvolumeId(path);
  const { stdout } = await execa('btrfs', ['subvolume', 'list', path]);
  const parentOf = new Map<number, number>();
  for (const m of stdout.matchAll(/^ID (\d+) gen \d+ top level (\d+) /gm)) parentOf.set(Number(m[1]), Number(m[2]));
  const below = (id: number): boolean => {
    for (let p = parentOf.get(id); p !== undefined; p = parentOf.get(p)) if (p === top) return true;
    return false;
  };
  return [...parentOf.keys()].filter(below);
}

async function poolUsed(path: string): Promise<number> {
  await execa('sync', ['-f', path]);
  return (await btrfs.poolUsage(path)).usedBytes;
}

describe('hostile tenant: the disk limit bounds everything a container writes (issue 10.5)', { timeout: 600_000 }, () => {
  let d: TestDaemon;
  let engineId: string;
  let volume: string;
  let layerDir: string;
  let token: string;
  let ports: { http: number };

  before(async () => {
    d = await startTestDaemon();
    const created = await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'q', disk: '64m' });
    token = created.token;
    engineId = (await d.client.call<{ engineId: string }>('GET', '/v1/containers/q')).engineId;
    ports = (await d.client.call<{ listeners: { http: number } }>('GET', '/v1/host')).listeners;
    volume = join(d.stateDir, 'pool', 'containers', 'q');
    const upper = (await execa('docker', ['inspect', '-f', '{{.GraphDriver.Data.UpperDir}}', engineId])).stdout.trim();
    layerDir = upper.replace(/\/diff$/, '');
  });
  after(() => d?.destroy());

  for (const [where, file] of [
    ['/ (the root filesystem)', '/big'],
    ['/files', '/files/big'],
  ] as const) {
    test(`200 MiB written to ${where} stops at about the 64 MiB limit; the pool grows by no more`, async () => {
      const before = await poolUsed(volume);
      const r = await dockerExec(engineId, ['dd', 'if=/dev/zero', `of=${file}`, 'bs=1M', 'count=200']);
      assert.notEqual(r.exitCode, 0, `dd must fail: ${r.output}`);
      assert.match(r.output, /quota exceeded/i);
      const size = Number((await dockerExec(engineId, ['stat', '-c', '%s', file])).output.trim());
      assert.ok(size <= LIMIT, `${file} is ${size} bytes, over the limit`);
      const grown = (await poolUsed(volume)) - before;
      assert.ok(grown < LIMIT + SLACK, `the pool grew by ${(grown / MiB).toFixed(1)} MiB`);
      assert.equal((await dockerExec(engineId, ['rm', '-f', file])).exitCode, 0);
    });
  }

  test('the files API answers a write past the limit with 507 HOODY_DISK_QUOTA_EXCEEDED, not POOL_FULL', async () => {
    const fill = await dockerExec(engineId, ['dd', 'if=/dev/zero', 'of=/files/fill', 'bs=1M', 'count=200']);
    assert.notEqual(fill.exitCode, 0);
    const r = await send({
      port: ports.http,
      host: 'api.q.hoody.localhost',
      path: '/api/v1/files/more.bin',
      method: 'PUT',
      body: Buffer.alloc(8 * MiB, 1),
      headers: { authorization: `Bearer ${token}` },
      timeoutMs: 60_000,
    });
    assert.equal((await dockerExec(engineId, ['rm', '-f', '/files/fill'])).exitCode, 0);
    assert.equal(r.status, 507, r.text());
    assert.equal(r.json<{ error: { code: string } }>().error.code, 'HOODY_DISK_QUOTA_EXCEEDED');
  });

  test('a subvolume cannot be created or snapshotted inside the container (it would escape the qgroup)', async () => {
    const probes: [string, bigint, string][] = [
      ['subvol-create', BTRFS_IOC_SUBVOL_CREATE, 'nest'],
      ['subvol-create-upper-bits', BTRFS_IOC_SUBVOL_CREATE | (1n << 32n), 'nest-hi'],
      ['snap-create', BTRFS_IOC_SNAP_CREATE, 'snap'],
    ];
    for (const [label, cmd, name] of probes) {
      await writeFile(join(volume, 'files', label), ioctlElf('/files', cmd, name), { mode: 0o755 });
      const r = await dockerExec(engineId, [`/files/${label}`]);
      assert.equal(r.exitCode, 1, `${label}: expected EPERM (exit 1), got exit ${r.exitCode} ${r.output}`);
      assert.ok(!existsSync(join(volume, 'files', name)), `${label} made ${name}`);
    }
    // Ordinary ioctls still pass the filter: a terminal query answers ENOTTY, not EPERM.
    await writeFile(join(volume, 'files', 'tcgets'), ioctlElf('/files', 0x5401n, 'x'), { mode: 0o755 });
    assert.equal((await dockerExec(engineId, ['/files/tcgets'])).exitCode, 25);
    assert.deepEqual(await nestedIds(volume), []);
  });

  test('subvolumes nested in /files (made before this fix) do not block DELETE; nothing is left behind', async () => {
    await mkdir(join(volume, 'files', 'deep'), { recursive: true });
    await execa('btrfs', ['subvolume', 'create', join(volume, 'files', 'deep', 'outer')]);
    await execa('btrfs', ['subvolume', 'create', join(volume, 'files', 'deep', 'outer', 'inner')]);
    const ids = [await btrfs.subvolumeId(volume), await btrfs.subvolumeId(layerDir)];
    ids.push(...(await nestedIds(volume)));
    assert.equal(ids.length, 4);

    await d.client.call('DELETE', '/v1/containers/q');
    assert.ok(!existsSync(volume), 'the data volume is gone');
    assert.ok(!existsSync(layerDir), 'the root filesystem layer is gone');
    assert.equal((await execa('docker', ['inspect', engineId], { reject: false })).exitCode, 1, 'the engine container is gone');
    const deadline = Date.now() + 30_000;
    let left: string[] = [];
    do {
      const groups = await btrfs.qgroupIds(d.stateDir);
      left = ids.map((id) => `0/${id}`).filter((g) => groups.has(g));
      if (!left.length) break;
      await new Promise((r) => setTimeout(r, 250));
    } while (Date.now() < deadline);
    assert.deepEqual(left, [], 'no qgroup is left behind');
  });
});
