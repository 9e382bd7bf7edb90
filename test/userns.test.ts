import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { engineArgs } from '../host/engine-start.js';
import { ensureRemapUser, freeStart, mappingFromInfo, parseSubIds, REMAP_USER } from '../host/userns.js';

describe('user namespaces: the remap user, its range and what the engine reports', () => {
  let etc = '';
  before(async () => {
    etc = await mkdtemp(join(tmpdir(), 'hoody-userns-etc-'));
  });
  after(async () => {
    if (etc.startsWith(join(tmpdir(), 'hoody-userns-etc-'))) await rm(etc, { recursive: true, force: true });
  });

  test('a free range of 65536 ids starts at 100000, or right past the ranges and accounts in its way', () => {
    assert.equal(freeStart([]), 100000);
    assert.equal(freeStart([{ start: 100000, count: 65536 }]), 165536);
    assert.equal(freeStart([{ start: 165536, count: 65536 }, { start: 100000, count: 65536 }]), 231072);
    assert.equal(freeStart([{ start: 500000, count: 1 }]), 100000);
    assert.equal(freeStart([{ start: 150000, count: 1 }]), 150001);
  });

  test('the user gets one range in subuid and subgid, once; other entries are kept as they were', async () => {
    await writeFile(join(etc, 'passwd'), `root:x:0:0:root:/root:/bin/bash\n${REMAP_USER}:x:999:995::/nonexistent:/usr/sbin/nologin\n`);
    await writeFile(join(etc, 'group'), 'root:x:0:\n');
    await writeFile(join(etc, 'subuid'), 'alice:100000:65536\n');
    await writeFile(join(etc, 'subgid'), 'alice:100000:65536'); // no final newline
    const first = await ensureRemapUser(etc);
    assert.deepEqual(first, { uid: 165536, gid: 165536 });
    assert.equal(await readFile(join(etc, 'subuid'), 'utf8'), `alice:100000:65536\n${REMAP_USER}:165536:65536\n`);
    assert.equal(await readFile(join(etc, 'subgid'), 'utf8'), `alice:100000:65536\n${REMAP_USER}:165536:65536\n`);
    assert.deepEqual(await ensureRemapUser(etc), first, 'idempotent');
    assert.equal(parseSubIds(await readFile(join(etc, 'subuid'), 'utf8')).length, 2);
  });

  test("the engine's report: name=userns and a <uid>.<gid> root dir, else rootful", () => {
    assert.deepEqual(mappingFromInfo(['name=seccomp,profile=default', 'name=userns'], '/p/docker/165536.165536'), { uid: 165536, gid: 165536 });
    assert.equal(mappingFromInfo(['name=seccomp,profile=default'], '/p/docker'), null);
    assert.equal(mappingFromInfo(undefined, '/p/docker/1.1'), null);
  });

  test('dockerd is started with --userns-remap only when asked', () => {
    const base = { dataRoot: '/p/docker', storageDriver: 'overlay2' as const, socketPath: '/run/d.sock' };
    assert.deepEqual(engineArgs({ ...base, usernsRemap: REMAP_USER }).slice(-2), ['--userns-remap', REMAP_USER]);
    assert.ok(!engineArgs({ ...base, usernsRemap: null }).includes('--userns-remap'));
  });
});
