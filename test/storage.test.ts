import assert from 'node:assert/strict';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { CommandError } from '../host/command.js';
import { BtrfsDriver, copySmallTree } from '../host/storage/btrfs.js';
import { DirDriver } from '../host/storage/dir.js';
import type { StorageDriver } from '../host/storage/index.js';
import { tempStateDir } from './support/host.js';

interface Made {
  driver: StorageDriver;
  root: string;
}

async function realBtrfsOnLoopPool(): Promise<Made> {
  return { driver: new BtrfsDriver(), root: await tempStateDir() };
}
async function dirDriverInTmp(): Promise<Made> {
  return { driver: new DirDriver(), root: await mkdtemp(join(tmpdir(), 'hoody-dir-')) };
}

// One suite, every driver (the fake must behave like the real one where it claims to).
for (const [label, make] of [
  ['btrfs', realBtrfsOnLoopPool],
  ['dir', dirDriverInTmp],
] as const) {
  describe(`storage driver: ${label}`, async () => {
    const { driver, root } = await make();
    after(async () => {
      for (const v of await driver.listVolumes(root)) await driver.deleteVolume(v);
      await rm(root, { recursive: true, force: true });
    });

    test('a created volume is listed and a snapshot carries its files', async () => {
      await driver.createVolume(join(root, 'v1'));
      await writeFile(join(root, 'v1', 'hello.txt'), 'hi');
      await driver.snapshot(join(root, 'v1'), join(root, 'v2'));
      assert.deepEqual(await driver.listVolumes(root), [join(root, 'v1'), join(root, 'v2')]);
      assert.equal(await readFile(join(root, 'v2', 'hello.txt'), 'utf8'), 'hi');
    });

    test('a snapshot does not see writes made after it', async () => {
      await writeFile(join(root, 'v1', 'later.txt'), 'later');
      await writeFile(join(root, 'v2', 'hello.txt'), 'changed');
      await assert.rejects(readFile(join(root, 'v2', 'later.txt')));
      assert.equal(await readFile(join(root, 'v1', 'hello.txt'), 'utf8'), 'hi');
    });

    test('a quota limit is recorded and reported in usage', async () => {
      await driver.setQuota(join(root, 'v2'), 64 * 1024 * 1024);
      const u = await driver.usage(join(root, 'v2'));
      assert.equal(u.limitBytes, 64 * 1024 * 1024);
      assert.ok(u.referencedBytes > 0);
    });

    test('deleting a volume removes it; deleting again is a no-op', async () => {
      await driver.deleteVolume(join(root, 'v2'));
      assert.deepEqual(await driver.listVolumes(root), [join(root, 'v1')]);
      await driver.deleteVolume(join(root, 'v2'));
    });

    test('send | receive: a read-only snapshot arrives as a volume elsewhere, files, modes and owners kept', async () => {
      const src = join(root, 'sendsrc');
      await driver.createVolume(src);
      await mkdir(join(src, 'files'));
      await writeFile(join(src, 'files', 'moved.txt'), 'it moved\n');
      await chmod(join(src, 'files', 'moved.txt'), 0o640);
      await chown(join(src, 'files', 'moved.txt'), 100123, 100124);
      const ro = join(root, 'sendro');
      await driver.snapshot(src, ro, { readonly: true });
      const into = join(root, 'received');
      const pipe = new PassThrough();
      await Promise.all([driver.send(ro, pipe), driver.receive(into, 'sendro', pipe)]);
      try {
        assert.ok(await driver.isVolume(join(into, 'sendro')));
        assert.equal(await readFile(join(into, 'sendro', 'files', 'moved.txt'), 'utf8'), 'it moved\n');
        const st = await stat(join(into, 'sendro', 'files', 'moved.txt'));
        assert.deepEqual([st.mode & 0o7777, st.uid, st.gid], [0o640, 100123, 100124]);
      } finally {
        await driver.deleteVolume(join(into, 'sendro'));
        await driver.deleteVolume(ro);
        await driver.deleteVolume(src);
      }
    });

    test('receive of a broken stream fails with CommandError (command, args, stderr) and leaves no volume', async () => {
      const into = join(root, 'received-bad');
      const err = await driver.receive(into, 'nothing', Readable.from([Buffer.from('not a send stream '.repeat(64))])).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(err instanceof CommandError, String(err));
      assert.equal(err.command, label === 'btrfs' ? 'btrfs' : 'tar');
      assert.ok(err.args.includes(label === 'btrfs' ? 'receive' : '-xpf'), err.args.join(' '));
      assert.ok(err.stderr.length > 0, 'stderr kept');
      assert.deepEqual(await driver.listVolumes(into), []);
    });
  });
}

