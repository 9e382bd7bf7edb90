import type { Database } from 'better-sqlite3';
import { fail } from './errors.js';
import type { ContainerRow } from './store.js';

/**
 * What of a container lives in SQLite and moves with it to another host (`hoody move`): its row, tokens, cron
 * entries, routes, certificates, ACME accounts, domain grants and snapshot schedule. History (cron and exec run
 * logs) stays behind: it is the old host's record of what ran there.
 */
const MOVED_TABLES = ['tokens', 'cron_entries', 'proxy_routes', 'proxy_certs', 'acme_accounts', 'container_domains', 'snapshot_schedules'] as const;

type Value = string | number | null;
export interface MoveBundle {
  version: 1;
  container: Record<string, Value>;
  tables: Record<string, Record<string, Value>[]>;
}

function columns(db: Database, table: string): Set<string> {
  return new Set((db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name));
}

/** The container's rows as plain values (one read transaction: a consistent picture). */
export function exportBundle(db: Database, name: string): MoveBundle {
  return db.transaction(() => {
    const container = db.prepare('SELECT * FROM containers WHERE name = ?').get(name) as Record<string, Value> | undefined;
    if (!container) throw fail('CONTAINER_UNKNOWN', name);
    const tables: MoveBundle['tables'] = {};
    for (const t of MOVED_TABLES) tables[t] = db.prepare(`SELECT * FROM ${t} WHERE container = ?`).all(name) as Record<string, Value>[];
    return { version: 1 as const, container, tables };
  })();
}

/**
 * Inserts a received bundle as one transaction: the container row gets this host's volume path and no engine
 * container yet (made after), then its rows. Columns are checked against this host's schema first (the sender is
 * a fleet host, but an older or newer one may have columns this one does not know: refused whole, nothing written).
 */
export function importBundle(db: Database, bundle: MoveBundle, local: Pick<ContainerRow, 'volume'>): string {
  if (bundle?.version !== 1 || typeof bundle.container?.name !== 'string') throw fail('MOVE_REFUSED', 'the moved container came in a bundle this host cannot read');
  const name = bundle.container.name;
  const container: Record<string, Value> = { ...bundle.container, volume: local.volume, engine_id: null, layer_dir: null, shim_group: null, phase: 'ready', desired: 'stopped' };
  const plan: { table: string; rows: Record<string, Value>[] }[] = [{ table: 'containers', rows: [container] }];
  for (const t of MOVED_TABLES) {
    const rows = bundle.tables?.[t] ?? [];
    if (!Array.isArray(rows) || rows.some((r) => r?.container !== name)) throw fail('MOVE_REFUSED', `the bundle's ${t} rows are not all of ${name}`);
    plan.push({ table: t, rows });
  }
  for (const { table, rows } of plan) {
    const known = columns(db, table);
    for (const r of rows) {
      const unknown = Object.keys(r).filter((k) => !known.has(k));
      if (unknown.length) throw fail('MOVE_REFUSED', `this host's ${table} has no column ${unknown.join(', ')} (hosts on different versions?)`);
    }
  }
  try {
    db.transaction(() => {
      for (const { table, rows } of plan) {
        for (const r of rows) {
          const keys = Object.keys(r);
          db.prepare(`INSERT INTO ${table} (${keys.join(', ')}) VALUES (${keys.map(() => '?').join(', ')})`).run(...keys.map((k) => r[k]));
        }
      }
    })();
  } catch (err) {
    // A name, token, route or certificate this host already has: nothing was written (one transaction).
    const code = (err as { code?: string }).code ?? '';
    if (code.startsWith('SQLITE_CONSTRAINT')) throw fail('MOVE_REFUSED', `${name} clashes with what this host has (${(err as Error).message})`);
    throw err;
  }
  return name;
}
