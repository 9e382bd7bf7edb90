import type { Logger } from 'pino';
import type { NameRegistry } from '../../containers/context.js';
import { fail } from '../../containers/errors.js';
import { coveredBy } from '../../containers/proxy/plane.js';
import type { ContainerStore } from '../../containers/store.js';
import type { DirectoryCache } from './directory.js';
import { type EtcdClients, within } from './etcd.js';
import { type CertRecord, type FleetKeys, type NameRecord, parseValue, type RouteRecord, type TokenRecord } from './keys.js';

const CALL_MS = 3_000;

/**
 * Publishes what this host owns (its names and token hashes) and takes names for new containers. Publishing is a
 * reconcile of SQLite (the truth) against the directory cache: run on every change of ours, on deletions seen in
 * the directory (a wiped prefix), and every `everyMs`; it writes only the differences.
 */
export class Publisher implements NameRegistry {
  private running: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly conflicts = new Set<string>();
  /** Containers being handed over to or from another host (a move): their entries are the move's to write. */
  private readonly held = new Set<string>();
  private unsubscribe: () => void = () => undefined;
  lastError: string | null = null;

  constructor(
    private readonly clients: EtcdClients,
    private readonly keys: FleetKeys,
    private readonly host: string,
    private readonly cache: DirectoryCache,
    private readonly store: ContainerStore,
    private readonly busy: ReadonlySet<string>,
    private readonly everyMs: number,
    private readonly log: Logger,
    /** This host's routed hostnames (proxy routes) -> container. */
    private readonly routes: () => readonly { hostname: string; container: string }[] = () => [],
    /** This host's tenants' certificates (domain -> container, fingerprint): other hosts fetch them over the hop. */
    private readonly certs: () => readonly { domain: string; container: string; fingerprint: string }[] = () => [],
  ) {}

  start(): void {
    // A token issued or rotated is published at once (the periodic reconcile is the safety net).
    this.unsubscribe = this.store.onTokens(() => void this.nudge());
    void this.nudge();
    this.tick();
  }

  close(): void {
    this.closed = true;
    this.unsubscribe();
    if (this.timer) clearTimeout(this.timer);
  }

  /** Names other hosts also claim (published before this host joined, or a split brain): logged, not overwritten. */
  conflictNames(): string[] {
    return [...this.conflicts];
  }

