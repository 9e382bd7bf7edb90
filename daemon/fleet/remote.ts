/**
 * Admin calls to other hosts of the fleet over the hop (issue 12.3 placement, 12.5 fan-out). The hop takes
 * `/_hoody/admin/<path>` from a signed fleet host only and hands it to that host's admin socket: a fleet host is
 * trusted like root on every other (the fleet secret is that trust).
 */
import { type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, request as httpRequest, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { FleetRouter, Owner } from '../../api/public/forward.js';
import { type ErrorCode, fail, HoodyError, isHoodyError } from '../../containers/errors.js';
import type { HostRecord } from './keys.js';

export const HOP_ADMIN_PREFIX = '/_hoody/admin';

export interface RemoteAnswer<T> {
  status: number;
  body: T;
}

/** What placement and fan-out need of the fleet: who is up, and the hop's signature. */
export interface FleetPeers extends Pick<FleetRouter, 'sign'> {
  readonly self: string;
  /** Live hosts (their lease is alive) with their last record. */
  liveHosts(): HostRecord[];
  hostOwner(host: string): Owner;
}

/** One admin call on another host; a transport failure or a timeout is FLEET_HOST_DOWN naming the host. */
export function callHost<T>(peers: FleetPeers, host: string, method: string, path: string, body?: unknown, timeoutMs = 5_000): Promise<RemoteAnswer<T>> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  try {
    const headers: OutgoingHttpHeaders = payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {};
    const { req, answer } = openHostCall<T>(peers, host, method, path, { headers, timeoutMs });
    req.end(payload);
    return answer;
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * A signed admin request to another host's hop whose body the caller writes (`req`; a stream may be piped in);
 * `answer` settles with the status and JSON body. `timeoutMs` is idle time: no bytes taken or given for that long.
 * Throws at once when the host is down or the fleet secret is not known yet.
 */
export function openHostCall<T>(
  peers: FleetPeers,
  host: string,
  method: string,
  path: string,
  opts: { headers: OutgoingHttpHeaders; timeoutMs: number; transportError?: (why: string) => HoodyError },
): { req: ClientRequest; answer: Promise<RemoteAnswer<T>> } {
  const owner = peers.hostOwner(host);
  if (!owner.up) throw fail('FLEET_HOST_DOWN', host, owner.why);
  const url = `${HOP_ADMIN_PREFIX}${path}`;
  const hostHeader = `admin.${host}`;
  const auth = peers.sign(method, hostHeader, url, `fleet:${peers.self}`);
  if (!auth) throw fail('FLEET_UNAVAILABLE', 'the fleet secret is not known yet');
  const transportError = opts.transportError ?? ((why: string) => fail('FLEET_HOST_DOWN', host, `it does not answer: ${why}`));
  let req!: ClientRequest;
  const answer = new Promise<RemoteAnswer<T>>((resolve, reject) => {
    req = httpsRequest(
      {
        host: owner.address,
        port: owner.port,
        method,
        path: url,
        ca: owner.ca,
        servername: owner.servername,
        agent: false,
        timeout: opts.timeoutMs,
        headers: { ...auth, host: hostHeader, ...opts.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: res.statusCode ?? 0, body: (text ? JSON.parse(text) : null) as T });
          } catch {
            reject(fail('FLEET_HOST_DOWN', host, `it answered ${res.statusCode} with no JSON`));
          }
        });
        res.on('error', (err) => reject(fail('FLEET_HOST_DOWN', host, err.message)));
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${opts.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => reject(transportError(err.code === 'ETIMEDOUT' ? err.message : (err.code ?? err.message))));
  });
  return { req, answer };
}

/** A remote error answer as ours (same code and status): the caller sees what the other host said. */
export function remoteError(host: string, a: RemoteAnswer<unknown>): HoodyError {
  const e = (a.body as { error?: { code?: string; message?: string } } | null)?.error;
  if (e?.code?.startsWith('HOODY_')) return new HoodyError(e.code as ErrorCode, a.status, `host ${host}: ${e.message ?? ''}`);
  return fail('FLEET_HOST_DOWN', host, `it answered ${a.status}`);
}

