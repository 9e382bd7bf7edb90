import type { Database, Statement } from 'better-sqlite3';
import { type Raw, rowReader } from '../rows.js';
import { withNormalSync } from '../statements.js';
import type { EntryFields } from './input.js';

export interface EntryRow extends EntryFields {
  id: string;
  container: string;
  user: string;
  createdAt: string;
  updatedAt: string;
  /** The last scheduled slot claimed (ISO), or null. */
  lastSlot: string | null;
}

export type RunTrigger = 'schedule' | 'manual' | 'reboot';
export type RunStatus = 'queued' | 'running' | 'ok' | 'failed' | 'skipped' | 'expired' | 'timeout' | 'late';

export interface RunRow {
  id: number;
  entryId: string;
  container: string;
  user: string;
  trigger: RunTrigger;
  status: RunStatus;
  startedAt: string;
  finishedAt: string | null;
  exitCode: number | null;
  output: string;
  truncated: boolean;
  triggeredBy: string;
  scheduledFor: string | null;
}

export type NewRun = Omit<RunRow, 'id'>;
export type RunEnd = Pick<RunRow, 'status' | 'finishedAt' | 'exitCode' | 'output' | 'truncated'>;
export interface RunQuery {
  limit: number;
  since?: string;
}

/** The hard cap of stored output per run (the schema checks it too). */
export const MAX_STORED_OUTPUT = 64 * 1024;

const toEntry = rowReader<EntryRow>({
  id: 'text',
  container: 'text',
  user: 'text',
  schedule: 'text',
  command: 'text',
  comment: 'text?',
  enabled: 'flag',
  timezone: 'text',
  expiresAt: 'text?',
  createdAt: 'text',
  updatedAt: 'text',
  lastSlot: 'text?',
});

const toRun = rowReader<RunRow>({
  id: 'number',
  entryId: 'text',
  container: 'text',
  user: 'text',
  trigger: 'text',
  status: 'text',
  startedAt: 'text',
  finishedAt: 'text?',
  exitCode: 'number?',
  output: 'text',
  truncated: 'flag',
  triggeredBy: 'text',
  scheduledFor: 'text?',
});

/** A run row as it is claimed: `queued` for a runner, or `skipped` (finished at once) when run `going` of the entry is still going. */
export function newRun(
  e: Pick<EntryRow, 'id' | 'container' | 'user'>,
  trigger: RunTrigger,
  by: string,
  scheduledFor: string | null,
  now: string,
  going: number | undefined,
): NewRun {
  const skip = going !== undefined;
  return {
    entryId: e.id,
    container: e.container,
    user: e.user,
    trigger,
    status: skip ? 'skipped' : 'queued',
    startedAt: now,
    finishedAt: skip ? now : null,
    exitCode: null,
    output: skip ? `hoody: skipped: run ${going} of this entry is still going\n` : '',
    truncated: false,
    triggeredBy: by,
    scheduledFor,
  };
}

/** Cuts a string to at most `max` UTF-8 bytes without splitting a character. */
export function cutUtf8(s: string, max: number): { text: string; cut: boolean } {
  if (s.length * 3 <= max || Buffer.byteLength(s) <= max) return { text: s, cut: false };
  const buf = Buffer.from(s, 'utf8');
  let end = max;
  while (end > 0 && ((buf[end] ?? 0) & 0xc0) === 0x80) end--;
  return { text: buf.subarray(0, end).toString('utf8'), cut: true };
}

/** Counts an insert for `key`; true (and the count restarts) once a twentieth of `keep` came since the last prune. */
function due(since: Map<string, number>, key: string, keep: number): boolean {
  const every = Math.max(1, Math.ceil(keep / 20));
  const n = (since.get(key) ?? every - 1) + 1;
  if (n < every) {
    since.set(key, n);
    return false;
  }
  since.set(key, 0);
  return true;
}

