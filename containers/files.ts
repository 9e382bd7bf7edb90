import { randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, readdir, readlink, realpath, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, sep } from 'node:path';
import { fail, type HoodyError, isHoodyError } from './errors.js';
import type { ContainerRow } from './store.js';

/** The two areas of a container's data volume: `files/` (mounted at /files) and `scripts/` (at /scripts). */
export type AreaName = 'files' | 'scripts';

export interface DirEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mtime: string;
}

export interface FileInfo {
  /** Normalized path inside the area ('' is the area itself). */
  path: string;
  size: number;
  mtime: string;
}

export interface WriteResult extends FileInfo {
  /** false when an existing file was replaced. */
  created: boolean;
}

const MAX_PATH = 4096;
const MAX_SEGMENT = 255;

function errno(err: unknown): string | undefined {
  const e = err as NodeJS.ErrnoException | null;
  // libuv has no name for EDQUOT (122 on Linux, what a BTRFS qgroup limit gives): "Unknown system error -122".
  if (e?.errno === -122) return 'EDQUOT';
  return e?.code;
}

function inside(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/** Maps a filesystem error on a user path onto the catalogue; anything unexpected is rethrown as is. */
function fsError(err: unknown, rel: string): HoodyError | unknown {
  if (isHoodyError(err)) return err;
  switch (errno(err)) {
    case 'ENOENT':
    case 'ENOTDIR':
      return fail('FILE_UNKNOWN', rel || '/');
    case 'EISDIR':
      return fail('PATH_CONFLICT', `${rel || '/'} is a directory`);
    case 'ENOTEMPTY':
    case 'EEXIST':
      return fail('PATH_CONFLICT', `${rel || '/'} is a directory that is not empty (add ?recursive=true)`);
    case 'ELOOP':
      return fail('PATH_INVALID', `${rel}: too many levels of symbolic links`);
    case 'ENOSPC':
      return fail('POOL_FULL', `no space left for ${rel}`);
    case 'EDQUOT':
      return fail('DISK_QUOTA_EXCEEDED', `no room for ${rel}`);
    case 'ENAMETOOLONG':
      return fail('PATH_INVALID', 'name too long');
  }
  return err;
}

/**
 * One area of a container's data volume, and the only way hoody touches files in it on a user's behalf.
 * Every user path is checked twice: syntactically (no `..`, no absolute path, no NUL) and against symlinks
 * (the real path of its deepest existing ancestor must stay inside the area). Files are opened and then
 * checked once more through /proc/self/fd, so a symlink swapped in by a process inside the container between
 * the check and the open is caught too; only regular files are ever opened (no FIFOs or device nodes).
 */
export class FileArea {
  constructor(readonly root: string) {}

  static of(row: Pick<ContainerRow, 'volume'>, area: AreaName): FileArea {
    return new FileArea(join(row.volume, area));
  }

  /** Syntax check; returns the normalized relative path ('' for the area itself). */
  static normalize(userPath: string): string {
    if (typeof userPath !== 'string') throw fail('PATH_INVALID', 'not a string');
    if (userPath.includes('\0')) throw fail('PATH_INVALID', 'NUL byte in path');
    if (userPath.length > MAX_PATH) throw fail('PATH_INVALID', 'path too long');
    if (userPath.startsWith('/')) throw fail('PATH_INVALID', `${JSON.stringify(userPath)} is absolute; paths are relative to the area`);
    const segments: string[] = [];
    for (const s of userPath.split('/')) {
      if (s === '' || s === '.') continue;
      if (s === '..') throw fail('PATH_INVALID', `${JSON.stringify(userPath)} has a '..' segment`);
      if (s.length > MAX_SEGMENT) throw fail('PATH_INVALID', 'a path segment is longer than 255 characters');
      segments.push(s);
    }
    return segments.join('/');
  }

  private async realRoot(): Promise<string> {
    try {
      return await realpath(this.root);
    } catch (err) {
      if (errno(err) === 'ENOENT') {
        await mkdir(this.root, { recursive: true });
        return realpath(this.root);
      }
      throw err;
    }
  }

  /** The absolute path of a user path, refused if it or its deepest existing ancestor resolves outside. */
  async resolve(userPath: string): Promise<{ rel: string; abs: string; rootReal: string }> {
    const rel = FileArea.normalize(userPath);
    const rootReal = await this.realRoot();
    const abs = rel === '' ? rootReal : join(rootReal, rel);
    let probe = abs;
    for (;;) {
      try {
        const real = await realpath(probe);
        if (!inside(real, rootReal)) throw fail('PATH_INVALID', `${rel} resolves outside the ${basename(this.root)} area`);
        break;
      } catch (err) {
        const code = errno(err);
        if ((code !== 'ENOENT' && code !== 'ENOTDIR') || probe === rootReal) throw fsError(err, rel);
        probe = dirname(probe);
      }
    }
    return { rel, abs, rootReal };
  }

  /** Refuses a descriptor whose file is not (any longer) inside the area. */
  private async verifyOpen(handle: FileHandle, rootReal: string, rel: string): Promise<void> {
    const real = await readlink(`/proc/self/fd/${handle.fd}`);
    if (!inside(real, rootReal)) throw fail('PATH_INVALID', `${rel} resolves outside the ${basename(this.root)} area`);
  }

  /** stat() of a user path (symlinks inside the area followed); null when nothing is there. */
  async stat(userPath: string): Promise<Stats | null> {
    const { abs, rel } = await this.resolve(userPath);
    try {
      return await stat(abs);
    } catch (err) {
      const code = errno(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw fsError(err, rel);
    }
  }

  /** Opens a regular file for reading; the caller closes the handle. */
  async openRead(userPath: string): Promise<{ handle: FileHandle; info: FileInfo }> {
    const { abs, rel, rootReal } = await this.resolve(userPath);
    let handle: FileHandle;
    try {
      // O_NONBLOCK: a FIFO planted inside the container must not hang the daemon on open
      handle = await open(abs, constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (err) {
      throw fsError(err, rel);
    }
    try {
      await this.verifyOpen(handle, rootReal, rel);
      const st = await handle.stat();
      if (st.isDirectory()) throw fail('PATH_CONFLICT', `${rel || '/'} is a directory`);
      if (!st.isFile()) throw fail('PATH_CONFLICT', `${rel} is not a regular file`);
      return { handle, info: { path: rel, size: st.size, mtime: st.mtime.toISOString() } };
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async read(userPath: string): Promise<Buffer> {
    const { handle } = await this.openRead(userPath);
    try {
      return await handle.readFile();
    } finally {
      await handle.close();
    }
  }

  /** Atomic write: a temp file beside the target, synced, then renamed over it; parents made as needed. */
  async write(userPath: string, data: Buffer | string): Promise<WriteResult> {
    const { abs, rel, rootReal } = await this.resolve(userPath);
    if (rel === '') throw fail('PATH_CONFLICT', 'cannot write the area itself; name a file');
    let previous: Stats | null = null;
    try {
      previous = await stat(abs);
    } catch (err) {
      if (errno(err) !== 'ENOENT' && errno(err) !== 'ENOTDIR') throw fsError(err, rel);
    }
    if (previous?.isDirectory()) throw fail('PATH_CONFLICT', `${rel} is a directory`);
    const parent = dirname(abs);
    try {
      await mkdir(parent, { recursive: true });
    } catch (err) {
      if (errno(err) === 'EEXIST' || errno(err) === 'ENOTDIR') throw fail('PATH_CONFLICT', `a parent of ${rel} is not a directory`);
      throw fsError(err, rel);
    }
    const tmp = join(parent, `.${basename(abs)}.${randomBytes(6).toString('hex')}.tmp`);
    const mode = previous?.isFile() ? previous.mode & 0o7777 : 0o644;
    let handle: FileHandle | undefined;
    try {
      handle = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
      await this.verifyOpen(handle, rootReal, rel);
      await handle.writeFile(data);
      await handle.sync();
      await handle.close();
      handle = undefined;
      await rename(tmp, abs);
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw fsError(err, rel);
    }
    const st = await stat(abs);
    return { path: rel, size: st.size, mtime: st.mtime.toISOString(), created: previous === null };
  }

  /**
   * Deletes a file, a symlink (not its target, wherever it points: only the parent must be inside the area)
   * or a directory (non-empty only with recursive; symlinks inside it are removed, never followed).
   */
  async remove(userPath: string, opts: { recursive?: boolean } = {}): Promise<void> {
    const rel = FileArea.normalize(userPath);
    if (rel === '') throw fail('PATH_INVALID', 'cannot delete the area itself');
    const parent = await this.resolve(rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '');
    const abs = join(parent.abs, basename(rel));
    try {
      const st = await lstat(abs);
      if (!st.isDirectory()) await unlink(abs);
      else if (opts.recursive) await rm(abs, { recursive: true });
      else await rmdir(abs);
    } catch (err) {
      throw fsError(err, rel);
    }
  }

  /** The entries of a directory, sorted by name (symlinks reported as such, not followed). */
  async list(userPath: string): Promise<DirEntry[]> {
    const { abs, rel } = await this.resolve(userPath);
    try {
      const names = (await readdir(abs)).sort();
      const out: DirEntry[] = [];
      for (const name of names) {
        const st = await lstat(join(abs, name)).catch(() => null);
        if (!st) continue; // removed meanwhile
        const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
        out.push({ name, type, size: st.size, mtime: st.mtime.toISOString() });
      }
      return out;
    } catch (err) {
      throw fsError(err, rel);
    }
  }

  /** Regular files under a directory, recursively, without following symlinks; at most `limit` of them. */
  async walk(userPath = '', limit = 10_000): Promise<FileInfo[]> {
    const { abs, rel } = await this.resolve(userPath);
    const out: FileInfo[] = [];
    const visit = async (dir: string, prefix: string): Promise<void> => {
      let entries: import('node:fs').Dirent[];
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (errno(err) === 'ENOENT') return;
        throw err;
      }
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const e of entries) {
        if (out.length >= limit) return;
        const path = prefix ? `${prefix}/${e.name}` : e.name;
        if (e.isDirectory()) await visit(join(dir, e.name), path);
        else if (e.isFile()) {
          const st = await lstat(join(dir, e.name)).catch(() => null);
          if (st) out.push({ path, size: st.size, mtime: st.mtime.toISOString() });
        }
      }
    };
    await visit(abs, rel);
    return out;
  }
}
