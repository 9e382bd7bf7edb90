import { randomUUID } from 'node:crypto';
import type { Database } from 'better-sqlite3';
import type { Logger } from 'pino';
import type { ContainerEngine } from '../../host/engine.js';
import type { NamespaceHooks } from '../context.js';
import { fail } from '../errors.js';
import type { LogSource } from '../logs.js';
import { checkUser } from '../names.js';
import type { ContainerRow, ContainerStore } from '../store.js';
import { type CronObserver, NO_CRON_OBSERVER } from '../observe.js';
import { type EntryPatch, type NewEntry, validateNew, validatePatch } from './input.js';
import { DEFAULT_RUN_QUEUE, RunQueue, type RunQueueLimits } from './queue.js';
import { type ContainerCommands, EngineCommands } from '../agent/commands.js';
import { CronRunner } from './runner.js';
import { isExpired, type Plan, planNext } from './plan.js';
import { PatternCache, REBOOT } from './schedule.js';
import { CronStore, type EntryRow, MAX_STORED_OUTPUT, type NewRun, newRun, type RunRow, type RunTrigger } from './store.js';
import { type CronEntryView, type CronLogRow, type CronRunView, entryView, type RunQueryInput, runQuery, runView } from './views.js';
import { TimerWheel } from './wheel.js';

export interface CronServiceDeps {
  db: Database;
  engine: ContainerEngine;
  /** How runs start in their containers (default: docker exec through the engine). */
  commands?: ContainerCommands;
  store: ContainerStore;
  log: Logger;
  now?: () => Date;
  /** Output kept per run (at most 64 KiB). */
  maxOutputBytes?: number;
  /** A run still going after this is killed and logged `timeout` (default 1 h). */
  runTimeoutMs?: number;
  /** Runs kept per entry, older ones pruned on insert (default 1000). */
  maxRunsPerEntry?: number;
  /** Runs kept per container, all its entries together (default 10,000). */
  maxRunsPerContainer?: number;
  /** Entries per container; the next add is refused with HOODY_CRON_ENTRY_LIMIT (default 100). */
  maxEntries?: number;
  /** How long stop() waits for runs in flight before giving up on them (default 5 s). */
  stopGraceMs?: number;
  /** Runs at once (all containers, and per container) and the longest a run waits for a runner (queue.ts). */
  queue?: Partial<RunQueueLimits>;
  /** Told of every run's end and of scheduled runs' lateness (metrics). */
  observer?: CronObserver;
}

interface InFlight {
  runId: number;
  done: Promise<RunRow | undefined>;
}

const SCHEDULER = 'scheduler';

/** The cron namespace of every container: entries, their schedules, their runs and the run log. */
export class CronService implements NamespaceHooks {
  readonly entries: CronStore;
  readonly #deps: CronServiceDeps;
  readonly #now: () => Date;
  readonly #log: Logger;
  readonly #observer: CronObserver;
  readonly #runner: CronRunner;
  readonly #commands: ContainerCommands;
  readonly #queue: RunQueue;
  readonly #patterns = new PatternCache();
  readonly #plans = new Map<string, Plan>();
  readonly #inflight = new Map<string, InFlight>();
  // One timer wheel (a heap + one setTimeout) rather than a croner job per entry: 10,000 entries then cost one
  // timer and a heap slot each, not 10,000 timers each waking every 30 s with an ~80 KB pattern table apiece.
  #wheel: TimerWheel<string> | null = null;
  #stopped = false;
  /** While a batch of slots is claimed (one transaction): the runs to start once it committed. */
  #pendingLaunches: (() => void)[] | null = null;

