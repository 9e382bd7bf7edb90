/** HAProxy as hoody's data plane: the configuration file and the JSON error pages it answers with. */
import { join } from 'node:path';

/** Where one instance's HAProxy keeps its files (all under the daemon's state dir). */
export interface HaproxyLayout {
  dir: string;
  config: string;
  pidFile: string;
  /** The run-time API (admin level, root only). */
  adminSocket: string;
  /** Routed hostname -> `ip:port` (or `down`), and hostnames that redirect plain HTTP to HTTPS. */
  routesMap: string;
  redirectMap: string;
  /** Routed hostname -> container: the tenant backend's stick table counts its traffic under that name. */
  serversMap: string;
  crtList: string;
  certDir: string;
  /** The host's own certificate (`*.<domain>`): token hosts, clients without SNI, routed names with no bundle. */
  defaultCert: string;
  errorDir: string;
  /** The host CA's certificate and key: HAProxy signs a certificate for a name no crt-list line covers. */
  caSignFile: string;
  /** OpenSSL's configuration for HAProxy (OPENSSL_CONF): the defaults of a context HAProxy makes itself. */
  opensslConf: string;
  /** hoodyd's listener behind HAProxy: plain HTTP, each connection preceded by a PROXY v1 line. */
  daemonHttpSocket: string;
  log: string;
}

export function haproxyLayout(stateDir: string): HaproxyLayout {
  const dir = join(stateDir, 'dataplane');
  return {
    dir,
    config: join(dir, 'haproxy.cfg'),
    pidFile: join(dir, 'haproxy.pid'),
    adminSocket: join(dir, 'admin.sock'),
    routesMap: join(dir, 'routes.map'),
    redirectMap: join(dir, 'redirect.map'),
    serversMap: join(dir, 'servers.map'),
    crtList: join(dir, 'crt-list'),
    certDir: join(dir, 'certs'),
    defaultCert: join(dir, 'certs', '_default.pem'),
    errorDir: join(dir, 'errors'),
    caSignFile: join(dir, 'ca-sign.pem'),
    opensslConf: join(dir, 'openssl.cnf'),
    daemonHttpSocket: join(dir, 'hoodyd-http.sock'),
    log: join(dir, 'haproxy.log'),
  };
}

export interface HaproxySettings {
  layout: HaproxyLayout;
  /** hoody's domain (its names are never in a tenant's crt-list line). */
  domain: string;
  bindHost: string;
  httpPort: number;
  httpsPort: number;
  /** Clients must send their whole header block (and a TLS client its handshake) within this. */
  headersTimeoutMs: number;
  /** A container may stay silent this long (response head or body). */
  upstreamTimeoutMs: number;
}

