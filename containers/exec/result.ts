import { validateHeaderName, validateHeaderValue } from 'node:http';
import { fail, type HoodyError } from '../errors.js';
import type { Directives } from './directives.js';
import type { RunOutcome } from './protocol.js';
import type { RunReport } from './worker-host.js';

export interface RunResult {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** The largest body a script may answer with (it is held in the daemon's memory while it is sent). */
export const SCRIPT_RESPONSE_MAX_BYTES = 32 * 1024 * 1024;
/** Framing is the daemon's to compute; a script's content-length could split the client's connection. */
const HOP_BY_HOP = new Set(['connection', 'content-length', 'transfer-encoding', 'keep-alive', 'proxy-connection', 'upgrade', 'te', 'trailer']);

function checkedHeader(name: string, value: unknown): string {
  if (typeof value !== 'string') throw fail('SCRIPT_RESPONSE_INVALID', `header ${JSON.stringify(name)} is not a string`);
  try {
    validateHeaderName(name);
    validateHeaderValue(name, value);
  } catch {
    // Node would refuse it in writeHead (a bad token, CR/LF, NUL, a character beyond latin-1): refuse it here.
    throw fail('SCRIPT_RESPONSE_INVALID', `header ${JSON.stringify(name)}`);
  }
  return value;
}

/**
 * What a script returned, as an HTTP answer Node will accept: every check that `writeHead` would make (and a
 * bound on the size) happens here, so a hostile result is a catalogued 5xx, never a throw inside fastify.
 */
export function httpResult(outcome: RunOutcome): RunResult {
  const size = outcome.kind === 'empty' ? 0 : outcome.body === null ? 0 : typeof outcome.body === 'string' ? Buffer.byteLength(outcome.body) : outcome.body.byteLength;
  if (size > SCRIPT_RESPONSE_MAX_BYTES) throw fail('SCRIPT_RESPONSE_TOO_LARGE', SCRIPT_RESPONSE_MAX_BYTES);
  switch (outcome.kind) {
    case 'empty':
      return { status: 204, headers: {}, body: Buffer.alloc(0) };
    case 'json':
      return { status: 200, headers: { 'content-type': 'application/json; charset=utf-8' }, body: Buffer.from(outcome.body) };
    case 'bytes':
      return { status: 200, headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from(outcome.body) };
    case 'response': {
      if (!Number.isInteger(outcome.status) || outcome.status < 200 || outcome.status > 599)
        throw fail('SCRIPT_RESPONSE_INVALID', `status ${String(outcome.status)} (200-599)`);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(outcome.headers ?? {})) {
        const name = k.toLowerCase();
        if (HOP_BY_HOP.has(name)) continue;
        headers[name] = checkedHeader(name, v);
      }
      const body = outcome.body === null ? Buffer.alloc(0) : Buffer.from(outcome.body);
      if (typeof outcome.body === 'string' && !headers['content-type']) headers['content-type'] = 'text/plain; charset=utf-8';
      return { status: outcome.status, headers, body };
    }
  }
}

/** A failed run as the HTTP error its caller gets. */
export function failure(report: Extract<RunReport, { type: 'failed' }>, d: Directives, workerMb: number): HoodyError {
  switch (report.failure) {
    case 'thrown':
      return fail('SCRIPT_ERROR', report.message);
    case 'timeout':
      return fail('SCRIPT_TIMEOUT', d.timeoutMs);
    case 'memory':
      return fail('SCRIPT_MEMORY', d.memoryMb);
    case 'aborted':
      return fail('SCRIPT_ABORTED');
    case 'busy':
      return fail('EXEC_OVERLOADED', report.message);
    case 'oom':
      return fail('EXEC_WORKER_OOM', workerMb);
    case 'internal':
      return fail('EXEC_WORKER_FAILED', report.message);
  }
}
