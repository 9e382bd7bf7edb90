import { CLK_TCK, cpuTicks, hostCpu, rssBytes } from './procs.js';
import { round } from './stats.js';

export interface Sample {
  /** Seconds since the sampler started. */
  t: number;
  daemon_rss_mib: number;
  /** CPU of the daemon (percent of one core) since the previous sample. */
  daemon_cpu_percent: number;
  engine_cpu_percent: number;
  host_busy_percent: number;
}

/**
 * Samples the daemon's CPU (utime+stime, its process only) and RSS, the engine's CPU, and the host's busy
 * share once per interval, and keeps cumulative tick counters so any window can be read off afterwards.
 */
export class ProcSampler {
  readonly samples: Sample[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly t0 = Date.now();
  private last: { at: number; daemon: number; engine: number; host: { busy: number; total: number } } | null = null;
  private busy = false;

  constructor(
    private readonly daemonPid: number,
    private readonly engine: number[],
    private readonly intervalMs = 1000,
  ) {}

  async counters(): Promise<{ at: number; daemon: number; engine: number; host: { busy: number; total: number } }> {
    let engine = 0;
    for (const p of this.engine) engine += await cpuTicks(p);
    return { at: Date.now(), daemon: await cpuTicks(this.daemonPid), engine, host: await hostCpu() };
  }

  start(): void {
    const tick = async () => {
      if (this.busy) return;
      this.busy = true;
      try {
        const now = await this.counters();
        const rss = await rssBytes(this.daemonPid);
        if (this.last) {
          const dt = (now.at - this.last.at) / 1000 || 1;
          const ht = now.host.total - this.last.host.total || 1;
          this.samples.push({
            t: round((now.at - this.t0) / 1000, 1) ?? 0,
            daemon_rss_mib: round(rss / 1048576, 1) ?? 0,
            daemon_cpu_percent: round(((now.daemon - this.last.daemon) / CLK_TCK / dt) * 100, 1) ?? 0,
            engine_cpu_percent: round(((now.engine - this.last.engine) / CLK_TCK / dt) * 100, 1) ?? 0,
            host_busy_percent: round(((now.host.busy - this.last.host.busy) / ht) * 100, 1) ?? 0,
          });
        }
        this.last = now;
      } finally {
        this.busy = false;
      }
    };
    void tick();
    this.timer = setInterval(() => void tick(), this.intervalMs);
  }

  /** Seconds since start of a wall-clock instant (ms). */
  at(ms: number): number {
    return (ms - this.t0) / 1000;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
