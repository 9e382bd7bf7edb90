/**
 * hoodyd's public listener behind the data plane: a unix socket where every connection starts with a PROXY
 * protocol v1 line (HAProxy's `send-proxy`) naming the real client, then HTTP (HAProxy ends all TLS).
 */
import { existsSync } from 'node:fs';
import { chmod, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

const clients = new WeakMap<object, string>();
/** The client's address: from the PROXY line when the connection came through the data plane. */
export function clientAddress(socket: { remoteAddress?: string }): string | undefined {
  return clients.get(socket) ?? socket.remoteAddress;
}

/** The longest v1 line the protocol allows (107 bytes with CRLF). */
const MAX_LINE = 107;

/** Parses `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>` (or `PROXY UNKNOWN …`); null when not a valid line. */
export function parseProxyLine(line: string): { client: string | null } | null {
  const parts = line.split(' ');
  if (parts[0] !== 'PROXY') return null;
  if (parts[1] === 'UNKNOWN') return { client: null };
  if ((parts[1] !== 'TCP4' && parts[1] !== 'TCP6') || parts.length !== 6) return null;
  return { client: parts[2] ?? null };
}

/** A unix socket server whose connections are handed on once their PROXY line is read (the rest is kept). */
export async function listenProxied(path: string, onConnection: (socket: Socket, client: string | null) => void, headerTimeoutMs = 5_000): Promise<Server> {
  const server = createServer((socket) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), headerTimeoutMs);
    socket.on('error', () => socket.destroy());
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n');
      if (end < 0) {
        if (buf.length > MAX_LINE) socket.destroy();
        return;
      }
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      const parsed = end <= MAX_LINE ? parseProxyLine(buf.subarray(0, end).toString('latin1')) : null;
      if (!parsed) return void socket.destroy();
      const rest = buf.subarray(end + 2);
      if (rest.length) socket.unshift(rest);
      onConnection(socket, parsed.client);
      socket.resume();
    };
    socket.on('data', onData);
  });
  if (existsSync(path)) await rm(path); // stale from a killed daemon
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(path, 0o600);
  return server;
}

/** Marks a plain connection with its client and hands it to the HTTP server. */
export function acceptHttp(emit: (socket: Duplex) => void): (socket: Socket, client: string | null) => void {
  return (socket, client) => {
    if (client) clients.set(socket, client);
    emit(socket);
  };
}
