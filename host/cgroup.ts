/**
 * A cgroup with a hard memory and CPU limit for processes hoody starts (the exec worker). cgroup v2 when the
 * memory and cpu controllers are usable there, else the v1 memory and cpu hierarchies. The group is made beneath
 * the daemon's own cgroup of each hierarchy, so whatever confines the daemon still confines what it starts.
 *
 * The CPU limit binds only the group's `heavy` child, into which the process moves its own threads that compute
 * for long (cpu is a per-thread controller): a quota on the whole group would throttle every short run in it
 * once one tenant's spinning scripts had used the period up. Where threads cannot be moved, the whole group
 * gets the quota.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CgroupLimits {
  /** Hard memory limit (bytes): past it the kernel's OOM killer kills a process of the group. */
  memoryBytes: number;
  /** CPU bandwidth in cores (1.5 = one and a half cores) of the threads computing for long; 0: no CPU limit. */
  cpus: number;
}

/** Where to write a thread id to move it into the capped `heavy` child, and back. */
export interface HeavyThreadFiles {
  demote: string;
  restore: string;
}

const HEAVY = 'heavy';

/** Short CFS periods: a throttled group waits at most one period, so the other tenants' runs in it never stall long. */
const CFS_PERIOD_US = 10_000;

interface Mount {
  type: 'cgroup' | 'cgroup2';
  dir: string;
  /** v1: the controllers of this hierarchy (memory, cpu, cpuacct, ...). */
  controllers: string[];
}

function mounts(): Mount[] {
  const out: Mount[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const [fstype, , superOpts = ''] = right.split(' ');
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    const dir = left.split(' ')[4];
    if (dir) out.push({ type: fstype, dir, controllers: superOpts.split(',') });
  }
  return out;
}

/** This process's cgroup path in a hierarchy: by controller for v1, '' for v2. */
function ownPath(controller: string): string | null {
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const [, ctrls, path] = line.split(':');
    if (ctrls === undefined || path === undefined) continue;
    if (ctrls.split(',').includes(controller)) return path;
  }
  return null;
}

function read(file: string): string {
  return readFileSync(file, 'utf8');
}

