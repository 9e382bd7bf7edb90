import { fail } from '../errors.js';

/** What a script's magic comments say, with the defaults filled in. */
export interface Directives {
  /** isolate: a V8 isolate in the daemon's exec worker; bun: a Bun process inside the container. */
  runtime: 'isolate' | 'bun';
  /** serverless: a fresh start per request; persistent (bun): one long-lived fetch handler per script. */
  mode: 'serverless' | 'persistent';
  /** persistent: stopped after this long without a request. */
  idleMs: number;
  timeoutMs: number;
  memoryMb: number;
  /** `*` or one origin (`https://app.example`); null: no CORS headers. */
  cors: string | null;
  auth: 'token' | 'none';
}

export const DEFAULT_DIRECTIVES: Readonly<Directives> = Object.freeze({
  runtime: 'isolate',
  mode: 'serverless',
  idleMs: 600_000,
  timeoutMs: 10_000,
  memoryMb: 64,
  cors: null,
  auth: 'token',
});

/**
 * The wall-time ceiling of `@timeout`. The seed's flagship renew.ts says `@timeout 120000` (an ACME order
 * per domain takes seconds each), so the ceiling is 5 minutes rather than 60 s.
 */
export const MAX_TIMEOUT_MS = 300_000;
export const MIN_TIMEOUT_MS = 10;
/** `@idle` of a persistent script: from one second to a day. */
export const MIN_IDLE_MS = 1000;
export const MAX_IDLE_MS = 86_400_000;
const IDLE = /^(\d+)(ms|s|m|h)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
/** isolated-vm refuses less than 8 MB. */
export const MIN_MEMORY_MB = 8;
/**
 * The `@memory` ceiling: a heap limit per isolate. 128 MB fits every script that fetches, transforms JSON and
 * writes files; a container's isolates share a budget (ExecBudget) and the worker a hard cgroup limit anyway.
 */
export const MAX_MEMORY_MB = 128;

const DIRECTIVE = /^\/\/\s*@(\S+)(?:\s+(.*?))?\s*$/;

function invalid(line: number, text: string, why: string): never {
  throw fail('SCRIPT_DIRECTIVE_INVALID', `line ${line}: ${JSON.stringify(text.trim())}: ${why}`);
}

function integer(value: string | undefined, line: number, text: string, min: number, max: number, unit: string): number {
  if (value === undefined || !/^\d+$/.test(value)) invalid(line, text, `expected a whole number of ${unit}`);
  const n = Number(value);
  if (n < min || n > max) invalid(line, text, `must be between ${min} and ${max} ${unit}`);
  return n;
}

function origin(value: string | undefined, line: number, text: string): string {
  if (value === '*') return '*';
  if (value === undefined || /\s/.test(value)) invalid(line, text, 'expected * or one origin such as https://app.example');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    invalid(line, text, 'expected * or one origin such as https://app.example');
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.origin !== value)
    invalid(line, text, `expected an origin (scheme://host[:port], no path), e.g. ${url.origin}`);
  return value;
}

/**
 * Reads the magic comments at the top of a script: the leading run of `//` comment lines and blank lines.
 * `// @name value` lines are directives; other comments are ignored; the first line of code ends the header.
 * An unknown, repeated or malformed directive throws HOODY_SCRIPT_DIRECTIVE_INVALID naming the line.
 */
export function parseDirectives(source: string): Directives {
  const d: Directives = { ...DEFAULT_DIRECTIVES };
  const seen = new Set<string>();
  const lines = source.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!.trim();
    if (text === '' || (i === 0 && text.startsWith('#!'))) continue;
    if (!text.startsWith('//')) break;
    const m = DIRECTIVE.exec(text);
    if (!m) continue; // a plain comment
    const [, name = '', value] = m;
    const line = i + 1;
    if (seen.has(name)) invalid(line, text, `@${name} is given twice`);
    seen.add(name);
    switch (name) {
      case 'mode':
        if (value !== 'serverless' && value !== 'persistent') invalid(line, text, 'expected serverless (a fresh start per request) or persistent');
        d.mode = value;
        break;
      case 'runtime':
        if (value !== 'isolate' && value !== 'bun') throw fail('SCRIPT_RUNTIME_INVALID', `line ${line}: unknown runtime ${JSON.stringify(value ?? '')} (known: isolate, bun)`);
        d.runtime = value;
        break;
      case 'idle': {
        const m = IDLE.exec(value ?? '');
        if (!m) invalid(line, text, 'expected a duration such as 90s, 10m or 1h');
        d.idleMs = Number(m[1]) * UNIT_MS[m[2]!]!;
        if (d.idleMs < MIN_IDLE_MS || d.idleMs > MAX_IDLE_MS) invalid(line, text, 'must be between 1s and 24h');
        break;
      }
      case 'timeout':
        d.timeoutMs = integer(value, line, text, MIN_TIMEOUT_MS, MAX_TIMEOUT_MS, 'ms');
        break;
      case 'memory':
        // Above the ceiling is its own code: the script is fine, the host's budget is what refuses it.
        if (value !== undefined && /^\d+$/.test(value) && Number(value) > MAX_MEMORY_MB) throw fail('SCRIPT_MEMORY_CEILING', Number(value), MAX_MEMORY_MB);
        d.memoryMb = integer(value, line, text, MIN_MEMORY_MB, MAX_MEMORY_MB, 'MB');
        break;
      case 'cors':
        d.cors = origin(value, line, text);
        break;
      case 'auth':
        if (value !== 'token' && value !== 'none') invalid(line, text, 'expected token or none');
        d.auth = value;
        break;
      default:
        invalid(line, text, `unknown directive @${name} (known: @runtime, @mode, @idle, @timeout, @memory, @cors, @auth)`);
    }
  }
  // Checked once all are read: the directives may come in any order.
  if (d.mode === 'persistent' && d.runtime !== 'bun')
    throw fail('SCRIPT_RUNTIME_INVALID', '@mode persistent needs @runtime bun (an isolate is made fresh for every request)');
  if (seen.has('idle') && d.mode !== 'persistent') throw fail('SCRIPT_RUNTIME_INVALID', '@idle applies to @mode persistent only');
  return d;
}
