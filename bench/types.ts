import type { ContainerShape, DiskFigures, HostMemory, KernelFigures, KsmFigures, PssFigures } from './measure.js';
import type { ResultHeader } from './results.js';

/** One measured point: a (workload, mode) at a container count. */
export interface Point {
  workload: string;
  mode: string;
  count: number;
  at: string;
  /** per_container_s: until ready with its namespaces populated; create_s: the create call alone. */
  provision: { added: number; wall_s: number; per_container_s: number[]; create_s: number[] };
  /** The daemon's process.memoryUsage() right after forced full GCs (over its loopback inspector). */
  daemon_heap: { heap_used_kib: number; external_kib: number; rss_kib: number } | null;
  /** KSM convergence after this step (modes with KSM on). */
  ksm_convergence: { converged: boolean; seconds: number; cpu_percent: number; full_scans: number } | null;
  /** ksmd's CPU share over the settle window just before the snapshot (percent of one core). */
  ksmd_cpu_percent: number;
  /** used_mib and cached_mib are medians of 1 s samples over the settle window (host_instant: at the snapshot). */
  host: HostMemory;
  host_instant: { used_mib: number; cached_mib: number };
  /** host.used_mib minus other users' anonymous memory and page tables (see PssFigures.foreign_anon_mib). */
  used_excl_foreign_mib: number;
  /** Bottom-up, less noisy: AnonPages + SUnreclaim + PageTables + KernelStack + Shmem, minus other users' processes. */
  pinned_excl_foreign_mib: number;
  pss: PssFigures;
  ksm: KsmFigures;
  disk: DiskFigures;
  /** What the daemon's own GET /v1/stats reported at the same point (hoody modes), for comparison. */
  hoody_stats: { containers: number; pss_mib: number; rss_mib: number; ksm_profit_mib: number; merge_any: number } | null;
  /** Containers on the engine that are not the benchmark's (other users of the host). */
  foreign_containers: number;
  /** Someone else changed the KSM knobs since the previous point (they were put back within a second). */
  ksm_changed_externally: boolean;
  /** How many times the profile had to be put back since the previous point (absent in older results). */
  ksm_resets?: number;
  /** Seconds waited before the snapshot (active points wait longer; absent in older results). */
  settle_s?: number;
  /** Largest host used (MemTotal − MemAvailable) seen over the settle window: the minute's burst included. */
  host_peak_used_mib?: number;
  /** Slab by cache, cgroups, processes and threads (absent in older results). */
  kernel?: KernelFigures;
  /** Active modes: what the containers' pipelines did over the settle window (absent for idle points). */
  activity?: ActivityFigures | null;
}

/** The containers' once-a-minute pipeline runs over a point's settle window (from their cron and exec logs). */
export interface ActivityFigures {
  /** The window the rows were taken from (since = settle start). */
  since: string;
  seconds: number;
  containers: number;
  /** Scheduled cron runs in the window, by outcome. */
  cron_runs: number;
  cron_ok: number;
  cron_failed: number;
  /** started_at − scheduled_for of every scheduled run, ms. */
  cron_lateness_ms: number[];
  /** The exec log's duration of every tick run, ms, and how many were not 200. */
  exec_ms: number[];
  exec_failed: number;
  /** Runs per container: the fewest any container had (≥ 2 means two minutes of activity before the snapshot). */
  min_runs_per_container: number;
  /** A few failure samples (status, output). */
  errors: string[];
}

export interface ModeRun {
  workload: string;
  mode: string;
  description: string;
  namespaces: string[];
  namespace_errors: Record<string, number>;
  errors: string[];
  daemon: { pid: number; state_dir: string; instance: string } | null;
  seconds: number;
}

export type ByMode = Record<string, number | null>;

