import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { execa } from 'execa';
import { AdminClient } from '../daemon/client.js';
import { HOODY, removeInstanceOf, ROOT } from './support/host.js';

interface HostInfo {
  pool: { path: string; image: string | null; filesystem: { fstype: string; source: string; uuid: string } };
  engine: { available: boolean; storageDriver: string; backingFilesystem: string; dockerRootDir: string; dataRootOnPool: boolean };
  ksm: { knobs: { run: string } };
}

const hoody = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  execa(process.execPath, [HOODY, ...args], { env: { ...process.env, ...env }, reject: false, cwd: ROOT });

describe('hoody up (the README\'s first command) and hoody host info', () => {
  test('on the default state dir: the daemon answers; pool on btrfs, engine data root on that pool, KSM run=1', async () => {
    const up = await hoody(['up', '--no-demo', '--images', 'busybox']);
    assert.equal(up.exitCode, 0, up.stderr);
    assert.match(up.stdout, /hoodyd is up/);
    const r = await hoody(['host', 'info', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const info = JSON.parse(r.stdout) as HostInfo;
    assert.equal(info.pool.filesystem.fstype, 'btrfs');
    assert.equal(info.engine.available, true);
    assert.equal(info.engine.backingFilesystem, 'btrfs');
    assert.ok(info.engine.dockerRootDir.startsWith(info.pool.path), `${info.engine.dockerRootDir} under ${info.pool.path}`);
    assert.equal(info.engine.dataRootOnPool, true);
    assert.equal(info.engine.storageDriver, 'overlay2');
    assert.equal(info.ksm.knobs.run, '1');
    const human = await hoody(['host', 'info']);
    assert.match(human.stdout, /pool: .* on btrfs/);
  });

  describe('on a fresh state dir that is not on BTRFS', () => {
    let dir = '';
    after(async () => {
      // `hoody up` runs hoodyd under its supervisor: stopping the supervisor stops both (no restart).
      const pidOf = async (f: string) => Number(await readFile(join(dir, f), 'utf8').catch(() => '0'));
      const pid = (await pidOf('supervisor.pid')) || (await pidOf('hoodyd.pid'));
      const client = new AdminClient(join(dir, 'hoodyd.sock'));
      await client.call('DELETE', '/v1/containers/demo').catch(() => undefined);
      const daemon = await pidOf('hoodyd.pid');
      if (pid) process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 100 && daemon && existsSync(`/proc/${daemon}`); i++) await new Promise((r) => setTimeout(r, 100));
      if (dir) await removeInstanceOf({ HOODY_STATE_DIR: dir }, dir);
      await execa('umount', [join(dir, 'pool')], { reject: false });
      await rm(dir, { recursive: true, force: true });
    });

    test('makes a loop-file BTRFS pool, starts the daemon and creates the demo container', async () => {
      dir = await mkdtemp(join(tmpdir(), 'hoody-up-'));
      const env = {
        HOODY_STATE_DIR: dir,
        HOODY_ADMIN_SOCKET: join(dir, 'hoodyd.sock'),
        HOODY_POOL_SIZE: '1G',
        HOODY_IMAGE: 'hoody/busybox',
        HOODY_HTTP_PORT: '0',
        HOODY_HTTPS_PORT: '0',
      };
      const up = await hoody(['up', '--images', 'busybox'], env);
      assert.equal(up.exitCode, 0, up.stderr);
      assert.match(up.stdout, /created container demo; its token \(shown once\): hdy_/);
      assert.match(up.stdout, /curl /);
      const info = JSON.parse((await hoody(['host', 'info', '--json'], env)).stdout) as HostInfo;
      assert.equal(info.pool.filesystem.fstype, 'btrfs');
      assert.match(info.pool.filesystem.source, /^\/dev\/loop\d+/);
      assert.equal(info.pool.image, join(dir, 'pool.img'));
      // Issue 10.8: the loop mount is nosuid,nodev; the image and the daemon's own log are 0600.
      const mnt = await execa('findmnt', ['-n', '-o', 'VFS-OPTIONS', '-T', join(dir, 'pool')]);
      assert.match(mnt.stdout, /nosuid/);
      assert.match(mnt.stdout, /nodev/);
      for (const f of ['pool.img', 'hoodyd.log', 'hoody.db']) assert.equal((await stat(join(dir, f))).mode & 0o077, 0, f);
      assert.match(await readFile(join(dir, 'hoodyd.log'), 'utf8'), /hoodyd ready/);
      const ls = JSON.parse((await hoody(['ls', '--json'], env)).stdout) as { name: string; state: string }[];
      assert.deepEqual(ls.map((c) => [c.name, c.state]), [['demo', 'running']]);
      const again = await hoody(['up', '--images', 'busybox'], env);
      assert.equal(again.exitCode, 0, again.stderr);
      assert.match(again.stderr, /already running/);
      assert.doesNotMatch(again.stdout, /created container demo/);
    });
  });
});
