/**
 * Routing to other hosts of a fleet (issue 12.4): a request for a container this host does not have is looked up
 * in the fleet directory's cache (never etcd) and streamed to the owner's hop listener, or answered 503 when the
 * owner is down. A request that came over the hop is forwarded once more only when this host no longer has the
 * container (it moved away and the sender's cache was behind), never a third time: no loops.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { fail, type HoodyError, isHoodyError } from '../../containers/errors.js';
import { checkedResponseHead, HOP_BY_HOP, vouchClient, vouchedClient } from '../../containers/proxy/upstream.js';
import { parseHost } from '../../containers/tls/sni.js';
import { hashToken } from '../../containers/tokens.js';
import { clientAddress } from './proxied.js';

export type Owner =
  | { host: string; up: false; why: string }
  | { host: string; up: true; address: string; port: number; ca: string; servername: string };

/** The fleet as the listeners see it: owners from the directory cache, and the hop's signature. */
export interface FleetRouter {
  /** Where a container lives when it is another host's; null when the directory does not place it elsewhere. */
  ownerOfName(name: string): Owner | null;
  ownerOfToken(hash: string): Owner | null;
  ownerOfRoute(hostname: string): Owner | null;
  /** A move of the container away from this host is under way: resolves when it ends (requests wait for it). */
  movingWait(name: string): Promise<void> | undefined;
  /** Headers that authenticate one hop request; null while the fleet secret is not known. */
  sign(method: string, host: string, url: string, client: string): Record<string, string> | null;
  /** The client a hop request speaks for, or null when its signature does not hold. */
  verify(req: IncomingMessage): { from: string; client: string } | null;
}

/** What this host serves itself (checked first: a local container is never forwarded). */
export interface LocalLookup {
  hasContainer(name: string): boolean;
  /** The local container a token belongs to. */
  tokenContainer(hash: string): string | undefined;
}

/** Hop requests, and whether each had been forwarded once already before it came. */
const hops = new WeakMap<IncomingMessage, { again: boolean }>();
const REHOP_HEADER = 'x-hoody-rehop';

/** A request that arrived over the authenticated hop: its client is the one the sending host vouched for. */
export function markHopped(req: IncomingMessage, client: string, again: boolean): void {
  vouchClient(req, client);
  hops.set(req, { again });
}

/** Read before the hop strips x-hoody-*: the sender says this request had been forwarded once already. */
export function isRehop(req: IncomingMessage): boolean {
  return req.headers[REHOP_HEADER] === '1';
}

/** The client's address: vouched for by a fleet host (hop), else the PROXY line, else the socket's peer. */
export function requestClient(req: IncomingMessage): string | undefined {
  return vouchedClient(req) ?? clientAddress(req.socket);
}

const CONNECT_MS = 2_000;
/** Requests for a container moving away from this host wait at most this long (then a 409 CONTAINER_BUSY). */
const MOVE_WAIT_MS = 30_000;

