import { createSecureContext, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { ContainerContext } from '../context.js';
import { fail } from '../errors.js';
import { grantCovers, normalizeGrants } from '../grants.js';
import { normalizeBundle, validateBundle } from './bundle.js';
import { canonicalName, type NameClaims } from './claims.js';
import { type PlaneCert, type PlaneTable, parentOf } from './plane.js';
import type { ProxyStore, RouteRow } from './store.js';

export interface Upstream {
  hostname: string;
  container: string;
  port: number;
  httpsRedirect: boolean;
}

interface CertEntry {
  domain: string;
  container: string;
  /** Certificate, chain and key (what a data plane outside the process loads, and the secure context is built from). */
  pem: string;
  fingerprint: string;
  notAfter: string;
}

export interface RouteView {
  hostname: string;
  port: number;
  https_redirect: boolean;
  created_at: string;
}

export interface CertView {
  domain: string;
  fingerprint: string;
  expires: string;
  updated_at: string;
}

/** What changing a container's grants did: the new list and the routes and certificates it no longer covers. */
export interface GrantChange {
  name: string;
  domains: string[];
  dropped: { routes: string[]; certs: string[] };
}

const HOSTNAME_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/;

export interface ProxyDeps {
  store: ProxyStore;
  containers: ContainerContext;
  domain: string;
  log: Logger;
  /** Reserved names and operator grants (issue 10.4): who may claim a hostname or certificate name. */
  claims: NameClaims;
  /** Fingerprint (sha256, colon hex) served by a fresh handshake for this SNI name on our own listener. */
  probe(servername: string): Promise<string>;
  /** Per-container caps (default 50 routes, 50 certificates). */
  limits?: ProxyLimits;
  /**
   * Hands the whole next table to the data plane before anything is stored or swapped here: when the data plane
   * refuses, the change is refused and nothing of it is kept.
   */
  publish?(table: PlaneTable): Promise<void>;
}

export interface ProxyLimits {
  routes: number;
  certs: number;
}

/**
 * The proxy namespace: a routing table (hostname -> container port) and a certificate table (domain ->
 * secure context), each rebuilt from validated rows and swapped whole, so readers see old or new, never a mix.
 */
export class ProxyService {
  #routes: ReadonlyMap<string, Upstream> = new Map();
  #certs: ReadonlyMap<string, CertEntry> = new Map();
  /** Other fleet hosts' tenants' certificates, served here too (their routes forward to them); local ones win. */
  #remote: readonly PlaneCert[] = [];
  // Built on a name's first handshake here, not kept per certificate: ~35 KiB of OpenSSL memory each, never used behind HAProxy.
  readonly #contexts = new WeakMap<CertEntry, SecureContext>();

  constructor(private readonly deps: ProxyDeps) {}

  /**
   * Loads both tables from the database (startup: certificates are served again, no ACME order needed). Rows
   * for names that are reserved now (written before issue 10.4, or the host's names changed) are not served.
   */
  load(): void {
    const { routes, certs } = this.readTables();
    this.#routes = routes;
    this.#certs = certs;
  }

  /**
   * A container whose rows arrived in SQLite from elsewhere (a move from another host): the tables are read again
   * and published whole, then swapped in. A container with no routes and no certificates changes nothing.
   */
  async adopt(container: string): Promise<void> {
    const { routes, certs } = this.readTables();
    const mine = (m: ReadonlyMap<string, { container: string }>) => [...m.values()].filter((e) => e.container === container).length;
    if (mine(routes) + mine(certs) === 0) return;
    await this.publish(routes, certs);
    this.#routes = routes;
    this.#certs = certs;
  }

  private readTables(): { routes: ReadonlyMap<string, Upstream>; certs: Map<string, CertEntry> } {
    const claims = this.deps.claims;
    const routes = this.deps.store.routes().filter((r) => {
      const reserved = claims.isReserved(r.hostname);
      if (reserved) this.deps.log.warn({ hostname: r.hostname, container: r.container }, 'stored route for a reserved name; not served');
      return !reserved;
    });
    const certs = new Map<string, CertEntry>();
    for (const row of this.deps.store.certs()) {
      if (claims.isReserved(row.domain)) {
        this.deps.log.warn({ domain: row.domain, container: row.container }, 'stored certificate for a reserved name; not served');
        continue;
      }
      try {
        const v = validateBundle({ domain: row.domain, cert: row.cert, key: row.key, chain: row.chain });
        certs.set(row.domain, { domain: row.domain, container: row.container, pem: pemOf(v), fingerprint: v.fingerprint, notAfter: v.notAfter });
      } catch (err) {
        this.deps.log.warn({ err, domain: row.domain }, 'stored certificate no longer valid; not served');
      }
    }
    return { routes: buildRoutes(routes), certs };
  }

  /** The table a data plane serves: routes and certificates as they are now. */
  table(): PlaneTable {
    return this.#plane(this.#routes, this.#certs);
  }

  /** What the data plane serves: this host's routes and certificates, and other hosts' certificates. */
  #plane(routes: ReadonlyMap<string, Upstream>, certs: ReadonlyMap<string, CertEntry>, remote = this.#remote): PlaneTable {
    const local = planeTable(routes, certs);
    return { routes: local.routes, certs: [...local.certs, ...remote.filter((c) => !certs.has(c.domain))] };
  }

  /** This host's tenants' certificates, without keys (the fleet directory publishes these). */
  localCerts(): { domain: string; container: string; fingerprint: string }[] {
    return [...this.#certs.values()].map((c) => ({ domain: c.domain, container: c.container, fingerprint: c.fingerprint }));
  }

  /** One of this host's tenants' bundles, for another fleet host to serve (asked over the signed hop only). */
  localBundle(domain: string): PlaneCert | undefined {
    const c = this.#certs.get(domain);
    return c && { domain: c.domain, container: c.container, pem: c.pem, fingerprint: c.fingerprint };
  }

  /** Other hosts' certificates, whole: the data plane takes them first (or refuses: nothing changes). */
  async setRemoteCerts(remote: readonly PlaneCert[]): Promise<void> {
    await this.publish(this.#routes, this.#certs, remote);
    this.#remote = remote;
  }

  /** Every certificate held and when it expires (metrics read this at each scrape: memory only). */
  certificateExpiries(): { domain: string; container: string; notAfter: string }[] {
    return [...this.#certs.values()].map((c) => ({ domain: c.domain, container: c.container, notAfter: c.notAfter }));
  }

  /** The data plane takes the next tables first (it may refuse: then nothing changes), then they are ours. */
  private async publish(routes: ReadonlyMap<string, Upstream>, certs: ReadonlyMap<string, CertEntry>, remote = this.#remote): Promise<void> {
    if (!this.deps.publish) return;
    try {
      await this.deps.publish(this.#plane(routes, certs, remote));
    } catch (err) {
      this.deps.log.error({ err }, 'the data plane refused the new table; the change is not applied');
      throw fail('DATA_PLANE_UNAVAILABLE', (err as Error).message);
    }
  }

  /** The route for a Host (already lowercased, port and trailing dot gone); reserved names never reach a tenant. */
  upstream(hostname: string): Upstream | undefined {
    const up = this.#routes.get(hostname);
    return up && !this.deps.claims.isReserved(hostname) ? up : undefined;
  }

  /**
   * SNI: a certificate for this exact name, else its parent's wildcard, but only one owned by the container
   * that routes the name (when one does). Reserved names (service hostnames, the host's) get none: the host CA's.
   */
  context(servername: string): SecureContext | undefined {
    const name = canonicalName(servername);
    if (this.deps.claims.isReserved(name)) return undefined;
    const owner = this.#routes.get(name)?.container;
    const exact = this.#certs.get(name);
    if (exact && (!owner || exact.container === owner)) return this.#contextOf(exact);
    const parent = parentOf(name);
    const wild = parent ? this.#certs.get(`*.${parent}`) : undefined;
    return wild && (!owner || wild.container === owner) ? this.#contextOf(wild) : undefined;
  }

  /** The entry's secure context, made from its PEM on first use (validateBundle() made one already: it cannot fail). */
  #contextOf(entry: CertEntry): SecureContext {
    let ctx = this.#contexts.get(entry);
    if (!ctx) {
      ctx = createSecureContext({ cert: entry.pem, key: entry.pem });
      this.#contexts.set(entry, ctx);
    }
    return ctx;
  }

  /** Whether a hostname is routed to this container (ACME orders are limited to those). */
  ownsHostname(container: string, hostname: string): boolean {
    return this.#routes.get(canonicalName(hostname))?.container === container;
  }

  /** Reserved first (403), then syntax (400), then the container's grants (403). */
  private checkHostname(container: string, hostname: string): string {
    const h = this.deps.claims.assertNotReserved(hostname);
    if (!HOSTNAME_RE.test(h)) throw fail('PROXY_HOSTNAME_INVALID', hostname);
    this.deps.claims.assertGranted(container, h);
    return h;
  }

  listRoutes(container: string): RouteView[] {
    return this.deps.store
      .routes()
      .filter((r) => r.container === container)
      .map((r) => ({ hostname: r.hostname, port: r.port, https_redirect: r.httpsRedirect, created_at: r.createdAt }));
  }

  async putRoute(container: string, hostname: string, body: { port: number; https_redirect?: boolean }): Promise<RouteView> {
    const h = this.checkHostname(container, hostname);
    if (!Number.isInteger(body.port) || body.port < 1 || body.port > 65535) throw fail('PROXY_PORT_INVALID', String(body.port));
    const existing = this.deps.store.route(h);
    if (existing && existing.container !== container) throw fail('PROXY_HOSTNAME_TAKEN', h);
    const certOwner = this.deps.store.cert(h)?.container;
    if (certOwner && certOwner !== container) throw fail('PROXY_HOSTNAME_TAKEN', h);
    const maxRoutes = this.deps.limits?.routes ?? 50;
    if (!existing && this.deps.store.countRoutes(container) >= maxRoutes) throw fail('PROXY_ROUTE_LIMIT', maxRoutes);
    // In a fleet, a hostname routed on another host is taken too (its HAProxy would otherwise answer for it).
    if (!existing) await this.deps.containers.names?.claimRoute(h, container);
    const row: RouteRow = { hostname: h, container, port: body.port, httpsRedirect: body.https_redirect ?? false, createdAt: existing?.createdAt ?? new Date().toISOString() };
    const kept = this.deps.store.routes().filter((r) => r.hostname !== h && !this.deps.claims.isReserved(r.hostname));
    const next = buildRoutes([...kept, row]);
    await this.publish(next, this.#certs);
    this.deps.store.upsertRoute(row);
    this.#routes = next;
    return { hostname: h, port: row.port, https_redirect: row.httpsRedirect, created_at: row.createdAt };
  }

  async deleteRoute(container: string, hostname: string): Promise<void> {
    const h = canonicalName(hostname);
    const existing = this.deps.store.route(h);
    if (!existing || existing.container !== container) throw fail('PROXY_ROUTE_UNKNOWN', hostname);
    const next = new Map(this.#routes);
    next.delete(h);
    await this.publish(next, this.#certs);
    this.deps.store.deleteRoute(h);
    this.#routes = next;
  }

  listCerts(container: string): CertView[] {
    return this.deps.store
      .certs()
      .filter((c) => c.container === container)
      .map((c) => ({ domain: c.domain, fingerprint: c.fingerprint, expires: c.notAfter, updated_at: c.updatedAt }));
  }

  /** A wildcard never covers a hostname another container routes (409 HOODY_CERT_WILDCARD_CONFLICT). */
  private checkWildcard(container: string, domain: string): void {
    if (!domain.startsWith('*.')) return;
    const parent = domain.slice(2);
    for (const r of this.#routes.values()) {
      if (r.container !== container && parentOf(r.hostname) === parent) throw fail('CERT_WILDCARD_CONFLICT', domain, r.hostname);
    }
  }

  /**
   * Validates the bundle (nothing changes on failure), persists it, swaps the certificate table, and returns
   * only once a fresh handshake for the domain serves the new certificate.
   */
  async putCert(container: string, body: { domain?: string; d?: string; cert?: string; key?: string; chain?: string }): Promise<CertView> {
    const input = normalizeBundle(body);
    const domain = input.domain ? this.deps.claims.assertNotReserved(input.domain) : input.domain;
    const bundle = validateBundle({ ...input, domain });
    this.deps.claims.assertGranted(container, bundle.domain);
    const owner = this.#routes.get(bundle.domain)?.container ?? this.deps.store.cert(bundle.domain)?.container;
    // Another container's domain: answer as if it did not exist.
    if (owner && owner !== container) throw fail('CERT_UNKNOWN', bundle.domain);
    this.checkWildcard(container, bundle.domain);
    this.deps.containers.names?.checkCert(bundle.domain, container); // the same two rules, fleet-wide
    const maxCerts = this.deps.limits?.certs ?? 50;
    if (!this.deps.store.cert(bundle.domain) && this.deps.store.countCerts(container) >= maxCerts) throw fail('CERT_LIMIT', maxCerts);
    const updatedAt = new Date().toISOString();
    const next = new Map(this.#certs);
    next.set(bundle.domain, { domain: bundle.domain, container, pem: pemOf(bundle), fingerprint: bundle.fingerprint, notAfter: bundle.notAfter });
    await this.publish(this.#routes, next);
    this.deps.store.upsertCert({ domain: bundle.domain, container, cert: bundle.cert, key: bundle.key, chain: bundle.chain, fingerprint: bundle.fingerprint, notAfter: bundle.notAfter, updatedAt });
    this.#certs = next;
    await this.confirmServed(bundle.domain, bundle.fingerprint);
    this.deps.log.info({ container, domain: bundle.domain, fingerprint: bundle.fingerprint, expires: bundle.notAfter }, 'certificate swapped');
    return { domain: bundle.domain, fingerprint: bundle.fingerprint, expires: bundle.notAfter, updated_at: updatedAt };
  }

  private async confirmServed(domain: string, fingerprint: string): Promise<void> {
    const probeName = domain.startsWith('*.') ? `hoody-probe${domain.slice(1)}` : domain;
    let seen = '';
    for (let i = 0; i < 20; i++) {
      seen = await this.deps.probe(probeName).catch((err: Error) => `error: ${err.message}`);
      if (seen === fingerprint) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw fail('CERT_NOT_SERVED', `${domain} (handshake gave ${seen})`);
  }

  /** The domains granted to a container (empty: any name that is not reserved). */
  grants(container: string): string[] {
    return this.deps.claims.granted(container);
  }

  /**
   * Replaces a container's grants. Its routes and certificates the new grants do not cover are removed in the
   * same transaction, then both tables are swapped: a revoked name stops being served at once.
   */
  async setGrants(container: string, domains: unknown): Promise<GrantChange> {
    const patterns = normalizeGrants(domains);
    const covered = (name: string) => !patterns.length || patterns.some((g) => grantCovers(g, name));
    const routes = this.deps.store.routes().filter((r) => r.container === container && !covered(r.hostname)).map((r) => r.hostname);
    const certs = this.deps.store.certs().filter((c) => c.container === container && !covered(c.domain)).map((c) => c.domain);
    const nextRoutes = new Map(this.#routes);
    for (const h of routes) nextRoutes.delete(h);
    const nextCerts = new Map(this.#certs);
    for (const d of certs) nextCerts.delete(d);
    if (routes.length || certs.length) await this.publish(nextRoutes, nextCerts);
    this.deps.store.db.transaction(() => {
      this.deps.claims.replaceGrants(container, patterns);
      for (const h of routes) this.deps.store.deleteRoute(h);
      for (const d of certs) this.deps.store.deleteCert(d);
    })();
    this.#routes = nextRoutes;
    this.#certs = nextCerts;
    if (routes.length || certs.length) this.deps.log.info({ container, routes, certs }, 'grants changed: names no longer granted dropped');
    return { name: container, domains: patterns, dropped: { routes, certs } };
  }

  /** Drops a deleted container's entries from both tables (rows go by cascade); the data plane follows. */
  async forget(container: string): Promise<void> {
    this.#routes = new Map([...this.#routes].filter(([, r]) => r.container !== container));
    this.#certs = new Map([...this.#certs].filter(([, c]) => c.container !== container));
    await this.deps.publish?.(this.#plane(this.#routes, this.#certs)).catch((err: unknown) => this.deps.log.error({ err, container }, 'data plane: dropping a deleted container failed'));
  }
}

function pemOf(b: { cert: string; chain?: string | null; key: string }): string {
  return [b.cert, b.chain ?? '', b.key].map((p) => p.trim()).filter(Boolean).join('\n') + '\n';
}

function planeTable(routes: ReadonlyMap<string, Upstream>, certs: ReadonlyMap<string, CertEntry>): PlaneTable {
  return {
    routes: [...routes.values()].map((r) => ({ hostname: r.hostname, container: r.container, port: r.port, httpsRedirect: r.httpsRedirect })),
    certs: [...certs.values()].map((c) => ({ domain: c.domain, container: c.container, pem: c.pem, fingerprint: c.fingerprint })),
  };
}

/** Pure: builds the routing table from rows, refusing duplicates before anything is swapped. */
export function buildRoutes(rows: readonly RouteRow[]): ReadonlyMap<string, Upstream> {
  const table = new Map<string, Upstream>();
  for (const r of rows) {
    if (table.has(r.hostname)) throw fail('PROXY_HOSTNAME_TAKEN', r.hostname);
    table.set(r.hostname, { hostname: r.hostname, container: r.container, port: r.port, httpsRedirect: r.httpsRedirect });
  }
  return table;
}