  constructor(deps: CronServiceDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? (() => new Date());
    this.#log = deps.log.child({ ns: 'cron' });
    this.#observer = deps.observer ?? NO_CRON_OBSERVER;
    this.entries = new CronStore(deps.db, deps.maxRunsPerEntry ?? 1000, deps.maxRunsPerContainer ?? 10_000, (err) =>
      this.#log.error({ err }, 'cron run starts and ends could not be written'),
    );
    this.#commands = deps.commands ?? new EngineCommands(deps.engine);
    this.#runner = new CronRunner({
      engine: deps.engine,
      commands: this.#commands,
      store: deps.store,
      log: this.#log,
      runTimeoutMs: deps.runTimeoutMs ?? 3_600_000,
      maxOutputBytes: Math.min(deps.maxOutputBytes ?? MAX_STORED_OUTPUT, MAX_STORED_OUTPUT),
      now: this.#now,
    });
    this.#queue = new RunQueue({ ...DEFAULT_RUN_QUEUE, ...deps.queue }, () => this.#now().getTime());
  }

  /** Runs started and runs waiting for a runner (for metrics and the host's info). */
  get queueStats(): { running: number; waiting: number } {
    return { running: this.#queue.running, waiting: this.#queue.waiting };
  }

  add(container: string, user: string, input: NewEntry, callerTokenId: string): CronEntryView {
    checkUser(user);
    if (!this.#deps.store.get(container)) throw fail('CONTAINER_UNKNOWN', container);
    const now = this.#now();
    const fields = validateNew(input, now, this.#patterns);
    const max = this.#deps.maxEntries ?? 100;
    // Counted and inserted in one synchronous turn: two adds cannot both see room for one.
    if (this.entries.countOfContainer(container) >= max) throw fail('CRON_ENTRY_LIMIT', max);
    const iso = now.toISOString();
    const row: EntryRow = { ...fields, id: randomUUID(), container, user, createdAt: iso, updatedAt: iso, lastSlot: null };
    this.entries.insertEntry(row);
    this.#schedule(row, now);
    this.#log.info({ container, user, entry: row.id, schedule: row.schedule, by: callerTokenId }, 'cron entry added');
    return this.#view(row);
  }

  list(container: string, user: string): CronEntryView[] {
    return this.entries.entriesOf(container, user).map((e) => this.#view(e));
  }

  get(container: string, user: string, id: string): CronEntryView {
    return this.#view(this.#own(container, user, id));
  }

  patch(container: string, user: string, id: string, input: EntryPatch): CronEntryView {
    const current = this.#own(container, user, id);
    const now = this.#now();
    const fields = validatePatch(current, input, now, this.#patterns);
    this.entries.updateEntry(id, fields, now.toISOString());
    const row = this.#own(container, user, id);
    this.#schedule(row, now);
    return this.#view(row);
  }

  remove(container: string, user: string, id: string): void {
    if (!this.entries.deleteEntry(container, user, id)) throw fail('CRON_ENTRY_UNKNOWN', id);
    this.#unschedule(id);
    this.#log.info({ container, user, entry: id }, 'cron entry removed');
  }

  /** Runs the entry now (trigger `manual`); with wait, answers once the run finished, else at once. */
  async runNow(container: string, user: string, id: string, callerTokenId: string, opts: { wait?: boolean } = {}): Promise<CronRunView> {
    const entry = this.#own(container, user, id);
    const run = this.#observed(this.entries.insertRun(this.#newRun(entry, 'manual', callerTokenId, null)));
    if (run.status !== 'queued') return runView(run);
    const done = this.#launch(entry, run);
    if (!opts.wait) return runView(run);
    const finished = (await done) ?? this.entries.getRun(run.id);
    if (!finished) throw fail('CRON_ENTRY_UNKNOWN', id);
    return runView(finished);
  }

  runsOf(container: string, user: string, id: string, q?: RunQueryInput): CronRunView[] {
    this.#own(container, user, id);
    return this.entries.runsOfEntry(id, runQuery(q)).map(runView);
  }

  runsOfUser(container: string, user: string, q?: RunQueryInput): CronRunView[] {
    return this.entries.runsOfUser(container, user, runQuery(q)).map(runView);
  }

  /** Every run of the container (or of one user), oldest first, from `since` (inclusive) or else the latest `limit`; `time` = started_at. */
  logs(container: string, q?: RunQueryInput, user?: string): CronLogRow[] {
    return this.entries.runsOfContainer(container, runQuery(q), user).map((r) => ({ time: r.startedAt, ...runView(r) }));
  }

  /** The cron log as a `GET /api/v1/logs?source=cron` source. */
  logSource(): LogSource {
    return { name: 'cron', read: (container, q, user) => this.logs(container, q, user) };
  }

  /** Schedules every enabled entry from now on (missed slots are not replayed). */
  async start(): Promise<void> {
    if (this.#wheel) return;
    this.#stopped = false;
    const now = this.#now();
    const wheel = new TimerWheel<string>(
      (id, at) => this.#fire(id, at),
      () => this.#now().getTime(),
      (fires) => this.#claimTogether(fires),
    );
    this.#wheel = wheel;
    const interrupted = this.entries.runningRuns().filter((r) => !this.#inflight.has(r.entryId));
    for (const r of interrupted)
      this.entries.abandon(
        r,
        'hoody: the daemon stopped during this run; its outcome is unknown',
        now.toISOString(),
        'hoody: the daemon stopped before this run started; it did not run',
      );
    for (const e of this.entries.enabledEntries()) this.#schedule(e, now);
    this.#log.info({ scheduled: wheel.size, interrupted: interrupted.length }, 'cron scheduler started');
  }

  /** Stops the timers, waits a little for runs in flight, and logs the rest as cut short. */
  async stop(): Promise<void> {
    this.#wheel?.stop();
    this.#wheel = null;
    this.#plans.clear();
    this.#queue.clear('the daemon stopped before it started');
    const pending = [...this.#inflight.values()];
    if (pending.length) {
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise((r) => {
        timer = setTimeout(r, this.#deps.stopGraceMs ?? 5000);
      });
      await Promise.race([Promise.allSettled(pending.map((p) => p.done)), grace]);
      clearTimeout(timer);
    }
    const note = 'hoody: the daemon stopped before this run finished; the command may still be running';
    for (const f of this.#inflight.values()) this.entries.abandon(this.entries.getRun(f.runId), note, this.#now().toISOString());
    this.entries.flush(); // the starts and ends still waiting for their commit
    this.#inflight.clear();
    this.#stopped = true;
  }

  async open(row: ContainerRow): Promise<void> {
    const now = this.#now();
    for (const e of this.entries.entriesOfContainer(row.name)) this.#schedule(e, now);
  }

  /** Stops the container's timers; its rows go with the container row (cascade). */
  async close(row: ContainerRow): Promise<void> {
    for (const e of this.entries.entriesOfContainer(row.name)) this.#unschedule(e.id);
    this.#queue.clear('the container was closed before it started', row.name);
    if (row.engineId) this.#runner.forget(row.engineId);
  }

  /** The container (re)started: run its enabled, unexpired `@reboot` entries (not waited for). */
  async started(row: ContainerRow): Promise<void> {
    try {
      const now = this.#now();
      const entries = this.entries.entriesOfContainer(row.name);
      // Its agent went with its last start: a new one, if anything is scheduled there.
      if (entries.some((e) => this.#plans.has(e.id))) this.#warm(row.name, true);
      for (const e of entries) {
        if (e.schedule !== REBOOT || !e.enabled || isExpired(e, now)) continue;
        const run = this.#observed(this.entries.insertRun(this.#newRun(e, 'reboot', SCHEDULER, null)));
        if (run.status === 'queued') this.#launch(e, run);
      }
    } catch (err) {
      this.#log.error({ err, container: row.name }, 'could not run @reboot entries');
    }
  }

  #own(container: string, user: string, id: string): EntryRow {
    const e = this.entries.entryOf(container, user, id);
    if (!e) throw fail('CRON_ENTRY_UNKNOWN', id);
    return e;
  }

  #view(e: EntryRow): CronEntryView {
    const now = this.#now();
    const plan = this.#plan(e, now);
    return entryView(e, isExpired(e, now), plan?.kind === 'slot' ? plan.at : null);
  }

  #plan(e: EntryRow, after: Date): Plan {
    try {
      return planNext(e, after, this.#now(), this.#patterns);
    } catch (err) {
      this.#log.warn({ err, entry: e.id }, 'cron entry has a schedule that no longer parses; not scheduled');
      return null;
    }
  }

  #schedule(e: EntryRow, after: Date): void {
    if (!this.#wheel) return;
    const plan = this.#plan(e, after);
    if (!plan) {
      this.#unschedule(e.id);
      return;
    }
    this.#plans.set(e.id, plan);
    this.#wheel.set(e.id, plan.at.getTime());
    this.#warm(e.container);
  }

  /** A container with something scheduled gets its command agent ahead of its first slot. */
  #warm(container: string, fresh = false): void {
    this.#commands.warm(container, () => {
      const row = this.#deps.store.get(container);
      return row?.phase === 'ready' ? row.engineId : null;
    }, fresh);
  }

  #unschedule(id: string): void {
    this.#plans.delete(id);
    this.#wheel?.delete(id);
  }

  /**
   * Claims a batch of slots due (up to the wheel's BATCH_KEYS) in one transaction (400 commits for 10,000
   * entries at the top of the hour, not 10,000), and starts their runs once it committed: a run never starts on a
   * claim that was not written.
   */
  #claimTogether(fires: () => void): void {
    const launches: (() => void)[] = [];
    this.#pendingLaunches = launches;
    try {
      this.entries.db.transaction(fires)();
    } catch (err) {
      launches.length = 0;
      this.#log.error({ err }, 'the cron slots due now could not be recorded; none of them runs');
      throw err;
    } finally {
      this.#pendingLaunches = null;
    }
    for (const launch of launches) launch();
  }

  /** A due timer. Never throws: whatever goes wrong is logged and the wheel goes on. */
  #fire(id: string, at: number): void {
    try {
      const plan = this.#plans.get(id);
      this.#plans.delete(id);
      if (!plan) return;
      if (plan.kind === 'expire') {
        this.#logExpiry(id, plan.at);
        return;
      }
      const slot = plan.at.toISOString();
      let entry: EntryRow | undefined;
      const run = this.entries.claimSlot(id, slot, (e) => {
        entry = e;
        if (!e.enabled || e.schedule === REBOOT || (e.expiresAt !== null && e.expiresAt <= slot)) return null;
        return this.#newRun(e, 'schedule', SCHEDULER, slot);
      });
      if (run) this.#observed(run);
      if (run?.status === 'queued' && entry) {
        const e = entry;
        const launch = () => void this.#launch(e, run);
        if (this.#pendingLaunches) this.#pendingLaunches.push(launch);
        else launch();
      }
      const fresh = this.entries.getEntry(id);
      if (fresh) this.#schedule(fresh, new Date(Math.max(at, this.#now().getTime())));
    } catch (err) {
      this.#log.error({ err, entry: id }, 'cron slot could not be handled');
    }
  }

  #logExpiry(id: string, at: Date): void {
    const e = this.entries.getEntry(id);
    if (!e || e.expiresAt !== at.toISOString()) return;
    const iso = at.toISOString();
    const output = `hoody: the entry expired at ${iso}; it no longer runs\n`;
    this.#observed(this.entries.insertRun({ ...this.#newRun(e, 'schedule', SCHEDULER, null), status: 'expired', startedAt: iso, finishedAt: iso, output }));
    this.#log.info({ container: e.container, entry: id }, 'cron entry expired');
  }

  /** A run inserted already final (skipped, expired) is reported as it is written; a queued one when it ends. */
  #observed<T extends RunRow | undefined>(run: T): T {
    if (run && run.status !== 'queued' && run.status !== 'running') this.#observer.runEnded(run.container, run.status, run.trigger);
    return run;
  }

  #newRun(e: EntryRow, trigger: RunTrigger, by: string, scheduledFor: string | null): NewRun {
    return newRun(e, trigger, by, scheduledFor, this.#now().toISOString(), this.#inflight.get(e.id)?.runId);
  }

  /** Queues a claimed run (queue.ts); resolves with its row once it ended, late or not run. */
  #launch(e: EntryRow, run: RunRow): Promise<RunRow | undefined> {
    const job = { entryId: e.id, container: e.container, user: e.user, command: e.command, trigger: run.trigger };
    const ours = () => !this.#stopped && this.#inflight.get(e.id)?.runId === run.id;
    const release = () => {
      if (this.#inflight.get(e.id)?.runId === run.id) this.#inflight.delete(e.id);
    };
    let settle!: (row: RunRow | undefined) => void;
    const done = new Promise<RunRow | undefined>((resolve) => {
      settle = resolve;
    });
    this.#inflight.set(e.id, { runId: run.id, done });
    // Whatever happens to the run, its promise settles and the entry is free for its next slot.
    const record = async (step: () => Promise<RunRow | undefined> | RunRow | undefined): Promise<void> => {
      try {
        settle(await step());
      } catch (err) {
        this.#log.error({ err, entry: e.id, run: run.id }, 'cron run could not be recorded');
        settle(undefined);
      } finally {
        release();
      }
    };
    this.#queue.push({
      container: e.container,
      start: () =>
        record(async () => {
          if (!ours()) return undefined;
          const startedAt = this.#now().toISOString();
          this.entries.markStarted(run.id, startedAt);
          if (run.scheduledFor) this.#observer.runStarted(e.container, Math.max(0, Date.parse(startedAt) - Date.parse(run.scheduledFor)) / 1000);
          const end = await this.#runner.run(job);
          if (!ours()) return undefined;
          this.#observer.runEnded(e.container, end.status, run.trigger);
          this.#log.debug({ container: e.container, entry: e.id, run: run.id, status: end.status }, 'cron run finished');
          // Someone waits on a manual run's answer: its end is on disk before they get it.
          return this.entries.finishRun({ ...run, status: 'running', startedAt }, end, run.trigger === 'manual');
        }),
      late: (waitedMs, why) =>
        void record(() => {
          const end = { status: 'late' as const, finishedAt: this.#now().toISOString(), exitCode: null, output: `hoody: not run: ${why}\n`, truncated: false };
          this.#log.warn({ container: e.container, entry: e.id, run: run.id, waitedMs }, `cron run not started: ${why}`);
          this.#observer.runEnded(e.container, 'late', run.trigger);
          return this.entries.finishRun(run, end, run.trigger === 'manual');
        }),
    });
    return done;
  }
}