/** A JSON error page as HAProxy sends it (raw HTTP; the status line in the file is the one sent). */
function errorPage(status: number, reason: string, code: string, message: string): string {
  const body = JSON.stringify({ error: { code, message } });
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

/**
 * The error pages, by file name: the same codes and shapes as the API's own errors. HAProxy 2.6 does not use
 * them for the two errors its HTTP/1 parser answers before a request exists (an unparsable request: 400; an
 * incomplete header block at `timeout http-request`: 408): those get HAProxy's own page (haproxy#3032, fixed in 3.2).
 */
export function errorPages(): Record<string, string> {
  return {
    'client-400.http': errorPage(400, 'Bad Request', 'HOODY_BAD_REQUEST', 'bad request'),
    'client-403.http': errorPage(403, 'Forbidden', 'HOODY_BAD_REQUEST', 'refused'),
    'client-408.http': errorPage(408, 'Request Timeout', 'HOODY_REQUEST_TIMEOUT', 'request timeout'),
    'client-431.http': errorPage(431, 'Request Header Fields Too Large', 'HOODY_HEADERS_TOO_LARGE', 'request header fields too large'),
    'client-500.http': errorPage(500, 'Internal Server Error', 'HOODY_INTERNAL', 'internal error'),
    'tenant-502.http': errorPage(502, 'Bad Gateway', 'HOODY_PROXY_UPSTREAM_FAILED', 'the container did not answer with a valid response'),
    'tenant-503.http': errorPage(502, 'Bad Gateway', 'HOODY_PROXY_UPSTREAM_FAILED', 'the container is not running or refused the connection'),
    'tenant-504.http': errorPage(504, 'Gateway Timeout', 'HOODY_PROXY_UPSTREAM_TIMEOUT', 'the container did not answer in time'),
    // hoodyd went away with the request in flight: whether it took effect is unknown (a retry of a PUT is safe).
    'daemon-502.http': errorPage(503, 'Service Unavailable', 'HOODY_DAEMON_UNAVAILABLE', 'hoodyd stopped while answering; the request may or may not have taken effect; retry shortly'),
    'daemon-503.http': errorPage(503, 'Service Unavailable', 'HOODY_DAEMON_UNAVAILABLE', 'hoodyd is restarting; retry shortly'),
    'daemon-504.http': errorPage(504, 'Gateway Timeout', 'HOODY_DAEMON_UNAVAILABLE', 'hoodyd did not answer in time'),
  };
}

/**
 * OpenSSL's defaults for HAProxy's process, which only a context HAProxy generates (a signed-on-the-spot
 * certificate) takes; every crt-list context gets `ssl-default-bind-ciphers` instead. HAProxy 2.6.12 hands a
 * generated context a 1024-bit DH group, which Debian's default security level 2 refuses; the refusal stays on
 * OpenSSL's error queue and fails that handshake (the first connection to each new name). Level 1 with ECDHE
 * ciphers only lets the context be made and never uses the DH group.
 */
export function opensslConfig(): string {
  return [
    'openssl_conf = hoody_conf',
    '[hoody_conf]',
    'ssl_conf = hoody_ssl',
    '[hoody_ssl]',
    'system_default = hoody_tls',
    '[hoody_tls]',
    'MinProtocol = TLSv1.2',
    'CipherString = ECDHE+AESGCM:ECDHE+CHACHA20:@SECLEVEL=1',
    '',
  ].join('\n');
}

const ms = (n: number) => `${Math.max(1, Math.round(n))}ms`;

/**
 * The rules both HTTP frontends share: internal headers dropped, X-Forwarded-* set, the routed hostname looked
 * up (ACME http-01 answers always go to hoodyd), the optional redirect to HTTPS, then a container or hoodyd.
 */
function routingRules(l: HaproxyLayout, proto: 'http' | 'https'): string[] {
  return [
    // Nothing from outside speaks for the daemon: x-hoody-* reach neither the API nor a container.
    // The same header limit as hoodyd's own listeners (16 KiB), answered in the catalogue's shape.
    `http-request return errorfile ${join(l.errorDir, 'client-431.http')} if { req.hdrs,length gt 16384 }`,
    'http-request del-header x-hoody- -m beg',
    `http-request set-header x-forwarded-proto ${proto}`,
    'http-request set-header x-forwarded-host %[req.hdr(host)]',
    'http-request set-var(txn.host) req.hdr(host),regsub(:[0-9]+$,),regsub(\\.$,),lower',
    `http-request set-var(txn.dst) var(txn.host),map(${l.routesMap}) unless { path_beg /.well-known/acme-challenge/ }`,
    ...(proto === 'http' ? [`http-request redirect scheme https code 308 if { var(txn.dst) -m found } { var(txn.host),map(${l.redirectMap}) -m found }`] : []),
    'use_backend tenant if { var(txn.dst) -m found }',
    'default_backend hoodyd',
  ];
}

/** Longest container name the stick table keys (container names are DNS labels: at most 63). */
export const CONTAINER_KEY_LEN = 64;

/** The whole configuration: static; routes and certificates change at run time through the admin socket. */
export function renderHaproxyConfig(s: HaproxySettings): string {
  const l = s.layout;
  const e = (name: string) => join(l.errorDir, name);
  const lines = [
    '# Written by hoodyd; routes and certificates change at run time (admin socket) and are saved beside.',
    'global',
    `  stats socket ${l.adminSocket} mode 600 level admin`,
    `  pidfile ${l.pidFile}`,
    '  tune.ssl.default-dh-param 2048',
    // Four times hoodyd's header limit: a head between 16 and ~63 KiB still reaches a rule (or hoodyd) that
    // answers it in the catalogue's shape; only a bigger one gets HAProxy's own 400 page. Buffers are taken only
    // while a request is in flight.
    '  tune.bufsize 65536',
    '  ssl-default-bind-options ssl-min-ver TLSv1.2',
    // Debian's own defaults, spelled out: the process's OPENSSL_CONF (opensslConfig) is for generated contexts only.
    '  ssl-default-bind-ciphers DEFAULT:@SECLEVEL=2',
    'defaults',
    '  mode http',
    '  option http-keep-alive',
    '  timeout connect 3s',
    '  timeout client 65s',
    `  timeout server ${ms(s.upstreamTimeoutMs)}`,
    `  timeout http-request ${ms(s.headersTimeoutMs)}`,
    '  timeout http-keep-alive 65s',
    '  timeout tunnel 1h',
    '  timeout client-fin 5s',
    // A dead container answers at once, not after three retries.
    '  retries 0',
    `  errorfile 400 ${e('client-400.http')}`,
    `  errorfile 403 ${e('client-403.http')}`,
    `  errorfile 408 ${e('client-408.http')}`,
    `  errorfile 500 ${e('client-500.http')}`,
    '',
    // TLS ends here for every name, in one accept: a tenant's own crt-list lines (h2 offered), the host's
    // `*.<domain>` for token hosts, and for any other name (service hosts `<svc>.<ctr>.<domain>` of containers that
    // exist or not, unrouted names) a certificate for exactly that name signed on the spot by the host CA, so a
    // handshake never tells which containers exist. Those get no ALPN (HAProxy 2.6 gives a generated context
    // none): HTTP/1.1, as hoodyd's API always spoke.
    'frontend tls-in',
    `  bind ${s.bindHost}:${s.httpsPort} ssl crt-list ${l.crtList} alpn http/1.1 generate-certificates ca-sign-file ${l.caSignFile}`,
    // HAProxy 2.6 has no handshake timeout of its own (`timeout client-hs` came in 2.8): an idle or silent TLS
    // client is cut at the header timeout, as on the plain port.
    `  timeout client ${ms(s.headersTimeoutMs)}`,
    ...routingRules(l, 'https').map((r) => `  ${r}`),
    '',
    'frontend http-in',
    `  bind ${s.bindHost}:${s.httpPort}`,
    ...routingRules(l, 'http').map((r) => `  ${r}`),
    '',
    // Any container address from one backend: the map's value is checked before it becomes the destination.
    'backend tenant',
    '  option forwardfor',
    `  http-request return errorfile ${e('tenant-503.http')} if { var(txn.dst) -m str down }`,
    '  http-request deny deny_status 500 unless { var(txn.dst) -m reg ^[0-9]{1,3}(\\.[0-9]{1,3}){3}:[0-9]{1,5}$ }',
    '  http-request set-dst var(txn.dst),field(1,:)',
    '  http-request set-dst-port var(txn.dst),field(2,:)',
    // Each container's requests, 4xx, 5xx and bytes, counted under its name in a stick table. (One dynamic server
    // per container would count times too, but HAProxy 2.6 reuses no upstream connection of a dynamic server: the
    // proxy benchmark fell from 6,600 to 2,900 req/s with keep-alive. One static server keeps the pool.)
    `  stick-table type string len ${CONTAINER_KEY_LEN} size 100k store http_req_cnt,http_err_cnt,http_fail_cnt,bytes_in_cnt,bytes_out_cnt`,
    `  http-request set-var(txn.ctr) var(txn.host),map(${l.serversMap})`,
    '  http-request track-sc0 var(txn.ctr) if { var(txn.ctr) -m found }',
    '  server container 0.0.0.0:0',
    // HAProxy passes any three digits on; a status outside 100-599 is the container's fault, answered as such.
    `  http-response return errorfile ${e('tenant-502.http')} if { status lt 100 } || { status gt 599 }`,
    `  errorfile 502 ${e('tenant-502.http')}`,
    `  errorfile 503 ${e('tenant-503.http')}`,
    `  errorfile 504 ${e('tenant-504.http')}`,
    '',
    'backend hoodyd',
    '  option forwardfor',
    '  timeout server 130s',
    `  server hoodyd unix@${l.daemonHttpSocket} send-proxy`,
    `  errorfile 502 ${e('daemon-502.http')}`,
    `  errorfile 503 ${e('daemon-503.http')}`,
    `  errorfile 504 ${e('daemon-504.http')}`,
    '',
  ];
  return lines.join('\n');
}
