import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { isHoodyError } from '../containers/errors.js';
import { FileArea } from '../containers/files.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';

function code(err: unknown): string | undefined {
  return isHoodyError(err) ? err.code : undefined;
}

async function rejectsWith(p: Promise<unknown>, expected: string): Promise<void> {
  await assert.rejects(p, (err) => {
    assert.equal(code(err), expected, String(err));
    return true;
  });
}

describe('FileArea', () => {
  let dir: string;
  let area: FileArea;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hoody-files-'));
    await mkdir(join(dir, 'files'));
    await writeFile(join(dir, 'secret'), 'outside');
    area = new FileArea(join(dir, 'files'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('normalizes paths and refuses .., absolute paths and NUL', () => {
    assert.equal(FileArea.normalize('a//b/./c/'), 'a/b/c');
    assert.equal(FileArea.normalize(''), '');
    for (const bad of ['..', 'a/../b', '../secret', '/etc/passwd', 'a\0b', `${'x'.repeat(256)}/y`])
      assert.throws(() => FileArea.normalize(bad), (err) => code(err) === 'HOODY_PATH_INVALID', bad);
  });

  it('writes atomically, making parents, and reads back', async () => {
    const w = await area.write('a/b/c.txt', 'one');
    assert.deepEqual([w.path, w.size, w.created], ['a/b/c.txt', 3, true]);
    const again = await area.write('a/b/c.txt', Buffer.from('two!'));
    assert.deepEqual([again.size, again.created], [4, false]);
    assert.equal((await area.read('a/b/c.txt')).toString(), 'two!');
    assert.deepEqual(await readdir(join(dir, 'files', 'a', 'b')), ['c.txt'], 'no temp file left behind');
    await rejectsWith(area.write('a/b', 'x'), 'HOODY_PATH_CONFLICT'); // a directory
    await rejectsWith(area.write('a/b/c.txt/d', 'x'), 'HOODY_PATH_CONFLICT'); // parent is a file
    await rejectsWith(area.read('a/missing'), 'HOODY_FILE_UNKNOWN');
    await rejectsWith(area.read('a'), 'HOODY_PATH_CONFLICT');
  });

  it('refuses symlinks that lead out of the area, and follows those that stay inside', async () => {
    await symlink('/etc', join(dir, 'files', 'etc'));
    await symlink(join(dir, 'secret'), join(dir, 'files', 'secret-link'));
    await symlink('../secret', join(dir, 'files', 'relative-out'));
    await symlink('a/b/c.txt', join(dir, 'files', 'inside'));
    await rejectsWith(area.read('etc/passwd'), 'HOODY_PATH_INVALID');
    await rejectsWith(area.read('secret-link'), 'HOODY_PATH_INVALID');
    await rejectsWith(area.read('relative-out'), 'HOODY_PATH_INVALID');
    await rejectsWith(area.write('etc/evil', 'x'), 'HOODY_PATH_INVALID');
    await rejectsWith(area.write('secret-link', 'x'), 'HOODY_PATH_INVALID');
    await rejectsWith(area.list('etc'), 'HOODY_PATH_INVALID');
    await rejectsWith(area.remove('etc/hostname'), 'HOODY_PATH_INVALID');
    assert.equal(await readFile(join(dir, 'secret'), 'utf8'), 'outside');
    assert.equal((await area.read('inside')).toString(), 'two!');
  });

  it('refuses FIFOs and other non-regular files instead of hanging on them', async () => {
    await execa('mkfifo', [join(dir, 'files', 'pipe')]);
    const t0 = Date.now();
    await rejectsWith(area.read('pipe'), 'HOODY_PATH_CONFLICT');
    assert.ok(Date.now() - t0 < 5000, 'refused, not opened and waited on'); // a FIFO opened for reading blocks forever
  });

  it('lists directories and deletes files, links and (recursively) directories', async () => {
    const names = (await area.list('')).map((e) => `${e.name}:${e.type}`);
    assert.ok(names.includes('a:dir') && names.includes('etc:symlink') && names.includes('pipe:other'), names.join(' '));
    await area.remove('secret-link');
    assert.equal(await readFile(join(dir, 'secret'), 'utf8'), 'outside', 'deleting a link leaves its target');
    await rejectsWith(area.remove('a'), 'HOODY_PATH_CONFLICT');
    await area.remove('a', { recursive: true });
    await rejectsWith(area.remove('a'), 'HOODY_FILE_UNKNOWN');
    await rejectsWith(area.remove(''), 'HOODY_PATH_INVALID');
    await area.remove('etc');
    assert.ok((await stat('/etc')).isDirectory());
    await assert.rejects(lstat(join(dir, 'files', 'etc')));
  });
});

interface Harness {
  d: TestDaemon;
  name: string;
  token: string;
  engineId: string;
  /** The container's data volume (files/ and scripts/ inside). */
  volume: string;
  /** The container's API through the daemon's public HTTP listener (the /c/<name>/ path prefix). */
  base: string;
}

describe('files API, through a real daemon over HTTP', { timeout: 300_000 }, () => {
  let h: Harness;
  const auth = (token = h.token) => ({ authorization: `Bearer ${token}` });

  before(async () => {
    const d = await startTestDaemon();
    const name = `fi-${randomBytes(3).toString('hex')}`;
    const port = (await d.client.call<{ listeners: { http: number } }>('GET', '/v1/host')).listeners.http;
    const { token } = await d.client.call<{ token: string }>('POST', '/v1/containers', { name });
    const { engineId } = await d.client.call<{ engineId: string }>('GET', `/v1/containers/${name}`);
    h = { d, name, token, engineId, volume: join(d.stateDir, 'pool', 'containers', name), base: `http://127.0.0.1:${port}/c/${name}` };
  });
  after(async () => {
    await h?.d.destroy();
  });

  it('PUT stores any body as is; GET returns the bytes; the container sees the file at /files', async () => {
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 255]), randomBytes(1000)]);
    const put = await fetch(`${h.base}/api/v1/files/img/logo.png`, { method: 'PUT', headers: { ...auth(), 'content-type': 'image/png' }, body: png });
    assert.equal(put.status, 201);
    const pj = (await put.json()) as { path: string; size: number; created: boolean };
    assert.deepEqual([pj.path, pj.size, pj.created], ['img/logo.png', png.length, true]);
    const get = await fetch(`${h.base}/api/v1/files/img/logo.png`, { headers: auth() });
    assert.equal(get.status, 200);
    assert.equal(get.headers.get('content-type'), 'image/png');
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), png);

    const text = await fetch(`${h.base}/api/v1/files/hello.txt`, { method: 'PUT', headers: { ...auth(), 'content-type': 'application/json' }, body: 'not json at all' });
    assert.equal(text.status, 201, 'a JSON content type is not parsed here');
    const noType = await fetch(`${h.base}/api/v1/files/raw.bin`, { method: 'PUT', headers: auth(), body: new Uint8Array([1, 2, 3]) });
    assert.equal(noType.status, 201);
    const replaced = await fetch(`${h.base}/api/v1/files/hello.txt`, { method: 'PUT', headers: auth(), body: 'hello from the API' });
    assert.equal(replaced.status, 200);

    const inside = await dockerExec(h.engineId, ['cat', '/files/hello.txt']);
    assert.deepEqual(inside, { exitCode: 0, output: 'hello from the API' });
    const wrote = await dockerExec(h.engineId, ['sh', '-c', 'echo made inside > /files/inside.txt']);
    assert.equal(wrote.exitCode, 0, wrote.output);
    const back = await fetch(`${h.base}/api/v1/files/inside.txt`, { headers: auth() });
    assert.equal(await back.text(), 'made inside\n');
  });

  it('GET of a directory lists it as JSON', async () => {
    const root = await fetch(`${h.base}/api/v1/files`, { headers: auth() });
    assert.equal(root.status, 200);
    const j = (await root.json()) as { path: string; entries: { name: string; type: string; size: number }[] };
    assert.equal(j.path, '');
    assert.deepEqual(
      j.entries.map((e) => `${e.name}:${e.type}`),
      ['hello.txt:file', 'img:dir', 'inside.txt:file', 'raw.bin:file'],
    );
    const sub = (await (await fetch(`${h.base}/api/v1/files/img/`, { headers: auth() })).json()) as { entries: { name: string }[] };
    assert.deepEqual(sub.entries.map((e) => e.name), ['logo.png']);
  });

  it('DELETE removes files, and directories only when asked to recurse', async () => {
    const dirDel = await fetch(`${h.base}/api/v1/files/img`, { method: 'DELETE', headers: auth() });
    assert.equal(dirDel.status, 409);
    const rec = await fetch(`${h.base}/api/v1/files/img?recursive=true`, { method: 'DELETE', headers: auth() });
    assert.equal(rec.status, 200);
    const del = await fetch(`${h.base}/api/v1/files/raw.bin`, { method: 'DELETE', headers: auth() });
    assert.deepEqual(await del.json(), { path: 'raw.bin', deleted: true });
    const gone = await fetch(`${h.base}/api/v1/files/raw.bin`, { headers: auth() });
    assert.equal(gone.status, 404);
    assert.equal(((await gone.json()) as { error: { code: string } }).error.code, 'HOODY_FILE_UNKNOWN');
  });

  it('refuses path escapes with 400 HOODY_PATH_INVALID', async () => {
    await symlink('/etc', join(h.volume, 'files', 'etc'));
    await symlink('/etc/hostname', join(h.volume, 'files', 'hostname'));
    for (const [method, path] of [
      ['GET', '..%2F..%2F..%2Fetc%2Fpasswd'],
      ['GET', 'a/..%2F..%2Fscripts'],
      ['GET', '%2Fetc%2Fpasswd'],
      ['GET', '/etc/passwd'],
      ['GET', 'etc/passwd'],
      ['GET', 'hostname'],
      ['PUT', 'etc/evil'],
      ['PUT', 'hostname'],
      ['DELETE', 'etc/hostname'],
      ['GET', 'x%00y'],
    ] as const) {
      const r = await fetch(`${h.base}/api/v1/files/${path}`, { method, headers: auth(), body: method === 'PUT' ? 'x' : undefined });
      const j = (await r.json()) as { error: { code: string } };
      assert.equal(r.status, 400, `${method} ${path}: ${JSON.stringify(j)}`);
      assert.equal(j.error.code, 'HOODY_PATH_INVALID', `${method} ${path}`);
    }
    assert.ok((await readFile('/etc/hostname', 'utf8')).length > 0);
  });

  it('needs a token with the files scope, and caps bodies at 16 MiB', async () => {
    const none = await fetch(`${h.base}/api/v1/files/hello.txt`);
    assert.equal(none.status, 401);
    const narrow = await h.d.client.call<{ token: string }>('POST', `/v1/containers/${h.name}/tokens`, { user: 'root', scopes: ['exec'] });
    const forbidden = await fetch(`${h.base}/api/v1/files/hello.txt`, { headers: auth(narrow.token) });
    assert.equal(forbidden.status, 403);
    // Refused on its Content-Length alone, before any of the body is read. Sending the body too races the
    // server's close (the client can see a reset before it reads the 413), so only the head goes out.
    const big = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const url = new URL(`${h.base}/api/v1/files/big.bin`);
      const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: 'PUT', headers: { ...auth(), 'content-length': String(16 * 1024 * 1024 + 1) } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error('no answer to the head within 10 s: the cap did not apply')));
      req.flushHeaders();
    });
    assert.equal(big.status, 413, big.body);
    assert.equal((JSON.parse(big.body) as { error: { code: string } }).error.code, 'HOODY_BODY_TOO_LARGE');
    assert.equal(await readFile(join(h.volume, 'files', 'big.bin')).catch(() => null), null, 'nothing written');
    const ok = await fetch(`${h.base}/api/v1/files/big.bin`, { method: 'PUT', headers: auth(), body: Buffer.alloc(16 * 1024 * 1024) });
    assert.equal(ok.status, 201);
  });
});
