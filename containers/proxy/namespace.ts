import { connect } from 'node:tls';
import type Database from 'better-sqlite3';
import type { ContainerContext, NamespaceHooks } from '../context.js';
import type { ContainerRow } from '../store.js';
import { ownHostNames } from '../../host/names.js';
import { GrantStore } from '../grants.js';
import { NameClaims } from './claims.js';
import { ProxyForwarder } from './forward.js';
import type { DataPlane } from './plane.js';
import { type ProxyLimits, ProxyService } from './service.js';
import { ProxyStore } from './store.js';
import { DEFAULT_UPSTREAM_LIMITS, type UpstreamLimits } from './upstream.js';

/** The fingerprint a fresh TLS handshake with our own listener returns for an SNI name. */
export function probeFingerprint(port: number, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.end();
      resolve(fp);
    });
    s.setTimeout(2000, () => s.destroy(new Error('handshake timed out')));
    s.on('error', reject);
  });
}

/** The proxy namespace of every container: service + forwarder + lifecycle hooks. */
export class ProxyNamespace implements NamespaceHooks {
  readonly service: ProxyService;
  readonly forwarder: ProxyForwarder;
  /** Reserved names and grants: routes, bundles and ACME orders all check here (issue 10.4). */
  readonly claims: NameClaims;
  private readonly plane: () => DataPlane | undefined;
  /** A running container's address on its network (null: not running). */
  readonly address: (container: string) => Promise<string | null>;

  constructor(
    db: Database.Database,
    ctx: ContainerContext,
    domain: string,
    httpsPort: () => number,
    opts: { hostNames?: () => ReadonlySet<string>; limits?: ProxyLimits; upstream?: UpstreamLimits; plane?: () => DataPlane | undefined } = {},
  ) {
    const { hostNames = () => ownHostNames(), limits, upstream = DEFAULT_UPSTREAM_LIMITS, plane = () => undefined } = opts;
    this.plane = plane;
    this.claims = new NameClaims(domain, hostNames, new GrantStore(db));
    this.service = new ProxyService({
      claims: this.claims,
      limits,
      store: new ProxyStore(db),
      containers: ctx,
      domain,
      log: ctx.log.child({ ns: 'proxy' }),
      probe: (name) => probeFingerprint(httpsPort(), name),
      // No data plane yet (startup, or the in-process one): the tables here are all there is.
      publish: async (table) => plane()?.publish(table),
    });
    this.address = async (container) => {
      const row = ctx.store.get(container);
      if (!row?.engineId) return null;
      const live = await ctx.engine.inspect(row.engineId);
      return live?.running && live.ip ? live.ip : null;
    };
    this.forwarder = new ProxyForwarder(this.service, this.address, upstream);
    this.service.load();
  }

  /** A new container has no routes; a moved one brings its own (rows already in SQLite). */
  async open(row: ContainerRow): Promise<void> {
    await this.service.adopt(row.name);
  }
  async close(row: ContainerRow): Promise<void> {
    await this.service.forget(row.name);
    this.forwarder.invalidate(row.name);
  }
  async started(row: ContainerRow): Promise<void> {
    this.forwarder.invalidate(row.name);
    this.plane()?.invalidate(row.name);
  }
}
