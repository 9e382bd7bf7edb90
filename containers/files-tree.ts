import { randomBytes } from 'node:crypto';
import { constants, fstatSync, type Stats } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { setImmediate as breathe } from 'node:timers/promises';
import { AT_REMOVEDIR, closeFd, fdPath, NO_LINKS, O_PATH, openBeneath, unlinkAt } from '../host/beneath.js';
import { fail, type HoodyError } from './errors.js';

/**
 * Recursive work on a tenant's tree (FileArea's walk and recursive delete), by descriptor only: each level is
 * opened from its parent's descriptor with no symlink followed, listed through /proc/self/fd/<n> (the opened
 * directory itself), and its entries are removed with unlinkat on that descriptor.
 */

/** Deepest directory nesting a recursive walk or delete follows (each level holds a descriptor meanwhile). */
export const MAX_TREE_DEPTH = 256;
/** Entries handled between two yields to the event loop (the *at calls are synchronous). */
export const BATCH = 256;

const { O_DIRECTORY, O_NOFOLLOW } = constants;

function code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

function tooDeep(rel: string): HoodyError {
  return fail('PATH_TOO_DEEP', `${rel || '/'} nests directories more than ${MAX_TREE_DEPTH} levels deep`);
}

/** The temp file an atomic write of `name` goes through, beside its target: `.<name>.<12 hex>.tmp`. */
export function tempName(name: string): string {
  return `.${name}.${randomBytes(6).toString('hex')}.tmp`;
}

// tempName()'s shape; tested on the raw name read as latin1, so any bytes of the target's name match `.+`.
const TEMP_NAME = /^\..+\.[0-9a-f]{12}\.tmp$/s;

/**
 * Removes hoody's own temp files (atomic writes a kill cut short) under an open directory of a tenant's tree:
 * regular files named like tempName() and nothing else, by unlinkat on their parent's descriptor; no symlink is
 * followed and no directory left through. Visits at most `limit` entries. Returns the removed paths.
 */
export async function sweepTempFiles(top: number, limit = 100_000): Promise<string[]> {
  const removed: string[] = [];
  let seen = 0;
  const visit = async (dir: number, at: string, depth: number): Promise<void> => {
    if (depth > MAX_TREE_DEPTH) return; // nothing of ours is that deep: write() refuses such paths
    const names = await readdir(fdPath(dir), { encoding: 'buffer' });
    for (const name of names) {
      if (++seen > limit) return;
      if (seen % BATCH === 0) await breathe();
      let fd: number;
      try {
        fd = openBeneath(dir, name, O_PATH | O_NOFOLLOW, { resolve: NO_LINKS });
      } catch {
        continue; // gone, or swapped meanwhile
      }
      const path = at ? `${at}/${name.toString('utf8')}` : name.toString('utf8');
      try {
        const st = fstatSync(fd);
        if (st.isDirectory()) await visit(fd, path, depth + 1);
        else if (st.isFile() && TEMP_NAME.test(name.toString('latin1'))) {
          try {
            unlinkAt(dir, name, 0); // the name in this directory only; a swapped-in directory fails (EISDIR)
            removed.push(path);
          } catch {
            // gone or swapped meanwhile: the tenant's own business
          }
        }
      } finally {
        closeFd(fd);
      }
    }
  };
  await visit(top, '', 1);
  return removed;
}

/** lstat() of one name in an open directory, never following it; null when it is gone. */
export function lstatAt(dir: number, name: string | Buffer): Stats | null {
  let fd: number;
  try {
    fd = openBeneath(dir, name, O_PATH | O_NOFOLLOW, { resolve: NO_LINKS });
  } catch {
    return null;
  }
  try {
    return fstatSync(fd);
  } finally {
    closeFd(fd);
  }
}

/** Removes everything inside an open directory, depth first; nothing is ever followed. */
export async function emptyTree(dir: number, rel: string, depth = 1): Promise<void> {
  if (depth > MAX_TREE_DEPTH) throw tooDeep(rel);
  let done = 0;
  // A few passes: the container may add entries meanwhile; what is left then fails the caller's rmdir.
  for (let pass = 0; pass < 3; pass++) {
    const names = await readdir(fdPath(dir), { encoding: 'buffer' });
    if (names.length === 0) return;
    for (const name of names) {
      if (++done % BATCH === 0) await breathe();
      let fd: number;
      try {
        fd = openBeneath(dir, name, O_PATH | O_NOFOLLOW, { resolve: NO_LINKS });
      } catch (err) {
        if (code(err) === 'ENOENT') continue;
        throw err;
      }
      let isDir: boolean;
      try {
        isDir = fstatSync(fd).isDirectory();
        if (isDir) await emptyTree(fd, rel, depth + 1);
      } finally {
        closeFd(fd);
      }
      try {
        unlinkAt(dir, name, isDir ? AT_REMOVEDIR : 0);
      } catch (err) {
        const c = code(err);
        // swapped or refilled meanwhile: the next pass sees what is there now
        if (c !== 'ENOENT' && c !== 'EISDIR' && c !== 'ENOTDIR' && c !== 'ENOTEMPTY') throw err;
      }
    }
  }
}

/** Regular files under an open directory (paths prefixed with `prefix`), sorted, at most `limit`. */
export async function walkTree(top: number, prefix: string, limit: number): Promise<{ path: string; size: number; mtime: string }[]> {
  const out: { path: string; size: number; mtime: string }[] = [];
  let seen = 0;
  const visit = async (dir: number, at: string, depth: number): Promise<void> => {
    if (depth > MAX_TREE_DEPTH) throw tooDeep(at);
    const entries = await readdir(fdPath(dir), { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (out.length >= limit) return;
      if (++seen % BATCH === 0) await breathe();
      const path = at ? `${at}/${e.name}` : e.name;
      if (e.isDirectory()) {
        let sub: number;
        try {
          sub = openBeneath(dir, e.name, O_PATH | O_DIRECTORY | O_NOFOLLOW, { resolve: NO_LINKS });
        } catch {
          continue; // gone, or swapped for something else meanwhile
        }
        try {
          await visit(sub, path, depth + 1);
        } finally {
          closeFd(sub);
        }
      } else if (e.isFile()) {
        const st = lstatAt(dir, e.name);
        if (st?.isFile()) out.push({ path, size: st.size, mtime: st.mtime.toISOString() });
      }
    }
  };
  await visit(top, prefix, 1);
  return out;
}
