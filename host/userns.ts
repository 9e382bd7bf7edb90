import { readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './command.js';

/**
 * User namespaces for the containers of an engine hoody starts (issue 10.9): dockerd's `--userns-remap` with a
 * user of hoody's own, so root in a container is an unprivileged uid on the host (the start of the range). The
 * range is one of 65536 ids, the same for uids and gids, recorded in /etc/subuid and /etc/subgid.
 *
 * Why a user of our own rather than Docker's `default` (dockremap): the range is made here, idempotently and
 * visibly (not by dockerd calling useradd at its start), another engine on the box using `default` gets a range of
 * its own, and the owner of a tenant's files on the host says which mechanism made it.
 */
export const REMAP_USER = 'hoody-remap';
export const REMAP_COUNT = 65536;
const FIRST_ID = 100000;

/** The host ids a container's root (and its other users) are mapped to: container id n is host id uid + n. */
export interface UsernsMapping {
  uid: number;
  gid: number;
}

export interface Range {
  name: string;
  start: number;
  count: number;
}

/** `name:start:count` lines of /etc/subuid or /etc/subgid; anything else is skipped. */
export function parseSubIds(text: string): Range[] {
  const out: Range[] = [];
  for (const line of text.split('\n')) {
    const m = /^([^:#\s][^:]*):(\d+):(\d+)$/.exec(line.trim());
    if (m) out.push({ name: m[1]!, start: Number(m[2]), count: Number(m[3]) });
  }
  return out;
}

/** The lowest start >= 100000 where `count` ids overlap none of `taken` (as useradd allocates: 100000, 165536, …). */
export function freeStart(taken: readonly { start: number; count: number }[], count = REMAP_COUNT): number {
  let start = FIRST_ID;
  for (;;) {
    const hit = taken.find((r) => start < r.start + r.count && r.start < start + count);
    if (!hit) return start;
    start = hit.start + hit.count;
  }
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

/** Appends a line to a system file by writing a whole new copy and renaming it over (never half written). */
async function appendLine(path: string, text: string, line: string): Promise<void> {
  const mode = await stat(path).then((s) => s.mode & 0o777, () => 0o644);
  const tmp = `${path}.hoody-${process.pid}`;
  await writeFile(tmp, `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}${line}\n`, { mode });
  await rename(tmp, path);
}

/** Ids in use by accounts (passwd and group), so a range never covers a real user. */
async function accountIds(etc: string): Promise<{ start: number; count: number }[]> {
  const ids: { start: number; count: number }[] = [];
  for (const f of ['passwd', 'group']) {
    for (const line of (await readText(join(etc, f))).split('\n')) {
      const id = Number(line.split(':')[2]);
      if (line && Number.isInteger(id) && id >= FIRST_ID) ids.push({ start: id, count: 1 });
    }
  }
  return ids;
}

/**
 * Makes the system user REMAP_USER and its 65536 subordinate uids and gids if missing (idempotent: an existing
 * entry of at least that size is kept as it is). Returns the mapping dockerd will use. `etc` is for tests.
 */
export async function ensureRemapUser(etc = '/etc'): Promise<UsernsMapping> {
  const passwd = await readText(join(etc, 'passwd'));
  if (!passwd.split('\n').some((l) => l.startsWith(`${REMAP_USER}:`))) {
    if (etc !== '/etc') throw new Error(`no user ${REMAP_USER} in ${etc}/passwd`);
    await run('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', REMAP_USER]);
  }
  const files = { uid: join(etc, 'subuid'), gid: join(etc, 'subgid') };
  const texts = { uid: await readText(files.uid), gid: await readText(files.gid) };
  const ranges = { uid: parseSubIds(texts.uid), gid: parseSubIds(texts.gid) };
  const mine = (k: 'uid' | 'gid') => ranges[k].find((r) => r.name === REMAP_USER && r.count >= REMAP_COUNT);
  let uid = mine('uid');
  let gid = mine('gid');
  if (!uid || !gid) {
    // One start for both: container id n is host uid and gid start + n, easy to read in `ls -ln`.
    const others = [...ranges.uid, ...ranges.gid].filter((r) => r.name !== REMAP_USER);
    const start = freeStart([...others, ...(await accountIds(etc))]);
    const line = `${REMAP_USER}:${start}:${REMAP_COUNT}`;
    if (!uid) {
      await appendLine(files.uid, texts.uid, line);
      uid = { name: REMAP_USER, start, count: REMAP_COUNT };
    }
    if (!gid) {
      await appendLine(files.gid, texts.gid, line);
      gid = { name: REMAP_USER, start, count: REMAP_COUNT };
    }
  }
  return { uid: uid.start, gid: gid.start };
}

/**
 * The mapping an engine reports: `name=userns` among its security options, and its root dir is then
 * `<data-root>/<uid>.<gid>` (where dockerd keeps the images and containers of the remapped root).
 */
export function mappingFromInfo(securityOptions: readonly string[] | undefined, dockerRootDir: string): UsernsMapping | null {
  if (!(securityOptions ?? []).some((o) => o === 'name=userns' || o.startsWith('name=userns,'))) return null;
  const m = /\/(\d+)\.(\d+)$/.exec(dockerRootDir);
  return m ? { uid: Number(m[1]), gid: Number(m[2]) } : null;
}

/**
 * Whether a data root already holds a rootful engine's containers: switching that engine to remap would hide
 * them (the remapped engine keeps its state under `<data-root>/<uid>.<gid>/`), so it is not done silently.
 */
export async function rootfulContainersIn(dataRoot: string): Promise<number> {
  return (await readdir(join(dataRoot, 'containers')).catch(() => [] as string[])).length;
}