function sendError(res: ServerResponse, err: HoodyError): void {
  if (res.headersSent || res.destroyed) return void res.destroy();
  const body = JSON.stringify({ error: { code: err.code, message: err.message } });
  res.writeHead(err.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function presented(req: IncomingMessage): string | null {
  let q: string | null = null;
  try {
    q = new URL(req.url ?? '/', 'http://x').searchParams.get('token');
  } catch {
    // not a URL: no token in it
  }
  if (q) return q;
  const auth = req.headers.authorization;
  return auth?.startsWith('Bearer ') ? auth.slice(7).trim() || null : null;
}

type Subject = { name: string } | { hash: string; local: string | undefined } | { hostname: string };

export class FleetForwarder {
  /** One keep-alive pool per owner (address, port and its CA): hop connections are reused. */
  readonly #agents = new Map<string, Agent>();

  constructor(
    private readonly router: FleetRouter,
    private readonly domain: string,
    private readonly local: LocalLookup,
  ) {}

  /**
   * Which container the request names (by path or host), or the token it presents on a token-only host (with the
   * local container it belongs to, if any), or a routed hostname. Worked out once per pass of a request.
   */
  private subject(req: IncomingMessage): Subject | null {
    const path = /^\/c\/([^/?]+)/.exec(req.url ?? '');
    const target = parseHost(req.headers.host, this.domain);
    if (path) {
      try {
        return { name: decodeURIComponent(path[1]!) };
      } catch {
        return null; // a malformed escape: the API answers it
      }
    }
    if (target.kind === 'container-service') return { name: target.container };
    if (target.kind === 'token-service') {
      const token = presented(req);
      if (!token) return null;
      const hash = hashToken(token);
      return { hash, local: this.local.tokenContainer(hash) };
    }
    const hostname = (req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
    return hostname ? { hostname } : null;
  }

  /**
   * The owner when this request is another host's; null: answer it here (as before the fleet). A hopped request
   * may go back to its sender: a host that had just received a moved container sent it here before its commit.
   */
  ownerOf(req: IncomingMessage, s = this.subject(req)): Owner | null {
    if (hops.get(req)?.again || !s) return null; // forwarded twice already: answered here, whatever this host knows
    if ('name' in s) return this.local.hasContainer(s.name) ? null : this.router.ownerOfName(s.name);
    if ('hash' in s) return s.local !== undefined ? null : this.router.ownerOfToken(s.hash);
    return this.router.ownerOfRoute(s.hostname);
  }

  /** The move under way of the container this request is for, if it is moving away from this host. */
  private moving(s: Subject | null): { name: string; done: Promise<void> } | null {
    const name = !s ? undefined : 'name' in s ? s.name : 'hash' in s ? s.local : undefined;
    const done = name === undefined ? undefined : this.router.movingWait(name);
    return name !== undefined && done ? { name, done } : null;
  }

  private agent(owner: Extract<Owner, { up: true }>): Agent {
    const key = `${owner.address}|${owner.port}|${owner.servername}|${owner.ca}`;
    let agent = this.#agents.get(key);
    if (!agent) {
      agent = new Agent({ keepAlive: true, maxSockets: 256, ca: owner.ca, servername: owner.servername });
      this.#agents.set(key, agent);
    }
    return agent;
  }

  /** Builds the hop request; null when it was answered already (owner down, no secret yet). */
  private open(req: IncomingMessage, owner: Owner, keepUpgrade: boolean, answer: (err: HoodyError) => void) {
    if (!owner.up) return void answer(fail('FLEET_HOST_DOWN', owner.host, owner.why));
    const client = requestClient(req) ?? 'unknown';
    const auth = this.router.sign(req.method ?? 'GET', req.headers.host ?? '', req.url ?? '/', client);
    if (!auth) return void answer(fail('FLEET_UNAVAILABLE', 'the fleet secret is not known yet'));
    const headers: IncomingHttpHeaders = { ...req.headers };
    for (const h of HOP_BY_HOP) if (!(keepUpgrade && (h === 'upgrade' || h === 'connection'))) delete headers[h];
    if (req.headers['transfer-encoding'] !== undefined) headers['transfer-encoding'] = 'chunked';
    const up = httpsRequest({
      host: owner.address,
      port: owner.port,
      method: req.method,
      path: req.url,
      headers: { ...headers, ...auth, ...(hops.has(req) ? { [REHOP_HEADER]: '1' } : {}) } as OutgoingHttpHeaders,
      agent: keepUpgrade ? false : this.agent(owner),
      ...(keepUpgrade ? { ca: owner.ca, servername: owner.servername } : {}),
    });
    // A dead host on another machine would hold a connect for a minute: fail fast, the client gets a 503.
    up.on('socket', (s: Socket) => {
      if (!s.connecting) return;
      const timer = setTimeout(() => up.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), CONNECT_MS);
      s.once('connect', () => clearTimeout(timer));
      s.once('close', () => clearTimeout(timer));
    });
    up.on('error', (err: NodeJS.ErrnoException) => answer(fail('FLEET_HOST_DOWN', owner.host, `it does not answer: ${err.code ?? err.message}`)));
    return up;
  }

  /**
   * Forwards the request when it is another host's; returns false when it is to be answered here. A request for a
   * container moving away from this host waits for the move to end, then goes wherever it lives (`next`: here).
   */
  handle(req: IncomingMessage, res: ServerResponse, next: () => void): boolean {
    const s = this.subject(req);
    const moving = this.moving(s);
    if (moving) {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), MOVE_WAIT_MS)));
      void Promise.race([moving.done, late]).then((how) => {
        clearTimeout(timer);
        if (how === 'late') return sendError(res, fail('CONTAINER_BUSY', moving.name));
        if (!this.handle(req, res, next)) next();
      });
      return true;
    }
    const owner = this.ownerOf(req, s);
    if (!owner) return false;
    const up = this.open(req, owner, false, (err) => sendError(res, err));
    if (!up) return true;
    up.on('response', (r) => {
      let head: ReturnType<typeof checkedResponseHead>;
      try {
        head = checkedResponseHead(r.statusCode, r.headers);
      } catch (err) {
        r.destroy();
        return sendError(res, isHoodyError(err) ? err : fail('INTERNAL'));
      }
      res.writeHead(head.status, head.headers);
      r.pipe(res);
      r.on('error', () => res.destroy());
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
    return true;
  }

  /** A websocket (or any upgrade) for another host's container: the 101 and both directions, streamed. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const owner = this.ownerOf(req);
    if (!owner) return false;
    const answer = (err: HoodyError) => {
      const body = JSON.stringify({ error: { code: err.code, message: err.message } });
      socket.end(`HTTP/1.1 ${err.status} Error\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    };
    const up = this.open(req, owner, true, answer);
    if (!up) return true;
    socket.on('error', () => up.destroy());
    up.on('upgrade', (r, upSocket, upHead) => {
      const lines = [`HTTP/1.1 ${r.statusCode} ${r.statusMessage}`];
      for (let i = 0; i + 1 < r.rawHeaders.length; i += 2) lines.push(`${r.rawHeaders[i]}: ${r.rawHeaders[i + 1]}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (upHead.length) socket.write(upHead);
      if (head.length) upSocket.write(head);
      upSocket.on('error', () => socket.destroy());
      upSocket.pipe(socket);
      socket.pipe(upSocket);
    });
    up.on('response', (r) => {
      // Refused (no 101): pass the answer on and close.
      const lines = [`HTTP/1.1 ${r.statusCode} ${r.statusMessage}`];
      for (let i = 0; i + 1 < r.rawHeaders.length; i += 2) if (!/^connection$/i.test(r.rawHeaders[i]!)) lines.push(`${r.rawHeaders[i]}: ${r.rawHeaders[i + 1]}`);
      socket.write(`${lines.join('\r\n')}\r\nconnection: close\r\n\r\n`);
      r.pipe(socket);
    });
    up.end();
    return true;
  }

  close(): void {
    for (const a of this.#agents.values()) a.destroy();
    this.#agents.clear();
  }
}