export interface WorkloadSummary {
  image: string;
  description: string;
  marginal_mib_per_container: ByMode;
  /** The same slope with other users' process memory taken out (this host is shared). */
  marginal_excl_foreign_mib_per_container: ByMode;
  /** Slope of the bottom-up figure (Point.pinned_excl_foreign_mib). */
  pinned_mib_per_container: ByMode;
  page_cache_mib_per_container: ByMode;
  /** marginal + page cache: the goal's "memory" figure. */
  memory_mib_per_container: ByMode;
  disk_marginal_mib_per_container: number | null;
  disk_pool_mib_per_container: number | null;
  ksmd_cpu_percent: number | null;
  ksmd_cpu_converging_percent: number | null;
  ksm_convergence_s: number | null;
  ksm_converged: boolean | null;
  provision_s_p50: number | null;
  provision_s_p95: number | null;
  provision_rate_per_s: number | null;
  docker_provision_s_p50: number | null;
  docker_provision_s_p95: number | null;
  docker_rate_per_s: number | null;
  /** Slope of the daemon's anonymous PSS (hoodyd and its children) after forced GCs. */
  daemon_kib_per_container: number | null;
  /** The same slope fitted over the counts past the first (0): without the daemon's one-off warm-up. Absent in old runs. */
  daemon_kib_per_container_past_first?: number | null;
  /** Slope of the daemon's live JS heap + external memory after forced GCs. */
  daemon_heap_kib_per_container: number | null;
  /** The create call alone (POST /v1/containers), without populating the namespaces. */
  create_s_p50: number | null;
  namespaces: Record<string, string[]>;
  breakdown_per_container: Record<string, Record<string, number | null>>;
  ksm_by_mode: Record<string, { convergence_s: (number | null)[]; converged: (boolean | null)[]; cpu_steady_percent: number[]; cpu_converging_percent: (number | null)[] }>;
  /** Active modes against their idle mode (absent in older results). */
  active?: Record<string, ActiveSummary>;
  /** The kernel's share per container, by mode (absent in older results). */
  kernel_per_container?: Record<string, KernelShare>;
  points: Point[];
}

/** One active mode against the idle mode it is a variant of (slopes per container over the same counts). */
export interface ActiveSummary {
  idle_key: string;
  active_key: string;
  /** Which points the slopes were fitted over (past zero only when both modes have two such counts). */
  slopes_over?: string;
  idle_mib: number | null;
  active_mib: number | null;
  /** active − idle, MiB per container: host used, the same without other users' processes, and bottom-up. */
  extra_mib: number | null;
  extra_excl_foreign_mib: number | null;
  extra_pinned_mib: number | null;
  /** Where the extra goes: slope differences per part (KiB per container). */
  extra_parts_kib: Record<string, number | null>;
  /** At the largest count. */
  count: number | null;
  settle_s: number | null;
  cron_runs: number | null;
  cron_failed: number | null;
  min_runs_per_container: number | null;
  cron_lateness_ms: { p50: number | null; p99: number | null; max: number | null };
  exec_ms: { p50: number | null; p99: number | null; max: number | null };
  exec_failed: number | null;
  /** Host used at the minute's burst above the window's median (MiB, largest count). */
  burst_mib: number | null;
}

/** The kernel's share per container in one mode: slopes over the counts. */
export interface KernelShare {
  /** The caches that grow most, KiB and objects per container, largest first. */
  slab_top: { cache: string; kib: number; objects: number; object_size: number }[];
  slab_total_kib: number | null;
  processes: number | null;
  threads: number | null;
  container_threads: number | null;
  shim_threads: number | null;
  kernel_stack_kib: number | null;
  kernel_stack_kib_per_thread: number | null;
  page_tables_kib: number | null;
  cgroups: Record<string, number | null>;
  /** Kernel memory charged to the containers' own memory cgroups (noise-free: other users are not in it). */
  container_kmem_kib: number | null;
  /** One container of the largest count, looked at closely. */
  sample: ContainerShape | null;
}

export interface DensityResult extends ResultHeader {
  ksm_knobs_before: Record<string, string>;
  ksm_knobs_after: Record<string, string>;
  modes: Record<string, { key: string; engine: string; description: string }>;
  runs: ModeRun[];
  workloads: Record<string, WorkloadSummary>;
  notes: string[];
}
