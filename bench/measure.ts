import { readFile, readlink, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { execa } from 'execa';
import { meminfo } from '../host/metrics.js';
import type { BenchKsm, KsmSample } from './ksm.js';
import { descendants, memorySum, type ProcInfo, processTable, shimsById } from './procs.js';
import { MIB, round } from './stats.js';

/** Host memory figures of one point, MiB. */
export interface HostMemory {
  used_mib: number;
  cached_mib: number;
  anon_mib: number;
  slab_mib: number;
  slab_unreclaimable_mib: number;
  page_tables_mib: number;
  kernel_stack_mib: number;
  shmem_mib: number;
}

export interface PssFigures {
  /** Every process inside the benchmark's containers (descendants of their shims). */
  containers_mib: number;
  containers_anon_mib: number;
  /** The containerd-shim-runc-v2 processes of the benchmark's containers. */
  shims_mib: number;
  shims_anon_mib: number;
  /** hoodyd and its children (hoody modes): PSS, and its anonymous part (the smallest seen over the settle window). */
  daemon_kib: number | null;
  daemon_anon_kib: number | null;
  /** hoodyd alone, and its child processes (the exec worker), anonymous PSS at the snapshot (absent in older results). */
  daemon_self_anon_kib?: number | null;
  exec_workers_anon_kib?: number | null;
  exec_worker_processes?: number | null;
  /** The daemon's HAProxy (detached, so not its child): anonymous PSS (absent in older results; counted as foreign there). */
  dataplane_anon_kib?: number | null;
  /** dockerd + containerd. */
  engine_mib: number;
  engine_anon_mib: number;
  /** Anonymous + shmem PSS and page tables of every other process on the host (other users; noise). */
  foreign_anon_mib: number;
  container_processes: number;
  shim_processes: number;
  foreign_processes: number;
}

/** The kernel's share, host-wide (absent in older results). */
export interface KernelFigures {
  /** /proc/slabinfo, per cache: [active objects, KiB of its slabs (num_slabs × pages per slab), object size in bytes]. */
  slab: Record<string, [number, number, number]>;
  /** /proc/cgroups: cgroups per controller (on a v1 hybrid host each hierarchy has its own). */
  cgroups: Record<string, number>;
  /** Every task on the host (processes, and their threads). */
  processes: number;
  threads: number;
  /** Threads of the benchmark's containers and of their shims. */
  container_threads: number;
  shim_threads: number;
  /** Kernel memory charged to the containers' own memory cgroups (v1 memory.kmem.usage_in_bytes, summed), KiB. */
  container_kmem_kib: number | null;
  /** One container looked at closely (its init process): null when there is none. */
  sample: ContainerShape | null;
}

/** What one container is made of, as the kernel sees it. */
export interface ContainerShape {
  processes: number;
  threads: number;
  /** Lines of its mountinfo (its mount namespace's mounts). */
  mounts: number;
  /** Namespaces of its own (differing from pid 1's). */
  namespaces: string[];
  /** cgroup v1 hierarchies (and the v2 one, as "0") where it sits below the root. */
  cgroups: string[];
  /** Its memory cgroup's kernel memory (v1 memory.kmem.usage_in_bytes), KiB. */
  kmem_kib: number | null;
}

export interface KsmFigures {
  run: string;
  /** pages_to_scan at the time (the advisor moves it) and the selected advisor mode. */
  pages_to_scan: number;
  advisor: string;
  pages_sharing: number;
  pages_shared: number;
  zero_pages: number;
  general_profit_mib: number;
  full_scans: number;
}

export interface DiskFigures {
  /** Sum of the data volumes' BTRFS exclusive bytes (qgroups, from the admin GET /v1/stats). */
  volumes_exclusive_mib: number | null;
  /** Sum of the containers' writable layers (the engine's SizeRw). */
  rw_layers_mib: number;
  /** Bytes used on the whole pool after a BTRFS commit (other users of the pool show up here too). */
  pool_used_mib: number;
}

export interface Snapshot {
  host: HostMemory;
  /** Host used minus what other users' processes hold (anon + shmem PSS, page tables). */
  usedExclForeignMib: number;
  /** Bottom-up: AnonPages + SUnreclaim + PageTables + KernelStack + Shmem, minus other users' processes. */
  pinnedExclForeignMib: number;
  pss: PssFigures;
  ksm: KsmFigures;
  ksmSample: KsmSample;
  kernel: KernelFigures;
}

const mib = (bytes: number | undefined) => round((bytes ?? 0) / MIB, 2) ?? 0;

/** The pids of the benchmark's containers and shims, from the process tree (a container's processes descend from its shim). */
export function fleetPids(table: readonly ProcInfo[], engineIds: readonly string[]): { containers: Set<number>; shims: Set<number> } {
  const byId = shimsById(table);
  const shims = new Set<number>();
  for (const id of engineIds) for (const pid of byId.get(id) ?? []) shims.add(pid);
  const containers = new Set<number>();
  for (const shim of shims) for (const pid of descendants(table, shim)) if (!shims.has(pid)) containers.add(pid);
  return { containers, shims };
}

/** Anonymous PSS of the daemon and its children, in bytes (sampled during the settle window). */
export async function daemonAnon(daemonPid: number): Promise<number> {
  const m = await memorySum(descendants(await processTable(), daemonPid));
  return m.pssAnon;
}

/** /proc/slabinfo (root only) as [active objects, KiB, object size] per cache; empty when unreadable. */
export async function slabCaches(): Promise<Record<string, [number, number, number]>> {
  const out: Record<string, [number, number, number]> = {};
  const text = await readFile('/proc/slabinfo', 'utf8').catch(() => '');
  for (const line of text.split('\n').slice(2)) {
    const f = line.trim().split(/\s+/);
    // name active_objs num_objs objsize objperslab pagesperslab : tunables l b s : slabdata active_slabs num_slabs shared
    if (f.length < 16 || !f[0]) continue;
    out[f[0]] = [Number(f[1]), (Number(f[14]) * Number(f[5]) * 4096) / 1024, Number(f[3])];
  }
  return out;
}

/** /proc/cgroups: number of cgroups per controller. */
export async function cgroupCounts(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await readFile('/proc/cgroups', 'utf8').catch(() => '')).split('\n')) {
    const f = line.split(/\s+/);
    if (f[0] && !f[0].startsWith('#') && f[2]) out[f[0]] = Number(f[2]);
  }
  return out;
}

