/** What a run is asked with (an HTTP request, a cron slot, a script's fetch), and the `request` a script sees. */
import { fail } from '../errors.js';
import { flatHeaders, type RunCaller } from './host-calls.js';
import type { ScriptRequest } from './protocol.js';

export interface RunInput {
  method: string;
  /** The request path as called (without the query). */
  path: string;
  query: Record<string, string | string[] | undefined>;
  headers: Record<string, string | string[] | undefined>;
  /** The raw body (parsed here: JSON when the content type says so, text otherwise). */
  body: Buffer | string | null;
  dryRun: boolean;
  /** The caller's token (its host calls get its scopes); null for an anonymous `@auth none` run. */
  caller: RunCaller | null;
  /** How many scripts up the call chain (scripts calling scripts through fetch); the daemon's record, never a header. */
  depth?: number;
}

function isJsonType(type: string | undefined): boolean {
  return !!type && /^application\/([\w.+-]*\+)?json\b/i.test(type.trim());
}

export /** `request` inside the script. The caller's token is not handed to the script (its host calls act for it anyway). */
function scriptRequest(input: RunInput): ScriptRequest {
  const headers = flatHeaders(input.headers);
  delete headers.authorization;
  for (const k of Object.keys(headers)) if (k.startsWith('x-hoody-')) delete headers[k];
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(input.query)) if (v !== undefined && k !== 'token') query[k] = v;
  let body: unknown = null;
  const raw = input.body;
  if (raw !== null && raw.length > 0) {
    const text = typeof raw === 'string' ? raw : raw.toString('utf8');
    if (isJsonType(headers['content-type'])) {
      try {
        body = JSON.parse(text);
      } catch (err) {
        throw fail('BODY_INVALID', `not JSON: ${(err as Error).message}`);
      }
    } else body = text;
  }
  return { method: input.method.toUpperCase(), path: input.path, query, headers, body, dry_run: input.dryRun };
}
