import { closeSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';

/**
 * Path resolution that a process racing us cannot redirect: openat2(2) with RESOLVE_BENEATH (Linux >= 5.6),
 * and the *at calls that act on one name inside an already opened directory. A tenant that swaps a directory
 * for a symlink between our check and our use gains nothing, because there is no check-then-use: the kernel
 * resolves and refuses in one step, and every later step starts from a descriptor, never from a path string.
 */

// linux/openat2.h
export const RESOLVE_NO_XDEV = 0x01;
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;

/** Symlinks are followed, but only while they stay beneath the directory; no /proc magic, no mount crossing. */
export const STAY_BENEATH = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
/** As STAY_BENEATH, and no symlink at all (for names we walk ourselves, e.g. a recursive delete). */
export const NO_LINKS = STAY_BENEATH | RESOLVE_NO_SYMLINKS;

// x86-64 and arm64 (asm-generic) values; Node's fs.constants has neither.
export const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;
export const AT_FDCWD = -100;
export const AT_REMOVEDIR = 0x200;
const AT_EMPTY_PATH = 0x1000;
const SYS_OPENAT2 = 437; // one number on every architecture (the unified syscall table)
const errnos = osConstants.errno as Record<string, number>;

type Fn = (...args: unknown[]) => number;
interface Libc {
  syscall: Fn;
  unlinkat: Fn;
  mkdirat: Fn;
  renameat: Fn;
  readlinkat: Fn;
  symlinkat: Fn;
  fchownat: Fn;
  errno(): number;
}

let libc: Libc | null | undefined;

function load(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const require = createRequire(import.meta.url);
    const koffi = require('koffi') as { load(lib: string): { func(sig: string): Fn }; errno(): number };
    const lib = koffi.load('libc.so.6');
    libc = {
      syscall: lib.func('long syscall(long, ...)'),
      unlinkat: lib.func('int unlinkat(int, const uint8_t *, int)'),
      mkdirat: lib.func('int mkdirat(int, const uint8_t *, uint32_t)'),
      renameat: lib.func('int renameat(int, const uint8_t *, int, const uint8_t *)'),
      readlinkat: lib.func('long readlinkat(int, const uint8_t *, _Out_ uint8_t *, size_t)'),
      symlinkat: lib.func('int symlinkat(const uint8_t *, int, const uint8_t *)'),
      fchownat: lib.func('int fchownat(int, const uint8_t *, uint32_t, uint32_t, int)'),
      errno: () => koffi.errno(),
    };
  } catch {
    libc = null;
  }
  return libc;
}

const names = new Map<number, string>(Object.entries(errnos).map(([k, v]) => [v, k]));

/** An error shaped like Node's own fs errors (code, errno < 0, syscall), so one mapping handles both. */
function sysError(call: string, n: number): NodeJS.ErrnoException {
  const code = names.get(n) ?? `E${n}`;
  return Object.assign(new Error(`${code}: ${call} failed`), { code, errno: -n, syscall: call });
}

function need(): Libc {
  const l = load();
  if (!l) throw sysError('openat2 (koffi or libc not loadable)', errnos.ENOSYS!);
  return l;
}

/** A NUL-terminated C string; Buffers (raw names from readdir) pass through byte for byte. */
function cstr(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  if (b.includes(0)) throw sysError('path with a NUL byte', errnos.EINVAL!);
  return Buffer.concat([b, Buffer.alloc(1)]);
}

function check(call: string, r: number, l: Libc): void {
  if (r < 0) throw sysError(call, l.errno());
}

/**
 * openat2(dirfd, path, {flags | O_CLOEXEC, mode, resolve}); returns the new descriptor (close it with closeFd).
 * Default resolve is NO_LINKS. EAGAIN (a rename anywhere raced a `..` in a symlink body) is retried a few times.
 */
export function openBeneath(dirfd: number, path: string | Buffer, flags: number, opts: { mode?: number; resolve?: number } = {}): number {
  const l = need();
  const how = new BigUint64Array([BigInt(flags | O_CLOEXEC), BigInt(opts.mode ?? 0), BigInt(opts.resolve ?? NO_LINKS)]);
  const p = cstr(path);
  for (let attempt = 0; ; attempt++) {
    const fd = l.syscall(SYS_OPENAT2, 'int', dirfd, 'const uint8_t *', p, 'void *', how, 'size_t', how.byteLength);
    if (fd >= 0) return fd;
    const e = l.errno();
    if ((e === errnos.EAGAIN || e === errnos.EINTR) && attempt < 16) continue;
    throw sysError('openat2', e);
  }
}

/** Opens a directory the daemon owns (not one a tenant controls) as the anchor of later lookups. */
export function openAnchor(path: string): number {
  return openBeneath(AT_FDCWD, path, O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW, { resolve: RESOLVE_NO_MAGICLINKS });
}

export function unlinkAt(dirfd: number, name: string | Buffer, flags = 0): void {
  const l = need();
  check('unlinkat', l.unlinkat(dirfd, cstr(name), flags), l);
}

export function mkdirAt(dirfd: number, name: string | Buffer, mode = 0o755): void {
  const l = need();
  check('mkdirat', l.mkdirat(dirfd, cstr(name), mode), l);
}

export function renameAt(olddirfd: number, oldname: string | Buffer, newdirfd: number, newname: string | Buffer): void {
  const l = need();
  check('renameat', l.renameat(olddirfd, cstr(oldname), newdirfd, cstr(newname)), l);
}

/** The target of the symlink an O_PATH|O_NOFOLLOW descriptor holds (readlinkat with an empty name). */
export function readlinkFd(fd: number): Buffer {
  const l = need();
  const buf = Buffer.alloc(4096);
  const n = l.readlinkat(fd, cstr(''), buf, buf.length);
  if (n < 0) throw sysError('readlinkat', l.errno());
  return buf.subarray(0, n);
}

export function symlinkAt(target: string | Buffer, dirfd: number, name: string | Buffer): void {
  const l = need();
  check('symlinkat', l.symlinkat(cstr(target), dirfd, cstr(name)), l);
}

/**
 * Gives the object a descriptor holds (also an O_PATH one) to uid:gid: fchownat with an empty name, so nothing is
 * looked up by name and a symlink is never followed.
 */
export function chownFd(fd: number, uid: number, gid: number): void {
  const l = need();
  check('fchownat', l.fchownat(fd, cstr(''), uid, gid, AT_EMPTY_PATH), l);
}

export function closeFd(fd: number): void {
  try {
    closeSync(fd); // Node closes any descriptor of this process, not only those it opened itself
  } catch {
    // already closed: nothing to release
  }
}

/**
 * The /proc path of a descriptor. Opening it reopens the very object the descriptor holds (how an O_PATH
 * descriptor becomes readable); never append a child name to it: that would be a path walk again.
 */
export function fdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/** Whether openat2 works here (false on Linux < 5.6 or without koffi). */
export function beneathSupported(): boolean {
  try {
    closeFd(openBeneath(AT_FDCWD, '/', O_PATH | constants.O_DIRECTORY, { resolve: 0 }));
    return true;
  } catch {
    return false;
  }
}
