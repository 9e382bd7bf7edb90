import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import { type EtcdClients, within } from './etcd.js';
import type { FleetKeys } from './keys.js';

const HOP_HEADER = 'x-hoody-hop';
const CLIENT_HEADER = 'x-hoody-client';
/** A signature older (or newer) than this is refused: hosts' clocks must agree within it. */
const SKEW_MS = 60_000;

/**
 * The host-to-host hop's authentication: every forwarded request carries an HMAC (fleet secret) over who sends it,
 * when, and the method, host, URL and client address it speaks for. The hop runs over TLS checked against the
 * owner's published CA, so a signature is never seen on the wire; the time bound limits what a leaked one is worth.
 * The secret is made once per fleet by the first host (create-if-absent) and read by the others: whoever can read
 * the fleet's etcd prefix can already redirect every name, so etcd is the trust root either way.
 */
export class HopAuth {
  private secret: Buffer | null = null;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly host: string,
    private readonly clients: EtcdClients,
    private readonly keys: FleetKeys,
    private readonly log: Logger,
  ) {}

  get ready(): boolean {
    return this.secret !== null;
  }

  /** Reads (or makes) the fleet secret in the background, retrying until etcd answers. */
  start(): void {
    void this.fetch();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /**
   * Takes the fleet's secret (or makes it), then checks every 10 s that etcd still holds one: after a wipe of the
   * prefix every host puts back the one it has (all the same, so whoever wins the create-if-absent, nothing changes).
   */
  private async fetch(): Promise<void> {
    if (this.closed) return;
    const key = `${this.keys.prefix}secret`;
    const { strict } = this.clients;
    let again = 10_000;
    try {
      const mine = (this.secret ?? randomBytes(32)).toString('base64');
      const res = await within(3000, 'fleet secret', strict.if(key, 'Create', '==', 0).then(strict.put(key).value(mine)).else(strict.get(key)).commit());
      const value = res.succeeded ? mine : res.responses[0]?.response_range?.kvs[0]?.value.toString();
      if (!value) throw new Error('the fleet secret is empty');
      const next = Buffer.from(value, 'base64');
      if (this.secret && !this.secret.equals(next)) this.log.warn('fleet secret changed in etcd; using the new one (hosts still on the old one are refused until they re-read it)');
      this.secret = next;
    } catch (err) {
      this.log.debug({ err }, 'fleet secret not read yet; retrying');
      if (!this.secret) again = 1000;
    }
    if (!this.closed) this.timer = setTimeout(() => void this.fetch(), again);
  }

  private mac(parts: string[]): Buffer {
    return createHmac('sha256', this.secret!).update(parts.join('\n')).digest();
  }

  sign(method: string, hostHeader: string, url: string, client: string): Record<string, string> | null {
    if (!this.secret) return null;
    const ts = String(Date.now());
    const nonce = randomBytes(9).toString('base64url');
    const mac = this.mac(['v1', this.host, ts, nonce, method, hostHeader, url, client]).toString('base64url');
    return { [HOP_HEADER]: `v1 ${this.host} ${ts} ${nonce} ${mac}`, [CLIENT_HEADER]: client };
  }

  verify(req: IncomingMessage): { from: string; client: string } | null {
    const raw = req.headers[HOP_HEADER];
    const client = req.headers[CLIENT_HEADER];
    if (!this.secret || typeof raw !== 'string' || typeof client !== 'string') return null;
    const [v, from, ts, nonce, mac, extra] = raw.split(' ');
    if (v !== 'v1' || !from || !ts || !nonce || !mac || extra !== undefined) return null;
    if (!(Math.abs(Date.now() - Number(ts)) <= SKEW_MS)) return null;
    const want = this.mac(['v1', from, ts, nonce, req.method ?? '', req.headers.host ?? '', req.url ?? '', client]);
    const got = Buffer.from(mac, 'base64url');
    if (got.length !== want.length || !timingSafeEqual(got, want)) return null;
    return { from, client };
  }
}
