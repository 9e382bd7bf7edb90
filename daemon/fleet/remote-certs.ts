import type { Logger } from 'pino';
import { coveredBy, type PlaneCert } from '../../containers/proxy/plane.js';
import type { DirectoryView } from './directory.js';
import { callHost, type FleetPeers } from './remote.js';

/**
 * Other hosts' tenants' certificates on this host (issue 12.4, routed names over HTTPS from any host): the
 * directory says which domain's certificate which host holds (by fingerprint, never the key); each one this host
 * does not have yet is fetched from its holder over the signed hop and handed to the data plane whole. A holder that
 * does not answer is asked again at the next directory change or re-list.
 */
export class RemoteCerts {
  #held = new Map<string, PlaneCert>();
  #running: Promise<void> | null = null;
  #again = false;
  #warned = new Set<string>();

  constructor(
    private readonly peers: FleetPeers,
    private readonly view: () => DirectoryView | null,
    /** Hands the whole set to the data plane; throws when it refuses (the old set stays). */
    private readonly apply: (certs: readonly PlaneCert[]) => Promise<void>,
    private readonly log: Logger,
  ) {}

  /** Runs a sync now (or once more after the one running). */
  sync(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = (async () => {
      do {
        this.#again = false;
        await this.once().catch((err: unknown) => this.log.warn({ err }, 'fleet: other hosts\' certificates not updated; retrying at the next change'));
      } while (this.#again);
      this.#running = null;
    })();
  }

  /** Stops serving other hosts' certificates (this host left the fleet). */
  async clear(): Promise<void> {
    if (this.#held.size === 0) return;
    this.#held = new Map();
    await this.apply([]);
  }

  private async once(): Promise<void> {
    const view = this.view();
    if (!view) return;
    const next = new Map<string, PlaneCert>();
    for (const [domain, e] of view.certs) {
      if (e.value.host === this.peers.self) continue;
      // Never served for a name another tenant routes (a bundle put before that route was, or a race of two hosts).
      const clash = [...view.routes].find(([hostname, r]) => r.value.container !== e.value.container && coveredBy(domain, hostname));
      if (clash) {
        if (this.#warned.has(`${domain} ${e.value.fingerprint}`)) continue;
        this.#warned.add(`${domain} ${e.value.fingerprint}`);
        this.log.warn({ domain, container: e.value.container, route: clash[0], routedBy: clash[1].value.container }, 'fleet: a certificate covers another tenant\'s routed name; not served here');
        continue;
      }
      const have = this.#held.get(domain);
      if (have?.fingerprint === e.value.fingerprint) {
        next.set(domain, have);
        continue;
      }
      const owner = this.peers.hostOwner(e.value.host);
      if (!owner.up) continue;
      try {
        const a = await callHost<PlaneCert>(this.peers, e.value.host, 'GET', `/v1/fleet/certs/${encodeURIComponent(domain)}`, undefined, 5_000);
        // Between a renewal and its publication the holder may have a newer one: taken at the next change.
        if (a.status === 200 && a.body.domain === domain && a.body.fingerprint === e.value.fingerprint) next.set(domain, { ...a.body, container: e.value.container });
        else {
          this.log.warn({ domain, holder: e.value.host, status: a.status }, 'fleet: the holder did not hand out the certificate the directory names');
          if (have) next.set(domain, have);
        }
      } catch (err) {
        this.log.debug({ err, domain, holder: e.value.host }, 'fleet: fetching a certificate failed');
        if (have) next.set(domain, have);
      }
    }
    const same = next.size === this.#held.size && [...next].every(([d, c]) => this.#held.get(d)?.fingerprint === c.fingerprint);
    if (same) return;
    await this.apply([...next.values()]);
    this.#held = next;
    this.log.info({ certs: next.size }, 'fleet: serving other hosts\' tenants\' certificates');
  }
}
