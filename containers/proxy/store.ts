import type { Database } from 'better-sqlite3';
import { type Raw, rowReader } from '../rows.js';
import { sql } from '../statements.js';

export interface RouteRow {
  hostname: string;
  container: string;
  port: number;
  httpsRedirect: boolean;
  createdAt: string;
}

export interface CertRow {
  domain: string;
  container: string;
  cert: string;
  key: string;
  chain: string;
  fingerprint: string;
  notAfter: string;
  updatedAt: string;
}

const route = rowReader<RouteRow>({ hostname: 'text', container: 'text', port: 'number', httpsRedirect: 'flag', createdAt: 'text' });
const cert = rowReader<CertRow>({
  domain: 'text',
  container: 'text',
  cert: 'text',
  key: 'text',
  chain: 'text',
  fingerprint: 'text',
  notAfter: 'text',
  updatedAt: 'text',
});

/** Proxy routes and certificates in the state database. */
export class ProxyStore {
  constructor(readonly db: Database) {}

  routes(): RouteRow[] {
    return (sql(this.db, 'SELECT * FROM proxy_routes ORDER BY hostname').all() as Raw[]).map(route);
  }
  route(hostname: string): RouteRow | undefined {
    const r = sql(this.db, 'SELECT * FROM proxy_routes WHERE hostname = ?').get(hostname) as Raw | undefined;
    return r && route(r);
  }
  upsertRoute(r: RouteRow): void {
    sql(this.db,
        `INSERT INTO proxy_routes (hostname, container, port, https_redirect, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(hostname) DO UPDATE SET port = excluded.port, https_redirect = excluded.https_redirect`,
      )
      .run(r.hostname, r.container, r.port, r.httpsRedirect ? 1 : 0, r.createdAt);
  }
  countRoutes(container: string): number {
    return (sql(this.db, 'SELECT count(*) AS n FROM proxy_routes WHERE container = ?').get(container) as { n: number }).n;
  }
  countCerts(container: string): number {
    return (sql(this.db, 'SELECT count(*) AS n FROM proxy_certs WHERE container = ?').get(container) as { n: number }).n;
  }
  deleteRoute(hostname: string): void {
    sql(this.db, 'DELETE FROM proxy_routes WHERE hostname = ?').run(hostname);
  }
  certs(): CertRow[] {
    return (sql(this.db, 'SELECT * FROM proxy_certs ORDER BY domain').all() as Raw[]).map(cert);
  }
  cert(domain: string): CertRow | undefined {
    const r = sql(this.db, 'SELECT * FROM proxy_certs WHERE domain = ?').get(domain) as Raw | undefined;
    return r && cert(r);
  }
  upsertCert(c: CertRow): void {
    sql(this.db,
        `INSERT INTO proxy_certs (domain, container, cert, key, chain, fingerprint, not_after, updated_at)
         VALUES (@domain, @container, @cert, @key, @chain, @fingerprint, @notAfter, @updatedAt)
         ON CONFLICT(domain) DO UPDATE SET cert = excluded.cert, key = excluded.key, chain = excluded.chain,
           fingerprint = excluded.fingerprint, not_after = excluded.not_after, updated_at = excluded.updated_at`,
      )
      .run(c);
  }
  /** issue 10.4: a certificate whose name the container's grants no longer cover. */
  deleteCert(domain: string): void {
    sql(this.db, 'DELETE FROM proxy_certs WHERE domain = ?').run(domain);
  }
}
