import { type IncomingMessage, type OutgoingHttpHeaders, request, STATUS_CODES, validateHeaderValue } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { fail } from '../errors.js';
import { checkedResponseHead, forwardedHeaders, rawErrorResponse, UPSTREAM_MAX_HEADER_BYTES, type UpstreamLimits, upstreamError } from './upstream.js';

/** The largest answer a container may give instead of switching protocols (a 401/426 page); bigger is a 502. */
export const UPGRADE_REFUSAL_MAX_BYTES = 64 * 1024;

function serializeHead(status: number, headers: OutgoingHttpHeaders): string {
  let raw = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    for (const value of Array.isArray(v) ? v : [v]) raw += `${k}: ${value}\r\n`;
  }
  return `${raw}\r\n`;
}

/** Joins two sockets both ways; either one closing or failing closes the other. */
function splice(a: Duplex, b: Duplex): void {
  const close = () => {
    a.destroy();
    b.destroy();
  };
  for (const s of [a, b]) {
    s.on('error', close);
    s.on('close', close);
  }
  a.pipe(b);
  b.pipe(a);
}

/**
 * Forwards an upgrade (websocket) to a container port. The container's answer is parsed by Node's HTTP client
 * (so a garbage or oversized head is a parse error), checked, and re-serialized: a valid 101 splices the two
 * sockets; any other valid answer is relayed (body bounded); everything else is a JSON 502/504 to the client.
 */
export function forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: { host: string; port: number }, limits: UpstreamLimits): void {
  let answered = false;
  const answer = (err: unknown) => {
    if (answered || socket.destroyed) return void socket.destroy();
    answered = true;
    socket.end(rawErrorResponse(upstreamError(err)));
    setTimeout(() => socket.destroy(), 5_000).unref(); // a client that never reads its error does not keep the socket
  };
  const ureq = request({
    host: target.host,
    port: target.port,
    method: req.method,
    path: req.url,
    headers: forwardedHeaders(req, true),
    agent: false,
    maxHeaderSize: UPSTREAM_MAX_HEADER_BYTES,
    timeout: limits.idleTimeoutMs,
  });
  const headTimer = setTimeout(() => ureq.destroy(fail('PROXY_UPSTREAM_TIMEOUT', `no answer to the upgrade within ${limits.headersTimeoutMs} ms`)), limits.headersTimeoutMs);
  headTimer.unref();
  ureq.on('timeout', () => ureq.destroy(fail('PROXY_UPSTREAM_TIMEOUT', `silent for ${limits.idleTimeoutMs} ms`)));
  ureq.on('error', (err) => {
    clearTimeout(headTimer);
    answer(err);
  });
  socket.on('error', () => ureq.destroy());
  socket.on('close', () => {
    if (!answered) ureq.destroy();
  });

  ureq.on('upgrade', (ures: IncomingMessage, usocket: Socket, uhead: Buffer) => {
    clearTimeout(headTimer);
    usocket.setTimeout(0); // a websocket may idle for hours; the app's pings keep it alive
    let out: OutgoingHttpHeaders;
    try {
      out = checkedResponseHead(ures.statusCode, ures.headers).headers;
      const protocol = String(ures.headers.upgrade ?? '');
      validateHeaderValue('upgrade', protocol);
      out = { ...out, connection: 'upgrade', upgrade: protocol };
    } catch (err) {
      usocket.destroy();
      return answer(err);
    }
    if (answered || socket.destroyed) return void usocket.destroy();
    answered = true;
    socket.write(serializeHead(101, out));
    if (uhead.length) socket.write(uhead);
    if (head.length) usocket.write(head);
    splice(socket, usocket);
  });

  // The container answered without switching protocols (401, 426, …): relay that answer, bounded.
  ureq.on('response', (ures: IncomingMessage) => {
    clearTimeout(headTimer);
    let checked: ReturnType<typeof checkedResponseHead>;
    try {
      checked = checkedResponseHead(ures.statusCode, ures.headers, ['content-length']);
    } catch (err) {
      ures.destroy();
      return answer(err);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    ures.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > UPGRADE_REFUSAL_MAX_BYTES) ureq.destroy(fail('PROXY_UPSTREAM_BODY_TOO_LARGE', UPGRADE_REFUSAL_MAX_BYTES));
      else chunks.push(chunk);
    });
    ures.on('error', (err) => answer(err));
    ures.on('end', () => {
      if (answered || socket.destroyed) return;
      answered = true;
      const body = Buffer.concat(chunks);
      socket.write(serializeHead(checked.status, { ...checked.headers, 'content-length': body.length, connection: 'close' }));
      socket.end(body);
    });
  });
  ureq.end();
}
