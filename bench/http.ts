import { request } from 'node:http';

export interface Reply {
  status: number;
  text: string;
  /** The catalogue code of an error body, if any. */
  code: string | undefined;
}

/** One request to a public listener on 127.0.0.1 with a chosen Host header (no DNS involved). */
export function publicCall(port: number, host: string, method: string, path: string, body?: unknown): Promise<Reply> {
  const payload =
    body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | number> = { host };
  if (payload) {
    headers['content-length'] = payload.length;
    headers['content-type'] = typeof body === 'string' ? 'text/plain' : 'application/json';
  }
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let code: string | undefined;
        try {
          code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
        } catch {
          code = undefined;
        }
        resolve({ status: res.statusCode ?? 0, text, code });
      });
      res.on('error', reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${host}${path}: no answer in 60 s`)));
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}
