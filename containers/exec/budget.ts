import type { CgroupLimits } from '../../host/cgroup.js';
import { fail, type HoodyError } from '../errors.js';
import { MAX_MEMORY_MB } from './directives.js';

/** Default hard limits of the exec worker's cgroup: 1 GiB, one core (the daemon keeps the other cores). */
export const DEFAULT_WORKER_LIMITS: Readonly<CgroupLimits> = Object.freeze({ memoryBytes: 1024 * 1024 * 1024, cpus: 1 });

/** What exec may use at once, per container and for the whole host. */
export interface ExecBudgetLimits {
  /** Runs of one container executing at once. */
  containerRuns: number;
  /** Sum of the `@memory` of one container's runs executing at once (MB). */
  containerMemoryMb: number;
  /** Runs of one container waiting for a slot (plus its run slots the busy host could not give yet); one more is refused at once. */
  containerQueue: number;
  /** Runs executing at once on the host: each holds one isolate, so this is the cap of live busy isolates. */
  hostRuns: number;
  /** Sum of the `@memory` of all runs executing at once (MB): below the worker's hard cgroup limit. */
  hostMemoryMb: number;
  /** The longest a run waits for a slot before it is refused. */
  queueWaitMs: number;
  /** Extra runs (each up to the @memory ceiling) a container may have for nested runs (scripts fetching scripts). */
  nestedReserve: number;
  /** CPU of one container's runs, in cores, averaged over `cpuBurstMs`; 0: no CPU budget. */
  containerCpu: number;
  /** CPU time (ms) a container may use ahead of its rate before its next runs wait. */
  cpuBurstMs: number;
}

export const DEFAULT_BUDGET: Readonly<ExecBudgetLimits> = Object.freeze({
  containerRuns: 4,
  containerMemoryMb: 256,
  containerQueue: 8,
  hostRuns: 64,
  hostMemoryMb: 4096,
  queueWaitMs: 5000,
  nestedReserve: 4,
  containerCpu: 1,
  cpuBurstMs: 1000,
});

/** Frees a run's slot; the CPU it used (ms) counts against its container's CPU budget. */
export type Release = (cpuMs?: number) => void;

interface Usage {
  runs: number;
  memoryMb: number;
}

/** CPU used past a container's rate: it drains at `containerCpu` ms per ms. */
interface CpuDebt {
  ms: number;
  at: number;
}

interface Waiter {
  memoryMb: number;
  timer: NodeJS.Timeout;
  resolve(release: Release): void;
}

/**
 * Admission of runs into the exec worker. A run executes only within its container's budget (runs, memory)
 * and the host's (runs, memory); otherwise it waits in its container's short queue. Freed slots go to the
 * containers' queues in turn (round robin), so a container with a long queue cannot starve a quiet one.
 */
export class ExecBudget {
  private readonly usage = new Map<string, Usage>();
  private readonly host: Usage = { runs: 0, memoryMb: 0 };
  /** Waiting runs per container; Map order is the round-robin order (a served container moves to the end). */
  private readonly queues = new Map<string, Waiter[]>();
  private readonly debts = new Map<string, CpuDebt>();
  private wakeTimer: NodeJS.Timeout | null = null;

  constructor(readonly limits: ExecBudgetLimits) {}

  /** CPU a container used beyond its rate, in ms, now. */
  cpuDebt(container: string, now = Date.now()): number {
    const d = this.debts.get(container);
    if (!d) return 0;
    const ms = Math.max(0, d.ms - (now - d.at) * this.limits.containerCpu);
    if (ms === 0) this.debts.delete(container);
    return ms;
  }

  /**
   * Runs a container may have at once: all of `containerRuns`, or one while it computes beyond its CPU rate
   * (a debt past a tenth of the burst), so a flood of heavy runs never spins several threads at once.
   */
  private runsAllowed(container: string): number {
    const l = this.limits;
    return l.containerCpu > 0 && this.cpuDebt(container) > l.cpuBurstMs / 10 ? 1 : l.containerRuns;
  }

  /** How long until the container's CPU debt is back within the burst (0: it is). */
  private cpuWait(container: string): number {
    if (this.limits.containerCpu <= 0) return 0;
    const over = this.cpuDebt(container) - this.limits.cpuBurstMs;
    return over > 0 ? over / this.limits.containerCpu : 0;
  }