/** `key value` lines (memory.events, memory.oom_control): the value of key, 0 when absent. */
function counter(file: string, key: string): number {
  try {
    const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(read(file));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export class Cgroup {
  private constructor(
    readonly version: 1 | 2,
    /** v2: the one directory; v1: [memory dir, cpu dir]. */
    readonly dirs: readonly string[],
    readonly limits: CgroupLimits,
    /** Null when the CPU limit binds the whole group (no limit, or threads cannot be moved here). */
    readonly heavyThreads: HeavyThreadFiles | null,
  ) {}

  /** The directory whose memory limit file holds the hard limit (tests read it). */
  get memoryDir(): string {
    return this.dirs[0]!;
  }

  /** The file holding the hard memory limit. */
  get memoryLimitFile(): string {
    return join(this.memoryDir, this.version === 2 ? 'memory.max' : 'memory.limit_in_bytes');
  }

  /**
   * Makes (or takes over) the group `name` with these limits. Throws with the reason when this machine has no
   * usable memory controller; the caller decides whether that is fatal.
   */
  static create(name: string, limits: CgroupLimits): Cgroup {
    const all = mounts();
    const v2 = all.find((m) => m.type === 'cgroup2');
    if (v2) {
      const own = ownPath('') ?? '/';
      const parent = join(v2.dir, own);
      const available = existsSync(join(parent, 'cgroup.controllers')) ? read(join(parent, 'cgroup.controllers')).split(/\s+/) : [];
      if (available.includes('memory') && available.includes('cpu')) {
        // The controllers must be handed down to children; a parent with processes cannot do so (v2's rule).
        try {
          writeFileSync(join(parent, 'cgroup.subtree_control'), '+memory +cpu');
          const dir = join(parent, name);
          mkdirSync(dir, { recursive: true });
          writeFileSync(join(dir, 'memory.max'), String(limits.memoryBytes));
          if (existsSync(join(dir, 'memory.swap.max'))) writeFileSync(join(dir, 'memory.swap.max'), '0');
          writeFileSync(join(dir, 'cpu.max'), `max ${CFS_PERIOD_US}`);
          return new Cgroup(2, [dir], limits, limits.cpus > 0 ? heavyChildV2(dir, limits.cpus) : null);
        } catch {
          // fall through to v1 (a v2 root with processes in it cannot delegate)
        }
      }
    }
    const mem = all.find((m) => m.type === 'cgroup' && m.controllers.includes('memory'));
    if (!mem) throw new Error('no usable memory cgroup controller (neither cgroup v2 with memory+cpu nor a v1 memory hierarchy)');
    const memDir = join(mem.dir, ownPath('memory') ?? '/', name);
    mkdirSync(memDir, { recursive: true });
    // memsw (memory+swap) must stay >= the memory limit: lower the limit first when shrinking, raise memsw first when growing.
    const memsw = join(memDir, 'memory.memsw.limit_in_bytes');
    const hasMemsw = existsSync(memsw);
    try {
      writeFileSync(join(memDir, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      if (hasMemsw) writeFileSync(memsw, String(limits.memoryBytes));
    } catch {
      if (hasMemsw) writeFileSync(memsw, String(limits.memoryBytes));
      writeFileSync(join(memDir, 'memory.limit_in_bytes'), String(limits.memoryBytes));
    }
    const dirs = [memDir];
    const cpu = all.find((m) => m.type === 'cgroup' && m.controllers.includes('cpu'));
    let heavy: HeavyThreadFiles | null = null;
    if (cpu && limits.cpus > 0) {
      const cpuDir = join(cpu.dir, ownPath('cpu') ?? '/', name);
      mkdirSync(cpuDir, { recursive: true });
      dirs.push(cpuDir);
      heavy = heavyChildV1(cpuDir, limits.cpus);
    }
    return new Cgroup(1, dirs, limits, heavy);
  }

  /**
   * Removes groups named `<prefix><pid>` beside this one whose daemon is gone (a SIGKILLed daemon cannot clean
   * up after itself). Only empty groups can be removed, so a live one is never touched.
   */
  sweepStale(prefix: string): void {
    for (const dir of this.dirs) {
      const parent = join(dir, '..');
      for (const entry of readdirSync(parent)) {
        const m = entry.startsWith(prefix) ? /^(\d+)$/.exec(entry.slice(prefix.length)) : null;
        if (!m || existsSync(`/proc/${m[1]}`)) continue;
        removeGroup(join(parent, entry));
      }
    }
  }

  /** Moves a process into the group (every hierarchy). */
  add(pid: number): void {
    for (const dir of this.dirs) writeFileSync(join(dir, 'cgroup.procs'), String(pid));
  }

  /** Processes of the group killed by the OOM killer so far. */
  oomKills(): number {
    return this.version === 2 ? counter(join(this.memoryDir, 'memory.events'), 'oom_kill') : counter(join(this.memoryDir, 'memory.oom_control'), 'oom_kill');
  }

  /** Removes the group; its processes must have exited. Best effort: a leftover is swept at the next start. */
  remove(): void {
    for (const dir of this.dirs) removeGroup(dir);
  }
}

/** A group and its heavy child, children first; best effort (a group with a process in it stays). */
function removeGroup(dir: string): void {
  for (const d of [join(dir, HEAVY), dir]) {
    try {
      rmdirSync(d);
    } catch {
      // still has a process, or already gone
    }
  }
}

/** SCHED_IDLE for the whole group where the kernel has it (5.15+): it runs only when nothing else wants the CPU. */
function idle(dir: string): void {
  if (existsSync(join(dir, 'cpu.idle'))) writeFileSync(join(dir, 'cpu.idle'), '1');
}

function quotaV1(dir: string, cpus: number): void {
  writeFileSync(join(dir, 'cpu.cfs_period_us'), String(CFS_PERIOD_US));
  writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(Math.round(cpus * CFS_PERIOD_US)));
}

/** v1: `heavy` beneath the cpu group, with the quota and the least weight; else the quota on the whole group. */
function heavyChildV1(cpuDir: string, cpus: number): HeavyThreadFiles | null {
  const heavy = join(cpuDir, HEAVY);
  try {
    mkdirSync(heavy, { recursive: true });
    writeFileSync(join(heavy, 'cpu.shares'), '2');
    idle(heavy);
    quotaV1(heavy, cpus);
    return { demote: join(heavy, 'tasks'), restore: join(cpuDir, 'tasks') };
  } catch {
    removeGroup(heavy);
    quotaV1(cpuDir, cpus);
    return null;
  }
}

/** v2: a threaded `heavy` child (cpu is a threaded controller; memory stays on the domain above it). */
function heavyChildV2(dir: string, cpus: number): HeavyThreadFiles | null {
  const heavy = join(dir, HEAVY);
  const max = `${Math.round(cpus * CFS_PERIOD_US)} ${CFS_PERIOD_US}`;
  try {
    mkdirSync(heavy, { recursive: true });
    writeFileSync(join(heavy, 'cgroup.type'), 'threaded');
    writeFileSync(join(dir, 'cgroup.subtree_control'), '+cpu');
    writeFileSync(join(heavy, 'cpu.weight'), '1');
    idle(heavy);
    writeFileSync(join(heavy, 'cpu.max'), max);
    return { demote: join(heavy, 'cgroup.threads'), restore: join(dir, 'cgroup.threads') };
  } catch {
    try {
      rmdirSync(heavy);
    } catch {
      // a threaded child cannot go back; it stays empty
    }
    writeFileSync(join(dir, 'cpu.max'), max);
    return null;
  }
}
