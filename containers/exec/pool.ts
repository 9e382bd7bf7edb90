/** The exec worker's isolates: pooled per (container, script), within caps of count and memory, watched when idle. */
import ivm from 'isolated-vm';
import { CodeCache } from './code-cache.js';
import type { RunContext } from './contexts.js';
import type { WorkerConfig } from './protocol.js';

/** CPU an idle isolate may use (GC) before the watchdog disposes it. */
const IDLE_CPU_LIMIT_NS = 200_000_000n;
/** Isolates one script may get for back-to-back runs (more come only for runs at the same time). */
const HOT_KEY_ISOLATES = 2;
/** Compiled scripts kept per isolate (a script's few recent versions). */
const SCRIPTS_PER_ISOLATE = 4;
/**
 * An idle isolate must take a task (a heap statistics read) within this. One that does not is running code
 * nobody waits for (a continuation that spins after its run answered): it is disposed. Wall time read on the
 * worker's main thread, unlike the isolate's cpuTime, which does not reliably advance while it spins.
 */
export const PROBE_DEADLINE_MS = 1000;

export interface Slot {
  key: string;
  container: string;
  memoryMb: number;
  isolate: ivm.Isolate;
  prelude: ivm.Script | null;
  scripts: Map<string, ivm.Script>;
  /** The next run's context, being made or ready while the isolate idles (contexts.ts). */
  spare: Promise<RunContext | null> | null;
  /** The spare is made and waiting. */
  spareReady: boolean;
  /** Runs using this isolate right now (0 or 1: an isolate is never shared). */
  active: number;
  lastUsed: number;
  dead: boolean;
  /** Last cpuTime read (ns), so a run whose isolate was disposed still reports what it used. */
  cpuNs: bigint;
  /** cpuTime when the isolate last became idle: an idle isolate must not use CPU. */
  idleCpuNs: bigint;
  /** When the pending responsiveness probe was sent (0: none pending). */
  probeSince: number;
}

export function cpuOf(slot: Slot): bigint {
  if (!slot.dead && !slot.isolate.isDisposed) {
    try {
      slot.cpuNs = slot.isolate.cpuTime;
    } catch {
      // disposed between the check and the read
    }
  }
  return slot.cpuNs;
}

/**
 * Isolates pooled per (container, script). A run takes an idle isolate of its key or a new one, never a busy
 * one, so one run's timeout or memory blow-up (which disposes the isolate) never takes down another run.
 * A new isolate is made only within the caps (live isolates; memory limits summed per container and for the
 * worker), disposing idle ones least recently used first; when every isolate is busy, acquire returns null.
 */
export class IsolatePool {
  private readonly byKey = new Map<string, Slot[]>();
  private live = 0;
  private liveMb = 0;
  private readonly containerMb = new Map<string, number>();
  /** Compiled code that outlives the isolates it was made in. */
  readonly code = new CodeCache();

  constructor(
    private readonly config: WorkerConfig,
    private readonly onFatal: (message: string) => void,
    private readonly warn: (text: string) => void,
    /** Called when a slot turns idle (instead of a bare probe): the worker makes the next run's context. */
    private readonly onIdle: ((slot: Slot) => void) | null = null,
  ) {}

  get size(): number {
    return this.live;
  }

  private all(): Slot[] {
    return [...this.byKey.values()].flat();
  }

  acquire(key: string, container: string, memoryMb: number): Slot | null {
    for (const s of [...(this.byKey.get(key) ?? [])]) if (s.active === 0 && s.memoryMb !== memoryMb) this.discard(s); // @memory changed
    // A slot whose probe is still out is taken too: a probe answers in well under a millisecond unless the isolate
    // is stuck, and then this run times out (its own script's doing) and the isolate is disposed.
    const slots = this.byKey.get(key) ?? [];
    const idle = slots.filter((s) => s.memoryMb === memoryMb && s.active === 0);
    let slot: Slot | undefined = idle.find((s) => s.spareReady) ?? idle[0];
    // Back-to-back runs of one script come faster than an isolate makes the next context (its one thread does
    // both): a second isolate for the key, when it fits without disposing anything, lets them take turns.
    if (slot && !slot.spareReady && slots.length < HOT_KEY_ISOLATES && this.fits(container, memoryMb)) slot = undefined;
    if (!slot) {
      if (!this.makeRoom(container, memoryMb)) return null;
      slot = this.create(key, container, memoryMb);
    }
    slot.active++;
    slot.lastUsed = Date.now();
    return slot;
  }

  /** Whether a new isolate of memoryMb for container fits every cap as things are. */
  private fits(container: string, memoryMb: number): boolean {
    const c = this.config;
    return (
      (this.containerMb.get(container) ?? 0) + memoryMb <= c.containerMemoryMb &&
      this.live < c.maxLiveIsolates &&
      this.liveMb + memoryMb <= c.hostMemoryMb
    );
  }

