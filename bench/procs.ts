import { readdir, readFile } from 'node:fs/promises';

/** One row of the process table, read from /proc. */
export interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
  cmdline: string[];
}

/** Every process on the host (those that vanish while reading are skipped). */
export async function processTable(): Promise<ProcInfo[]> {
  const out: ProcInfo[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const [stat, cmd] = await Promise.all([readFile(`/proc/${d}/stat`, 'utf8').catch(() => ''), readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '')]);
    if (!stat) continue;
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    out.push({ pid: Number(d), ppid, comm, cmdline: cmd.split('\0').filter(Boolean) });
  }
  return out;
}

/** The pid and all its descendants. */
export function descendants(table: readonly ProcInfo[], root: number): number[] {
  const children = new Map<number, number[]>();
  for (const p of table) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p.pid]);
  const out: number[] = [];
  const walk = (pid: number) => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) walk(c);
  };
  if (table.some((p) => p.pid === root)) walk(root);
  return out;
}

/** containerd-shim-runc-v2 processes, keyed by the container id they serve (`-id <id>`). */
export function shimsById(table: readonly ProcInfo[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const p of table) {
    if (!p.comm.startsWith('containerd-shim')) continue;
    const i = p.cmdline.indexOf('-id');
    const id = i >= 0 ? p.cmdline[i + 1] : undefined;
    if (id) out.set(id, [...(out.get(id) ?? []), p.pid]);
  }
  return out;
}

/** Memory of one process in bytes (zeros when it is gone or is a kernel thread). */
export interface ProcMemory {
  /** Proportional set size: shared pages split among their users. */
  pss: number;
  /** The anonymous part of PSS (what counts in MemTotal − MemAvailable; file pages are reclaimable). */
  pssAnon: number;
  pssShmem: number;
  /** Page tables (VmPTE). */
  pageTables: number;
}

const ZERO: ProcMemory = { pss: 0, pssAnon: 0, pssShmem: 0, pageTables: 0 };

export async function procMemory(pid: number): Promise<ProcMemory> {
  const [rollup, status] = await Promise.all([
    readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => ''),
    readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''),
  ]);
  if (!rollup) return ZERO;
  const kb = (text: string, field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { pss: kb(rollup, 'Pss'), pssAnon: kb(rollup, 'Pss_Anon'), pssShmem: kb(rollup, 'Pss_Shmem'), pageTables: kb(status, 'VmPTE') };
}

/** The sums of procMemory over the processes. */
export async function memorySum(pids: Iterable<number>): Promise<ProcMemory> {
  const total = { ...ZERO };
  for (const pid of pids) {
    const m = await procMemory(pid);
    total.pss += m.pss;
    total.pssAnon += m.pssAnon;
    total.pssShmem += m.pssShmem;
    total.pageTables += m.pageTables;
  }
  return total;
}

/** utime + stime of a process, in clock ticks. */
export async function cpuTicks(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return 0;
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields after the comm start at state (3); utime is 14 and stime 15 in proc(5) numbering.
  return Number(f[11]) + Number(f[12]);
}

/** Clock ticks per second for /proc/<pid>/stat times (USER_HZ; 100 on every Linux this runs on). */
export const CLK_TCK = 100;
