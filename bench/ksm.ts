import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KSM_KNOBS, KsmController } from '../host/ksm.js';
import { CLK_TCK, cpuTicks } from './procs.js';
import { sleep } from './stats.js';

/** How a mode sets KSM: off (unmerged), hoody's own default, or explicit knobs. */
/** hoody's knobs plus the advisor's bounds, which the benchmark also turns. */
export const BENCH_KNOBS = [...KSM_KNOBS, 'advisor_max_pages_to_scan', 'advisor_min_pages_to_scan', 'advisor_target_scan_time'] as const;
export type BenchKnob = (typeof BENCH_KNOBS)[number];

export type KsmProfile =
  | { kind: 'off' }
  | { kind: 'hoody-default' }
  | { kind: 'knobs'; knobs: Partial<Record<BenchKnob, string | number>> };

export interface KsmSample {
  t: number;
  pagesSharing: number;
  pagesShared: number;
  zeroPages: number;
  fullScans: number;
  generalProfit: number;
  ticks: number;
}

export interface Convergence {
  converged: boolean;
  seconds: number;
  /** ksmd CPU share (percent of one core) while converging. */
  cpuPercent: number;
  fullScans: number;
}

/** Knobs in the order they can be written back: the advisor first (it rewrites pages_to_scan), run last. */
const RESTORE_ORDER: readonly BenchKnob[] = ['advisor_mode', 'advisor_max_cpu', 'advisor_max_pages_to_scan', 'advisor_min_pages_to_scan', 'advisor_target_scan_time', 'pages_to_scan', 'sleep_millisecs', 'use_zero_pages', 'smart_scan', 'max_page_sharing', 'merge_across_nodes', 'run'];

/** KSM for the benchmark: save and restore the knobs, apply a mode's profile, watch convergence and ksmd's CPU. */
export class BenchKsm {
  readonly ctl = new KsmController();
  private saved: Partial<Record<BenchKnob, string>> | null = null;
  private ksmdPid: number | null = null;

  async available(): Promise<boolean> {
    return this.ctl.available();
  }

  /** Remembers the current knobs (call once, before anything changes them). */
  async save(): Promise<Partial<Record<BenchKnob, string>>> {
    const knobs: Partial<Record<BenchKnob, string>> = {};
    for (const k of BENCH_KNOBS) {
      const v = await this.ctl.read(k);
      if (v !== undefined) knobs[k] = v;
    }
    this.saved = knobs;
    this.ksmdPid = (await this.ctl.ksmdPids())[0] ?? null;
    return knobs;
  }

  /** Writes the saved knobs back (best effort: some only change while nothing is merged). */
  async restore(): Promise<void> {
    const saved = this.saved;
    if (!saved) return;
    const current = await this.knobs();
    for (const k of RESTORE_ORDER) {
      const want = saved[k];
      if (want === undefined) continue;
      // advisor_mode reads "none [scan-time]"; the selected value is the bracketed one.
      const value = k === 'advisor_mode' ? (/\[(\S+)\]/.exec(want)?.[1] ?? want) : want;
      if (k !== 'advisor_mode' && current[k] === want) continue;
      if (k === 'pages_to_scan' && value !== undefined && /\[scan-time\]/.test(saved.advisor_mode ?? '')) continue; // the advisor owns it
      await this.set(k, value).catch(() => undefined);
    }
  }

  private async set(knob: BenchKnob, value: string | number): Promise<void> {
    await writeFile(join(this.ctl.sysfs, knob), String(value));
  }

  async knobs(): Promise<Partial<Record<BenchKnob, string>>> {
    const out: Partial<Record<BenchKnob, string>> = {};
    for (const k of BENCH_KNOBS) {
      const v = await this.ctl.read(k);
      if (v !== undefined) out[k] = v;
    }
    return out;
  }

