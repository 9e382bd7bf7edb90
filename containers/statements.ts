import type { Database, Statement } from 'better-sqlite3';

const cache = new WeakMap<Database, Map<string, Statement>>();

/**
 * The statement for `text` on `db`, prepared on first use and kept: preparing costs more than most of the
 * queries a request makes (a token lookup, a container row), and the same few run on every request.
 */
export function sql(db: Database, text: string): Statement {
  let byText = cache.get(db);
  if (!byText) {
    byText = new Map();
    cache.set(db, byText);
  }
  let s = byText.get(text);
  if (!s) {
    s = db.prepare(text);
    byText.set(text, s);
  }
  return s;
}

/**
 * Runs `fn` with synchronous=NORMAL, then puts the connection's level back. For writes nobody is answered on
 * before they are on disk (log rows, a cron run's start and end): with WAL they survive kill -9 as FULL ones do,
 * only a power loss can take the last few, and they spare an fsync on the daemon's one thread each.
 */
export function withNormalSync<T>(db: Database, fn: () => T): T {
  const pragmas = normalSync(db);
  pragmas.normal.run();
  try {
    return fn();
  } finally {
    pragmas.restore.run();
  }
}

const syncPragmas = new WeakMap<Database, { normal: Statement; restore: Statement }>();

/** The two pragma statements, prepared once per connection, restoring the level it had when first asked. */
function normalSync(db: Database): { normal: Statement; restore: Statement } {
  let p = syncPragmas.get(db);
  if (!p) {
    const level = db.pragma('synchronous', { simple: true }) as number;
    p = { normal: db.prepare('PRAGMA synchronous = NORMAL'), restore: db.prepare(`PRAGMA synchronous = ${level}`) };
    syncPragmas.set(db, p);
  }
  return p;
}
