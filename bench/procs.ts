import { readdir, readFile } from 'node:fs/promises';

/** One row of the process table, read from /proc. */
export interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
  cmdline: string[];
  /** num_threads (absent where a caller built the row by hand). */
  threads?: number;
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
    const f = stat.slice(close + 2).split(' ');
    // Fields after the comm start at state (3): ppid is 4, num_threads 20 in proc(5) numbering.
    out.push({ pid: Number(d), ppid: Number(f[1]), comm, cmdline: cmd.split('\0').filter(Boolean), threads: Number(f[17]) });
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

/** utime + stime of a process, in clock ticks (0 when gone). */
export async function cpuTicks(pid: number): Promise<number> {
  const t = await procTimes(pid);
  return t.user + t.sys;
}

/** utime and stime (ticks) of one process (zeros when gone). */
export async function procTimes(pid: number): Promise<{ user: number; sys: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return { user: 0, sys: 0 };
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields after the comm start at state (3); utime is 14 and stime 15 in proc(5) numbering.
  return { user: Number(f[11]), sys: Number(f[12]) };
}

/** Clock ticks per second for /proc/<pid>/stat times (USER_HZ; 100 on every Linux this runs on). */
export const CLK_TCK = 100;

/** Resident set size of a process in bytes (0 when gone). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
}

/** Busy and total jiffies of the whole host (/proc/stat "cpu" line). */
export async function hostCpu(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** Summed utime+stime (ticks) of a pid and all its descendants (e.g. hoodyd and its exec worker). */
export async function treeTicks(root: number): Promise<number> {
  const pids = descendants(await processTable(), root);
  let sum = 0;
  for (const p of pids) sum += await cpuTicks(p);
  return sum;
}

/** utime and stime (ticks) summed over a pid and its descendants: user-space work vs the kernel's (e.g. connect()). */
export async function treeTimes(root: number): Promise<{ user: number; sys: number }> {
  const out = { user: 0, sys: 0 };
  for (const p of descendants(await processTable(), root)) {
    const t = await procTimes(p);
    out.user += t.user;
    out.sys += t.sys;
  }
  return out;
}

/** TCP sockets in TIME_WAIT in the network namespace of a process (`self`: ours). */
export async function timeWaitCount(pid: number | 'self'): Promise<number> {
  let n = 0;
  for (const f of ['tcp', 'tcp6']) {
    const text = await readFile(`/proc/${pid}/net/${f}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) if (line.trim().split(/\s+/)[3] === '06') n++;
  }
  return n;
}

/** A TcpExt counter (e.g. ListenOverflows) of the network namespace of a process. */
export async function tcpExt(pid: number | 'self', name: string): Promise<number | null> {
  const lines = (await readFile(`/proc/${pid}/net/netstat`, 'utf8').catch(() => '')).split('\n').filter((l) => l.startsWith('TcpExt:'));
  const keys = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  const i = keys.indexOf(name);
  return i > 0 && values[i] !== undefined ? Number(values[i]) : null;
}

/** Pids of the engine's own processes (dockerd, containerd), found by name. */
export async function enginePids(): Promise<number[]> {
  return (await processTable()).filter((p) => p.comm === 'dockerd' || p.comm === 'containerd').map((p) => p.pid);
}