  private tick(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      void this.nudge().finally(() => this.tick());
    }, this.everyMs);
  }

  hold(name: string): void {
    this.held.add(name);
  }

  unhold(name: string): void {
    this.held.delete(name);
  }

  /** Runs a reconcile now (or right after the one running). */
  nudge(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.reconcile().catch((err: unknown) => {
          const text = err instanceof Error ? err.message : String(err);
          if (text !== this.lastError) this.log.warn({ err }, 'fleet directory: publishing failed; retrying');
          this.lastError = text;
        });
      } while (this.again && !this.closed);
      this.running = null;
    })();
    return this.running;
  }

  async reserve(name: string, id: string): Promise<void> {
    const key = this.keys.name(name);
    const value = JSON.stringify({ host: this.host, id, state: 'reserving' } satisfies NameRecord);
    const { strict } = this.clients;
    const res = await within(CALL_MS, 'name reservation', strict.if(key, 'Create', '==', 0).then(strict.put(key).value(value)).else(strict.get(key)).commit());
    if (res.succeeded) return this.learn(key, value, res.header.revision);
    const kv = res.responses[0]?.response_range?.kvs[0];
    const have = kv ? parseValue<NameRecord>(kv.value) : null;
    // Our own leftover (a release that could not reach etcd, a crash mid-create): no row here, so take it back.
    if (kv && have?.host === this.host && !this.store.get(name)) {
      const again = await within(CALL_MS, 'name reservation', strict.if(key, 'Mod', '==', Number(kv.mod_revision)).then(strict.put(key).value(value)).commit());
      if (again.succeeded) return this.learn(key, value, again.header.revision);
    }
    throw fail('NAME_TAKEN', have ? `${name} (on host ${have.host})` : name);
  }

  async release(name: string, id: string): Promise<void> {
    const key = this.keys.name(name);
    const { strict } = this.clients;
    try {
      const kv = (await within(CALL_MS, 'name release', strict.get(key).exec())).kvs[0];
      const have = kv ? parseValue<NameRecord>(kv.value) : null;
      if (!kv || have?.host !== this.host || have.id !== id) return;
      const res = await within(CALL_MS, 'name release', strict.if(key, 'Mod', '==', Number(kv.mod_revision)).then(strict.delete().key(key)).commit());
      if (res.succeeded) this.cache.apply([{ kv: { key: Buffer.from(key), value: Buffer.from(''), mod_revision: res.header.revision }, deleted: true }]);
    } catch (err) {
      // The reconcile removes it later: a reservation of ours with no row and nothing in flight.
      this.log.warn({ err, container: name }, 'fleet: releasing a failed create\'s name failed; the publisher retries');
    }
  }

  async claimRoute(hostname: string, container: string): Promise<void> {
    // A certificate of another tenant (on any host) that covers the name would be served for it there.
    const cert = [...this.cache.view.certs].find(([d, c]) => c.value.container !== container && coveredBy(d, hostname));
    if (cert) throw fail('PROXY_HOSTNAME_TAKEN', `${hostname} (another tenant's certificate ${cert[0]} on host ${cert[1].value.host} covers it)`);
    const key = this.keys.route(hostname);
    const value = JSON.stringify({ host: this.host, container } satisfies RouteRecord);
    const { strict } = this.clients;
    const res = await within(CALL_MS, 'route claim', strict.if(key, 'Create', '==', 0).then(strict.put(key).value(value)).else(strict.get(key)).commit());
    if (res.succeeded) return this.learn(key, value, res.header.revision);
    const kv = res.responses[0]?.response_range?.kvs[0];
    const have = kv ? parseValue<RouteRecord>(kv.value) : null;
    // Ours already (another container of this host, or a reconcile's leftover): SQLite decides, the reconcile follows.
    if (!have || have.host === this.host) return;
    throw fail('PROXY_HOSTNAME_TAKEN', `${hostname} (on host ${have.host})`);
  }

  checkCert(domain: string, container: string): void {
    const view = this.cache.view;
    const other = (c: string) => c !== container;
    const route = view.routes.get(domain)?.value;
    const cert = view.certs.get(domain)?.value;
    // Another tenant's name, here or on another host: as if it did not exist (as on one host).
    if ((route && other(route.container)) || (cert && other(cert.container))) throw fail('CERT_UNKNOWN', domain);
    if (!domain.startsWith('*.')) return;
    for (const [hostname, r] of view.routes) if (other(r.value.container) && coveredBy(domain, hostname)) throw fail('CERT_WILDCARD_CONFLICT', domain, hostname);
  }

  /** Our own acknowledged write goes into the cache at once (the watch brings the same revision later). */
  private learn(key: string, value: string, revision: string): void {
    this.cache.apply([{ kv: { key: Buffer.from(key), value: Buffer.from(value), mod_revision: revision }, deleted: false }]);
  }

  private async reconcile(): Promise<void> {
    if (!this.cache.status.synced) {
      // Without a first list we cannot tell missing from unknown: again shortly, not only at the next period.
      if (!this.closed) setTimeout(() => void this.nudge(), 200).unref();
      return;
    }
    const view = this.cache.view;
    const { strict } = this.clients;
    const rows = new Map(this.store.list().map((r) => [r.name, r]));
    const ops: { key: string; value: string | null; rev: number }[] = []; // rev 0: must not exist yet
    const wantedTokens = new Map<string, TokenRecord>();
    for (const row of rows.values()) {
      if (row.phase !== 'ready' || this.held.has(row.name)) continue;
      const want: NameRecord = { host: this.host, id: row.id, state: 'ready' };
      const have = view.names.get(row.name);
      if (have && have.value.host !== this.host) {
        if (!this.conflicts.has(row.name)) this.log.error({ container: row.name, owner: have.value.host }, 'fleet: another host holds the name of a container of this host; not overwritten');
        this.conflicts.add(row.name);
        continue;
      }
      this.conflicts.delete(row.name);
      if (!have || have.value.id !== want.id || have.value.state !== want.state)
        ops.push({ key: this.keys.name(row.name), value: JSON.stringify(want), rev: have?.rev ?? 0 });
      for (const t of this.store.activeTokens(row.name)) wantedTokens.set(t.hash, { host: this.host, container: row.name, user: t.user });
    }
    for (const [hash, want] of wantedTokens) {
      const have = view.tokens.get(hash);
      if (!have || have.value.container !== want.container || have.value.host !== want.host || have.value.user !== want.user)
        ops.push({ key: this.keys.token(hash), value: JSON.stringify(want), rev: have?.rev ?? 0 });
    }
    const wantedRoutes = new Map<string, RouteRecord>();
    const publishable = (c: string) => rows.get(c)?.phase === 'ready' && !this.held.has(c) && !this.conflicts.has(c);
    for (const r of this.routes()) if (publishable(r.container)) wantedRoutes.set(r.hostname, { host: this.host, container: r.container });
    for (const [hostname, want] of wantedRoutes) {
      const have = view.routes.get(hostname);
      // Another host's route of that name is not overwritten (the first publisher holds it).
      if (have && have.value.host !== this.host) continue;
      if (!have || have.value.container !== want.container) ops.push({ key: this.keys.route(hostname), value: JSON.stringify(want), rev: have?.rev ?? 0 });
    }
    for (const [hostname, e] of view.routes) {
      if (e.value.host === this.host && !wantedRoutes.has(hostname) && !this.held.has(e.value.container)) ops.push({ key: this.keys.route(hostname), value: null, rev: e.rev });
    }
    const wantedCerts = new Map<string, CertRecord>();
    for (const c of this.certs()) if (publishable(c.container)) wantedCerts.set(c.domain, { host: this.host, container: c.container, fingerprint: c.fingerprint });
    for (const [domain, want] of wantedCerts) {
      const have = view.certs.get(domain);
      if (have && have.value.host !== this.host) continue; // the first holder keeps it, as with routes
      if (!have || have.value.container !== want.container || have.value.fingerprint !== want.fingerprint)
        ops.push({ key: this.keys.cert(domain), value: JSON.stringify(want), rev: have?.rev ?? 0 });
    }
    for (const [domain, e] of view.certs) {
      if (e.value.host === this.host && !wantedCerts.has(domain) && !this.held.has(e.value.container)) ops.push({ key: this.keys.cert(domain), value: null, rev: e.rev });
    }
    for (const [name, e] of view.names) {
      const row = rows.get(name);
      const ours = e.value.host === this.host;
      // A reservation stays while its create runs (busy) or its row exists; a deleted or deleting container goes.
      if (ours && !this.busy.has(name) && !this.held.has(name) && (!row || row.phase === 'deleting')) ops.push({ key: this.keys.name(name), value: null, rev: e.rev });
    }
    for (const [hash, e] of view.tokens) {
      if (e.value.host === this.host && !wantedTokens.has(hash) && !this.held.has(e.value.container)) ops.push({ key: this.keys.token(hash), value: null, rev: e.rev });
    }
    for (const op of ops) {
      if (this.closed) return;
      const cmp = op.rev ? strict.if(op.key, 'Mod', '==', op.rev) : strict.if(op.key, 'Create', '==', 0);
      const res = await within(CALL_MS, 'directory publish', cmp.then(op.value === null ? strict.delete().key(op.key) : strict.put(op.key).value(op.value)).commit());
      // A lost compare: the cache was behind; the next round (after the watch or a re-list) sees the new value.
      if (!res.succeeded) continue;
      this.cache.apply([{ kv: { key: Buffer.from(op.key), value: Buffer.from(op.value ?? ''), mod_revision: res.header.revision }, deleted: op.value === null }]);
    }
    if (ops.length) this.log.debug({ writes: ops.length }, 'fleet directory: published');
    this.lastError = null;
  }
}
