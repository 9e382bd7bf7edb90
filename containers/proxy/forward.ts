import { AddressCache } from './addresses.js';
import { Agent, type IncomingMessage, request, type ServerResponse, validateHeaderValue } from 'node:http';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import { fail, type HoodyError, isHoodyError } from '../errors.js';
import type { ProxyService, Upstream } from './service.js';
import { forwardUpgrade } from './upgrade.js';
import {
  checkedResponseHead,
  DEFAULT_UPSTREAM_LIMITS,
  forwardedHeaders,
  hostOf,
  isSecure,
  rawErrorResponse,
  UPSTREAM_MAX_HEADER_BYTES,
  type UpstreamLimits,
  upstreamError,
} from './upstream.js';

/** Answers with the catalogued JSON error, or cuts the connection when the head already went out. */
function sendError(res: ServerResponse, err: HoodyError): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code: err.code, message: err.message } });
  res.writeHead(err.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Forwards traffic for routed hostnames to the container's port: HTTP/1.1 with keep-alive to the upstream,
 * X-Forwarded-*, websockets (upgrade), and the optional redirect to HTTPS. Hostnames that are not routed are
 * left to the API (the caller falls through). The container is hostile: its answer is parsed strictly,
 * checked before any of it is written, and bounded in time; nothing it sends can throw out of here.
 */
export class ProxyForwarder {
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, timeout: 60_000 });
  readonly #addresses: AddressCache;

  constructor(
    private readonly service: ProxyService,
    resolveAddress: (container: string) => Promise<string | null>,
    private readonly limits: UpstreamLimits = DEFAULT_UPSTREAM_LIMITS,
  ) {
    this.#addresses = new AddressCache(resolveAddress);
  }

  match(req: IncomingMessage): Upstream | undefined {
    const host = hostOf(req);
    return host ? this.service.upstream(host) : undefined;
  }

  private address(container: string): Promise<string | null> {
    return this.#addresses.get(container);
  }

  /** The container's address may change when it restarts. */
  invalidate(container: string): void {
    this.#addresses.invalidate(container);
  }

  /** Handles a request for a routed hostname; returns false when the hostname is not routed. */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const up = this.match(req);
    if (!up) return false;
    if (up.httpsRedirect && !isSecure(req)) {
      const location = `https://${req.headers.host ?? up.hostname}${req.url ?? '/'}`;
      try {
        validateHeaderValue('location', location);
      } catch {
        sendError(res, fail('BAD_REQUEST', 'this request cannot be redirected to https'));
        return true;
      }
      res.writeHead(308, { location, 'content-length': 0 });
      res.end();
      return true;
    }
    this.address(up.container)
      .then((ip) => this.forward(req, res, up, ip))
      .catch((err: unknown) => sendError(res, upstreamError(err)));
    return true;
  }

  private forward(req: IncomingMessage, res: ServerResponse, up: Upstream, ip: string | null): void {
    if (!ip) {
      sendError(res, fail('PROXY_UPSTREAM_FAILED', `${up.container} is not running`));
      return;
    }
    const { headersTimeoutMs, idleTimeoutMs } = this.limits;
    const upstream = request({
      host: ip,
      port: up.port,
      method: req.method,
      path: req.url,
      headers: forwardedHeaders(req, false),
      agent: this.#agent,
      maxHeaderSize: UPSTREAM_MAX_HEADER_BYTES,
      timeout: idleTimeoutMs,
    });
    // Also bounds an endless run of 1xx heads: they never count as the answer.
    const headTimer = setTimeout(() => upstream.destroy(fail('PROXY_UPSTREAM_TIMEOUT', `no response head within ${headersTimeoutMs} ms`)), headersTimeoutMs);
    headTimer.unref();
    upstream.on('timeout', () => upstream.destroy(fail('PROXY_UPSTREAM_TIMEOUT', `silent for ${idleTimeoutMs} ms`)));
    upstream.on('response', (ures) => {
      clearTimeout(headTimer);
      let head: ReturnType<typeof checkedResponseHead>;
      try {
        head = checkedResponseHead(ures.statusCode, ures.headers);
      } catch (err) {
        upstream.destroy();
        return sendError(res, upstreamError(err));
      }
      if (res.destroyed) return void upstream.destroy();
      try {
        res.writeHead(head.status, head.headers);
      } catch (err) {
        upstream.destroy();
        return sendError(res, fail('PROXY_UPSTREAM_FAILED', `unusable response head (${(err as Error).message})`));
      }
      // A body cut short, reset or stalled mid-way closes the client's connection (the head is gone already).
      pipeline(ures, res, (err) => {
        if (err) {
          upstream.destroy();
          res.destroy();
        }
      });
    });
    // 101 to a request that asked for no upgrade.
    upstream.on('upgrade', (_ures, socket) => {
      clearTimeout(headTimer);
      socket.destroy();
      sendError(res, fail('PROXY_UPSTREAM_FAILED', 'switched protocols without being asked'));
    });
    upstream.on('error', (err) => {
      clearTimeout(headTimer);
      // Connection-level failures may mean the container moved; a bad answer does not.
      if (!isHoodyError(err) && !(err as NodeJS.ErrnoException).code?.startsWith('HPE_')) this.invalidate(up.container);
      sendError(res, upstreamError(err));
    });
    // The client went away (or its upload broke): the container's side goes too.
    req.on('error', () => upstream.destroy());
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  /** Websocket (and any other) upgrade for a routed hostname; returns false when not routed. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const up = this.match(req);
    if (!up) return false;
    socket.on('error', () => socket.destroy());
    this.address(up.container)
      .then((ip) => {
        if (!ip) throw fail('PROXY_UPSTREAM_FAILED', `${up.container} is not running`);
        forwardUpgrade(req, socket, head, { host: ip, port: up.port }, this.limits);
      })
      .catch((err: unknown) => {
        if (!socket.destroyed) socket.end(rawErrorResponse(upstreamError(err)));
      });
    return true;
  }

  close(): void {
    this.#agent.destroy();
  }
}
