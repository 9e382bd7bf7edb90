import type { PersistentInfo } from './exec/bun-persistent.js';
import { readdir, readFile } from 'node:fs/promises';
import type { KsmController } from '../host/ksm.js';
import type { ContainerContext } from './context.js';
import { listContainers } from './lifecycle.js';

export interface ProcessMemory {
  rssBytes: number;
  pssBytes: number;
}

/** RSS and PSS of one process from smaps_rollup (PSS splits shared pages fairly among their users). */
export async function processMemory(pid: number): Promise<ProcessMemory> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { rssBytes: kb('Rss'), pssBytes: kb('Pss') };
}

/** Every pid in the container's cgroup (v1 memory hierarchy or the unified one). */
export async function containerPids(engineId: string, mainPid: number): Promise<number[]> {
  const cgroup = await readFile(`/proc/${mainPid}/cgroup`, 'utf8').catch(() => '');
  const candidates: string[] = [];
  for (const line of cgroup.split('\n')) {
    const [, controllers, path] = line.split(':');
    if (path === undefined) continue;
    if (controllers === 'memory') candidates.push(`/sys/fs/cgroup/memory${path}/cgroup.procs`);
    if (controllers === '') candidates.push(`/sys/fs/cgroup/unified${path}/cgroup.procs`, `/sys/fs/cgroup${path}/cgroup.procs`);
  }
  candidates.push(`/sys/fs/cgroup/memory/docker/${engineId}/cgroup.procs`);
  for (const file of candidates) {
    const text = await readFile(file, 'utf8').catch(() => '');
    const pids = text.split('\n').filter(Boolean).map(Number);
    if (pids.length) return pids;
  }
  return mainPid ? [mainPid] : [];
}

/** containerd shim pid per engine container id (one shim per container; it lives outside the container's cgroup). */
export async function shimPids(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const d of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(d)) continue;
    const argv = (await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (!argv[0]?.includes('containerd-shim')) continue;
    const i = argv.indexOf('-id');
    if (i >= 0 && argv[i + 1]) out.set(argv[i + 1]!, Number(d));
  }
  return out;
}

export interface ContainerStats {
  name: string;
  state: string;
  pids: number;
  rssBytes: number;
  pssBytes: number;
  /** PSS of the container's containerd shim: part of its cost, though outside its cgroup. */
  shimPssBytes: number;
  ksmProfitBytes: number;
  ksmMergingPages: number;
  mergeAny: boolean;
  diskExclusiveBytes: number;
  diskReferencedBytes: number;
  diskLimitBytes: number | null;
  /** Persistent Bun scripts running in it (their memory is part of rssBytes: they run in its cgroup). */
  persistent: PersistentInfo[];
}

export interface StatsReport {
  containers: ContainerStats[];
  totals: { rssBytes: number; pssBytes: number; shimPssBytes: number; ksmProfitBytes: number; diskExclusiveBytes: number };
  ksm: Awaited<ReturnType<KsmController['stats']>>;
}

export async function collectStats(ctx: ContainerContext, ksm: KsmController, persistent: (container: string) => PersistentInfo[] = () => []): Promise<StatsReport> {
  const out: ContainerStats[] = [];
  const shims = await shimPids();
  for (const v of await listContainers(ctx)) {
    const row = ctx.store.get(v.name);
    if (!row) continue;
    const s: ContainerStats = {
      name: v.name,
      state: v.state,
      pids: 0,
      rssBytes: 0,
      pssBytes: 0,
      shimPssBytes: 0,
      ksmProfitBytes: 0,
      ksmMergingPages: 0,
      mergeAny: false,
      diskExclusiveBytes: 0,
      diskReferencedBytes: 0,
      diskLimitBytes: row.diskBytes,
      persistent: persistent(v.name),
    };
    if (v.state === 'running' && row.engineId) {
      const live = await ctx.engine.inspect(row.engineId).catch(() => null);
      const shim = shims.get(row.engineId);
      if (shim) s.shimPssBytes = (await processMemory(shim)).pssBytes;
      if (live?.pid) {
        const pids = await containerPids(row.engineId, live.pid);
        s.pids = pids.length;
        for (const pid of pids) {
          const m = await processMemory(pid);
          s.rssBytes += m.rssBytes;
          s.pssBytes += m.pssBytes;
          const k = await ksm.processStat(pid);
          if (k) {
            s.ksmProfitBytes += k.profitBytes;
            s.ksmMergingPages += k.mergingPages;
            if (pid === live.pid) s.mergeAny = k.mergeAny;
          }
        }
      }
    }
    if (v.state !== 'creating' && v.state !== 'deleting') {
      const u = await ctx.storage.usage(row.volume).catch(() => null);
      if (u) {
        s.diskExclusiveBytes = u.exclusiveBytes;
        s.diskReferencedBytes = u.referencedBytes;
        s.diskLimitBytes = u.limitBytes;
      }
    }
    out.push(s);
  }
  const sum = (f: (c: ContainerStats) => number) => out.reduce((a, c) => a + f(c), 0);
  return {
    containers: out,
    totals: {
      rssBytes: sum((c) => c.rssBytes),
      pssBytes: sum((c) => c.pssBytes),
      shimPssBytes: sum((c) => c.shimPssBytes),
      ksmProfitBytes: sum((c) => c.ksmProfitBytes),
      diskExclusiveBytes: sum((c) => c.diskExclusiveBytes),
    },
    ksm: await ksm.stats(),
  };
}
