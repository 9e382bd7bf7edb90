/**
 * A process's private anonymous pages as the kernel shows them to root: /proc/<pid>/maps for the mappings,
 * /proc/<pid>/pagemap for which pages are present and anonymous, /proc/<pid>/mem for their content; and a heuristic
 * split of the mappings into what made them (V8 heap, V8 code range, malloc, thread stacks, static data).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';

export const PAGE = 4096;
const V8_PAGE = 256 * 1024;
const ARENA = 64 * 1024 * 1024;

export const KINDS = ['v8-heap', 'v8-code', 'malloc', 'stack', 'static', 'other'] as const;
export type Kind = (typeof KINDS)[number];

export interface Mapping {
  start: number;
  end: number;
  perms: string;
  inode: number;
  path: string;
}

export interface Snapshot {
  pid: number;
  maps: Mapping[];
  /** Per present private anonymous page: address, kind, content. */
  pages: { addr: number; kind: Kind; data: Buffer }[];
}

export function parseMaps(text: string): Mapping[] {
  return text
    .trim()
    .split('\n')
    .map((line) => {
      const [range, perms, , , inode, ...rest] = line.trim().split(/\s+/);
      const [s, e] = range!.split('-');
      return { start: Number.parseInt(s!, 16), end: Number.parseInt(e!, 16), perms: perms!, inode: Number(inode), path: rest.join(' ') };
    });
}

const SPECIAL = new Set(['[vvar]', '[vvar_vclock]', '[vdso]', '[vsyscall]']);
export const isAnon = (m: Mapping) => m.inode === 0 && (m.path === '' || m.path.startsWith('[anon') || m.path === '[heap]' || m.path === '[stack]');

/** The stack pointer of every thread (idle threads sit in a syscall; /proc/<pid>/task/<tid>/syscall names their sp). */
export async function threadStackPointers(pid: number): Promise<number[]> {
  const sps: number[] = [];
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [])) {
    const f = (await readFile(`/proc/${pid}/task/${tid}/syscall`, 'utf8').catch(() => '')).trim().split(' ');
    if (f.length >= 9) sps.push(Number.parseInt(f[7]!, 16));
  }
  return sps;
}

/**
 * The heuristic classification (see the result's notes): thread stacks by the threads' own stack pointers; malloc by
 * [heap] and glibc's 64 MiB-aligned arena heaps; V8's code range as the gap-free run of anonymous reservations that
 * holds an executable anonymous mapping; V8 heap pages by their 256 KiB alignment (V8's page size; its allocator
 * aligns every chunk); static data as anonymous memory right after a file mapping (.bss) and COW'd pages of private
 * file mappings (.data, GOT).
 */
/** A glibc arena heap: a 64 MiB-aligned read-write mapping whose PROT_NONE rest fills the 64 MiB. */
function isArena(m: Mapping | undefined, next: Mapping | undefined): boolean {
  return !!m && m.perms === 'rw-p' && m.start % ARENA === 0 && !!next && isAnon(next) && next.perms.startsWith('---') && next.start === m.end && next.end - m.start === ARENA;
}

export function classify(maps: readonly Mapping[], sps: readonly number[]): Map<Mapping, Kind> {
  const kinds = new Map<Mapping, Kind>();
  const codeRuns = new Set<Mapping>();
  for (let i = 0; i < maps.length; i++) {
    if (!(isAnon(maps[i]!) && maps[i]!.perms.includes('x') && !maps[i]!.path)) continue;
    let a = i;
    // Arena heaps can sit right beside the code range's reservation: the run stops at them.
    const joins = (j: number) => isAnon(maps[j]!) && !maps[j]!.path && !isArena(maps[j]!, maps[j + 1]) && !isArena(maps[j - 1], maps[j]);
    while (a > 0 && joins(a - 1) && maps[a - 1]!.end === maps[a]!.start) a--;
    let b = i;
    while (b + 1 < maps.length && joins(b + 1) && maps[b + 1]!.start === maps[b]!.end) b++;
    // The reservation is bounded by its PROT_NONE or executable parts: read-write mappings at the run's ends are neighbours.
    const bounds = (m: Mapping) => m.perms.startsWith('---') || m.perms.includes('x');
    while (a < i && !bounds(maps[a]!)) a++;
    while (b > i && !bounds(maps[b]!)) b--;
    for (let j = a; j <= b; j++) codeRuns.add(maps[j]!);
  }
  maps.forEach((m, i) => {
    const prev = maps[i - 1];
    const next = maps[i + 1];
    let kind: Kind;
    if (!isAnon(m)) kind = 'static';
    else if (m.path === '[heap]') kind = 'malloc';
    else if (m.path === '[stack]' || sps.some((sp) => sp >= m.start && sp < m.end)) kind = 'stack';
    else if (isArena(m, next)) kind = 'malloc';
    else if (codeRuns.has(m)) kind = 'v8-code';
    else if (m.start % V8_PAGE === 0) kind = 'v8-heap';
    else if (prev && !isAnon(prev) && prev.inode !== 0 && prev.end === m.start) kind = 'static';
    else kind = 'other';
    kinds.set(m, kind);
  });
  return kinds;
}

/** Reads every present private anonymous page of a (stopped) process. */
export async function snapshot(pid: number): Promise<Snapshot> {
  const maps = parseMaps(await readFile(`/proc/${pid}/maps`, 'utf8'));
  const kinds = classify(maps, await threadStackPointers(pid));
  const pagemap = openSync(`/proc/${pid}/pagemap`, 'r');
  const mem = openSync(`/proc/${pid}/mem`, 'r');
  const pages: Snapshot['pages'] = [];
  try {
    for (const m of maps) {
      if (m.perms[3] !== 'p' || m.perms[0] !== 'r' || SPECIAL.has(m.path)) continue;
      const n = (m.end - m.start) / PAGE;
      const entries = Buffer.alloc(n * 8);
      readSync(pagemap, entries, 0, entries.length, (m.start / PAGE) * 8);
      for (let k = 0; k < n; k++) {
        const e = entries.readBigUInt64LE(k * 8);
        // Bit 63: present; bit 61: a file page or shared anonymous (private file mappings count only their COW'd pages).
        if (!(e & (1n << 63n)) || e & (1n << 61n)) continue;
        const addr = m.start + k * PAGE;
        const data = Buffer.alloc(PAGE);
        if (readSync(mem, data, 0, PAGE, addr) !== PAGE) continue;
        pages.push({ addr, kind: kinds.get(m)!, data });
      }
    }
  } finally {
    closeSync(pagemap);
    closeSync(mem);
  }
  return { pid, maps, pages };
}

/** What an 8-byte value points into in this process's address space (tagged V8 pointers have the low bit set). */
export function targetOf(snap: Snapshot, kinds: Map<Mapping, Kind>, value: bigint): string {
  // Without pointer compression (Node's build) a V8 small integer is the value in the upper 32 bits.
  if ((value & 0xffff_ffffn) === 0n && value !== 0n) return 'Smi';
  if (value > 0xffff_ffff_ffffn || value < 0x1000n) return 'not a pointer';
  const v = Number(value & ~1n);
  const m = snap.maps.find((x) => v >= x.start && v < x.end);
  if (!m) return 'not a pointer';
  if (!isAnon(m)) {
    const name = m.path.split('/').pop() ?? m.path;
    return name === 'node' ? 'node binary (not PIE)' : `file ${name.replace(/\.so.*$/, '.so')}`;
  }
  return kinds.get(m)!;
}