/**
 * Cron entries and runs; prepared once, every write one transaction. A scheduled run's start and end are the
 * exception: they wait for the event loop's next turn and commit together (one commit for the runs that started
 * and ended meanwhile, not two each); every read of the runs writes them first, so nothing reads around them.
 */
export class CronStore {
  readonly #s: Record<string, Statement>;
  readonly #sinceEntryPrune = new Map<string, number>();
  readonly #sinceContainerPrune = new Map<string, number>();
  #pending: (() => void)[] = [];
  #flushing: NodeJS.Immediate | null = null;

  constructor(
    readonly db: Database,
    /** Runs kept per entry; older ones are pruned when a new one is inserted. */
    readonly maxRunsPerEntry = 1000,
    /** Runs kept per container (all entries), pruned the same way: many entries cannot multiply the log. */
    readonly maxRunsPerContainer = 10_000,
    /** A deferred write that failed (the daemon logs it; the run's row stays as it was). */
    private readonly onWriteError: (err: unknown) => void = () => undefined,
  ) {
    const p = (sql: string) => db.prepare(sql);
    this.#s = {
      insertEntry: p(`INSERT INTO cron_entries (id, container, user, schedule, command, comment, enabled, timezone,
          expires_at, created_at, updated_at, last_slot)
        VALUES (@id, @container, @user, @schedule, @command, @comment, @enabled, @timezone, @expiresAt, @createdAt,
          @updatedAt, @lastSlot)`),
      getEntry: p('SELECT * FROM cron_entries WHERE id = ?'),
      entryOf: p('SELECT * FROM cron_entries WHERE id = ? AND container = ? AND user = ?'),
      entriesOf: p('SELECT * FROM cron_entries WHERE container = ? AND user = ? ORDER BY created_at, id'),
      entriesOfContainer: p('SELECT * FROM cron_entries WHERE container = ? ORDER BY created_at, id'),
      countOfContainer: p('SELECT count(*) AS n FROM cron_entries WHERE container = ?'),
      enabled: p('SELECT * FROM cron_entries WHERE enabled = 1'),
      updateEntry: p(`UPDATE cron_entries SET schedule = @schedule, command = @command, comment = @comment,
          enabled = @enabled, timezone = @timezone, expires_at = @expiresAt, updated_at = @updatedAt WHERE id = @id`),
      deleteEntry: p('DELETE FROM cron_entries WHERE id = ? AND container = ? AND user = ?'),
      setSlot: p('UPDATE cron_entries SET last_slot = ? WHERE id = ?'),
      insertRun: p(`INSERT INTO cron_runs (entry_id, container, user, trigger, status, started_at, finished_at, exit_code,
          output, truncated, triggered_by, scheduled_for)
        VALUES (@entryId, @container, @user, @trigger, @status, @startedAt, @finishedAt, @exitCode, @output, @truncated,
          @triggeredBy, @scheduledFor)`),
      prune: p(`DELETE FROM cron_runs WHERE entry_id = @entryId AND status NOT IN ('queued', 'running') AND id <= (
          SELECT id FROM cron_runs WHERE entry_id = @entryId ORDER BY id DESC LIMIT 1 OFFSET @keep)`),
      pruneContainer: p(`DELETE FROM cron_runs WHERE container = @container AND status NOT IN ('queued', 'running') AND id <= (
          SELECT id FROM cron_runs WHERE container = @container ORDER BY id DESC LIMIT 1 OFFSET @keep)`),
      finishRun: p(`UPDATE cron_runs SET status = @status, finished_at = @finishedAt, exit_code = @exitCode,
          output = @output, truncated = @truncated WHERE id = @id`),
      getRun: p('SELECT * FROM cron_runs WHERE id = ?'),
      runsOfEntry: p(`SELECT * FROM cron_runs WHERE entry_id = ? AND +started_at >= ? ORDER BY id DESC LIMIT ?`),
      runsOfUser: p(`SELECT * FROM cron_runs WHERE container = ? AND user = ? AND +started_at >= ?
          ORDER BY id DESC LIMIT ?`),
      logSince: p('SELECT * FROM cron_runs WHERE container = ? AND started_at >= ? ORDER BY started_at, id LIMIT ?'),
      logTail: p('SELECT * FROM (SELECT * FROM cron_runs WHERE container = ? ORDER BY id DESC LIMIT ?) ORDER BY id'),
      logSinceOfUser: p('SELECT * FROM cron_runs WHERE container = ? AND user = ? AND started_at >= ? ORDER BY started_at, id LIMIT ?'),
      logTailOfUser: p('SELECT * FROM (SELECT * FROM cron_runs WHERE container = ? AND user = ? ORDER BY id DESC LIMIT ?) ORDER BY id'),
      running: p(`SELECT * FROM cron_runs WHERE status IN ('queued', 'running')`),
      markStarted: p(`UPDATE cron_runs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'`),
    };
  }

  insertEntry(e: EntryRow): void {
    this.#s.insertEntry!.run({ ...e, enabled: e.enabled ? 1 : 0 });
  }

  getEntry(id: string): EntryRow | undefined {
    const r = this.#s.getEntry!.get(id) as Raw | undefined;
    return r && toEntry(r);
  }

  /** The entry if it belongs to (container, user): other users' entries do not exist for the caller. */
  entryOf(container: string, user: string, id: string): EntryRow | undefined {
    const r = this.#s.entryOf!.get(id, container, user) as Raw | undefined;
    return r && toEntry(r);
  }

  entriesOf(container: string, user: string): EntryRow[] {
    return (this.#s.entriesOf!.all(container, user) as Raw[]).map(toEntry);
  }

  countOfContainer(container: string): number {
    return (this.#s.countOfContainer!.get(container) as { n: number }).n;
  }

  entriesOfContainer(container: string): EntryRow[] {
    return (this.#s.entriesOfContainer!.all(container) as Raw[]).map(toEntry);
  }

  enabledEntries(): EntryRow[] {
    return (this.#s.enabled!.all() as Raw[]).map(toEntry);
  }

  updateEntry(id: string, f: EntryFields, updatedAt: string): void {
    this.#s.updateEntry!.run({ ...f, id, enabled: f.enabled ? 1 : 0, updatedAt });
  }

  deleteEntry(container: string, user: string, id: string): boolean {
    this.#sinceEntryPrune.delete(id);
    return this.#s.deleteEntry!.run(id, container, user).changes > 0;
  }

  /**
   * Claims a scheduled slot: in one transaction reads the entry, lets `decide` choose the run row (or none),
   * records `last_slot` and inserts the row. A slot at or before `last_slot` is never claimed again.
   */
  claimSlot(entryId: string, slot: string, decide: (e: EntryRow) => NewRun | null): RunRow | null {
    return this.db.transaction((): RunRow | null => {
      const entry = this.getEntry(entryId);
      if (!entry || (entry.lastSlot !== null && entry.lastSlot >= slot)) return null;
      const run = decide(entry);
      if (!run) return null;
      this.#s.setSlot!.run(slot, entryId);
      return this.#insert(run);
    })();
  }

  insertRun(run: NewRun): RunRow {
    return this.db.transaction(() => this.#insert(run))();
  }

  #insert(run: NewRun): RunRow {
    const output = cutUtf8(run.output, MAX_STORED_OUTPUT);
    const row = { ...run, output: output.text, truncated: run.truncated || output.cut };
    const id = Number(this.#s.insertRun!.run({ ...row, truncated: row.truncated ? 1 : 0 }).lastInsertRowid);
    // A prune walks `keep` index entries: it runs every twentieth of `keep` inserts (at most 5% more rows on disk
    // than kept; every insert for a small cap), and at the first insert of an entry or container after a start.
    if (due(this.#sinceEntryPrune, run.entryId, this.maxRunsPerEntry)) this.#s.prune!.run({ entryId: run.entryId, keep: this.maxRunsPerEntry });
    if (due(this.#sinceContainerPrune, run.container, this.maxRunsPerContainer))
      this.#s.pruneContainer!.run({ container: run.container, keep: this.maxRunsPerContainer });
    return { ...row, id };
  }

  /**
   * A run ends: returns its row as it now is. Not an acknowledged write (withNormalSync), and deferred to the next
   * turn unless `now` (a run someone waits for, an abandoned one): at FULL and one commit each, the end of a
   * run held cron at ~200 runs a second once starting a command became cheap (bench/README.md).
   */
  finishRun(run: RunRow, end: RunEnd, now = false): RunRow {
    const output = cutUtf8(end.output, MAX_STORED_OUTPUT);
    const truncated = end.truncated || output.cut;
    this.#write(() => this.#s.finishRun!.run({ ...end, id: run.id, output: output.text, truncated: truncated ? 1 : 0 }));
    if (now) this.flush();
    return { ...run, ...end, output: output.text, truncated };
  }

  /**
   * Ends a run the daemon lost track of (stopped or killed): a running one as failed with `note`, a queued one
   * (it never started) as late with `notStarted`.
   */
  abandon(r: RunRow | undefined, note: string, finishedAt: string, notStarted = note): void {
    if (r?.status === 'running')
      this.finishRun(r, { status: 'failed', finishedAt, exitCode: null, output: `${r.output}${note}\n`, truncated: r.truncated }, true);
    else if (r?.status === 'queued')
      this.finishRun(r, { status: 'late', finishedAt, exitCode: null, output: `${r.output}${notStarted}\n`, truncated: r.truncated }, true);
  }

  /** A queued run starts now (deferred like its end; the claim of a slot stays FULL and immediate). */
  markStarted(id: number, at: string): void {
    this.#write(() => this.#s.markStarted!.run(at, id));
  }

  /** Commits the deferred starts and ends now (before a read, at stop). */
  flush(): void {
    if (this.#flushing) clearImmediate(this.#flushing);
    this.#flushing = null;
    if (this.#pending.length === 0) return;
    const writes = this.#pending;
    this.#pending = [];
    try {
      withNormalSync(this.db, () =>
        this.db.transaction(() => {
          for (const w of writes) w();
        })(),
      );
    } catch (err) {
      this.onWriteError(err);
    }
  }

  #write(w: () => void): void {
    this.#pending.push(w);
    this.#flushing ??= setImmediate(() => this.flush());
  }

  getRun(id: number): RunRow | undefined {
    this.flush();
    const r = this.#s.getRun!.get(id) as Raw | undefined;
    return r && toRun(r);
  }

  /** Runs queued or running. */
  runningRuns(): RunRow[] {
    this.flush();
    return (this.#s.running!.all() as Raw[]).map(toRun);
  }

  /** Newest first. */
  runsOfEntry(entryId: string, q: RunQuery): RunRow[] {
    this.flush();
    return (this.#s.runsOfEntry!.all(entryId, q.since ?? '', q.limit) as Raw[]).map(toRun);
  }

  /** Newest first. */
  runsOfUser(container: string, user: string, q: RunQuery): RunRow[] {
    this.flush();
    return (this.#s.runsOfUser!.all(container, user, q.since ?? '', q.limit) as Raw[]).map(toRun);
  }

  /** Oldest first: from `since` on, or else the latest `limit` runs (of one user only, with `user`). */
  runsOfContainer(container: string, q: RunQuery, user?: string): RunRow[] {
    this.flush();
    const rows =
      user === undefined
        ? q.since === undefined
          ? this.#s.logTail!.all(container, q.limit)
          : this.#s.logSince!.all(container, q.since, q.limit)
        : q.since === undefined
          ? this.#s.logTailOfUser!.all(container, user, q.limit)
          : this.#s.logSinceOfUser!.all(container, user, q.since, q.limit);
    return (rows as Raw[]).map(toRun);
  }
}
