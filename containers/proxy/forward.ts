import { Agent, type IncomingHttpHeaders, type IncomingMessage, request, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { ProxyService, Upstream } from './service.js';

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

function hostOf(req: IncomingMessage): string {
  return (req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
}

function isSecure(req: IncomingMessage): boolean {
  return Boolean((req.socket as TLSSocket).encrypted);
}

function forwardedHeaders(req: IncomingMessage, keepUpgrade: boolean): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = { ...req.headers };
  const named = String(req.headers.connection ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  for (const h of [...HOP_BY_HOP, ...named]) if (!(keepUpgrade && (h === 'upgrade' || h === 'connection'))) delete headers[h];
  const remote = req.socket.remoteAddress ?? '';
  headers['x-forwarded-for'] = req.headers['x-forwarded-for'] ? `${req.headers['x-forwarded-for']}, ${remote}` : remote;
  headers['x-forwarded-proto'] = isSecure(req) ? 'https' : 'http';
  headers['x-forwarded-host'] = req.headers.host ?? '';
  return headers;
}

function sendJsonError(res: ServerResponse, status: number, code: string, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Forwards traffic for routed hostnames to the container's port: HTTP/1.1 with keep-alive to the upstream,
 * X-Forwarded-*, websockets (upgrade), and the optional redirect to HTTPS. Hostnames that are not routed are
 * left to the API (the caller falls through).
 */
export class ProxyForwarder {
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, timeout: 60_000 });
  readonly #addresses = new Map<string, Promise<string | null>>();

  constructor(
    private readonly service: ProxyService,
    private readonly resolveAddress: (container: string) => Promise<string | null>,
  ) {}

  match(req: IncomingMessage): Upstream | undefined {
    const host = hostOf(req);
    return host ? this.service.upstream(host) : undefined;
  }

  private address(container: string): Promise<string | null> {
    let a = this.#addresses.get(container);
    if (!a) {
      a = this.resolveAddress(container).catch(() => null);
      this.#addresses.set(container, a);
      a.then((ip) => ip ?? this.#addresses.delete(container));
    }
    return a;
  }

  /** The container's address may change when it restarts. */
  invalidate(container: string): void {
    this.#addresses.delete(container);
  }

  /** Handles a request for a routed hostname; returns false when the hostname is not routed. */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const up = this.match(req);
    if (!up) return false;
    if (up.httpsRedirect && !isSecure(req)) {
      res.writeHead(308, { location: `https://${req.headers.host ?? up.hostname}${req.url ?? '/'}`, 'content-length': 0 });
      res.end();
      return true;
    }
    void this.address(up.container).then((ip) => {
      if (!ip) return sendJsonError(res, 502, 'HOODY_PROXY_UPSTREAM_FAILED', `the container did not answer: ${up.container} is not running`);
      const upstream = request(
        { host: ip, port: up.port, method: req.method, path: req.url, headers: forwardedHeaders(req, false), agent: this.#agent },
        (ures) => {
          const headers = { ...ures.headers };
          for (const h of HOP_BY_HOP) if (h !== 'transfer-encoding') delete headers[h];
          res.writeHead(ures.statusCode ?? 502, headers);
          ures.pipe(res);
        },
      );
      upstream.on('error', (err) => {
        this.invalidate(up.container);
        sendJsonError(res, 502, 'HOODY_PROXY_UPSTREAM_FAILED', `the container did not answer: ${err.message}`);
      });
      req.pipe(upstream);
    });
    return true;
  }

  /** Websocket (and any other) upgrade for a routed hostname; returns false when not routed. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const up = this.match(req);
    if (!up) return false;
    void this.address(up.container).then((ip) => {
      if (!ip) return socket.destroy();
      const target: Socket = connect(up.port, ip, () => {
        const headers = forwardedHeaders(req, true);
        let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
        for (const [k, v] of Object.entries(headers)) {
          for (const value of Array.isArray(v) ? v : [v]) if (value !== undefined) raw += `${k}: ${value}\r\n`;
        }
        target.write(`${raw}\r\n`);
        if (head.length) target.write(head);
        socket.pipe(target).pipe(socket);
      });
      const close = () => {
        target.destroy();
        socket.destroy();
      };
      target.on('error', close);
      socket.on('error', close);
    });
    return true;
  }

  close(): void {
    this.#agent.destroy();
  }
}
