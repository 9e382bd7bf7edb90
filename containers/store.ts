import type { Database } from 'better-sqlite3';
import type { Scope } from './tokens.js';
import { type Raw, rowReader } from './rows.js';
import { sql } from './statements.js';

export interface ContainerRow {
  name: string;
  id: string;
  engineId: string | null;
  /** The engine container's root layer directory, once hoody bounds it (see rootfs.ts). */
  layerDir: string | null;
  /** The shared shim it joins (containers/shim-placement.ts); null: a shim of its own. */
  shimGroup: string | null;
  image: string;
  memoryBytes: number;
  nanoCpus: number;
  diskBytes: number | null;
  pidsLimit: number;
  volume: string;
  phase: 'creating' | 'ready' | 'deleting';
  desired: 'running' | 'stopped';
  clonedFrom: string | null;
  createdAt: string;
}

export interface TokenRow {
  id: string;
  container: string;
  user: string;
  scopes: Scope[];
  hash: string;
  createdAt: string;
  revokedAt: string | null;
}

export interface SnapshotRow {
  container: string;
  name: string;
  path: string;
  createdAt: string;
}

const toContainer = rowReader<ContainerRow>({
  name: 'text',
  id: 'text',
  engineId: 'text?',
  layerDir: 'text?',
  shimGroup: 'text?',
  image: 'text',
  memoryBytes: 'number',
  nanoCpus: 'number',
  diskBytes: 'number?',
  pidsLimit: 'number',
  volume: 'text',
  phase: 'text',
  desired: 'text',
  clonedFrom: 'text?',
  createdAt: 'text',
});

function toToken(r: Raw): TokenRow {
  return {
    id: r.id as string,
    container: r.container as string,
    user: r.user as string,
    scopes: (r.scopes as string).split(',').filter(Boolean) as Scope[],
    hash: r.hash as string,
    createdAt: r.created_at as string,
    revokedAt: (r.revoked_at as string | null) ?? null,
  };
}

/** Containers, tokens and snapshots in the state database. Every write is one committed transaction. */
export class ContainerStore {
  readonly #tokenListeners = new Set<(container: string) => void>();

  constructor(
    readonly db: Database,
    /** Revoked tokens kept per container (an audit trail of ids); every rotation adds one. */
    readonly revokedTokensKept = 100,
  ) {}

  insert(row: ContainerRow): void {
    sql(this.db,
        `INSERT INTO containers (name, id, engine_id, layer_dir, shim_group, image, memory_bytes, nano_cpus, disk_bytes, pids_limit, volume,
           phase, desired, cloned_from, created_at)
         VALUES (@name, @id, @engineId, @layerDir, @shimGroup, @image, @memoryBytes, @nanoCpus, @diskBytes, @pidsLimit, @volume,
           @phase, @desired, @clonedFrom, @createdAt)`,
      )
      .run(row);
  }

  get(name: string): ContainerRow | undefined {
    const r = sql(this.db, 'SELECT * FROM containers WHERE name = ?').get(name) as Raw | undefined;
    return r && toContainer(r);
  }

  list(): ContainerRow[] {
    return (sql(this.db, 'SELECT * FROM containers ORDER BY name').all() as Raw[]).map(toContainer);
  }

  setEngineId(name: string, engineId: string | null): void {
    sql(this.db, 'UPDATE containers SET engine_id = ? WHERE name = ?').run(engineId, name);
  }

  setLayerDir(name: string, layerDir: string | null): void {
    sql(this.db, 'UPDATE containers SET layer_dir = ? WHERE name = ?').run(layerDir, name);
  }

  setPhase(name: string, phase: ContainerRow['phase']): void {
    sql(this.db, 'UPDATE containers SET phase = ? WHERE name = ?').run(phase, name);
  }

  setDesired(name: string, desired: ContainerRow['desired']): void {
    sql(this.db, 'UPDATE containers SET desired = ? WHERE name = ?').run(desired, name);
  }

