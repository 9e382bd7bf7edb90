/**
 * The data plane: what serves tenants' routed hostnames (HTTP, TLS, websockets). The proxy namespace keeps the
 * tables and their rules; a data plane is handed the whole table after every change and serves exactly that.
 */

export interface PlaneRoute {
  hostname: string;
  container: string;
  port: number;
  httpsRedirect: boolean;
}

export interface PlaneCert {
  domain: string;
  container: string;
  /** Certificate, chain and key, PEM. */
  pem: string;
  fingerprint: string;
}

export interface PlaneTable {
  routes: readonly PlaneRoute[];
  certs: readonly PlaneCert[];
}

export interface DataPlane {
  readonly kind: 'haproxy' | 'node';
  /** Serves this table from now on, whole; on failure the old one keeps being served and this throws. */
  publish(table: PlaneTable): Promise<void>;
  /** A container (re)started: its address may have changed. */
  invalidate(container: string): void;
  close(): Promise<void>;
}

/** One line of the SNI table: serve `cert` for `sni` (a name or `*.parent`). */
export interface SniEntry {
  sni: string;
  /** A tenant's certificate (by domain), or null: the host's default certificate. */
  certDomain: string | null;
}

/** The parent a TLS wildcard `*.<parent>` would match a hostname under (one label up). */
export function parentOf(name: string): string | null {
  const dot = name.indexOf('.');
  return dot > 0 ? name.slice(dot + 1) : null;
}

/** A certificate's domain covers a hostname: the same name, or `*.<parent>` over one label of it. */
export function coveredBy(domain: string, hostname: string): boolean {
  return domain === hostname || (domain.startsWith('*.') && parentOf(hostname) === domain.slice(2));
}

/**
 * Pure: which certificate each SNI name gets. A data plane picks an exact name before a wildcard; a routed
 * hostname must never be answered with another container's certificate (its wildcard, say), so such a
 * hostname gets an exact entry for the host's default certificate instead.
 */
export function sniTable(table: PlaneTable): SniEntry[] {
  const certs = new Map(table.certs.map((c) => [c.domain, c]));
  const entries: SniEntry[] = table.certs.map((c) => ({ sni: c.domain, certDomain: c.domain }));
  for (const r of table.routes) {
    const exact = certs.get(r.hostname);
    if (exact) {
      if (exact.container !== r.container) entries.splice(entries.findIndex((e) => e.sni === r.hostname), 1, { sni: r.hostname, certDomain: null });
      continue;
    }
    const parent = parentOf(r.hostname);
    const wild = parent ? certs.get(`*.${parent}`) : undefined;
    if (wild && wild.container !== r.container) entries.push({ sni: r.hostname, certDomain: null });
  }
  return entries;
}
