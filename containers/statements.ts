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
