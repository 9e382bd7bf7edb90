import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { constants, fstatSync, readlinkSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { AT_REMOVEDIR, closeFd, fdPath, mkdirAt, NO_LINKS, O_PATH, openAnchor, openBeneath, renameAt, STAY_BENEATH, unlinkAt } from '../host/beneath.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';

function errnoOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

describe('beneath: openat2 confined to a directory descriptor', () => {
  let dir: string;
  let root: number;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hoody-beneath-'));
    await mkdir(join(dir, 'area', 'real'), { recursive: true });
    await writeFile(join(dir, 'area', 'real', 'file.txt'), 'inside');
    await writeFile(join(dir, 'outside.txt'), 'outside');
    await symlink('real/file.txt', join(dir, 'area', 'in-link'));
    await symlink('../outside.txt', join(dir, 'area', 'up-link'));
    await symlink(join(dir, 'outside.txt'), join(dir, 'area', 'abs-link'));
    await symlink('/proc/self/root', join(dir, 'area', 'magic-abs'));
    root = openAnchor(join(dir, 'area'));
  });
  after(async () => {
    closeFd(root);
    if (dir?.startsWith(join(tmpdir(), 'hoody-beneath-'))) await rm(dir, { recursive: true, force: true });
  });

  test('follows a symlink that stays inside, refuses .., absolute and escaping symlinks, and magic links', () => {
    const fd = openBeneath(root, 'in-link', O_PATH, { resolve: STAY_BENEATH });
    assert.ok(fstatSync(fd).isFile());
    assert.equal(readlinkSync(fdPath(fd)), join(dir, 'area', 'real', 'file.txt'));
    closeFd(fd);
    assert.equal(errnoOf(() => openBeneath(root, '../outside.txt', O_PATH, { resolve: STAY_BENEATH })), 'EXDEV');
    assert.equal(errnoOf(() => openBeneath(root, 'real/../../outside.txt', O_PATH, { resolve: STAY_BENEATH })), 'EXDEV');
    assert.equal(errnoOf(() => openBeneath(root, 'up-link', O_PATH, { resolve: STAY_BENEATH })), 'EXDEV');
    assert.equal(errnoOf(() => openBeneath(root, 'abs-link', O_PATH, { resolve: STAY_BENEATH })), 'EXDEV');
    assert.equal(errnoOf(() => openBeneath(root, 'magic-abs/etc', O_PATH, { resolve: STAY_BENEATH })), 'EXDEV');
    assert.equal(errnoOf(() => openBeneath(root, '/etc/passwd', O_PATH, { resolve: STAY_BENEATH })), 'EXDEV');
    // A real magic link (/proc/self/cwd) beneath its own directory: refused even though it is "inside".
    const self = openAnchor(`/proc/${process.pid}`);
    try {
      assert.equal(errnoOf(() => openBeneath(self, 'cwd', O_PATH, { resolve: STAY_BENEATH })), 'ELOOP');
    } finally {
      closeFd(self);
    }
    // NO_LINKS: no symlink at all, but O_PATH|O_NOFOLLOW names the link itself.
    assert.equal(errnoOf(() => openBeneath(root, 'in-link', O_PATH)), 'ELOOP');
    const link = openBeneath(root, 'in-link', O_PATH | constants.O_NOFOLLOW);
    assert.ok(fstatSync(link).isSymbolicLink());
    closeFd(link);
  });

  test('the *at calls act inside the directory the descriptor holds, even after its path was swapped', async () => {
    const real = openBeneath(root, 'real', O_PATH | constants.O_DIRECTORY);
    try {
      // The tenant's move: the opened directory goes away and a symlink to the outside takes its name.
      await execa('mv', [join(dir, 'area', 'real'), join(dir, 'area', 'moved')]);
      await symlink(dir, join(dir, 'area', 'real'));
      mkdirAt(real, 'made');
      renameAt(real, 'file.txt', real, 'renamed.txt');
      assert.deepEqual((await readdir(join(dir, 'area', 'moved'))).sort(), ['made', 'renamed.txt']);
      unlinkAt(real, 'made', AT_REMOVEDIR);
      unlinkAt(real, 'renamed.txt');
      assert.deepEqual(await readdir(join(dir, 'area', 'moved')), []);
      assert.equal(await readFile(join(dir, 'outside.txt'), 'utf8'), 'outside');
      assert.equal(errnoOf(() => unlinkAt(real, 'nothing')), 'ENOENT');
      assert.equal(errnoOf(() => openBeneath(root, 'real/x', O_PATH, { resolve: NO_LINKS })), 'ELOOP');
      assert.equal(errnoOf(() => openBeneath(root, 'real/x', O_PATH, { resolve: STAY_BENEATH })), 'EXDEV');
    } finally {
      closeFd(real);
    }
  });
});

