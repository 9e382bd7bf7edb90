import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyRequest } from 'fastify';
import { fail } from '../../containers/errors.js';

/**
 * Who an in-process call (a script's relative fetch) acts for. It stays in the daemon: the request that
 * carries the call holds only a one-time handle to it, taken off before any hook, route or script runs.
 */
export interface InProcessCall {
  /** The only container the call may reach. */
  container: string;
  /** The caller's token id; null for an anonymous (`@auth none`) run, which has no identity to pass on. */
  tokenId: string | null;
  /** Scripts up the call chain (0 for every request from outside). */
  depth: number;
}

/** The header an injected request carries its handle in; every `x-hoody-*` header from outside is dropped. */
export const CALL_HEADER = 'x-hoody-call';
const INTERNAL_PREFIX = 'x-hoody-';

/** Removes every `x-hoody-*` header: a client can never speak for the daemon (called at the listener). */
export function stripInternalHeaders(req: IncomingMessage): void {
  let found = false;
  for (const name of Object.keys(req.headers))
    if (name.startsWith(INTERNAL_PREFIX)) {
      delete req.headers[name];
      found = true;
    }
  if (!found) return;
  const raw = req.rawHeaders;
  const kept: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2)
    if (!raw[i]!.toLowerCase().startsWith(INTERNAL_PREFIX)) kept.push(raw[i]!, raw[i + 1]!);
  raw.length = 0;
  raw.push(...kept);
}

/** The daemon's table of in-process calls in flight: handle -> call, each handle good for one request. */
export class CallAuthority {
  readonly #pending = new Map<string, InProcessCall>();

  /** A fresh unguessable handle for this call; release() it when the request is done (used or not). */
  issue(call: InProcessCall): string {
    const handle = randomBytes(32).toString('base64url');
    this.#pending.set(handle, { ...call });
    return handle;
  }

  release(handle: string): void {
    this.#pending.delete(handle);
  }

  /**
   * The call a request was injected for, or null for an ordinary request. The handle is consumed (a replay
   * finds nothing) and every x-hoody-* header removed, so no hook, route or script ever sees it.
   */
  take(req: FastifyRequest): InProcessCall | null {
    const handle = req.raw.headers[CALL_HEADER];
    stripInternalHeaders(req.raw);
    if (handle === undefined) return null;
    const call = typeof handle === 'string' ? this.#pending.get(handle) : undefined;
    if (typeof handle === 'string') this.#pending.delete(handle);
    if (!call) throw fail('UNAUTHORIZED');
    return call;
  }

  /** Calls issued and not yet released. */
  get size(): number {
    return this.#pending.size;
  }
}
