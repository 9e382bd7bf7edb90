import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Server as NetServer } from 'node:net';
import type { Duplex } from 'node:stream';
import type { SecureContext } from 'node:tls';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ContainerContext } from '../../containers/context.js';
import { containerApi, type NamespaceRoutes } from '../container/index.js';
import { answerClientError, frameworkErrors, installErrorHandling } from '../errors.js';
import { schemaController } from '../validation.js';
import { FailureLimiter } from './limiter.js';
import { type CallAuthority, stripInternalHeaders } from './authority.js';
import { fail } from '../../containers/errors.js';
import { type FleetForwarder, type FleetRouter, isRehop, markHopped } from './forward.js';
import { acceptHttp, listenProxied } from './proxied.js';

export interface PublicServerOptions {
  ctx: ContainerContext;
  domain: string;
  log: Logger;
  namespaces: NamespaceRoutes[];
  /** SNI: the secure context for a server name (null: use the default). */
  sni(servername: string): Promise<SecureContext | null>;
  defaultContext(): Promise<SecureContext>;
  /** Traffic for routed hostnames (the proxy) is taken before the API; return true when handled. */
  intercept?(req: IncomingMessage, res: ServerResponse): boolean;
  upgrade?(req: IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /** Routes registered at the root, outside every container's plugin (e.g. ACME http-01 answers). */
  rootRoutes?: ((app: FastifyInstance) => Promise<void>)[];
  /** In-process calls (scripts' relative fetches, injected by the daemon); without it every inject is anonymous. */
  calls?: CallAuthority;
  /** Bad tokens per client address per minute before it gets 429s (default 100). */
  tokenFailureLimit?: number;
  /** The whole header block must arrive within this (default 20 s); slower clients get a 408 and are cut off. */
  headersTimeoutMs?: number;
  host?: string;
  /** In a fleet: requests for other hosts' containers are forwarded (made by the daemon once it joins). */
  fleet?: () => FleetForwarder | null;
  /** Over the hop: routed hostnames of this host's containers go straight to them (HAProxy is not on that path). */
  hopIntercept?(req: IncomingMessage, res: ServerResponse): boolean;
  hopUpgrade?(req: IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /** Over the hop: admin calls of other fleet hosts (placement, fan-out); returns false when not one. */
  hopAdmin?(req: IncomingMessage, res: ServerResponse): boolean;
}

/** The host-to-host hop: HTTPS with this host's certificate, every request signed by a fleet host. */
export interface HopListener {
  port: number;
  host: string;
  cert: string;
  key: string;
  router: FleetRouter;
}

export interface PublicServer {
  app: FastifyInstance;
  http: Server;
  https: HttpsServer;
  listen(httpPort: number, httpsPort: number): Promise<{ http: number; https: number }>;
  /** Behind the data plane: a unix socket taking PROXY v1 then HTTP (HAProxy terminates TLS for every name). */
  listenBehind(paths: { http: string }): Promise<void>;
  /** The hop other fleet hosts forward to; answers with the port it got. */
  listenHop(hop: HopListener): Promise<number>;
  close(): Promise<void>;
}

/**
 * The public listeners: one fastify app behind an HTTP and an HTTPS server (SNI picks the certificate).
 * Every container's API is the same encapsulated plugin, reached by host or by `/c/<ctr>/` prefix.
 */
export async function buildPublicServer(opts: PublicServerOptions): Promise<PublicServer> {
  const headersTimeout = opts.headersTimeoutMs ?? 20_000;
  // Node enforces headersTimeout only when it sweeps its connections (every 30 s by default), so a slow client
  // could hold a socket for up to headersTimeout + 30 s: sweep often enough to keep the promise.
  const connectionsCheckingInterval = Math.max(250, Math.min(5_000, Math.floor(headersTimeout / 4)));
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const app = Fastify({
    loggerInstance: opts.log.child({ api: 'public' }) as FastifyBaseLogger,
    disableRequestLogging: true,
    bodyLimit: 1024 * 1024,
    requestTimeout: 120_000,
    connectionTimeout: 0,
    keepAliveTimeout: 65_000,
    routerOptions: { maxParamLength: 512 },
    trustProxy: false,
    frameworkErrors,
    serverFactory: (h) => {
      // Proxied hostnames skip fastify entirely (speed); http-01 answers always reach fastify first.
      handler = (req, res) => {
        // Nothing from outside speaks for the daemon: x-hoody-* reach neither the API nor the proxy's upstreams.
        stripInternalHeaders(req);
        const here = () => {
          if (opts.intercept && !req.url?.startsWith('/.well-known/acme-challenge/') && opts.intercept(req, res)) return;
          h(req, res);
        };
        if (opts.fleet?.()?.handle(req, res, here)) return;
        here();
      };
      return createHttpServer({ maxHeaderSize: 16 * 1024, connectionsCheckingInterval }, handler);
    },
    schemaController: schemaController({ removeAdditional: false }),
  });
  installErrorHandling(app);
  // First of all hooks: an injected request's handle becomes its daemon-side call record and leaves the headers.
  app.decorateRequest('hoodyCall', null);
  app.addHook('onRequest', async (req) => {
    if (opts.calls) req.hoodyCall = opts.calls.take(req);
    else stripInternalHeaders(req.raw);
  });
  app.addHook('onResponse', async (req, reply) => {
    // The path only: URL tokens must never reach the logs.
    req.log.info(
      { method: req.method, host: req.headers.host, path: req.url.split('?')[0], status: reply.statusCode, ms: Math.round(reply.elapsedTime), container: req.hoody?.container.name },
      'request',
    );
  });
  for (const routes of opts.rootRoutes ?? []) await routes(app);
  // One limiter for both mounts of the container plugin: bad tokens count per client address.
  const limiter = new FailureLimiter(opts.tokenFailureLimit ?? 100, 60_000);
  const api = { ctx: opts.ctx, domain: opts.domain, namespaces: opts.namespaces, limiter };
  await app.register(containerApi, api);
  await app.register(containerApi, { ...api, prefix: '/c/:ctr' });
  await app.ready();

  const fallback = await opts.defaultContext();
  const sniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => {
    opts.sni(servername).then(
      (ctx) => cb(null, ctx ?? fallback),
      (err: Error) => cb(err),
    );
  };
  let behind: NetServer[] = [];
  let hopServer: HttpsServer | undefined;
  const https = createHttpsServer(
    {
      maxHeaderSize: 16 * 1024,
      connectionsCheckingInterval,
      // A TLS client that connects and never finishes its handshake is cut off as soon as a slow HTTP one (default 120 s).
      handshakeTimeout: headersTimeout,
      SNICallback: sniCallback,
      secureContext: fallback,
    } as Parameters<typeof createHttpsServer>[0],
    handler,
  );
  https.keepAliveTimeout = 65_000;
  for (const server of [app.server, https]) {
    server.headersTimeout = headersTimeout; // slow clients: the whole header block within 20 s (default)
    server.requestTimeout = 120_000;
    server.removeAllListeners('clientError');
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => answerClientError(err, socket));
  }
  for (const server of [app.server, https]) {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      stripInternalHeaders(req);
      if (opts.fleet?.()?.upgrade(req, socket, head)) return;
      if (!opts.upgrade?.(req, socket, head)) socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    });
  }

  const listenOne = (server: Server | HttpsServer, port: number, host = opts.host ?? '0.0.0.0') =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host }, () => {
        server.off('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });

  return {
    app,
    http: app.server,
    https,
    async listen(httpPort, httpsPort) {
      const http = await listenOne(app.server, httpPort);
      const tls = await listenOne(https, httpsPort);
      return { http, https: tls };
    },
    async listenBehind(paths) {
      const emit = (socket: Duplex) => app.server.emit('connection', socket);
      behind = [await listenProxied(paths.http, acceptHttp(emit))];
    },
    async listenHop(hop) {
      // Only a fleet host's signature lets a request in, and only then is its x-hoody-client believed.
      const admit = (req: IncomingMessage): boolean => {
        const who = hop.router.verify(req);
        const again = isRehop(req);
        stripInternalHeaders(req);
        if (who) markHopped(req, who.client, again);
        return who !== null;
      };
      const refused = fail('FLEET_HOP_UNAUTHORIZED');
      const body = JSON.stringify({ error: { code: refused.code, message: refused.message } });
      const hopOptions = { cert: hop.cert, key: hop.key, maxHeaderSize: 16 * 1024, connectionsCheckingInterval, handshakeTimeout: headersTimeout };
      hopServer = createHttpsServer(hopOptions as Parameters<typeof createHttpsServer>[0], (req: IncomingMessage, res: ServerResponse) => {
        if (admit(req)) {
          if (opts.hopAdmin?.(req, res)) return;
          // http-01 answers are hoodyd's own, as on the public listener.
          if (!req.url?.startsWith('/.well-known/acme-challenge/') && opts.hopIntercept?.(req, res)) return;
          return handler?.(req, res);
        }
        res.writeHead(refused.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) }).end(body);
      });
      hopServer.keepAliveTimeout = 65_000;
      hopServer.headersTimeout = headersTimeout;
      hopServer.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => answerClientError(err, socket));
      hopServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
        if (!admit(req)) return void socket.end(`HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        if (!(opts.hopUpgrade ?? opts.upgrade)?.(req, socket, head)) socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      });
      return listenOne(hopServer, hop.port, hop.host);
    },
    async close() {
      for (const s of behind) s.close();
      if (hopServer) {
        hopServer.closeAllConnections();
        await new Promise<void>((r) => hopServer!.close(() => r()));
      }
      https.closeAllConnections?.();
      await new Promise<void>((r) => https.close(() => r()));
      await app.close();
    },
  };
}