  /**
   * Waits for a slot; resolves with its release function, or rejects with HOODY_EXEC_BUSY / HOODY_EXEC_OVERLOADED.
   * A nested run (a script's fetch of another script) may use a fixed reserve beyond the container's budget:
   * its caller holds a slot while it waits for it, so without the reserve a chain would wait on itself.
   */
  acquire(container: string, memoryMb: number, nested = false): Promise<Release> {
    if (nested) {
      if (this.fits(container, memoryMb, this.limits.nestedReserve)) return Promise.resolve(this.take(container, memoryMb));
      return Promise.reject(this.refusal(container, memoryMb, 'nested runs past the reserve'));
    }
    if (!this.queues.has(container) && this.fits(container, memoryMb)) return Promise.resolve(this.take(container, memoryMb));
    const queue = this.queues.get(container) ?? [];
    // Run slots the host could not give yet wait too: a container's share is its runs plus its queue, however busy
    // the host, so one whose requests arrive while the others fill the host is not refused before it ran any.
    const unused = Math.max(0, this.limits.containerRuns - (this.usage.get(container)?.runs ?? 0));
    if (queue.length >= this.limits.containerQueue + unused) return Promise.reject(this.refusal(container, memoryMb, 'queue full'));
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        memoryMb,
        resolve,
        timer: setTimeout(() => {
          const q = this.queues.get(container) ?? [];
          const i = q.indexOf(w);
          if (i >= 0) q.splice(i, 1);
          if (q.length === 0) this.queues.delete(container);
          reject(this.refusal(container, memoryMb, `waited ${this.limits.queueWaitMs} ms`));
          this.pump(); // the head may have changed
        }, this.limits.queueWaitMs),
      };
      queue.push(w);
      this.queues.set(container, queue);
      this.pump(); // arms the wake-up when only CPU debt holds the queue back
    });
  }

  /** Runs and memory in use now (tests and metrics). */
  inUse(container?: string): Usage {
    return { ...(container === undefined ? this.host : (this.usage.get(container) ?? { runs: 0, memoryMb: 0 })) };
  }

  private fits(container: string, memoryMb: number, reserve = 0): boolean {
    const u = this.usage.get(container) ?? { runs: 0, memoryMb: 0 };
    return (
      // a nested run is let through: its caller already waited for the container's CPU
      (reserve > 0 || this.cpuWait(container) === 0) &&
      u.runs < this.runsAllowed(container) + reserve &&
      // one run always fits an idle container, whatever its @memory (the ceiling is checked at write time)
      (u.runs === 0 || u.memoryMb + memoryMb <= this.limits.containerMemoryMb + reserve * MAX_MEMORY_MB) &&
      this.host.runs < this.limits.hostRuns &&
      (this.host.runs === 0 || this.host.memoryMb + memoryMb <= this.limits.hostMemoryMb)
    );
  }

  /** Whose budget blocks this run: the container's own (429, its own doing) or the host's (503). */
  private refusal(container: string, memoryMb: number, why: string): HoodyError {
    const u = this.usage.get(container) ?? { runs: 0, memoryMb: 0 };
    const l = this.limits;
    const cpuWait = this.cpuWait(container);
    if (cpuWait > 0)
      return fail('EXEC_BUSY', `CPU budget of ${l.containerCpu} core(s) spent for ${Math.ceil(cpuWait)} ms more; ${why}`);
    const allowed = this.runsAllowed(container);
    if (u.runs >= allowed)
      return fail('EXEC_BUSY', `${u.runs} of ${allowed} runs${allowed < l.containerRuns ? ' (one at a time past its CPU rate)' : ''}; ${why}`);
    if (u.runs > 0 && u.memoryMb + memoryMb > l.containerMemoryMb)
      return fail('EXEC_BUSY', `${u.memoryMb} + ${memoryMb} of ${l.containerMemoryMb} MB of isolate memory; ${why}`);
    return fail('EXEC_OVERLOADED', `${this.host.runs} of ${l.hostRuns} runs, ${this.host.memoryMb} of ${l.hostMemoryMb} MB; ${why}`);
  }

  private take(container: string, memoryMb: number): Release {
    const u = this.usage.get(container) ?? { runs: 0, memoryMb: 0 };
    u.runs++;
    u.memoryMb += memoryMb;
    this.usage.set(container, u);
    this.host.runs++;
    this.host.memoryMb += memoryMb;
    let released = false;
    return (cpuMs = 0) => {
      if (released) return;
      released = true;
      if (cpuMs > 0 && this.limits.containerCpu > 0) this.debts.set(container, { ms: this.cpuDebt(container) + cpuMs, at: Date.now() });
      u.runs--;
      u.memoryMb -= memoryMb;
      if (u.runs === 0) this.usage.delete(container);
      this.host.runs--;
      this.host.memoryMb -= memoryMb;
      this.pump();
    };
  }

  /** Hands free slots to waiting runs, one container at a time in turn. */
  private pump(): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    let progress = true;
    while (progress) {
      progress = false;
      for (const [container, queue] of [...this.queues]) {
        const head = queue[0];
        if (!head || !this.fits(container, head.memoryMb)) continue;
        queue.shift();
        clearTimeout(head.timer);
        this.queues.delete(container);
        if (queue.length > 0) this.queues.set(container, queue); // to the back of the line
        head.resolve(this.take(container, head.memoryMb));
        progress = true;
      }
    }
    // A queue held back only by its CPU debt has no release to wake it: a timer does, when the debt has drained.
    const waits = [...this.queues.keys()].map((c) => this.cpuWait(c)).filter((w) => w > 0);
    if (waits.length > 0) {
      this.wakeTimer = setTimeout(() => this.pump(), Math.ceil(Math.min(...waits)));
      this.wakeTimer.unref();
    }
  }
}
