import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { within } from './etcd.js';
import { type CertRecord, type FleetKeys, type HostRecord, type Kind, KINDS, type NameRecord, parseKey, parseValue, type RouteRecord, type TokenRecord } from './keys.js';

interface Entry<T> {
  value: T;
  /** etcd's mod revision of the key: an older view never overwrites a newer one. */
  rev: number;
}

/** One immutable view of the directory; replaced whole on every change, never edited in place. */
export interface DirectoryView {
  hosts: ReadonlyMap<string, Entry<HostRecord>>;
  names: ReadonlyMap<string, Entry<NameRecord>>;
  tokens: ReadonlyMap<string, Entry<TokenRecord>>;
  routes: ReadonlyMap<string, Entry<RouteRecord>>;
  certs: ReadonlyMap<string, Entry<CertRecord>>;
}

const EMPTY: DirectoryView = { hosts: new Map(), names: new Map(), tokens: new Map(), routes: new Map(), certs: new Map() };

export interface DirectoryStatus {
  /** A full list has been read at least once. */
  synced: boolean;
  watching: boolean;
  lastListAt: string | null;
  lastListError: string | null;
  revision: number;
}

/**
 * Every host's in-memory copy of the fleet directory: a prefix watch applies changes as they come, and a full
 * re-list every `relistMs` repairs whatever a stalled watch missed (reported for the Node client after
 * reconnects). Requests read `view` only: nothing waits on etcd.
 */
export class DirectoryCache {
  view: DirectoryView = EMPTY;
  private tombstones = new Map<string, number>(); // deleted key -> delete revision, until a list is newer
  private watcher: Watcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  readonly status: DirectoryStatus = { synced: false, watching: false, lastListAt: null, lastListError: null, revision: 0 };

  constructor(
    private readonly client: Etcd3,
    private readonly keys: FleetKeys,
    private readonly relistMs: number,
    private readonly log: Logger,
    /** Called after any change that removed or replaced entries (the publisher checks its own are still there). */
    private readonly onChange: (kinds: ReadonlySet<Kind>, deleted: boolean) => void,
  ) {}

  start(): void {
    void this.watch();
    void this.relistLoop();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    // A watcher left open keeps the process alive after client.close() (measured); etcd down must not hang a stop.
    await within(2000, 'watch cancel', this.watcher?.cancel() ?? Promise.resolve()).catch(() => undefined);
  }

  private async watch(): Promise<void> {
    while (!this.closed && !this.watcher) {
      try {
        const w = await this.client.watch().prefix(this.keys.prefix).create();
        if (this.closed) {
          await w.cancel();
          return;
        }
        this.watcher = w;
        w.on('connected', () => {
          this.status.watching = true;
        });
        w.on('disconnected', () => {
          this.status.watching = false;
        });
        w.on('error', (err) => this.log.warn({ err }, 'fleet directory watch error (the re-list covers the gap)'));
        w.on('put', (kv) => this.apply([{ kv, deleted: false }]));
        w.on('delete', (kv) => this.apply([{ kv, deleted: true }]));
        this.status.watching = true;
      } catch (err) {
        this.log.warn({ err }, 'fleet directory watch could not start; retrying');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  private async relistLoop(): Promise<void> {
    if (this.closed) return;
    await this.relist().catch(() => undefined);
    if (!this.closed) this.timer = setTimeout(() => void this.relistLoop(), this.relistMs);
  }

  /** Reads the whole prefix and rebuilds the view from it, keeping watch events newer than the list. */
  async relist(): Promise<void> {
    try {
      const res = await this.client.getAll().prefix(this.keys.prefix).exec();
      const listRev = Number(res.header.revision);
      const next = { hosts: new Map(), names: new Map(), tokens: new Map(), routes: new Map(), certs: new Map() } as { [K in Kind]: Map<string, Entry<unknown>> };
      for (const kv of res.kvs) {
        const k = parseKey(this.keys, kv.key.toString());
        const value = k && parseValue(kv.value);
        if (!k || !value) continue;
        const dead = this.tombstones.get(kv.key.toString());
        if (dead !== undefined && dead > Number(kv.mod_revision)) continue;
        next[k.kind].set(k.id, { value, rev: Number(kv.mod_revision) });
      }
      // Entries the watch delivered after the list's revision stay (the list cannot know them).
      let removed = false;
      for (const kind of KINDS) {
        for (const [id, e] of this.view[kind] as ReadonlyMap<string, Entry<unknown>>) {
          if (e.rev > listRev && !next[kind].has(id)) next[kind].set(id, e);
          else if (!next[kind].has(id)) removed = true;
        }
      }
      for (const [key, rev] of this.tombstones) if (rev <= listRev) this.tombstones.delete(key);
      this.view = next as unknown as DirectoryView;
      Object.assign(this.status, { synced: true, lastListAt: new Date().toISOString(), lastListError: null, revision: Math.max(this.status.revision, listRev) });
      this.onChange(new Set(KINDS), removed);
    } catch (err) {
      this.status.lastListError = err instanceof Error ? err.message : String(err);
      throw err;
    }
  }

  /** Applies watch events (or this host's own acknowledged writes) to a copy, then swaps it in. */
  apply(events: { kv: Pick<IKeyValue, 'key' | 'value' | 'mod_revision'>; deleted: boolean }[]): void {
    const next = {
      hosts: new Map(this.view.hosts),
      names: new Map(this.view.names),
      tokens: new Map(this.view.tokens),
      routes: new Map(this.view.routes),
      certs: new Map(this.view.certs),
    } as {
      [K in Kind]: Map<string, Entry<unknown>>;
    };
    const kinds = new Set<Kind>();
    let deleted = false;
    for (const { kv, deleted: del } of events) {
      const key = kv.key.toString();
      const k = parseKey(this.keys, key);
      if (!k) continue;
      const rev = Number(kv.mod_revision);
      const have = next[k.kind].get(k.id);
      if (have && have.rev > rev) continue;
      this.status.revision = Math.max(this.status.revision, rev);
      kinds.add(k.kind);
      if (del) {
        next[k.kind].delete(k.id);
        this.tombstones.set(key, rev);
        deleted = true;
        continue;
      }
      const dead = this.tombstones.get(key);
      if (dead !== undefined && dead > rev) continue;
      const value = parseValue(kv.value);
      if (value) next[k.kind].set(k.id, { value, rev });
    }
    if (!kinds.size) return;
    this.view = next as unknown as DirectoryView;
    this.onChange(kinds, deleted);
  }
}