const NAMESPACES = ['cgroup', 'ipc', 'mnt', 'net', 'pid', 'time', 'user', 'uts'] as const;

/** The v1 memory cgroup of a process (path below the controller's mount), or null. */
async function memoryCgroup(pid: number): Promise<string | null> {
  const text = await readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
  return /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/m.exec(text)?.[1] ?? null;
}

async function kmemKib(cgroup: string): Promise<number | null> {
  const raw = await readFile(join('/sys/fs/cgroup/memory', cgroup, 'memory.kmem.usage_in_bytes'), 'utf8').catch(() => '');
  return raw.trim() ? Number(raw) / 1024 : null;
}

/** Processes (all in its pid namespace: exec'd ones too), mounts, own namespaces and cgroups of one container. */
async function containerShape(table: readonly ProcInfo[], init: number, candidates: Iterable<number>): Promise<ContainerShape> {
  const pidns = await readlink(`/proc/${init}/ns/pid`).catch(() => '');
  const pids: number[] = [];
  for (const pid of candidates) if ((await readlink(`/proc/${pid}/ns/pid`).catch(() => '')) === pidns) pids.push(pid);
  const threads = table.reduce((a, p) => a + (pids.includes(p.pid) ? (p.threads ?? 1) : 0), 0);
  const mounts = (await readFile(`/proc/${init}/mountinfo`, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  const namespaces: string[] = [];
  for (const ns of NAMESPACES) {
    const [mine, host] = await Promise.all([readlink(`/proc/${init}/ns/${ns}`).catch(() => ''), readlink(`/proc/1/ns/${ns}`).catch(() => '')]);
    if (mine && mine !== host) namespaces.push(ns);
  }
  const cgroups = (await readFile(`/proc/${init}/cgroup`, 'utf8').catch(() => ''))
    .split('\n')
    .map((l) => l.split(':'))
    .filter((f) => f.length >= 3 && f[2] !== '/' && f[2] !== '')
    .map((f) => f[1] || '0');
  const mem = await memoryCgroup(init);
  return { processes: pids.length, threads, mounts, namespaces, cgroups, kmem_kib: mem ? await kmemKib(mem) : null };
}

/** The pid of a daemon's HAProxy (its pid file in the state dir), when it runs. */
async function dataplanePid(stateDir: string | null): Promise<number | null> {
  if (!stateDir) return null;
  const pid = Number((await readFile(join(stateDir, 'dataplane', 'haproxy.pid'), 'utf8').catch(() => '')).trim().split(/\s+/)[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/** Memory figures of the host and of the benchmark's processes, read in one go. */
export async function memorySnapshot(
  engineIds: readonly string[],
  daemonPid: number | null,
  ksm: BenchKsm,
  daemonAnonMin: number | null,
  daemonStateDir: string | null = null,
): Promise<Snapshot> {
  const mem = await meminfo();
  const slab = await slabCaches();
  const table = await processTable();
  const { containers: ctrPids, shims: shimPids } = fleetPids(table, engineIds);
  const daemonPids = new Set(daemonPid ? descendants(table, daemonPid) : []);
  const hp = await dataplanePid(daemonStateDir);
  const planePids = new Set(hp && table.some((p) => p.pid === hp) ? descendants(table, hp) : []);
  const enginePids = new Set(table.filter((p) => p.comm === 'dockerd' || p.comm === 'containerd').map((p) => p.pid));
  const foreignPids = table
    .filter((p) => !ctrPids.has(p.pid) && !shimPids.has(p.pid) && !daemonPids.has(p.pid) && !enginePids.has(p.pid) && !planePids.has(p.pid))
    .map((p) => p.pid);
  const containers = await memorySum(ctrPids);
  const shims = await memorySum(shimPids);
  const daemon = await memorySum(daemonPids);
  const daemonSelf = await memorySum(daemonPid ? [daemonPid] : []);
  const workerPids = [...daemonPids].filter((p) => p !== daemonPid);
  const workers = await memorySum(workerPids);
  const plane = await memorySum(planePids);
  const memcgs = new Set<string>();
  for (const pid of ctrPids) {
    const cg = await memoryCgroup(pid);
    if (cg && cg !== '/') memcgs.add(cg);
  }
  let kmem: number | null = memcgs.size ? 0 : null;
  for (const cg of memcgs) kmem = (kmem ?? 0) + ((await kmemKib(cg)) ?? 0);
  // A container's init: a child of one of its shims (the shim's other children are exec'd processes, agents).
  const firstShim = [...shimPids].sort((a, b) => a - b)[0];
  const init = firstShim === undefined ? undefined : table.filter((p) => p.ppid === firstShim).sort((a, b) => a.pid - b.pid)[0]?.pid;
  const shape = init === undefined ? null : await containerShape(table, init, ctrPids);
  const threadsOf = (pids: Set<number>) => table.reduce((a, p) => a + (pids.has(p.pid) ? (p.threads ?? 1) : 0), 0);
  const engine = await memorySum(enginePids);
  const foreign = await memorySum(foreignPids);
  const foreignBytes = foreign.pssAnon + foreign.pssShmem + foreign.pageTables;
  const sample = await ksm.sample();
  const used = (mem.MemTotal ?? 0) - (mem.MemAvailable ?? 0);
  return {
    host: {
      used_mib: mib(used),
      cached_mib: mib(mem.Cached),
      anon_mib: mib(mem.AnonPages),
      slab_mib: mib(mem.Slab),
      slab_unreclaimable_mib: mib(mem.SUnreclaim),
      page_tables_mib: mib(mem.PageTables),
      kernel_stack_mib: mib(mem.KernelStack),
      shmem_mib: mib(mem.Shmem),
    },
    usedExclForeignMib: mib(used - foreignBytes),
    pinnedExclForeignMib: mib(
      (mem.AnonPages ?? 0) + (mem.SUnreclaim ?? 0) + (mem.PageTables ?? 0) + (mem.KernelStack ?? 0) + (mem.Shmem ?? 0) - foreignBytes,
    ),
    pss: {
      containers_mib: mib(containers.pss),
      containers_anon_mib: mib(containers.pssAnon),
      shims_mib: mib(shims.pss),
      shims_anon_mib: mib(shims.pssAnon),
      daemon_kib: daemonPid ? Math.round(daemon.pss / 1024) : null,
      daemon_anon_kib: daemonPid ? Math.round(Math.min(daemon.pssAnon, daemonAnonMin ?? Number.POSITIVE_INFINITY) / 1024) : null,
      daemon_self_anon_kib: daemonPid ? Math.round(daemonSelf.pssAnon / 1024) : null,
      exec_workers_anon_kib: daemonPid ? Math.round(workers.pssAnon / 1024) : null,
      exec_worker_processes: daemonPid ? workerPids.length : null,
      dataplane_anon_kib: daemonStateDir ? Math.round(plane.pssAnon / 1024) : null,
      engine_mib: mib(engine.pss),
      engine_anon_mib: mib(engine.pssAnon),
      foreign_anon_mib: mib(foreignBytes),
      container_processes: ctrPids.size,
      shim_processes: shimPids.size,
      foreign_processes: foreignPids.length,
    },
    ksm: {
      run: (await ksm.ctl.read('run')) ?? '',
      pages_to_scan: Number((await ksm.ctl.read('pages_to_scan')) ?? 0),
      advisor: /\[(\S+)\]/.exec((await ksm.ctl.read('advisor_mode')) ?? '')?.[1] ?? 'none',
      pages_sharing: sample.pagesSharing,
      pages_shared: sample.pagesShared,
      zero_pages: sample.zeroPages,
      general_profit_mib: mib(sample.generalProfit),
      full_scans: sample.fullScans,
    },
    ksmSample: sample,
    kernel: {
      slab,
      cgroups: await cgroupCounts(),
      processes: table.length,
      threads: table.reduce((a, p) => a + (p.threads ?? 1), 0),
      container_threads: threadsOf(ctrPids),
      shim_threads: threadsOf(shimPids),
      container_kmem_kib: kmem === null ? null : Math.round(kmem),
      sample: shape,
    },
  };
}

/** Disk figures: writable layers from the engine, volumes from hoody's stats, the pool after a commit. */
export async function diskSnapshot(docker: Docker, engineIds: readonly string[], poolPath: string, volumesExclusiveBytes: number | null): Promise<DiskFigures> {
  const ids = new Set(engineIds);
  let rw = 0;
  if (ids.size) {
    const rows = (await docker.listContainers({ all: true, size: true })) as (Docker.ContainerInfo & { SizeRw?: number })[];
    for (const r of rows) if (ids.has(r.Id)) rw += r.SizeRw ?? 0;
  }
  // execa directly, without its exit hook: signal-exit's "am I the last listener?" count would otherwise
  // sometimes take over the benchmark's own SIGINT/SIGTERM handling while a child runs.
  await execa('btrfs', ['filesystem', 'sync', poolPath], { reject: false, cleanup: false, timeout: 60_000 });
  const s = await statfs(poolPath);
  return {
    volumes_exclusive_mib: volumesExclusiveBytes === null ? null : mib(volumesExclusiveBytes),
    rw_layers_mib: mib(rw),
    pool_used_mib: mib((s.blocks - s.bfree) * s.bsize),
  };
}