export interface PlacementNeeds {
  memoryBytes: number;
  diskBytes: number;
}

/** Capacity filters, then the better of two random candidates first; the rest follow as fallbacks (refusals). */
export function placementOrder(hosts: readonly HostRecord[], needs: PlacementNeeds, random: () => number = Math.random): HostRecord[] {
  const fits = hosts.filter(
    (h) =>
      !h.capacity.draining &&
      h.capacity.memoryAvailableBytes >= needs.memoryBytes &&
      (h.capacity.poolFreeBytes === null || h.capacity.poolFreeBytes >= needs.diskBytes),
  );
  const pool = [...fits];
  for (let i = pool.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [pool[i], pool[j]] = [pool[j]!, pool[i]!];
  }
  // Free memory over the need, per container already there: the host with more room per tenant is "better".
  const score = (h: HostRecord) => Math.min(h.capacity.memoryAvailableBytes, h.capacity.poolFreeBytes ?? Number.MAX_SAFE_INTEGER) / (h.capacity.containers + 1);
  if (pool.length >= 2 && score(pool[1]!) > score(pool[0]!)) [pool[0], pool[1]] = [pool[1]!, pool[0]!];
  return pool;
}

/** A refusal moves on to the next candidate; a verdict on the request itself (bad input, name taken) does not. */
export function isRefusal(err: unknown): boolean {
  if (!isHoodyError(err)) return true;
  // etcd's answer is the same from every host: no point asking the next one.
  if (err.code === 'HOODY_FLEET_NO_LEADER' || err.code === 'HOODY_FLEET_UNAVAILABLE') return false;
  return err.status >= 500;
}

export interface FanOut<T> {
  hosts: { host: string; result: T }[];
  partial: boolean;
  failed: { host: string; code: string; message: string }[];
}

/** The same admin GET on every live host (this one locally), each bounded by `timeoutMs`; failures are listed. */
export async function fanOut<T>(peers: FleetPeers, path: string, local: () => Promise<T>, timeoutMs: number): Promise<FanOut<T>> {
  const hosts = peers.liveHosts().map((h) => h.host);
  if (!hosts.includes(peers.self)) hosts.push(peers.self);
  hosts.sort();
  const settled = await Promise.allSettled(
    hosts.map(async (host) => {
      if (host === peers.self) return local();
      const a = await callHost<T>(peers, host, 'GET', path, undefined, timeoutMs);
      if (a.status !== 200) throw remoteError(host, a);
      return a.body;
    }),
  );
  const out: FanOut<T> = { hosts: [], partial: false, failed: [] };
  settled.forEach((s, i) => {
    const host = hosts[i]!;
    if (s.status === 'fulfilled') out.hosts.push({ host, result: s.value });
    else {
      const e = isHoodyError(s.reason) ? s.reason : fail('FLEET_HOST_DOWN', host, String(s.reason));
      out.failed.push({ host, code: e.code, message: e.message });
    }
  });
  out.partial = out.failed.length > 0;
  return out;
}

/** The hop's side of callHost: `/_hoody/admin/<path>` from a verified fleet host goes to this host's admin socket. */
export function adminOverHop(adminSocket: string): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    if (!req.url?.startsWith(`${HOP_ADMIN_PREFIX}/`)) return false;
    const headers = { ...req.headers, host: 'localhost' };
    delete headers.connection;
    const up = httpRequest({ socketPath: adminSocket, method: req.method, path: req.url.slice(HOP_ADMIN_PREFIX.length), headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => {
      const e = fail('DAEMON_UNAVAILABLE');
      if (!res.headersSent) res.writeHead(e.status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: e.code, message: e.message } }));
      else res.destroy();
    });
    req.pipe(up);
    return true;
  };
}
