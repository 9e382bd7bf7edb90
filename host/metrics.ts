import { readFile } from 'node:fs/promises';
import si from 'systeminformation';

export interface HostMetrics {
  hostname: string;
  kernel: string;
  cpus: number;
  load: number[];
  memory: { totalBytes: number; availableBytes: number; usedBytes: number; cachedBytes: number };
}

/** /proc/meminfo in bytes (the density figures need fields systeminformation does not expose). */
export async function meminfo(): Promise<Record<string, number>> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?/.exec(line);
    if (m) out[m[1]!] = Number(m[2]) * (line.endsWith('kB') ? 1024 : 1);
  }
  return out;
}

export async function hostMetrics(): Promise<HostMetrics> {
  const [os, cpu, load, mem] = await Promise.all([si.osInfo(), si.cpu(), si.currentLoad(), meminfo()]);
  const total = mem.MemTotal ?? 0;
  const avail = mem.MemAvailable ?? 0;
  return {
    hostname: os.hostname,
    kernel: os.kernel,
    cpus: cpu.cores,
    load: [load.currentLoad],
    memory: { totalBytes: total, availableBytes: avail, usedBytes: total - avail, cachedBytes: mem.Cached ?? 0 },
  };
}