  /** Removes the row and, by cascade, its tokens and snapshot rows. */
  delete(name: string): void {
    sql(this.db, 'DELETE FROM containers WHERE name = ?').run(name);
  }

  insertToken(t: Omit<TokenRow, 'revokedAt'>): void {
    sql(this.db,
        'INSERT INTO tokens (id, container, user, scopes, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      )
      .run(t.id, t.container, t.user, t.scopes.join(','), t.hash, t.createdAt);
    this.#tokensChanged(t.container);
  }

  /** Called after a container's tokens changed (issued, rotated); returns the unsubscribe. */
  onTokens(listener: (container: string) => void): () => void {
    this.#tokenListeners.add(listener);
    return () => this.#tokenListeners.delete(listener);
  }

  /** After the current synchronous step: a transaction around the write has committed by then. */
  #tokensChanged(container: string): void {
    if (this.#tokenListeners.size) queueMicrotask(() => {
      for (const l of this.#tokenListeners) l(container);
    });
  }

  /** Drops a container's oldest revoked tokens beyond `revokedTokensKept`. */
  trimRevokedTokens(container: string): void {
    sql(this.db,
        `DELETE FROM tokens WHERE id IN (SELECT id FROM tokens WHERE container = ? AND revoked_at IS NOT NULL
           ORDER BY revoked_at DESC, created_at DESC LIMIT -1 OFFSET ?)`,
      )
      .run(container, this.revokedTokensKept);
  }

  /**
   * Revokes the given tokens and inserts the replacement in one transaction: no moment with neither or both.
   * Compare-and-swap: when one of them is no longer active (a concurrent rotation won), nothing changes and
   * the answer is false. Old revoked rows beyond the cap are trimmed in the same transaction.
   */
  replaceTokens(revokeIds: readonly string[], next: Omit<TokenRow, 'revokedAt'>): boolean {
    const now = new Date().toISOString();
    const stale = new Error('stale');
    try {
      this.db.transaction(() => {
        const revoke = sql(this.db, 'UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL');
        for (const id of revokeIds) if (revoke.run(now, id).changes !== 1) throw stale;
        this.insertToken(next);
        this.trimRevokedTokens(next.container);
      })();
      return true;
    } catch (err) {
      if (err === stale) return false;
      throw err;
    }
  }

  activeTokens(container: string, user?: string): TokenRow[] {
    const rows = (
      user === undefined
        ? sql(this.db, 'SELECT * FROM tokens WHERE container = ? AND revoked_at IS NULL').all(container)
        : sql(this.db, 'SELECT * FROM tokens WHERE container = ? AND user = ? AND revoked_at IS NULL').all(container, user)
    ) as Raw[];
    return rows.map(toToken);
  }

  tokenById(id: string): TokenRow | undefined {
    const r = sql(this.db, 'SELECT * FROM tokens WHERE id = ?').get(id) as Raw | undefined;
    return r && toToken(r);
  }

  tokenByHash(hash: string): TokenRow | undefined {
    const r = sql(this.db, 'SELECT * FROM tokens WHERE hash = ?').get(hash) as Raw | undefined;
    return r && toToken(r);
  }

  insertSnapshot(s: SnapshotRow): void {
    sql(this.db, 'INSERT INTO snapshots (container, name, path, created_at) VALUES (?, ?, ?, ?)')
      .run(s.container, s.name, s.path, s.createdAt);
  }

  snapshots(container: string): SnapshotRow[] {
    return (sql(this.db, 'SELECT * FROM snapshots WHERE container = ? ORDER BY name').all(container) as Raw[]).map(
      (r) => ({
        container: r.container as string,
        name: r.name as string,
        path: r.path as string,
        createdAt: r.created_at as string,
      }),
    );
  }

  deleteSnapshot(container: string, name: string): void {
    sql(this.db, 'DELETE FROM snapshots WHERE container = ? AND name = ?').run(container, name);
  }
}
