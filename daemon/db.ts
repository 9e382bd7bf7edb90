import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { containerMigrations, type MigrationSet } from '../containers/schema.js';

/** Applies every pending step of each migration set, each step in its own transaction. */
export function migrate(db: Database.Database, sets: readonly MigrationSet[]): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, version INTEGER NOT NULL) STRICT');
  for (const set of sets) {
    const row = db.prepare('SELECT version FROM schema_migrations WHERE name = ?').get(set.name) as { version: number } | undefined;
    for (let v = row?.version ?? 0; v < set.steps.length; v++) {
      db.transaction(() => {
        db.exec(set.steps[v]!);
        db.prepare('INSERT INTO schema_migrations (name, version) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET version = excluded.version').run(set.name, v + 1);
      })();
    }
  }
}

/**
 * Opens the state database: WAL, synchronous FULL (an acknowledged write survives kill -9 and power loss),
 * foreign keys on, and every pending migration applied. The containers set always comes first.
 */
export function openDatabase(path: string, sets: readonly MigrationSet[] = []): Database.Database {
  mkdirSync(dirname(path), { recursive: true });
  // Private keys and tokens live here: 0600, and SQLite gives -wal and -shm the database file's mode.
  closeSync(openSync(path, 'a', 0o600));
  chmodSync(path, 0o600);
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db, [containerMigrations, ...sets]);
  return db;
}
