import { isUtf8 } from 'node:buffer';
import { fail } from '../errors.js';
import { FileArea } from '../files.js';
import type { ContainerRow } from '../store.js';
import type { Scope } from '../tokens.js';
import { type OutboundResponse, outboundFetch } from './outbound.js';
import type { HostOp } from './protocol.js';

/**
 * The host functions of scripts (fetch, files.*, acme.order), served in the daemon. Each acts with the
 * authority of the run's caller and no more: the scope the matching HTTP route needs, and an anonymous
 * (`@auth none`, no token) run has none. A relative fetch reaches only the run's own container's API.
 */

/** A request into the container's own API on behalf of a script (the daemon injects it into the public app). */
export interface SelfRequest {
  method: string;
  /** Path and query, e.g. /api/v1/files/x?y=1 */
  path: string;
  headers: Record<string, string>;
  body: Buffer | null;
}

export interface SelfResponse {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: Buffer;
}

/** Who a relative fetch acts for; the daemon keeps it on its side of the request (never in a header). */
export interface SelfCall {
  container: string;
  /** The run's caller token id; null for an anonymous run (the fetch then carries no identity). */
  tokenId: string | null;
  /** Scripts up the call chain, this fetch included. */
  depth: number;
}

export type SelfFetch = (call: SelfCall, req: SelfRequest) => Promise<SelfResponse>;

/**
 * The ACME side of `acme.order()` inside scripts (the daemon passes its AcmeService). `container` is the
 * container's name; the result goes back to the script as JSON (cert, key, chain… or a dry run's report).
 */
export interface AcmeHook {
  order(container: string, domains: readonly string[], opts: { dryRun: boolean }): Promise<object>;
}

/** The token a run was called with (resolved by the router): what its host calls may do. */
export interface RunCaller {
  id: string;
  user: string;
  scopes: readonly Scope[];
}

export interface HostCallDeps {
  domain: string;
  selfFetch: SelfFetch;
  acme?: AcmeHook;
}

export interface HostCallRun {
  row: ContainerRow;
  caller: RunCaller | null;
  depth: number;
  dryRun: boolean;
  signal: AbortSignal;
}

// Bounds on what a script may send in one fetch (node's own header limit is 16 KiB).
export const FETCH_MAX_HEADERS = 64;
export const FETCH_MAX_HEADER_BYTES = 8 * 1024;
export const FETCH_MAX_HEADERS_TOTAL = 16 * 1024;
export const FETCH_MAX_URL = 8 * 1024;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
/** Headers a script may not set on a self-fetch: authority and routing are the daemon's to decide. */
const SELF_DROP_HEADERS = ['host', 'connection', 'content-length', 'transfer-encoding', 'cookie', 'keep-alive', 'upgrade'];

/** The caller may do what the HTTP route for it allows: 401 without a token, 403 without the scope. */
function need(run: HostCallRun, scope: Scope): void {
  const c = run.caller;
  if (!c) throw fail('UNAUTHORIZED');
  if (!c.scopes.includes(scope) && !c.scopes.includes('admin')) throw fail('FORBIDDEN', `this token lacks the ${scope} scope`);
}

export function flatHeaders(h: Record<string, string | string[] | number | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v);
  return out;
}

