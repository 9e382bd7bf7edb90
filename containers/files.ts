import { constants, fstatSync, fsync, type Stats, writeFile } from 'node:fs';
import { type FileHandle, mkdir, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setImmediate as breathe } from 'node:timers/promises';
import { AT_REMOVEDIR, chownFd, closeFd, fdPath, mkdirAt, NO_LINKS, O_PATH, openAnchor, openBeneath, renameAt, STAY_BENEATH, unlinkAt } from '../host/beneath.js';
import { fail, type HoodyError, isHoodyError } from './errors.js';
import { BATCH, emptyTree, lstatAt, MAX_TREE_DEPTH, sweepTempFiles, tempName, walkTree } from './files-tree.js';
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

const { O_DIRECTORY, O_NOFOLLOW, O_RDONLY, O_NONBLOCK, O_WRONLY, O_CREAT, O_EXCL } = constants;
const writeFd = promisify(writeFile);
const fsyncFd = promisify(fsync);

function errno(err: unknown): string | undefined {
  const e = err as NodeJS.ErrnoException | null;
  // libuv has no name for EDQUOT (122 on Linux, what a BTRFS qgroup limit gives): "Unknown system error -122".
  if (e?.errno === -122) return 'EDQUOT';
  return e?.code;
}

function missing(err: unknown): boolean {
  const code = errno(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * What hoodyd makes in a tenant's tree belongs to the owner of the directory it is made in (with user namespaces:
 * the container's mapped root, not host root, so the container can change it). `fd` is the new object itself.
 */
function inheritOwner(fd: number, owner: Pick<Stats, 'uid' | 'gid'>): void {
  const st = fstatSync(fd);
  if (st.uid !== owner.uid || st.gid !== owner.gid) chownFd(fd, owner.uid, owner.gid);
}

function parentOf(rel: string): { parent: string; name: string } {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? { parent: '', name: rel } : { parent: rel.slice(0, slash), name: rel.slice(slash + 1) };
}

/**
 * One area of a container's data volume, and the only way hoody touches files in it on a user's behalf.
 * A process in the container may rename anything in the area at any moment (a directory swapped for a symlink
 * to the host's /, thousands of times a second), so no path string is ever resolved twice: the area root is
 * opened once per operation, a user path is resolved beneath it by the kernel in one step (openat2
 * RESOLVE_BENEATH: symlinks are followed only while they stay inside, absolute ones and `..` out are refused),
 * and every later step acts on descriptors (*at calls on the parent, content through the opened file).
 * Only regular files are ever opened for content (no FIFOs or device nodes).
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

  /** Maps a filesystem error on a user path onto the catalogue; anything unexpected is rethrown as is. */
  private error(err: unknown, rel: string): HoodyError | unknown {
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
      case 'EXDEV': // RESOLVE_BENEATH: an absolute symlink, a `..` out, or a mount on the way
        return fail('PATH_INVALID', `${rel} resolves outside the ${this.name} area`);
      case 'ELOOP':
        return fail('PATH_INVALID', `${rel}: a symbolic link where none is followed, or too many levels of them`);
      case 'EAGAIN':
        return fail('PATH_INVALID', `${rel}: the path kept changing while it was resolved`);
      case 'ENOSPC':
        return fail('POOL_FULL', `no space left for ${rel}`);
      case 'EDQUOT':
        return fail('DISK_QUOTA_EXCEEDED', `no room for ${rel}`);
      case 'ENAMETOOLONG':
        return fail('PATH_INVALID', 'name too long');
    }
    return err;
  }

  private get name(): string {
    return this.root.slice(this.root.lastIndexOf('/') + 1);
  }

  /** Runs `fn` with a descriptor of the area root (made if missing; the daemon owns the path up to it). */
  private async anchored<T>(fn: (root: number) => Promise<T> | T): Promise<T> {
    let root: number;
    try {
      root = openAnchor(this.root);
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
      await mkdir(this.root, { recursive: true });
      root = openAnchor(this.root);
    }
    try {
      return await fn(root);
    } finally {
      closeFd(root);
    }
  }

  /** O_PATH descriptor of a user path beneath the root, symlinks inside the area followed; errors mapped. */
  private lookup(root: number, rel: string, flags = 0): number {
    try {
      return openBeneath(root, rel || '.', O_PATH | flags, { resolve: STAY_BENEATH });
    } catch (err) {
      throw this.error(err, rel);
    }
  }

  /** Makes the area if it is missing (a namespace opening). */
  async ensure(): Promise<void> {
    await this.anchored(() => undefined);
  }

  /** `read` of an O_PATH descriptor of a user path (symlinks inside the area followed); null when nothing is there. */
  private async at<T>(userPath: string, read: (fd: number) => T): Promise<T | null> {
    const rel = FileArea.normalize(userPath);
    return this.anchored((root) => {
      let fd: number;
      try {
        fd = openBeneath(root, rel || '.', O_PATH, { resolve: STAY_BENEATH });
      } catch (err) {
        if (missing(err)) return null;
        throw this.error(err, rel);
      }
      try {
        return read(fd);
      } finally {
        closeFd(fd);
      }
    });
  }

  /** stat() of a user path (symlinks inside the area followed); null when nothing is there. */
  async stat(userPath: string): Promise<Stats | null> {
    return this.at(userPath, (fd) => fstatSync(fd));
  }

  /**
   * One version of a regular file without reading it: device, inode, size, and the change and modification times
   * in ns (a write, a rename over it, a chmod or a touch changes the key; a user cannot set the change time).
   * `changedMs` lets a cache tell a change too recent to trust (within a clock tick of now). Null when nothing, or
   * no regular file, is there.
   */
  async version(userPath: string): Promise<{ key: string; changedMs: number } | null> {
    const v = await this.at(userPath, (fd) => {
      const st = fstatSync(fd, { bigint: true });
      return st.isFile() ? { key: `${st.dev}:${st.ino}:${st.size}:${st.ctimeNs}:${st.mtimeNs}`, changedMs: Number(st.ctimeNs / 1_000_000n) } : null;
    });
    return v ?? null;
  }

  /** Opens a regular file for reading; the caller closes the handle. */
  async openRead(userPath: string): Promise<{ handle: FileHandle; info: FileInfo }> {
    const rel = FileArea.normalize(userPath);
    return this.anchored(async (root) => {
      const fd = this.lookup(root, rel);
      try {
        const st = fstatSync(fd);
        if (st.isDirectory()) throw fail('PATH_CONFLICT', `${rel || '/'} is a directory`);
        if (!st.isFile()) throw fail('PATH_CONFLICT', `${rel} is not a regular file`);
        // Reopens the very inode checked above (the O_PATH descriptor pins it); O_NONBLOCK as a second guard.
        const handle = await open(fdPath(fd), O_RDONLY | O_NONBLOCK);
        return { handle, info: { path: rel, size: st.size, mtime: st.mtime.toISOString() } };
      } finally {
        closeFd(fd);
      }
    });
  }

  async read(userPath: string): Promise<Buffer> {
    const { handle } = await this.openRead(userPath);
    try {
      return await handle.readFile();
    } finally {
      await handle.close();
    }
  }

  /**
   * The directory `dirRel` as an O_PATH descriptor, made with its missing parents (mkdir -p). Existing
   * parts resolve like any user path; the parts made here must stay what was made (no symlink swapped in).
   */
  private makeDirs(root: number, dirRel: string, rel: string): number {
    const segments = dirRel === '' ? [] : dirRel.split('/');
    let have = segments.length;
    let fd: number;
    for (;;) {
      try {
        fd = openBeneath(root, segments.slice(0, have).join('/') || '.', O_PATH | O_DIRECTORY, { resolve: STAY_BENEATH });
        break;
      } catch (err) {
        if (errno(err) === 'ENOTDIR') throw fail('PATH_CONFLICT', `a parent of ${rel} is not a directory`);
        if (errno(err) !== 'ENOENT' || have === 0) throw this.error(err, rel);
        have--;
      }
    }
    for (let i = have; i < segments.length; i++) {
      try {
        let made = false;
        try {
          mkdirAt(fd, segments[i]!, 0o755);
          made = true;
        } catch (err) {
          if (errno(err) !== 'EEXIST') throw err;
        }
        const next = openBeneath(fd, segments[i]!, O_PATH | O_DIRECTORY | O_NOFOLLOW, { resolve: NO_LINKS });
        try {
          if (made) inheritOwner(next, fstatSync(fd));
        } catch (err) {
          closeFd(next);
          throw err;
        }
        closeFd(fd);
        fd = next;
      } catch (err) {
        closeFd(fd);
        if (errno(err) === 'ENOTDIR') throw fail('PATH_CONFLICT', `a parent of ${rel} is not a directory`);
        throw this.error(err, rel);
      }
    }
    return fd;
  }

  /** Atomic write: a temp file beside the target, synced, then renamed over it; parents made as needed. */
  async write(userPath: string, data: Buffer | string): Promise<WriteResult> {
    const rel = FileArea.normalize(userPath);
    if (rel === '') throw fail('PATH_CONFLICT', 'cannot write the area itself; name a file');
    // Nothing written here may be too deep for walk() and a recursive remove() to handle.
    if (rel.split('/').length > MAX_TREE_DEPTH) throw fail('PATH_TOO_DEEP', `${rel.slice(0, 64)}… has more than ${MAX_TREE_DEPTH} segments`);
    const { parent: parentRel, name } = parentOf(rel);
    return this.anchored(async (root) => {
      let previous: Stats | null = null;
      try {
        const fd = openBeneath(root, rel, O_PATH, { resolve: STAY_BENEATH });
        try {
          previous = fstatSync(fd);
        } finally {
          closeFd(fd);
        }
      } catch (err) {
        if (!missing(err)) throw this.error(err, rel);
      }
      if (previous?.isDirectory()) throw fail('PATH_CONFLICT', `${rel} is a directory`);
      // The permission bits carry over, never setuid/setgid: the daemon writes as root.
      const mode = previous?.isFile() ? previous.mode & 0o777 : 0o644;
      const parent = this.makeDirs(root, parentRel, rel);
      const tmp = tempName(name);
      let fd: number | undefined;
      try {
        fd = openBeneath(parent, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, { mode, resolve: NO_LINKS });
        // A replaced file keeps its owner (as its mode); a new one gets its directory's.
        inheritOwner(fd, previous?.isFile() ? previous : fstatSync(parent));
        await writeFd(fd, data);
        await fsyncFd(fd);
        const st = fstatSync(fd);
        closeFd(fd);
        fd = undefined;
        renameAt(parent, tmp, parent, name);
        return { path: rel, size: st.size, mtime: st.mtime.toISOString(), created: previous === null };
      } catch (err) {
        if (fd !== undefined) closeFd(fd);
        try {
          unlinkAt(parent, tmp);
        } catch {
          // never made, or already renamed
        }
        throw this.error(err, rel);
      } finally {
        closeFd(parent);
      }
    });
  }

  /**
   * Deletes a file, a symlink (not its target, wherever it points: only the parent must be inside the area)
   * or a directory (non-empty only with recursive; symlinks inside it are removed, never followed).
   */
  async remove(userPath: string, opts: { recursive?: boolean } = {}): Promise<void> {
    const rel = FileArea.normalize(userPath);
    if (rel === '') throw fail('PATH_INVALID', 'cannot delete the area itself');
    const { parent: parentRel, name } = parentOf(rel);
    await this.anchored(async (root) => {
      const parent = this.lookup(root, parentRel, O_DIRECTORY);
      try {
        let isDir: boolean;
        let fd: number;
        try {
          fd = openBeneath(parent, name, O_PATH | O_NOFOLLOW, { resolve: NO_LINKS });
        } catch (err) {
          throw this.error(err, rel);
        }
        try {
          isDir = fstatSync(fd).isDirectory();
          if (isDir && opts.recursive) await emptyTree(fd, rel);
        } finally {
          closeFd(fd);
        }
        try {
          unlinkAt(parent, name, isDir ? AT_REMOVEDIR : 0);
        } catch (err) {
          throw this.error(err, rel);
        }
      } finally {
        closeFd(parent);
      }
    });
  }

  /** The entries of a directory, sorted by name (symlinks reported as such, not followed). */
  async list(userPath: string): Promise<DirEntry[]> {
    const rel = FileArea.normalize(userPath);
    return this.anchored(async (root) => {
      const dir = this.lookup(root, rel, O_DIRECTORY);
      try {
        const names = (await readdir(fdPath(dir))).sort();
        const out: DirEntry[] = [];
        for (const [i, name] of names.entries()) {
          if (i % BATCH === BATCH - 1) await breathe();
          const st = lstatAt(dir, name);
          if (!st) continue; // removed meanwhile
          const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
          out.push({ name, type, size: st.size, mtime: st.mtime.toISOString() });
        }
        return out;
      } catch (err) {
        throw this.error(err, rel);
      } finally {
        closeFd(dir);
      }
    });
  }

  /** Removes the temp files of writes a crash cut short (startup); their paths in the area. A missing area has none. */
  async sweepTemp(): Promise<string[]> {
    let root: number;
    try {
      root = openAnchor(this.root);
    } catch (err) {
      if (missing(err)) return [];
      throw err;
    }
    try {
      return await sweepTempFiles(root);
    } finally {
      closeFd(root);
    }
  }

  /** Regular files under a directory, recursively, without following symlinks; at most `limit` of them. */
  async walk(userPath = '', limit = 10_000): Promise<FileInfo[]> {
    const rel = FileArea.normalize(userPath);
    return this.anchored(async (root) => {
      let top: number;
      try {
        top = openBeneath(root, rel || '.', O_PATH | O_DIRECTORY, { resolve: STAY_BENEATH });
      } catch (err) {
        if (errno(err) === 'ENOENT') return [];
        throw this.error(err, rel);
      }
      try {
        return await walkTree(top, rel, limit);
      } finally {
        closeFd(top);
      }
    });
  }
}
