import type { MigrationSet } from '../schema.js';

/**
 * Cron entries and their run log. A run is `queued` until a runner is free (queue.ts), then `running`. `last_slot` is the last scheduled slot that was claimed (a run row
 * inserted in the same transaction), so a slot never fires twice, even across a kill -9 mid-run.
 * Runs go with their entry (cascade), entries with their container.
 */
export const cronMigrations: MigrationSet = {
  name: 'cron',
  steps: [
    `CREATE TABLE cron_entries (
       id TEXT PRIMARY KEY,
       container TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE,
       user TEXT NOT NULL,
       schedule TEXT NOT NULL,
       command TEXT NOT NULL,
       comment TEXT,
       enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
       timezone TEXT NOT NULL,
       expires_at TEXT,
       created_at TEXT NOT NULL,
       updated_at TEXT NOT NULL,
       last_slot TEXT
     ) STRICT;
     CREATE INDEX cron_entries_owner ON cron_entries(container, user, created_at, id);
     CREATE TABLE cron_runs (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       entry_id TEXT NOT NULL REFERENCES cron_entries(id) ON DELETE CASCADE,
       container TEXT NOT NULL,
       user TEXT NOT NULL,
       trigger TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual', 'reboot')),
       status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'skipped', 'expired', 'timeout')),
       started_at TEXT NOT NULL,
       finished_at TEXT,
       exit_code INTEGER,
       output TEXT NOT NULL DEFAULT '' CHECK (length(CAST(output AS BLOB)) <= 65536),
       truncated INTEGER NOT NULL DEFAULT 0 CHECK (truncated IN (0, 1)),
       triggered_by TEXT NOT NULL,
       scheduled_for TEXT
     ) STRICT;
     CREATE INDEX cron_runs_entry ON cron_runs(entry_id, id);
     CREATE INDEX cron_runs_user ON cron_runs(container, user, id);
     CREATE INDEX cron_runs_container_id ON cron_runs(container, id);
     CREATE INDEX cron_runs_container_time ON cron_runs(container, started_at);
     CREATE INDEX cron_runs_running ON cron_runs(status) WHERE status = 'running';`,
    // Issue 13.2: runs wait in a queue ('queued') and one that waited too long is 'late'. SQLite cannot change a
    // CHECK in place: the table is rebuilt, rows and ids kept (AUTOINCREMENT's counter follows the rename).
    `CREATE TABLE cron_runs_v2 (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       entry_id TEXT NOT NULL REFERENCES cron_entries(id) ON DELETE CASCADE,
       container TEXT NOT NULL,
       user TEXT NOT NULL,
       trigger TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual', 'reboot')),
       status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'ok', 'failed', 'skipped', 'expired', 'timeout', 'late')),
       started_at TEXT NOT NULL,
       finished_at TEXT,
       exit_code INTEGER,
       output TEXT NOT NULL DEFAULT '' CHECK (length(CAST(output AS BLOB)) <= 65536),
       truncated INTEGER NOT NULL DEFAULT 0 CHECK (truncated IN (0, 1)),
       triggered_by TEXT NOT NULL,
       scheduled_for TEXT
     ) STRICT;
     INSERT INTO cron_runs_v2 (id, entry_id, container, user, trigger, status, started_at, finished_at, exit_code, output,
       truncated, triggered_by, scheduled_for)
       SELECT id, entry_id, container, user, trigger, status, started_at, finished_at, exit_code, output, truncated,
         triggered_by, scheduled_for FROM cron_runs;
     DROP TABLE cron_runs;
     ALTER TABLE cron_runs_v2 RENAME TO cron_runs;
     CREATE INDEX cron_runs_entry ON cron_runs(entry_id, id);
     CREATE INDEX cron_runs_user ON cron_runs(container, user, id);
     CREATE INDEX cron_runs_container_id ON cron_runs(container, id);
     CREATE INDEX cron_runs_container_time ON cron_runs(container, started_at);
     CREATE INDEX cron_runs_open ON cron_runs(status) WHERE status IN ('queued', 'running');`,
  ],
};
