import type { Lease } from 'etcd3';
import type { Logger } from 'pino';
import { fail } from '../../containers/errors.js';
import { type EtcdClients, within } from './etcd.js';
import type { FleetKeys, HostRecord } from './keys.js';

export interface MembershipStatus {
  registered: boolean;
  leaseId: string | null;
  lastError: string | null;
  lastRefreshAt: string | null;
}

/**
 * This host's record under a lease: granted, kept alive by the client, and re-put every `refreshMs` with fresh
 * capacity. etcd down, or the lease lost: logged once, retried in the background; hoodyd serves on regardless.
 */
export class Membership {
  private lease: Lease | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private failing = false;
  private queue: Promise<void> = Promise.resolve();
  readonly status: MembershipStatus = { registered: false, leaseId: null, lastError: null, lastRefreshAt: null };

  constructor(
    private readonly clients: EtcdClients,
    private readonly keys: FleetKeys,
    private readonly opts: { host: string; ttlS: number; refreshMs: number },
    private readonly record: () => Promise<HostRecord>,
    private readonly log: Logger,
  ) {}

  start(): void {
    void this.loop();
  }

  /** Re-puts the record now (its key was deleted, e.g. by a wipe of the prefix). */
  nudge(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.loop(), 50);
  }

  /** Puts the record now and waits for etcd's answer (a drain must be in the directory when it returns). */
  async refreshNow(): Promise<void> {
    // No lease yet: the background loop is granting one; a second grant here would race it.
    if (!this.lease || !this.status.leaseId) throw fail('FLEET_UNAVAILABLE', `host ${this.opts.host} is not registered yet (${this.status.lastError ?? 'no lease'})`);
    await this.refresh();
    this.status.lastError = null;
  }

  private async loop(): Promise<void> {
    if (this.closed) return;
    try {
      await this.refresh();
      if (this.failing) this.log.info({ host: this.opts.host }, 'fleet membership registered again');
      this.failing = false;
      this.status.lastError = null;
    } catch (err) {
      this.status.registered = false;
      this.status.lastError = err instanceof Error ? err.message : String(err);
      // One warning per outage, not one per retry.
      if (!this.failing) this.log.warn({ err, host: this.opts.host }, 'fleet membership: etcd unreachable, retrying in the background (this host keeps serving its containers)');
      this.failing = true;
    }
    if (!this.closed) this.timer = setTimeout(() => void this.loop(), this.failing ? Math.min(2000, this.opts.refreshMs) : this.opts.refreshMs);
  }

  /** One put at a time: a refresh that read the old capacity must not land after one that read the new. */
  private refresh(): Promise<void> {
    const next = this.queue.then(() => this.put());
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async put(): Promise<void> {
    if (!this.lease) {
      const lease = this.clients.relaxed.lease(this.opts.ttlS);
      try {
        await within(5000, 'lease grant', lease.grant());
      } catch (err) {
        lease.release();
        throw err;
      }
      lease.on('lost', (err) => {
        this.log.warn({ err, host: this.opts.host }, 'fleet lease lost; registering again');
        if (this.lease === lease) this.lease = null;
        this.status.registered = false;
        this.nudge();
      });
      this.lease = lease;
      this.status.leaseId = await lease.grant();
    }
    const value = JSON.stringify(await this.record());
    await within(5000, 'host record', this.clients.strict.put(this.keys.host(this.opts.host)).value(value).lease(this.status.leaseId!).exec());
    this.status.registered = true;
    this.status.lastRefreshAt = new Date().toISOString();
  }

  /** Stops refreshing; `revoke`: the record goes at once (leave), else it expires with the lease (a stop). */
  async close(revoke: boolean): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const lease = this.lease;
    this.lease = null;
    if (!lease) return;
    if (revoke) await within(3000, 'lease revoke', lease.revoke()).catch((err) => this.log.warn({ err }, 'fleet lease revoke failed; it expires by itself'));
    else lease.release();
  }
}