  /** Applies a profile. `off` unmerges everything first (run=2), then stops ksmd (run=0). */
  async apply(profile: KsmProfile): Promise<void> {
    if (profile.kind === 'off') {
      if ((await this.ctl.read('run')) !== '0') {
        await this.ctl.set('run', 2);
        await this.ctl.set('run', 0);
      }
      return;
    }
    if (profile.kind === 'hoody-default') {
      // hoody's enable() leaves the advisor's bounds alone: put back the ones the host had (a lever mode may have moved them).
      for (const k of ['advisor_max_pages_to_scan', 'advisor_min_pages_to_scan', 'advisor_target_scan_time'] as const) {
        const v = this.saved?.[k];
        if (v !== undefined) await this.set(k, v).catch(() => undefined);
      }
      await this.ctl.enable();
      return;
    }
    const k = profile.knobs;
    if (k.advisor_mode !== undefined) await this.set('advisor_mode', k.advisor_mode).catch(() => undefined);
    for (const knob of RESTORE_ORDER) {
      if (knob === 'advisor_mode' || knob === 'run' || k[knob] === undefined) continue;
      await this.set(knob, k[knob]!).catch(() => undefined);
    }
    await this.ctl.set('run', k.run ?? 1);
  }

  /** True when the live knobs still match what the profile set (a hoody daemon starting elsewhere turns KSM on with its own knobs). */
  async matches(profile: KsmProfile): Promise<boolean> {
    const run = await this.ctl.read('run');
    if (profile.kind === 'off') return run === '0';
    if (run !== '1') return false;
    const advisor = /\[(\S+)\]/.exec((await this.ctl.read('advisor_mode')) ?? '')?.[1];
    if (profile.kind === 'hoody-default') return advisor === undefined || advisor === 'scan-time';
    for (const [k, v] of Object.entries(profile.knobs)) {
      if (k === 'pages_to_scan' && advisor === 'scan-time') continue;
      const live = k === 'advisor_mode' ? advisor : await this.ctl.read(k);
      if (live !== undefined && live !== String(v)) return false;
    }
    return true;
  }

  async sample(): Promise<KsmSample> {
    const s = await this.ctl.stats();
    return {
      t: Date.now(),
      pagesSharing: s.pagesSharing,
      pagesShared: s.pagesShared,
      zeroPages: s.zeroPages,
      fullScans: s.fullScans,
      generalProfit: s.generalProfitBytes,
      ticks: this.ksmdPid ? await cpuTicks(this.ksmdPid) : 0,
    };
  }

  /** ksmd's CPU share in percent of one core between two samples. */
  static cpuPercent(a: KsmSample, b: KsmSample): number {
    const wall = (b.t - a.t) / 1000;
    return wall > 0 ? ((b.ticks - a.ticks) / CLK_TCK / wall) * 100 : 0;
  }

  /**
   * Waits until KSM stops finding new merges: at least one full scan since `from`, and pages_sharing +
   * zero pages grew by less than 1% (and 64 pages) over the last `windowS` seconds; or the timeout.
   */
  async waitConverged(from: KsmSample, timeoutS: number, windowS = 10, stop: () => boolean = () => false): Promise<Convergence> {
    const history: KsmSample[] = [from];
    const merged = (s: KsmSample) => s.pagesSharing + s.zeroPages;
    const deadline = from.t + timeoutS * 1000;
    while (Date.now() < deadline && !stop()) {
      await sleep(1000);
      const now = await this.sample();
      history.push(now);
      const windowStart = [...history].reverse().find((s) => now.t - s.t >= windowS * 1000);
      if (!windowStart || now.fullScans < from.fullScans + 1) continue;
      const growth = merged(now) - merged(windowStart);
      if (growth <= Math.max(64, merged(now) * 0.01)) {
        return { converged: true, seconds: (now.t - from.t) / 1000, cpuPercent: BenchKsm.cpuPercent(from, now), fullScans: now.fullScans - from.fullScans };
      }
    }
    const last = history[history.length - 1]!;
    return { converged: false, seconds: (last.t - from.t) / 1000, cpuPercent: BenchKsm.cpuPercent(from, last), fullScans: last.fullScans - from.fullScans };
  }
}
