import { statfs } from 'node:fs/promises';
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
  /** dockerd + containerd. */
  engine_mib: number;
  engine_anon_mib: number;
  /** Anonymous + shmem PSS and page tables of every other process on the host (other users; noise). */
  foreign_anon_mib: number;
  container_processes: number;
  shim_processes: number;
  foreign_processes: number;
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

/** Memory figures of the host and of the benchmark's processes, read in one go. */
export async function memorySnapshot(engineIds: readonly string[], daemonPid: number | null, ksm: BenchKsm, daemonAnonMin: number | null): Promise<Snapshot> {
  const mem = await meminfo();
  const table = await processTable();
  const { containers: ctrPids, shims: shimPids } = fleetPids(table, engineIds);
  const daemonPids = new Set(daemonPid ? descendants(table, daemonPid) : []);
  const enginePids = new Set(table.filter((p) => p.comm === 'dockerd' || p.comm === 'containerd').map((p) => p.pid));
  const foreignPids = table.filter((p) => !ctrPids.has(p.pid) && !shimPids.has(p.pid) && !daemonPids.has(p.pid) && !enginePids.has(p.pid)).map((p) => p.pid);
  const containers = await memorySum(ctrPids);
  const shims = await memorySum(shimPids);
  const daemon = await memorySum(daemonPids);
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
