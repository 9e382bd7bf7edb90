import { lookup as dnsLookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { fail, type HoodyError, isHoodyError } from '../errors.js';

/**
 * Absolute-URL fetch for scripts, and its policy: only http(s) to public addresses. Refused: loopback,
 * link-local (with the 169.254.169.254 metadata address), private and shared ranges, multicast and reserved
 * space, IPv4-mapped/NAT64/6to4 IPv6 forms, unix sockets, and every host under the hoody domain (another
 * container's namespace is reachable only from outside, with its own token). The check runs inside the
 * connection's own DNS lookup, so every address a name resolves to is checked and the address connected to
 * is one that was checked (no DNS-rebinding window); redirects are followed by hand and checked again.
 */

// One list per family: an IPv6 rule such as ::/96 would otherwise match every IPv4 address.
const blocked4 = new BlockList();
const blocked6 = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  blocked4.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 96], // unspecified, loopback (::1) and IPv4-compatible
  ['::ffff:0:0', 96],
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001:db8::', 32],
  ['2002::', 16],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const)
  blocked6.addSubnet(net, bits, 'ipv6');

/** The policy's one refusal: HOODY_FETCH_REFUSED, the script sees its code and the rule that refused. */
function refused(reason: string): HoodyError {
  return fail('FETCH_REFUSED', reason);
}

/** Why an address may not be fetched from a script, or null when it may. */
export function addressRefusal(address: string): string | null {
  const family = isIP(address);
  if (family === 0) return `${address} is not an IP address`;
  const bare = address.replace(/^\[|\]$/g, '').split('%')[0]!;
  if (family === 4 ? blocked4.check(bare, 'ipv4') : blocked6.check(bare, 'ipv6'))
    return `${address} is a loopback, link-local, private or reserved address`;
  return null;
}

function normalizeHost(hostname: string): string {
  return hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
}

/** The URL-level part of the policy (scheme, hoody domain, IP literals); names are checked at lookup. */
export function urlRefusal(url: URL, domain: string): string | null {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `only http and https URLs, not ${url.protocol}`;
  const host = normalizeHost(url.hostname);
  const d = normalizeHost(domain);
  if (host === d || host.endsWith(`.${d}`)) return `${host} is under the hoody domain ${d}`;
  if (host === 'localhost' || host.endsWith('.localhost')) return `${host} is loopback`;
  if (isIP(host)) return addressRefusal(host);
  return null;
}

const guardedLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { all: true, family: options.family ?? 0 }).then(
    (addresses) => {
      if (addresses.length === 0) return callback(refused(`${hostname} does not resolve`), '', 4);
      for (const a of addresses) {
        const why = addressRefusal(a.address);
        if (why) return callback(refused(`${hostname} resolves to ${why}`), '', 4);
      }
      if (options.all) (callback as unknown as (e: null, a: typeof addresses) => void)(null, addresses);
      else callback(null, addresses[0]!.address, addresses[0]!.family);
    },
    (err: Error) => callback(err as NodeJS.ErrnoException, '', 4),
  );
};

export interface OutboundRequest {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: Buffer | null;
}

export interface OutboundResponse {
  url: string;
  status: number;
  statusText: string;
  headers: Record<string, string>;
  body: Buffer;
}

export interface OutboundOptions {
  domain: string;
  signal: AbortSignal;
  maxBytes?: number;
  maxRedirects?: number;
}

const DROP_REQUEST_HEADERS = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive', 'upgrade']);

function once(url: URL, req: OutboundRequest, opts: OutboundOptions, maxBytes: number): Promise<OutboundResponse> {
  const headers: Record<string, string> = { 'user-agent': 'hoody-exec', accept: '*/*' };
  for (const [k, v] of Object.entries(req.headers)) if (!DROP_REQUEST_HEADERS.has(k.toLowerCase())) headers[k.toLowerCase()] = v;
  if (req.body) headers['content-length'] = String(req.body.length);
  const options: RequestOptions = {
    method: req.method,
    headers,
    lookup: guardedLookup,
    signal: opts.signal,
    timeout: 60_000,
  };
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const r = send(url, options, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBytes) {
          res.destroy();
          reject(new Error(`fetch failed: the response of ${url.origin} is larger than ${maxBytes} bytes`));
        } else chunks.push(c);
      });
      res.on('error', reject);
      res.on('end', () => {
        const out: Record<string, string> = {};
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
        resolve({ url: url.href, status: res.statusCode ?? 502, statusText: res.statusMessage ?? '', headers: out, body: Buffer.concat(chunks) });
      });
    });
    r.on('timeout', () => r.destroy(new Error(`fetch failed: ${url.origin} did not answer`)));
    r.on('error', (err) => reject(isHoodyError(err) ? err : new Error(`fetch failed: ${err.message}`)));
    r.end(req.body ?? undefined);
  });
}

/** fetch() of an absolute URL under the policy above; redirects followed (and checked) up to maxRedirects. */
export async function outboundFetch(req: OutboundRequest, opts: OutboundOptions): Promise<OutboundResponse> {
  const maxBytes = opts.maxBytes ?? 16 * 1024 * 1024;
  let url: URL;
  try {
    url = new URL(req.url);
  } catch {
    throw new Error(`fetch failed: invalid URL ${JSON.stringify(req.url)}`);
  }
  let current = { ...req };
  for (let hop = 0; ; hop++) {
    const why = urlRefusal(url, opts.domain);
    if (why) throw refused(why);
    const res = await once(url, current, opts, maxBytes);
    const location = res.headers.location;
    if (![301, 302, 303, 307, 308].includes(res.status) || !location) return res;
    if (hop >= (opts.maxRedirects ?? 5)) throw new Error(`fetch failed: more than ${opts.maxRedirects ?? 5} redirects`);
    const next = new URL(location, url);
    if (next.origin !== url.origin) {
      const { authorization: _a, cookie: _c, ...rest } = Object.fromEntries(
        Object.entries(current.headers).map(([k, v]) => [k.toLowerCase(), v]),
      );
      current = { ...current, headers: rest };
    }
    url = next;
    if (res.status === 303 || ((res.status === 301 || res.status === 302) && current.method === 'POST'))
      current = { ...current, method: 'GET', body: null };
  }
}
