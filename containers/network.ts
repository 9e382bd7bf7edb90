import { applyNetnsRules, ROUTE_LOCALNET } from '../host/netns.js';
import type { ContainerContext, NamespaceHooks, SpecExtras } from './context.js';
import type { ContainerRow } from './store.js';
import { SERVICES } from './tls/sni.js';

export interface PublicPorts {
  http: number;
  https: number;
}

/** IPv6 off in every container from its first instruction: nothing v6 can leave, whatever the engine's defaults. */
export const NO_IPV6 = { 'net.ipv6.conf.all.disable_ipv6': '1', 'net.ipv6.conf.default.disable_ipv6': '1' } as const;

/** The service hostnames of one container: cron.<ctr>.<domain>, exec…, api…, and the token-only ones. */
export function serviceHostnames(domain: string, name: string): string[] {
  return [...SERVICES.map((s) => `${s}.${name}.${domain}`), ...SERVICES.map((s) => `${s}.${domain}`)];
}

/**
 * Makes each container reach its own service hostnames on the host: /etc/hosts entries (host-gateway),
 * the host CA in its trust bundle, and loopback redirects for `*.localhost` names that curl never
 * looks up. Applied at create and again on every start (the network namespace is new each time).
 * The egress policy itself is the network the container is created on (host/egress.ts).
 */
export class ServiceNetwork implements NamespaceHooks {
  constructor(
    private readonly ctx: () => ContainerContext,
    private readonly domain: string,
    private readonly ports: () => PublicPorts,
    private readonly caBundle: string,
    private readonly caCert: string,
    /** The daemon's egress-filtered network; null: the operator opted out (HOODY_CONTAINER_EGRESS=open). */
    private readonly egressNetwork: string | null = null,
  ) {}

  extras(name: string): SpecExtras {
    return {
      extraHosts: serviceHostnames(this.domain, name).map((h) => `${h}:host-gateway`),
      binds: [`${this.caBundle}:/etc/ssl/certs/ca-certificates.crt:ro`, `${this.caCert}:/usr/local/share/ca-certificates/hoody-ca.crt:ro`],
      env: [`HOODY_DOMAIN=${this.domain}`, 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'],
      // route_localnet from the engine at each start: one program fewer per create and start in apply().
      ...(this.egressNetwork ? { network: this.egressNetwork, sysctls: { ...NO_IPV6, [ROUTE_LOCALNET]: '1' } } : { sysctls: { [ROUTE_LOCALNET]: '1' } }),
    };
  }

  /**
   * A container made before the egress network existed (on the engine's default bridge) is moved onto it,
   * and back when the operator opted out; the engine keeps the attachment across restarts. Its IPv6 setting
   * cannot change after create: the bridge's ip6tables chains hold for it instead.
   */
  async migrate(row: ContainerRow): Promise<void> {
    if (!row.engineId) return;
    await this.ctx().engine.moveToNetwork(row.engineId, this.egressNetwork ?? 'bridge');
  }

  async apply(row: ContainerRow): Promise<void> {
    const ctx = this.ctx();
    if (!row.engineId) return;
    const live = await ctx.engine.inspect(row.engineId);
    if (!live?.running || !live.pid || !live.gateway) return;
    const { http, https } = this.ports();
    const redirects = [
      { fromPort: 80, toHost: live.gateway, toPort: http },
      { fromPort: 443, toHost: live.gateway, toPort: https },
    ];
    if (http !== 80) redirects.push({ fromPort: http, toHost: live.gateway, toPort: http });
    if (https !== 443) redirects.push({ fromPort: https, toHost: live.gateway, toPort: https });
    await applyNetnsRules(live.pid, redirects, live.sysctls[ROUTE_LOCALNET] === '1'); // older containers: set here
  }

  async open(row: ContainerRow): Promise<void> {
    await this.apply(row);
  }
  async close(): Promise<void> {}
  async started(row: ContainerRow): Promise<void> {
    await this.apply(row);
  }
}
