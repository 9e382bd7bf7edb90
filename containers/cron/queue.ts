/**
 * The runs waiting for a runner. Starting a command in a container costs the engine real CPU (a `docker exec` is
 * 11–13 ms of dockerd and containerd here), so at most `concurrency` run at once, the engine stays responsive at
 * any entry count, and the rest wait here: one FIFO per container, served round robin, at most `perContainer` of
 * one container at once, so a container with a thousand entries due cannot starve one with a single entry.
 * A run that waited longer than `maxWaitMs` is not started: it is handed to `late` (logged with its own status).
 */

export interface RunQueueLimits {
  /** Runs started and not finished, all containers together. */
  concurrency: number;
  /** Of one container. */
  perContainer: number;
  /** A run still waiting after this is given up (late). */
  maxWaitMs: number;
}

export const DEFAULT_RUN_QUEUE: Readonly<RunQueueLimits> = Object.freeze({ concurrency: 16, perContainer: 4, maxWaitMs: 60_000 });

export interface QueuedRun {
  container: string;
  /** Starts the run; settles when it finished (it never rejects: errors are the run's own to log). */
  start(): Promise<unknown>;
  /** The run waited `waitedMs` (past maxWaitMs, or the queue was cleared) and will not start. */
  late(waitedMs: number, why: string): void;
}

interface Lane {
  waiting: { run: QueuedRun; since: number }[];
  running: number;
}

export class RunQueue {
  readonly #lanes = new Map<string, Lane>();
  /** Containers in round-robin order; the next turn starts after the last one served. */
  #order: string[] = [];
  #turn = 0;
  #running = 0;
  #waiting = 0;
  #sweep: NodeJS.Timeout | null = null;

  constructor(
    readonly limits: RunQueueLimits,
    private readonly now: () => number = Date.now,
  ) {}

  get running(): number {
    return this.#running;
  }

  get waiting(): number {
    return this.#waiting;
  }

  push(run: QueuedRun): void {
    let lane = this.#lanes.get(run.container);
    if (!lane) {
      lane = { waiting: [], running: 0 };
      this.#lanes.set(run.container, lane);
      this.#order.push(run.container);
    }
    lane.waiting.push({ run, since: this.now() });
    this.#waiting++;
    this.#pump();
  }

  /** Gives up every waiting run (of one container, or all): they are handed to `late` with `why`. */
  clear(why: string, container?: string): void {
    for (const [name, lane] of this.#lanes) {
      if (container !== undefined && name !== container) continue;
      const gone = lane.waiting.splice(0);
      this.#waiting -= gone.length;
      for (const w of gone) w.run.late(this.now() - w.since, why);
      this.#forget(name, lane);
    }
    this.#arm();
  }

  /** Starts what the limits allow, one run per container per turn. */
  #pump(): void {
    this.#expire();
    let idle = 0;
    while (this.#running < this.limits.concurrency && this.#waiting > 0 && idle < this.#order.length) {
      if (this.#turn >= this.#order.length) this.#turn = 0;
      const name = this.#order[this.#turn]!;
      const lane = this.#lanes.get(name)!;
      this.#turn++;
      const next = lane.running < this.limits.perContainer ? lane.waiting.shift() : undefined;
      if (!next) {
        idle++;
        continue;
      }
      idle = 0;
      this.#waiting--;
      lane.running++;
      this.#running++;
      next.run
        .start()
        .catch(() => undefined)
        .finally(() => {
          lane.running--;
          this.#running--;
          this.#forget(name, lane);
          this.#pump();
        });
    }
    this.#arm();
  }

  /** Hands runs that waited too long to `late`; FIFO lanes: only their heads can be the oldest. */
  #expire(): void {
    const now = this.now();
    for (const [name, lane] of this.#lanes) {
      while (lane.waiting.length && now - lane.waiting[0]!.since > this.limits.maxWaitMs) {
        const w = lane.waiting.shift()!;
        this.#waiting--;
        w.run.late(now - w.since, `waited ${Math.round((now - w.since) / 1000)} s for a free runner (at most ${this.limits.concurrency} runs at once, ${this.limits.perContainer} per container)`);
      }
      this.#forget(name, lane);
    }
  }

  #forget(name: string, lane: Lane): void {
    if (lane.running > 0 || lane.waiting.length > 0 || this.#lanes.get(name) !== lane) return;
    this.#lanes.delete(name);
    const i = this.#order.indexOf(name);
    if (i >= 0) {
      this.#order.splice(i, 1);
      if (i < this.#turn) this.#turn--;
    }
  }

  /** While runs wait, a timer gives up the ones past their wait even when nothing finishes to wake the queue. */
  #arm(): void {
    if (this.#waiting > 0 && !this.#sweep) {
      this.#sweep = setInterval(() => this.#pump(), Math.min(1000, this.limits.maxWaitMs));
      this.#sweep.unref();
    } else if (this.#waiting === 0 && this.#sweep) {
      clearInterval(this.#sweep);
      this.#sweep = null;
    }
  }
}