function looksLikeJson(text: string): boolean {
  if (!/^\s*[[{]/.test(text)) return false;
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** The script's fetch headers, checked: valid names, no CR/LF/NUL, bounded in count and size. */
export function scriptHeaders(raw: unknown): Record<string, string> {
  const entries = Object.entries(raw && typeof raw === 'object' ? (raw as Record<string, unknown>) : {});
  if (entries.length > FETCH_MAX_HEADERS) throw fail('FETCH_HEADERS_TOO_MANY', FETCH_MAX_HEADERS);
  const out: Record<string, string> = {};
  let total = 0;
  for (const [k, v] of entries) {
    const value = String(v);
    if (!HEADER_NAME.test(k)) throw fail('FETCH_HEADER_INVALID', `name ${JSON.stringify(k.slice(0, 64))}`);
    if (/[\r\n\0]/.test(value)) throw fail('FETCH_HEADER_INVALID', `value of ${k} has CR, LF or NUL`);
    const size = Buffer.byteLength(value);
    if (size > FETCH_MAX_HEADER_BYTES) throw fail('FETCH_HEADER_TOO_LONG', k, FETCH_MAX_HEADER_BYTES);
    total += k.length + size + 4;
    if (total > FETCH_MAX_HEADERS_TOTAL) throw fail('FETCH_HEADERS_TOO_LARGE', FETCH_MAX_HEADERS_TOTAL);
    out[k.toLowerCase()] = value;
  }
  return out;
}

export async function hostCall(deps: HostCallDeps, run: HostCallRun, op: HostOp, args: Record<string, unknown>): Promise<unknown> {
  const files = FileArea.of(run.row, 'files');
  switch (op) {
    case 'fetch':
      return fetchFor(deps, run, args);
    case 'files.read':
      need(run, 'files');
      return (await files.read(String(args.path))).toString('utf8');
    case 'files.write': {
      need(run, 'files');
      const data = args.data instanceof Uint8Array ? Buffer.from(args.data) : String(args.data ?? '');
      const w = await files.write(String(args.path), data);
      return { path: w.path, size: w.size, created: w.created };
    }
    case 'files.list':
      need(run, 'files');
      return files.list(String(args.path ?? ''));
    case 'files.delete':
      need(run, 'files');
      await files.remove(String(args.path));
      return null;
    case 'acme.order': {
      if (!deps.acme) throw new Error('acme is not available: this host has no ACME client configured for exec');
      // Certificates are the proxy namespace's: the route that installs them needs the proxy scope.
      need(run, 'proxy');
      const domains = Array.isArray(args.domains) ? args.domains.map(String) : [];
      if (domains.length === 0) throw new Error('acme.order needs a domain or a list of domains');
      const r = await deps.acme.order(run.row.name, domains, { dryRun: run.dryRun });
      return JSON.parse(JSON.stringify(r)) as unknown;
    }
  }
}

async function fetchFor(deps: HostCallDeps, run: HostCallRun, args: Record<string, unknown>): Promise<unknown> {
  const url = String(args.url ?? '');
  if (url.length > FETCH_MAX_URL) throw fail('URI_TOO_LONG', `a fetch URL is at most ${FETCH_MAX_URL} characters`);
  const method = String(args.method ?? 'GET').toUpperCase();
  if (!HEADER_NAME.test(method) || method.length > 32) throw fail('FETCH_HEADER_INVALID', `method ${JSON.stringify(method.slice(0, 32))}`);
  const headers = scriptHeaders(args.headers);
  const text = typeof args.body === 'string' ? args.body : null;
  const body = args.body instanceof Uint8Array ? Buffer.from(args.body) : text !== null ? Buffer.from(text) : null;
  const res =
    url.startsWith('/') && !url.startsWith('//') && !url.startsWith('/\\')
      ? await fetchSelf(deps, run, url, method, headers, body, text)
      : await outboundFetch({ url, method, headers, body }, { domain: deps.domain, signal: run.signal });
  return {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
    url: res.url,
    ...(isUtf8(res.body) ? { text: res.body.toString('utf8') } : { bytes: new Uint8Array(res.body) }),
  };
}

/**
 * A relative URL: this container's own API. With a caller, the caller's authority (a token the script adds is
 * dropped); an anonymous run has none to pass on, so only a token the script presents itself can authorize it.
 */
async function fetchSelf(
  deps: HostCallDeps,
  run: HostCallRun,
  url: string,
  method: string,
  headers: Record<string, string>,
  body: Buffer | null,
  text: string | null,
): Promise<OutboundResponse> {
  const target = new URL(url, 'http://self'); // dot segments resolved: the path cannot climb out
  if (target.origin !== 'http://self') throw fail('PATH_INVALID', 'a relative fetch stays on this container');
  if (run.caller) {
    target.searchParams.delete('token');
    delete headers.authorization;
  }
  const path = target.pathname + target.search;
  for (const h of SELF_DROP_HEADERS) delete headers[h];
  for (const h of Object.keys(headers)) if (h.startsWith('x-hoody-')) delete headers[h];
  // A string body without a content type goes as JSON when it is JSON (the seed's bare JSON.stringify body).
  if (text !== null && !headers['content-type']) headers['content-type'] = looksLikeJson(text) ? 'application/json' : 'text/plain; charset=utf-8';
  const call: SelfCall = { container: run.row.name, tokenId: run.caller?.id ?? null, depth: run.depth + 1 };
  const r = await deps.selfFetch(call, { method, path, headers, body });
  return { status: r.status, statusText: '', headers: flatHeaders(r.headers), body: r.body, url: path };
}
