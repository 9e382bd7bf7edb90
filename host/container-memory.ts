/** A container's memory as its cgroup counts it: file reads only, no engine call (metrics read it at every scrape). */
import { readFile } from 'node:fs/promises';

export interface CgroupMemory {
  /** Everything charged to the cgroup (anonymous memory and page cache). */
  usageBytes: number;
  /** Anonymous memory (v1 total_rss, v2 anon): what the container cannot give back without swap. */
  anonBytes: number;
}

interface Layout {
  usage: string;
  stat: string;
  anonKey: string;
}

/** Where the engine puts a container's cgroup: v2 (systemd or cgroupfs driver), then v1. */
function layouts(engineId: string, root: string): Layout[] {
  const v2 = (dir: string): Layout => ({ usage: `${dir}/memory.current`, stat: `${dir}/memory.stat`, anonKey: 'anon' });
  const v1 = `${root}/memory/docker/${engineId}`;
  return [
    v2(`${root}/system.slice/docker-${engineId}.scope`),
    v2(`${root}/docker/${engineId}`),
    { usage: `${v1}/memory.usage_in_bytes`, stat: `${v1}/memory.stat`, anonKey: 'total_rss' },
  ];
}

/** Reads containers' memory from cgroup files; remembers which layout answered for each container. */
export class CgroupMemoryReader {
  readonly #found = new Map<string, Layout>();

  constructor(private readonly root = '/sys/fs/cgroup') {}

  /** null: no cgroup (the container is not running). */
  async read(engineId: string): Promise<CgroupMemory | null> {
    const known = this.#found.get(engineId);
    for (const l of known ? [known] : layouts(engineId, this.root)) {
      const usage = await readFile(l.usage, 'utf8').catch(() => null);
      if (usage === null) continue;
      this.#found.set(engineId, l);
      const stat = await readFile(l.stat, 'utf8').catch(() => '');
      const anon = new RegExp(`^${l.anonKey} (\\d+)$`, 'm').exec(stat)?.[1];
      return { usageBytes: Number(usage.trim()), anonBytes: Number(anon ?? 0) };
    }
    this.#found.delete(engineId);
    return null;
  }

  /** Drops what is remembered of engine containers no longer listed. */
  keepOnly(engineIds: ReadonlySet<string>): void {
    for (const id of this.#found.keys()) if (!engineIds.has(id)) this.#found.delete(id);
  }
}