/** `swap SECONDS A1 B1 [A2 B2 ...]`: exchanges each pair of names (a directory, a symlink to the host) in turn. */
const SWAP_C = `#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE 2
#endif
int main(int argc, char **argv) {
  if (argc < 4 || argc % 2) return 2;
  time_t end = time(NULL) + atoi(argv[1]);
  if (nice(19) == -1) return 3;
  for (unsigned long n = 0;; n++) {
    for (int i = 2; i + 1 < argc; i += 2) syscall(SYS_renameat2, AT_FDCWD, argv[i], AT_FDCWD, argv[i + 1], RENAME_EXCHANGE);
    if ((n & 4095) == 0 && time(NULL) >= end) return 0;
  }
}
`;

/** Every path under a directory with a hash of its bytes (directories and links by what they are). */
async function snapshot(top: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const visit = async (d: string, prefix: string) => {
    for (const name of (await readdir(d)).sort()) {
      const p = join(d, name);
      const rel = prefix ? `${prefix}/${name}` : name;
      const st = await lstat(p);
      if (st.isDirectory()) {
        out.set(rel, 'dir');
        await visit(p, rel);
      } else if (st.isFile()) out.set(rel, createHash('sha256').update(await readFile(p)).digest('hex'));
      else out.set(rel, `other:${st.mode}`);
    }
  };
  await visit(top, '');
  return out;
}

interface Ports {
  http: number;
}

