import { networkInterfaces } from 'node:os';
import { applyNetnsRules } from '../host/netns.js';
import type { ContainerContext, NamespaceHooks, SpecExtras } from './context.js';
import type { ContainerRow } from './store.js';
import { SERVICES } from './tls/sni.js';

export interface PublicPorts {
  http: number;
  https: number;
}

/** The host's own IPv4 addresses (besides loopback): a container reaches none but hoody's public ports. */
function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((a) => a && a.family === 'IPv4' && !a.internal)
    .map((a) => a!.address);
}

/** The service hostnames of one container: cron.<ctr>.<domain>, exec…, api…, and the token-only ones. */
export function serviceHostnames(domain: string, name: string): string[] {
  return [...SERVICES.map((s) => `${s}.${name}.${domain}`), ...SERVICES.map((s) => `${s}.${domain}`)];
}

/**
 * Makes each container reach its own service hostnames on the host: /etc/hosts entries (host-gateway),
 * the host CA in its trust bundle, and loopback redirects for `*.localhost` names that curl never
 * looks up. Applied at create and again on every start (the network namespace is new each time).
 */
export class ServiceNetwork implements NamespaceHooks {
  constructor(
    private readonly ctx: () => ContainerContext,
    private readonly domain: string,
    private readonly ports: () => PublicPorts,
    private readonly caBundle: string,
    private readonly caCert: string,
    /** false: the operator opted out of the egress policy (HOODY_CONTAINER_EGRESS=open). */
    private readonly restrictEgress = true,
  ) {}

  extras(name: string): SpecExtras {
    return {
      extraHosts: serviceHostnames(this.domain, name).map((h) => `${h}:host-gateway`),
      binds: [`${this.caBundle}:/etc/ssl/certs/ca-certificates.crt:ro`, `${this.caCert}:/usr/local/share/ca-certificates/hoody-ca.crt:ro`],
      env: [`HOODY_DOMAIN=${this.domain}`, 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'],
    };
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
    const egress = this.restrictEgress
      ? {
          hostAddresses: [...new Set([live.gateway, ...hostAddresses()])],
          allowedHostPorts: [http, https],
          blockedNetworks: [...(live.subnet ? [live.subnet] : []), '169.254.0.0/16'],
        }
      : null;
    await applyNetnsRules(live.pid, { redirects, egress });
  }

  async open(row: ContainerRow): Promise<void> {
    await this.apply(row);
  }
  async close(): Promise<void> {}
  async started(row: ContainerRow): Promise<void> {
    await this.apply(row);
  }
}
