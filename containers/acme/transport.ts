import { AsyncLocalStorage } from 'node:async_hooks';
import { acmeLib, loadAcme } from './lib.js';
import { Agent, type RequestOptions, request } from 'node:https';
import type { Duplex } from 'node:stream';
import { rootCertificates } from 'node:tls';

/** An RFC 7807 problem document the ACME server answered with. */
export interface AcmeProblem {
  status: number;
  type: string;
  detail: string;
}

/** What one order's HTTP traffic sees and records (acme-client's axios instance is shared by every client). */
export interface TransportScope {
  agent: AcmeAgent;
  /** acme-client's retries of a request that failed without an answer, 5xx or 429: count and linear base delay. */
  retryAttempts: number;
  retryDelaySeconds: number;
  requests: number;
  badNonces: number;
  lastProblem: AcmeProblem | null;
}

/**
 * The HTTPS agent for one ACME service: the public roots plus an optional extra CA (a test server's), and the last
 * socket error it saw (acme-client turns a request that never got an answer into a misleading TypeError after its
 * retries; this keeps the real cause).
 */
export class AcmeAgent extends Agent {
  lastError: { at: number; err: NodeJS.ErrnoException } | null = null;

  constructor(extraCaPem: string | null) {
    super({ keepAlive: true, ...(extraCaPem ? { ca: [...rootCertificates, extraCaPem] } : {}) });
  }

  override createConnection(options: RequestOptions, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const socket = super.createConnection(options, callback);
    socket?.on('error', (err: NodeJS.ErrnoException) => {
      this.lastError = { at: Date.now(), err };
    });
    return socket;
  }
}

const scopes = new AsyncLocalStorage<TransportScope>();
let installed = false;

interface AcmeSettings {
  retryMaxAttempts: number;
  retryDefaultDelay: number;
  [k: string]: number;
}

/**
 * Hooks acme-client's (module-wide) axios instance once: a request made inside `withTransport()` uses that scope's
 * agent, retry budget, and records problems. acme-client reads its retry settings from
 * `instance.defaults.acmeSettings` at retry time, so those become getters that consult the current scope.
 * Requests outside any scope behave exactly as before.
 */
function install(): void {
  if (installed) return;
  installed = true;
  const acmeAxios = acmeLib().axios;
  const defaults = acmeAxios.defaults as typeof acmeAxios.defaults & { acmeSettings: AcmeSettings };
  const base = { ...defaults.acmeSettings };
  defaults.acmeSettings = {
    ...base,
    get retryMaxAttempts() {
      return scopes.getStore()?.retryAttempts ?? base.retryMaxAttempts;
    },
    get retryDefaultDelay() {
      return scopes.getStore()?.retryDelaySeconds ?? base.retryDefaultDelay;
    },
  };
  acmeAxios.interceptors.request.use((config) => {
    const scope = scopes.getStore();
    if (scope) {
      config.httpsAgent = scope.agent;
      scope.requests++;
    }
    return config;
  });
  acmeAxios.interceptors.response.use((resp) => {
    const scope = scopes.getStore();
    if (!scope) return resp;
    // A problem document, or an invalid challenge/authorization/order carrying one in `error`.
    const data: unknown = resp.data;
    const doc = resp.status >= 400 ? data : data && typeof data === 'object' && 'status' in data && data.status === 'invalid' && 'error' in data ? data.error : null;
    if (doc && typeof doc === 'object' && 'type' in doc && typeof doc.type === 'string') {
      const detail = 'detail' in doc && typeof doc.detail === 'string' ? doc.detail : '';
      scope.lastProblem = { status: resp.status, type: doc.type, detail };
      if (doc.type === 'urn:ietf:params:acme:error:badNonce') scope.badNonces++;
    }
    return resp;
  });
}

/** Runs `fn` (acme-client calls) with this scope's agent, retry budget and problem record. */
export async function withTransport<T>(scope: TransportScope, fn: () => Promise<T>): Promise<T> {
  await loadAcme();
  install();
  return scopes.run(scope, fn);
}

const TLS_TRUST_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** A socket/TLS error in words, with the fix when it is about trust. */
export function describeNetworkError(url: string, err: NodeJS.ErrnoException): string {
  const code = err.code ?? err.name;
  if (TLS_TRUST_CODES.has(code)) {
    return `the ACME server ${url} presented a TLS certificate hoody does not trust (${code}: ${err.message}); set HOODY_ACME_CA_FILE to its CA`;
  }
  return `cannot reach the ACME server ${url} (${code}: ${err.message})`;
}

/**
 * One GET of the directory with the service's agent, no retries: fails in milliseconds (rather than after
 * acme-client's ~75 s of retries) when the server is unreachable or its certificate untrusted.
 * Resolves to null when the directory looks right, else to the reason.
 */
export function probeDirectory(url: string, agent: Agent, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (why: string | null) => {
      if (!done) {
        done = true;
        resolve(why);
      }
    };
    let req: ReturnType<typeof request>;
    try {
      req = request(url, { method: 'GET', agent, timeout: timeoutMs, headers: { accept: 'application/json' } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          if (body.length < 1 << 20) body += c;
        });
        res.on('error', (err: NodeJS.ErrnoException) => finish(describeNetworkError(url, err)));
        res.on('end', () => {
          if (res.statusCode !== 200) return finish(`the ACME directory ${url} answered HTTP ${res.statusCode}`);
          try {
            const dir = JSON.parse(body) as Record<string, unknown>;
            if (typeof dir.newNonce === 'string' && typeof dir.newOrder === 'string') return finish(null);
          } catch {
            // not JSON: reported below
          }
          finish(`${url} is not an ACME directory (no newNonce/newOrder)`);
        });
      });
    } catch (err) {
      return finish(`invalid ACME directory URL ${url}: ${(err as Error).message}`);
    }
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer in ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => finish(describeNetworkError(url, err)));
    req.end();
  });
}