describe('a container racing the host-side file operations (renameat2 RENAME_EXCHANGE on /files and /scripts)', { timeout: 240_000 }, () => {
  let d: TestDaemon;
  let ports: Ports;
  let token = '';
  let engineId = '';
  let victim = '';
  let before0: Map<string, string>;
  const marker = `VICTIM-${randomBytes(6).toString('hex')}`;
  const swappers: string[] = [];

  const api = (method: string, path: string, body?: string): Promise<Answer> =>
    call({ port: ports.http, host: 'api.a.hoody.localhost', path: `${path}${path.includes('?') ? '&' : '?'}token=${token}`, method, body, headers: body === undefined ? {} : { 'content-type': 'text/plain' } });
  const run = (script: string): Promise<Answer> => call({ port: ports.http, host: 'exec.a.hoody.localhost', path: `/scripts/${script}?token=${token}` });

  before(async () => {
    // The host directory the tenant aims at: canary files whose names match what the API is asked to touch.
    victim = await mkdtemp(join(tmpdir(), 'hoody-victim-'));
    await mkdir(join(victim, 'dir', 'sub'), { recursive: true });
    await writeFile(join(victim, 'f.txt'), `${marker}:f`);
    await writeFile(join(victim, 'dir', 'inner.txt'), `${marker}:inner`);
    await writeFile(join(victim, 'dir', 'sub', 'deep.txt'), `${marker}:deep`);
    await writeFile(join(victim, 'run.ts'), `return "${marker}:ran";`);
    await writeFile(join(victim, `only-in-${marker}.txt`), `${marker}:only`);
    before0 = await snapshot(victim);

    const build = await mkdtemp(join(tmpdir(), 'hoody-swap-'));
    await writeFile(join(build, 'swap.c'), SWAP_C);
    // Needs gcc and a static libc (up.sh installs gcc and libc6-dev).
    await execa('gcc', ['-static', '-O2', '-o', join(build, 'swap'), join(build, 'swap.c')]);

    d = await startTestDaemon();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'a' })).token;
    engineId = (await d.client.call<{ engineId: string }>('GET', '/v1/containers/a')).engineId;
    await execa('docker', ['cp', join(build, 'swap'), `${engineId}:/tmp/hoody-swap`]);
    await rm(build, { recursive: true, force: true });
    for (const area of ['files', 'scripts']) {
      const setup = await dockerExec(engineId, [
        'sh',
        '-c',
        `mkdir -p /${area}/d/dir/sub && echo tenant > /${area}/d/f.txt && echo tenant > /${area}/d/dir/inner.txt && ln -s ${victim} /${area}/l`,
      ]);
      assert.equal(setup.exitCode, 0, setup.output);
    }
    assert.equal((await api('PUT', '/api/v1/scripts/d/run.ts', 'return "tenant-ran";')).status, 201);
    const hammer = `// @timeout 20000
let n = 0;
const out: string[] = [];
const t = async (f: () => Promise<unknown>) => {
  n++;
  try { const v = await f(); out.push(typeof v === 'string' ? v : JSON.stringify(v)); } catch (e) { out.push(String((e as Error).message)); }
};
for (let i = 0; i < 25; i++) {
  await t(() => files.write('d/f.txt', 'tenant'));
  await t(() => files.read('d/f.txt'));
  await t(() => files.list('d'));
  await t(() => files.list('d/dir'));
  await t(() => files.write('d/mk/y.txt', 'tenant'));
  await t(() => files.delete('d/f.txt'));
  await t(() => files.delete('d/dir/inner.txt'));
  await t(() => files.delete('d/dir/sub'));
}
return { n, out: out.join('\\n') };`;
    assert.equal((await api('PUT', '/api/v1/scripts/hammer.ts', hammer)).status, 201);
    // One process, at nice 19: the race needs many swaps, not both cores of the box.
    const r = await dockerExec(engineId, ['sh', '-c', '/tmp/hoody-swap 90 /files/d /files/l /scripts/d /scripts/l >/dev/null 2>&1 & echo $!']);
    assert.equal(r.exitCode, 0, r.output);
    swappers.push(r.output.trim());
  });

  after(async () => {
    for (const pid of swappers) if (/^\d+$/.test(pid)) await dockerExec(engineId, ['kill', pid]).catch(() => undefined);
    await d?.destroy();
    if (victim.startsWith(join(tmpdir(), 'hoody-victim-'))) await rm(victim, { recursive: true, force: true });
  });

  test('thousands of files, scripts and files.* calls: the host directory is untouched and never shown', async () => {
    // The attack is live: the daemon's own listing sees `d` as a symlink now and then.
    let swapped = false;
    for (let i = 0; i < 400 && !swapped; i++) {
      const root = await api('GET', '/api/v1/files');
      swapped = root.json<{ entries: { name: string; type: string }[] }>().entries.some((e) => e.name === 'd' && e.type === 'symlink');
    }
    assert.ok(swapped, 'the swapper never showed d as a symlink');

    const ops: (() => Promise<Answer>)[] = [
      () => api('PUT', '/api/v1/files/d/f.txt', 'tenant'),
      () => api('GET', '/api/v1/files/d/f.txt'),
      () => api('DELETE', '/api/v1/files/d/f.txt'),
      () => api('PUT', '/api/v1/files/d/dir/inner.txt', 'tenant'),
      () => api('GET', '/api/v1/files/d/dir'),
      () => api('GET', '/api/v1/files/d'),
      () => api('DELETE', '/api/v1/files/d/dir?recursive=true'),
      () => api('PUT', '/api/v1/files/d/mk/x.txt', 'tenant'),
      () => api('DELETE', '/api/v1/files/d/dir/inner.txt'),
      () => api('PUT', '/api/v1/scripts/d/s.ts', 'return "tenant";'),
      () => api('GET', '/api/v1/scripts/d/run.ts'),
      () => api('DELETE', '/api/v1/scripts/d/f.txt'),
      () => api('DELETE', '/api/v1/scripts/d/dir/inner.txt'),
      () => api('PUT', '/api/v1/scripts/d/run.ts', 'return "tenant-ran";'),
      () => api('GET', '/api/v1/scripts'),
      () => run('d/run'),
    ];
    const started = Date.now();
    let attempts = 0;
    let apiCalls = 0;
    let leaks = 0;
    let damaged = false;
    let scriptCalls = 0;
    const statuses = new Map<number, number>();
    const seen = (r: Answer) => {
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (r.text.includes(marker)) leaks++;
    };
    const worker = async (w: number) => {
      for (let i = w; apiCalls < 3000 && Date.now() - started < 30_000 && !damaged; i++) {
        if (i % 60 === 59) {
          const r = await run('hammer');
          seen(r);
          if (r.status === 200) {
            const n = r.json<{ n: number }>().n;
            scriptCalls += n;
            attempts += n;
          }
          continue;
        }
        attempts++;
        apiCalls++;
        seen(await ops[i % ops.length]!());
        if (apiCalls % 250 === 0 && (await snapshot(victim)).size !== before0.size) damaged = true;
      }
    };
    await Promise.all(Array.from({ length: 6 }, (_, w) => worker(w)));
    const after0 = await snapshot(victim);
    const lost = [...before0.keys()].filter((k) => after0.get(k) !== before0.get(k));
    const added = [...after0.keys()].filter((k) => !before0.has(k));
    console.log(
      `hostile files race: ${attempts} attempts (${scriptCalls} by a script's files.*) in ${Date.now() - started} ms; ` +
        `victim changed or lost ${lost.length}, new in victim ${added.length}, responses showing the victim ${leaks}; ` +
        `statuses ${JSON.stringify(Object.fromEntries(statuses))}`,
    );
    assert.deepEqual(lost, [], 'host files deleted or changed through the race');
    assert.deepEqual(added, [], 'host files created through the race');
    assert.equal(leaks, 0, 'a response carried the host directory\'s content or names');
    assert.ok(attempts >= 1000, `only ${attempts} attempts`);
    assert.ok(scriptCalls > 0, 'the files.* script never ran');
    assert.ok(!statuses.has(500), 'a 500: an error escaped the catalogue');
    // The daemon is alive and still serves the tenant.
    assert.ok(await d.client.alive());
    assert.equal((await api('GET', '/api/v1/files')).status, 200);
  });
});
