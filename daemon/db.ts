import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { migrations } from '../containers/schema.js';

/**
 * Opens the state database: WAL, synchronous FULL (an acknowledged write survives kill -9 and power loss),
 * foreign keys on, and every pending migration applied in its own transaction.
 */
export function openDatabase(path: string, extraMigrations: readonly string[] = []): Database.Database {
  mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  const all = [...migrations, ...extraMigrations];
  const current = db.pragma('user_version', { simple: true }) as number;
  for (let v = current; v < all.length; v++) {
    db.transaction(() => {
      db.exec(all[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return db;
}
