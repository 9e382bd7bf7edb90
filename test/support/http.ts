import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:tls';

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json<T = Record<string, unknown>>(): T;
}

/** One request to a public listener on 127.0.0.1 with a chosen Host / SNI name (no DNS involved). */
export function call(opts: {
  port: number;
  host: string;
  path: string;
  method?: string;
  body?: unknown;
  headers?: Record<string, string>;
  tls?: { ca?: string | string[]; insecure?: boolean };
}): Promise<Answer> {
  const payload = opts.body === undefined ? undefined : Buffer.from(typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body));
  const headers: Record<string, string | number> = { host: opts.host, ...(opts.headers ?? {}) };
  if (payload) {
    headers['content-length'] = payload.length;
    headers['content-type'] ??= 'application/json';
  }
  return new Promise((resolve, reject) => {
    const base = { host: '127.0.0.1', port: opts.port, path: opts.path, method: opts.method ?? 'GET', headers, agent: false as const };
    const done = (res: import('node:http').IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: <T>() => JSON.parse(text) as T });
      });
      res.on('error', reject);
    };
    const req = opts.tls
      ? httpsRequest({ ...base, servername: opts.host.replace(/:\d+$/, ''), ca: opts.tls.ca, rejectUnauthorized: !opts.tls.insecure }, done)
      : httpRequest(base, done);
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

/** The certificate a fresh handshake serves for an SNI name. */
export function servedCertificate(port: number, servername: string): Promise<{ fingerprint256: string; issuer: Record<string, string>; subjectaltname?: string; raw: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      const c = s.getPeerCertificate();
      s.end();
      resolve(c as unknown as { fingerprint256: string; issuer: Record<string, string>; subjectaltname?: string; raw: Buffer });
    });
    s.on('error', reject);
  });
}
