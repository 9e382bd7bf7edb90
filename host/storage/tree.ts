import { constants, fstatSync } from 'node:fs';
import { copyFile, readdir } from 'node:fs/promises';
import { closeFd, fdPath, mkdirAt, O_PATH, openAnchor, openBeneath, readlinkFd, symlinkAt } from '../beneath.js';

/**
 * Whole-volume walks of the plain-directory driver, by descriptor: a volume is a tenant's tree, and a
 * directory in it swapped for a symlink to the host mid-walk must not make the daemon count or copy the host.
 */

const { O_DIRECTORY, O_NOFOLLOW, O_WRONLY, O_CREAT, O_EXCL } = constants;
/** Nesting followed; deeper levels are left out (each level holds a descriptor meanwhile). */
const MAX_DEPTH = 256;

/** Each entry of an open directory, opened O_PATH without following it; the callback must not keep `fd`. */
async function eachEntry(dir: number, fn: (name: Buffer, fd: number, st: import('node:fs').Stats) => Promise<void>): Promise<void> {
  for (const name of await readdir(fdPath(dir), { encoding: 'buffer' })) {
    let fd: number;
    try {
      fd = openBeneath(dir, name, O_PATH | O_NOFOLLOW);
    } catch {
      continue; // gone meanwhile
    }
    try {
      await fn(name, fd, fstatSync(fd));
    } finally {
      closeFd(fd);
    }
  }
}

/** Bytes in the regular files under a directory. */
export async function treeBytes(path: string): Promise<number> {
  const visit = async (dir: number, depth: number): Promise<number> => {
    let total = 0;
    await eachEntry(dir, async (_name, fd, st) => {
      if (st.isFile()) total += st.size;
      else if (st.isDirectory() && depth < MAX_DEPTH) total += await visit(fd, depth + 1);
    });
    return total;
  };
  const top = openAnchor(path);
  try {
    return await visit(top, 1);
  } finally {
    closeFd(top);
  }
}

/** Copies the content of directory `source` into the existing empty directory `target`: dirs, files, symlinks. */
export async function copyTree(source: string, target: string): Promise<void> {
  const visit = async (src: number, dst: number, depth: number): Promise<void> => {
    await eachEntry(src, async (name, fd, st) => {
      if (st.isDirectory()) {
        if (depth >= MAX_DEPTH) return;
        mkdirAt(dst, name, st.mode & 0o777);
        const sub = openBeneath(dst, name, O_PATH | O_DIRECTORY | O_NOFOLLOW);
        try {
          await visit(fd, sub, depth + 1);
        } finally {
          closeFd(sub);
        }
      } else if (st.isFile()) {
        const out = openBeneath(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, { mode: st.mode & 0o777 });
        try {
          // Both /proc paths reopen the objects the descriptors hold: the checked file and the one just made.
          await copyFile(fdPath(fd), fdPath(out));
        } finally {
          closeFd(out);
        }
      } else if (st.isSymbolicLink()) symlinkAt(readlinkFd(fd), dst, name);
      // FIFOs, sockets and device nodes are not carried over.
    });
  };
  const src = openAnchor(source);
  try {
    const dst = openAnchor(target);
    try {
      await visit(src, dst, 1);
    } finally {
      closeFd(dst);
    }
  } finally {
    closeFd(src);
  }
}
