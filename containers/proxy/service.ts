import type { SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { ContainerContext } from '../context.js';
import { fail } from '../errors.js';
import { parseHost } from '../tls/sni.js';
import { normalizeBundle, validateBundle } from './bundle.js';
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
  context: SecureContext;
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

const HOSTNAME_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/;

export interface ProxyDeps {
  store: ProxyStore;
  containers: ContainerContext;
  domain: string;
  log: Logger;
  /** Fingerprint (sha256, colon hex) served by a fresh handshake for this SNI name on our own listener. */
  probe(servername: string): Promise<string>;
  /** Per-container caps (default 50 routes, 50 certificates). */
  limits?: ProxyLimits;
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

  constructor(private readonly deps: ProxyDeps) {}

  /** Loads both tables from the database (startup: certificates are served again, no ACME order needed). */
  load(): void {
    this.#routes = buildRoutes(this.deps.store.routes());
    const certs = new Map<string, CertEntry>();
    for (const row of this.deps.store.certs()) {
      try {
        const v = validateBundle({ domain: row.domain, cert: row.cert, key: row.key, chain: row.chain });
        certs.set(row.domain, { domain: row.domain, container: row.container, context: v.context, fingerprint: v.fingerprint, notAfter: v.notAfter });
      } catch (err) {
        this.deps.log.warn({ err, domain: row.domain }, 'stored certificate no longer valid; not served');
      }
    }
    this.#certs = certs;
  }

  upstream(hostname: string): Upstream | undefined {
    return this.#routes.get(hostname);
  }

  /** SNI: an explicit certificate for this exact name (or its parent's wildcard), if any. */
  context(servername: string): SecureContext | undefined {
    const name = servername.toLowerCase();
    const exact = this.#certs.get(name);
    if (exact) return exact.context;
    const dot = name.indexOf('.');
    return dot > 0 ? this.#certs.get(`*${name.slice(dot)}`)?.context : undefined;
  }

  /** Whether a hostname is routed to this container (ACME orders are limited to those). */
  ownsHostname(container: string, hostname: string): boolean {
    return this.#routes.get(hostname.toLowerCase())?.container === container;
  }

  private checkHostname(hostname: string): string {
    const h = hostname.toLowerCase();
    if (!HOSTNAME_RE.test(h)) throw fail('PROXY_HOSTNAME_INVALID', hostname);
    // Service hostnames belong to hoody itself.
    if (h === this.deps.domain || parseHost(h, this.deps.domain).kind !== 'other') throw fail('PROXY_HOSTNAME_INVALID', hostname);
    return h;
  }

  listRoutes(container: string): RouteView[] {
    return this.deps.store
      .routes()
      .filter((r) => r.container === container)
      .map((r) => ({ hostname: r.hostname, port: r.port, https_redirect: r.httpsRedirect, created_at: r.createdAt }));
  }

  putRoute(container: string, hostname: string, body: { port: number; https_redirect?: boolean }): RouteView {
    const h = this.checkHostname(hostname);
    if (!Number.isInteger(body.port) || body.port < 1 || body.port > 65535) throw fail('PROXY_PORT_INVALID', String(body.port));
    const existing = this.deps.store.route(h);
    if (existing && existing.container !== container) throw fail('PROXY_HOSTNAME_TAKEN', h);
    const certOwner = this.deps.store.cert(h)?.container;
    if (certOwner && certOwner !== container) throw fail('PROXY_HOSTNAME_TAKEN', h);
    const maxRoutes = this.deps.limits?.routes ?? 50;
    if (!existing && this.deps.store.countRoutes(container) >= maxRoutes) throw fail('PROXY_ROUTE_LIMIT', maxRoutes);
    const row: RouteRow = { hostname: h, container, port: body.port, httpsRedirect: body.https_redirect ?? false, createdAt: existing?.createdAt ?? new Date().toISOString() };
    const next = buildRoutes([...this.deps.store.routes().filter((r) => r.hostname !== h), row]);
    this.deps.store.upsertRoute(row);
    this.#routes = next;
    return { hostname: h, port: row.port, https_redirect: row.httpsRedirect, created_at: row.createdAt };
  }

  deleteRoute(container: string, hostname: string): void {
    const h = hostname.toLowerCase();
    const existing = this.deps.store.route(h);
    if (!existing || existing.container !== container) throw fail('PROXY_ROUTE_UNKNOWN', hostname);
    const next = buildRoutes(this.deps.store.routes().filter((r) => r.hostname !== h));
    this.deps.store.deleteRoute(h);
    this.#routes = next;
  }

  listCerts(container: string): CertView[] {
    return this.deps.store
      .certs()
      .filter((c) => c.container === container)
      .map((c) => ({ domain: c.domain, fingerprint: c.fingerprint, expires: c.notAfter, updated_at: c.updatedAt }));
  }

  /**
   * Validates the bundle (nothing changes on failure), persists it, swaps the certificate table, and returns
   * only once a fresh handshake for the domain serves the new certificate.
   */
  async putCert(container: string, body: { domain?: string; d?: string; cert?: string; key?: string; chain?: string }): Promise<CertView> {
    const bundle = validateBundle(normalizeBundle(body));
    const owner = this.#routes.get(bundle.domain)?.container ?? this.deps.store.cert(bundle.domain)?.container;
    // Another container's domain: answer as if it did not exist.
    if (owner && owner !== container) throw fail('CERT_UNKNOWN', bundle.domain);
    const maxCerts = this.deps.limits?.certs ?? 50;
    if (!this.deps.store.cert(bundle.domain) && this.deps.store.countCerts(container) >= maxCerts) throw fail('CERT_LIMIT', maxCerts);
    const updatedAt = new Date().toISOString();
    const next = new Map(this.#certs);
    next.set(bundle.domain, { domain: bundle.domain, container, context: bundle.context, fingerprint: bundle.fingerprint, notAfter: bundle.notAfter });
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

  /** Drops a deleted container's entries from both tables (rows go by cascade). */
  forget(container: string): void {
    this.#routes = new Map([...this.#routes].filter(([, r]) => r.container !== container));
    this.#certs = new Map([...this.#certs].filter(([, c]) => c.container !== container));
  }
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