describe('btrfs driver specifics', async () => {
  const driver = new BtrfsDriver();
  const root = await tempStateDir();
  after(() => rm(root, { recursive: true, force: true }));

  test('a deleted subvolume leaves no qgroup behind', async () => {
    const path = join(root, 'q');
    await driver.createVolume(path);
    await driver.setQuota(path, 32 * 1024 * 1024);
    const id = await driver.subvolumeId(path);
    assert.ok((await driver.qgroupIds(root)).has(`0/${id}`));
    await driver.deleteVolume(path);
    assert.ok(!(await driver.qgroupIds(root)).has(`0/${id}`));
  });

  test('adopting a directory makes it a volume with its files, owner and mode; an empty one too', async () => {
    const full = join(root, 'full');
    await mkdir(join(full, 'etc'), { recursive: true });
    await writeFile(join(full, 'etc', 'hosts'), 'layer');
    await chown(full, 1234, 1234);
    await chmod(full, 0o750);
    await driver.adoptDirectory(full);
    assert.ok(await driver.isVolume(full));
    assert.equal(await readFile(join(full, 'etc', 'hosts'), 'utf8'), 'layer');
    const st = await stat(full);
    assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [1234, 1234, 0o750]);
    const empty = join(root, 'empty');
    await mkdir(empty);
    await driver.adoptDirectory(empty);
    assert.ok(await driver.isVolume(empty));
    assert.deepEqual(await readdir(empty), []);
    assert.deepEqual((await readdir(root)).filter((n) => n.endsWith('.hoody-adopt')), [], 'no aside copy left');
    for (const v of [full, empty]) await driver.deleteVolume(v);
  });

  test('a fresh overlay2 layer is copied in process (owners, modes, times); a tree with a link goes to cp -a', async () => {
    const layer = join(root, 'layer');
    await mkdir(join(layer, 'diff'), { recursive: true });
    await mkdir(join(layer, 'work', 'work'), { recursive: true });
    await writeFile(join(layer, 'link'), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ');
    await writeFile(join(layer, 'lower'), 'l/AAAA:l/BBBB');
    await chown(join(layer, 'diff'), 100000, 100000);
    await chown(join(layer, 'work'), 100000, 100000);
    await chmod(join(layer, 'work', 'work'), 0o000);
    const old = new Date('2020-01-02T03:04:05Z');
    await utimes(join(layer, 'lower'), old, old);
    const to = join(root, 'layer-copy');
    await mkdir(to);
    assert.equal(await copySmallTree(layer, to), true);
    for (const rel of ['diff', 'work', join('work', 'work'), 'link', 'lower']) {
      const [a, b] = [await stat(join(layer, rel)), await stat(join(to, rel))];
      assert.deepEqual([b.uid, b.gid, b.mode], [a.uid, a.gid, a.mode], rel);
      assert.ok(Math.abs(b.mtimeMs - a.mtimeMs) < 0.01, `${rel}: mtime ${b.mtimeMs} vs ${a.mtimeMs}`); // µs: a double of seconds
    }
    assert.equal(await readFile(join(to, 'lower'), 'utf8'), 'l/AAAA:l/BBBB');
    await driver.adoptDirectory(layer);
    assert.ok(await driver.isVolume(layer));
    assert.equal((await stat(join(layer, 'work', 'work'))).mode & 0o7777, 0);
    await driver.deleteVolume(layer);

    const linked = join(root, 'linked');
    await mkdir(linked);
    await symlink('/etc/passwd', join(linked, 'l'));
    const empty = join(root, 'linked-copy');
    await mkdir(empty);
    assert.equal(await copySmallTree(linked, empty), false, 'not a tree it copies');
    assert.deepEqual(await readdir(empty), [], 'and nothing copied');
    await driver.adoptDirectory(linked);
    assert.equal(await readlink(join(linked, 'l')), '/etc/passwd', 'cp -a kept the link');
    await driver.deleteVolume(linked);
  });

  test('an adoption a kill cut short is put back: the moved-aside directory is the truth, a partial subvolume goes', async () => {
    for (const partial of [false, true]) {
      const path = join(root, `cut${partial ? 'p' : ''}`);
      await mkdir(`${path}.hoody-adopt`, { recursive: true });
      await writeFile(join(`${path}.hoody-adopt`, 'f'), 'orig');
      if (partial) await driver.createVolume(path); // killed after the subvolume was made, before the copy
      await driver.recoverAdoption(path);
      assert.equal(await readFile(join(path, 'f'), 'utf8'), 'orig');
      assert.equal(await driver.isVolume(path), false);
      assert.deepEqual((await readdir(root)).filter((n) => n.startsWith(`cut${partial ? 'p' : ''}.`)), []);
      await driver.adoptDirectory(path);
      assert.ok(await driver.isVolume(path));
      assert.equal(await readFile(join(path, 'f'), 'utf8'), 'orig');
      await driver.deleteVolume(path);
    }
  });

  test('exclusive bytes grow with data written into the volume', async () => {
    const path = join(root, 'x');
    await driver.createVolume(path);
    const before = await driver.usage(path);
    await writeFile(join(path, 'blob'), Buffer.alloc(4 * 1024 * 1024, 7));
    const afterWrite = await driver.usage(path);
    assert.ok(afterWrite.exclusiveBytes - before.exclusiveBytes >= 4 * 1024 * 1024);
    await driver.deleteVolume(path);
  });

  test('a failing btrfs command throws CommandError with command, args and stderr', async () => {
    const err = await driver.snapshot(join(root, 'nope'), join(root, 'nope2')).catch((e: unknown) => e);
    assert.ok(err instanceof CommandError, `expected CommandError, got ${String(err)}`);
    assert.equal(err.command, 'btrfs');
    assert.deepEqual(err.args, ['subvolume', 'snapshot', join(root, 'nope'), join(root, 'nope2')]);
    assert.ok(err.stderr.length > 0);
  });
});
