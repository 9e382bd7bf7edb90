import { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { fail, type HoodyError, isHoodyError } from '../errors.js';

/** What the forwarder never passes on, in either direction (RFC 9110 7.6.1, plus framing we recompute). */
export const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

/** The largest response header block a container may send (the same as our listeners accept from clients). */
export const UPSTREAM_MAX_HEADER_BYTES = 16 * 1024;

export interface UpstreamLimits {
  /** The container must send its whole header block within this. */
  headersTimeoutMs: number;
  /** A request or response body may stall this long at most. */
  idleTimeoutMs: number;
}

export const DEFAULT_UPSTREAM_LIMITS: UpstreamLimits = { headersTimeoutMs: 60_000, idleTimeoutMs: 60_000 };

export function hostOf(req: IncomingMessage): string {
  return (req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
}

export function isSecure(req: IncomingMessage): boolean {
  return Boolean((req.socket as TLSSocket).encrypted);
}

function connectionNamed(headers: IncomingHttpHeaders): string[] {
  return String(headers.connection ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

/** Requests whose client address a fleet host vouched for (the authenticated hop, issue 12.4). */
const vouched = new WeakMap<IncomingMessage, string>();

export function vouchClient(req: IncomingMessage, client: string): void {
  vouched.set(req, client);
}

export function vouchedClient(req: IncomingMessage): string | undefined {
  return vouched.get(req);
}

/** The client's request headers as the container gets them: hop-by-hop gone, X-Forwarded-* set. */
export function forwardedHeaders(req: IncomingMessage, keepUpgrade: boolean): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = { ...req.headers };
  for (const h of [...HOP_BY_HOP, ...connectionNamed(req.headers)]) if (!(keepUpgrade && (h === 'upgrade' || h === 'connection'))) delete headers[h];
  const remote = vouched.get(req) ?? req.socket.remoteAddress ?? '';
  headers['x-forwarded-for'] = req.headers['x-forwarded-for'] ? `${req.headers['x-forwarded-for']}, ${remote}` : remote;
  headers['x-forwarded-proto'] = isSecure(req) ? 'https' : 'http';
  headers['x-forwarded-host'] = req.headers.host ?? '';
  return headers;
}

/**
 * Checks a container's response head before any of it reaches a client: a status Node would refuse (or one
 * outside 100-599) and a header Node would refuse become a 502, so `writeHead` cannot throw on tenant data.
 * Hop-by-hop headers and framing (content-length/transfer-encoding when not a plain length) are dropped:
 * Node recomputes the framing for the client.
 */
export function checkedResponseHead(status: number | undefined, headers: IncomingHttpHeaders, extraDrop: readonly string[] = []): { status: number; headers: OutgoingHttpHeaders } {
  if (status === undefined || !Number.isInteger(status) || status < 100 || status > 599) throw fail('PROXY_UPSTREAM_FAILED', `invalid response status ${String(status)}`);
  const drop = new Set([...HOP_BY_HOP, ...connectionNamed(headers), ...extraDrop]);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || drop.has(name)) continue;
    if (name === 'content-length' && (headers['transfer-encoding'] !== undefined || !/^\d{1,15}$/.test(String(value)))) continue;
    try {
      validateHeaderName(name);
      for (const v of Array.isArray(value) ? value : [value]) validateHeaderValue(name, v);
    } catch {
      throw fail('PROXY_UPSTREAM_FAILED', `invalid response header ${JSON.stringify(name)}`);
    }
    out[name] = value;
  }
  return { status, headers: out };
}

/** Maps whatever went wrong talking to a container to a catalogued error. */
export function upstreamError(err: unknown): HoodyError {
  if (isHoodyError(err)) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'HPE_HEADER_OVERFLOW') return fail('PROXY_UPSTREAM_HEADERS_TOO_LARGE', UPSTREAM_MAX_HEADER_BYTES);
  if (typeof e?.code === 'string' && e.code.startsWith('HPE_')) return fail('PROXY_UPSTREAM_FAILED', `invalid HTTP response (${e.message})`);
  return fail('PROXY_UPSTREAM_FAILED', e?.message ?? String(err));
}

/** The JSON error body, as a raw HTTP/1.1 response (for sockets that never became a ServerResponse). */
export function rawErrorResponse(err: HoodyError): string {
  const body = JSON.stringify({ error: { code: err.code, message: err.message } });
  return `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}
