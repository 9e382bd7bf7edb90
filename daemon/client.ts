import { request } from 'node:http';

/** An error answered by the daemon, with its catalogue code. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export class DaemonUnreachable extends Error {
  constructor(readonly socketPath: string, cause: Error) {
    super(`hoodyd does not answer on ${socketPath} (${(cause as NodeJS.ErrnoException).code ?? cause.message}); start it with \`hoody up\``);
    this.name = 'DaemonUnreachable';
  }
}

/** Talks to the admin API over the daemon's unix socket. */
export class AdminClient {
  constructor(readonly socketPath: string) {}

  async call<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          path,
          method,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.on('error', (err) => reject(new DaemonUnreachable(this.socketPath, err)));
      if (payload) req.write(payload);
      req.end();
    });
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // Prometheus text and the like are not JSON.
    }
    if (status >= 400) {
      const e = (parsed as { error?: { code?: string; message?: string } })?.error;
      throw new ApiError(status, e?.code ?? 'HOODY_UNKNOWN', e?.message ?? text);
    }
    return parsed as T;
  }

  async alive(): Promise<boolean> {
    try {
      await this.call('GET', '/v1/containers');
      return true;
    } catch (err) {
      return !(err instanceof DaemonUnreachable);
    }
  }
}
