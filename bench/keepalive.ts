import { Agent, request } from 'node:http';

export interface Reply {
  status: number;
  text: string;
  ms: number;
}

/** Keep-alive requests to a listener on 127.0.0.1 with a chosen Host header (no DNS involved). */
export class KeepAliveClient {
  readonly agent: Agent;
  constructor(
    readonly port: number,
    maxSockets = 16,
    private readonly timeoutMs = 60_000,
  ) {
    this.agent = new Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  }

  call(method: string, host: string, path: string, body?: unknown, contentType?: string): Promise<Reply> {
    const payload = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const headers: Record<string, string | number> = { host };
    if (payload) {
      headers['content-length'] = payload.length;
      headers['content-type'] = contentType ?? (typeof body === 'string' ? 'text/plain' : 'application/json');
    }
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      const req = request({ host: '127.0.0.1', port: this.port, method, path, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - t0 }));
        res.on('error', reject);
      });
      req.setTimeout(this.timeoutMs, () => req.destroy(new Error(`${method} ${host}${path.split('?')[0]}: no answer in ${this.timeoutMs} ms`)));
      req.on('error', reject);
      if (payload) req.write(payload);
      req.end();
    });
  }

  /** Like call(), but a non-2xx answer is an error. */
  async ok(method: string, host: string, path: string, body?: unknown, contentType?: string): Promise<Reply> {
    const r = await this.call(method, host, path, body, contentType);
    if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${host}${path.split('?')[0]}: ${r.status} ${r.text.slice(0, 300)}`);
    return r;
  }

  close(): void {
    this.agent.destroy();
  }
}
