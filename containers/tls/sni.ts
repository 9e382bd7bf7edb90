import { createSecureContext, type SecureContext } from 'node:tls';
import type { HostCa } from './ca.js';

export type ServiceName = 'cron' | 'exec' | 'api';
export const SERVICES: readonly ServiceName[] = ['cron', 'exec', 'api'];

/** Where a hostname points within hoody's own domain. */
export type HostTarget =
  | { kind: 'container-service'; service: ServiceName; container: string }
  | { kind: 'token-service'; service: ServiceName }
  | { kind: 'other' };

/** Parses `<svc>.<ctr>.<domain>` and `<svc>.<domain>`; anything else is 'other' (proxy routes, IPs…). */
export function parseHost(hostHeader: string | undefined, domain: string): HostTarget {
  if (!hostHeader) return { kind: 'other' };
  const host = hostHeader.toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
  if (!host.endsWith(`.${domain}`)) return { kind: 'other' };
  const labels = host.slice(0, -(domain.length + 1)).split('.');
  const service = labels[0] as ServiceName;
  if (!SERVICES.includes(service)) return { kind: 'other' };
  if (labels.length === 1) return { kind: 'token-service', service };
  if (labels.length === 2 && labels[1]) return { kind: 'container-service', service, container: labels[1] };
  return { kind: 'other' };
}

/**
 * SNI for the public HTTPS listener: certificates of the service hostnames, issued by the host CA on first
 * use and cached per container. The daemon asks here first: a service hostname always gets the host CA's
 * certificate, whatever a tenant installed; only names outside hoody's domain reach the proxy's bundles.
 */
export class ServiceCertificates {
  readonly #cache = new Map<string, Promise<SecureContext>>();
  #default: Promise<SecureContext> | undefined;

  constructor(
    private readonly ca: HostCa,
    readonly domain: string,
    /**
     * Whether a container of that name exists. Its certificate is kept for as long as it lives. Any other name
     * gets one too (a handshake must not tell which containers exist), but an SNI name costs a client nothing
     * to send, so those are kept in a small LRU, never one per name ever asked for.
     */
    private readonly exists: (container: string) => boolean = () => true,
    private readonly transientMax = 256,
  ) {}

  readonly #transient = new Map<string, Promise<SecureContext>>();

  private make(names: string[]): Promise<SecureContext> {
    return this.ca.issue(names).then((pem) => createSecureContext({ cert: `${pem.cert.trimEnd()}\n${this.ca.certPem.trimEnd()}\n`, key: pem.key }));
  }

  /** The context for `*.<domain>` and `<domain>`: served for token-only hosts and when SNI is absent. */
  defaultContext(): Promise<SecureContext> {
    this.#default ??= this.make([`*.${this.domain}`, this.domain]);
    return this.#default;
  }

  forContainer(container: string): Promise<SecureContext> {
    if (!this.exists(container)) return this.forUnknown(container);
    this.#transient.delete(container);
    let ctx = this.#cache.get(container);
    if (!ctx) {
      ctx = this.make([`*.${container}.${this.domain}`]);
      ctx.catch(() => this.#cache.delete(container));
      this.#cache.set(container, ctx);
    }
    return ctx;
  }

  private forUnknown(container: string): Promise<SecureContext> {
    let ctx = this.#transient.get(container);
    if (ctx) this.#transient.delete(container); // re-inserted below: most recently used last
    else {
      ctx = this.make([`*.${container}.${this.domain}`]);
      ctx.catch(() => this.#transient.delete(container));
    }
    this.#transient.set(container, ctx);
    for (const oldest of this.#transient.keys()) {
      if (this.#transient.size <= this.transientMax) break;
      this.#transient.delete(oldest);
    }
    return ctx;
  }

  forget(container: string): void {
    this.#cache.delete(container);
  }

  /** How many certificates are held (known containers, other names). */
  get size(): { known: number; transient: number } {
    return { known: this.#cache.size, transient: this.#transient.size };
  }

  /** The context for an SNI name inside hoody's domain, or null for names outside it. */
  async contextFor(servername: string): Promise<SecureContext | null> {
    const target = parseHost(servername, this.domain);
    if (target.kind === 'container-service') return this.forContainer(target.container);
    if (target.kind === 'token-service' || servername === this.domain) return this.defaultContext();
    return null;
  }
}
