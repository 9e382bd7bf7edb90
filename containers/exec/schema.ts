import type { Database, Statement } from 'better-sqlite3';
import { withNormalSync } from '../statements.js';
import { type Raw, rowReader } from '../rows.js';
import type { MigrationSet } from '../schema.js';

/** The exec log: one row per run request. */
export const execMigrations: MigrationSet = {
  name: 'exec',
  steps: [
    `CREATE TABLE exec_runs (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       container TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE,
       script TEXT NOT NULL,
       method TEXT NOT NULL,
       started_at TEXT NOT NULL,
       status INTEGER NOT NULL,
       duration_ms INTEGER NOT NULL,
       cpu_ms REAL NOT NULL,
       token_id TEXT,
       dry_run INTEGER NOT NULL,
       console TEXT NOT NULL,
       error TEXT
     ) STRICT;
     CREATE INDEX exec_runs_container ON exec_runs(container, id);
     CREATE INDEX exec_runs_time ON exec_runs(container, started_at);`,
    // The Bun runtime: where a run ran, and the memory of a persistent script's process after it.
    `ALTER TABLE exec_runs ADD COLUMN runtime TEXT NOT NULL DEFAULT 'isolate';
     ALTER TABLE exec_runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'serverless';
     ALTER TABLE exec_runs ADD COLUMN memory_bytes INTEGER;`,
  ],
};

export type ExecLogEntry = {
  id: number;
  container: string;
  /** The script file that ran (e.g. certs/renew.ts). */
  script: string;
  method: string;
  /** ISO time the request started. */
  time: string;
  status: number;
  durationMs: number;
  cpuMs: number;
  /** Caller's token id; null for an `@auth none` script called without one. */
  tokenId: string | null;
  dryRun: boolean;
  console: string;
  /** "HOODY_…: message" of a failed run. */
  error: string | null;
  /** isolate or bun. */
  runtime: string;
  /** serverless or persistent. */
  mode: string;
  /** A Bun process's resident memory after the run, as it reported it; null for isolates. */
  memoryBytes: number | null;
};

export interface ExecLogQuery {
  /** ISO time: the rows that started at or after it, oldest first (as the cron log pages). */
  since?: string;
  /** At most this many rows (default 100, at most EXEC_LOG_KEEP): from `since` on, or else the latest ones. */
  limit?: number;
}

/** Rows kept per container; older ones are dropped as new ones come. */
export const EXEC_LOG_KEEP = 5000;

const toEntry = rowReader<ExecLogEntry>({
  id: 'number',
  container: 'text',
  script: 'text',
  method: 'text',
  time: ['started_at', 'text'],
  status: 'number',
  durationMs: 'number',
  cpuMs: 'number',
  tokenId: 'text?',
  dryRun: 'flag',
  console: 'text',
  error: 'text?',
  runtime: 'text',
  mode: 'text',
  memoryBytes: 'number?',
});

/** A row waits at most this long to be written (a burst of runs costs one commit, not one each). */
const FLUSH_MS = 10;
/** Or until this many rows wait. */
const FLUSH_ROWS = 256;

/**
 * The exec log table. Rows are written in batches, off the request path, in one transaction each; each
 * container is trimmed to its last `keep` rows once it wrote a twentieth of that since its last trim (the trim
 * walks `keep` index entries), so at most 5% more sit on disk than a query ever shows.
 */
export class ExecLog {
  private queue: Omit<ExecLogEntry, 'id'>[] = [];
  private timer: NodeJS.Timeout | null = null;
  private statements: { insert: Statement; trim: Statement } | null = null;
  /** Rows written per container since its last trim; a container not in it is trimmed at its next write. */
  private readonly sinceTrim = new Map<string, number>();

  constructor(
    private readonly db: Database,
    private readonly onError: (err: unknown) => void,
    private readonly keep = EXEC_LOG_KEEP,
  ) {}

  add(entry: Omit<ExecLogEntry, 'id'>): void {
    this.queue.push(entry);
    if (this.queue.length >= FLUSH_ROWS) this.flush();
    else if (!this.timer) this.timer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  private prepared(): { insert: Statement; trim: Statement } {
    this.statements ??= {
      insert: this.db.prepare(
        `INSERT INTO exec_runs (container, script, method, started_at, status, duration_ms, cpu_ms, token_id, dry_run, console, error, runtime, mode, memory_bytes)
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM containers WHERE name = ?)`,
      ),
      trim: this.db.prepare(
        `DELETE FROM exec_runs WHERE container = ? AND id <
           (SELECT id FROM exec_runs WHERE container = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
      ),
    };
    return this.statements;
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const rows = this.queue;
    if (rows.length === 0) return;
    this.queue = [];
    const { insert, trim } = this.prepared();
    const every = Math.max(1, Math.ceil(this.keep / 20));
    // A log row is not an acknowledged write (withNormalSync): no fsync on the daemon's thread per flush.
    try {
      withNormalSync(this.db, () =>
        this.db.transaction(() => {
          const written = new Map<string, number>();
          for (const e of rows) {
            insert.run(e.container, e.script, e.method, e.time, e.status, Math.round(e.durationMs), e.cpuMs, e.tokenId, e.dryRun ? 1 : 0, e.console, e.error, e.runtime, e.mode, e.memoryBytes, e.container);
            written.set(e.container, (written.get(e.container) ?? 0) + 1);
          }
          for (const [c, n] of written) {
            const since = (this.sinceTrim.get(c) ?? every) + n;
            if (since >= every) {
              trim.run(c, c, this.keep - 1);
              this.sinceTrim.set(c, 0);
            } else this.sinceTrim.set(c, since);
          }
        })(),
      );
    } catch (err) {
      this.sinceTrim.clear();
      this.onError(err);
    }
  }

  /** Oldest first (by start time): from `since` on, or else the latest `limit` rows. */
  query(container: string, q: ExecLogQuery = {}): ExecLogEntry[] {
    this.flush();
    const limit = Math.max(1, Math.min(q.limit ?? 100, this.keep));
    const rows = (
      q.since === undefined
        ? this.db
            .prepare(
              `SELECT * FROM (SELECT * FROM exec_runs WHERE container = ? ORDER BY started_at DESC, id DESC LIMIT ?)
               ORDER BY started_at, id`,
            )
            .all(container, limit)
        : this.db
            .prepare('SELECT * FROM exec_runs WHERE container = ? AND started_at >= ? ORDER BY started_at, id LIMIT ?')
            .all(container, q.since, limit)
    ) as Raw[];
    return rows.map(toEntry);
  }
}