  /** Disposes idle isolates until a new one of memoryMb for container fits every cap; false if it cannot. */
  private makeRoom(container: string, memoryMb: number): boolean {
    const c = this.config;
    const containerOver = () => (this.containerMb.get(container) ?? 0) > 0 && (this.containerMb.get(container) ?? 0) + memoryMb > c.containerMemoryMb;
    const hostOver = () => this.live >= c.maxLiveIsolates || (this.live > 0 && this.liveMb + memoryMb > c.hostMemoryMb);
    while (containerOver() || hostOver()) {
      const idle = this.all().filter((s) => s.active === 0 && (!containerOver() || s.container === container));
      if (idle.length === 0) return false;
      this.discard(idle.reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a)));
    }
    return true;
  }

  release(slot: Slot): void {
    slot.active--;
    slot.lastUsed = Date.now();
    if (slot.active === 0 && !slot.dead) {
      slot.idleCpuNs = cpuOf(slot);
      if (this.onIdle) this.onIdle(slot);
      else this.probe(slot);
    }
  }

  private create(key: string, container: string, memoryMb: number): Slot {
    const isolate = new ivm.Isolate({ memoryLimit: memoryMb, onCatastrophicError: this.onFatal });
    const slot: Slot = {
      key,
      container,
      memoryMb,
      isolate,
      prelude: null,
      scripts: new Map(),
      spare: null,
      spareReady: false,
      active: 0,
      lastUsed: Date.now(),
      dead: false,
      cpuNs: 0n,
      idleCpuNs: 0n,
      probeSince: 0,
    };
    const list = this.byKey.get(key);
    if (list) list.push(slot);
    else this.byKey.set(key, [slot]);
    this.live++;
    this.liveMb += memoryMb;
    this.containerMb.set(container, (this.containerMb.get(container) ?? 0) + memoryMb);
    return slot;
  }

  discard(slot: Slot): void {
    if (slot.dead) return;
    cpuOf(slot);
    slot.dead = true;
    const list = this.byKey.get(slot.key) ?? [];
    const i = list.indexOf(slot);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.byKey.delete(slot.key);
    this.live--;
    this.liveMb -= slot.memoryMb;
    const left = (this.containerMb.get(slot.container) ?? 0) - slot.memoryMb;
    if (left > 0) this.containerMb.set(slot.container, left);
    else this.containerMb.delete(slot.container);
    try {
      // terminates whatever the isolate still runs, on its own thread
      slot.isolate.dispose();
    } catch {
      // already disposed (memory limit)
    }
  }

  sweep(): void {
    const now = Date.now();
    for (const s of this.all()) if (s.active === 0 && now - s.lastUsed >= this.config.idleMs) this.discard(s);
  }

  /** Sends an idle isolate a task it must take within PROBE_DEADLINE_MS (see watchdog). */
  private probe(slot: Slot): void {
    if (slot.probeSince !== 0 || slot.dead) return;
    slot.probeSince = Date.now();
    slot.isolate.getHeapStatistics().then(
      () => {
        slot.probeSince = 0;
      },
      () => {
        slot.probeSince = 0;
      },
    );
  }

  /**
   * Disposes idle isolates that still run code: one that did not take its probe in time (busy thread), or whose
   * cpuTime grew (a backup: cpuTime is not reliable while code spins), and probes the others again.
   */
  watchdog(): void {
    const now = Date.now();
    for (const s of this.all()) {
      if (s.active !== 0) continue;
      if (s.probeSince !== 0 && now - s.probeSince > PROBE_DEADLINE_MS) {
        this.warn(`exec worker: idle isolate ${s.key} kept running code after its run ended; disposed`);
        this.discard(s);
      } else if (cpuOf(s) - s.idleCpuNs > IDLE_CPU_LIMIT_NS) {
        this.warn(`exec worker: idle isolate ${s.key} kept using CPU; disposed`);
        this.discard(s);
      } else this.probe(s);
    }
  }

  disposeContainer(container: string): void {
    for (const s of this.all()) if (s.container === container) this.discard(s);
  }

  async script(slot: Slot, hash: string, code: string): Promise<ivm.Script> {
    const hit = slot.scripts.get(hash);
    if (hit) return hit;
    // Per container: one tenant must not learn from a compile's speed that another runs the same code.
    const compiled = await this.code.compile(slot.isolate, `${slot.container}\0${hash}`, code, 'script');
    slot.scripts.set(hash, compiled);
    if (slot.scripts.size > SCRIPTS_PER_ISOLATE) {
      const [oldest, old] = slot.scripts.entries().next().value!;
      slot.scripts.delete(oldest);
      old.release();
    }
    return compiled;
  }
}
