import { fail } from './errors.js';

export type LogSourceName = 'cron' | 'exec';

export interface LogQuery {
  since?: string;
  limit?: number;
}

/**
 * One namespace's log (cron runs, exec requests), read oldest first; `time` orders and pages it. With `user`,
 * only that user's rows (cron runs are a user's own; the exec log has no users: scripts are the container's).
 */
export interface LogSource {
  name: LogSourceName;
  read(container: string, q: LogQuery, user?: string): (Record<string, unknown> & { time: string })[];
}

/** Validates `since` (ISO 8601) and `limit` from a query string. */
export function logQuery(since: string | undefined, limit: number | undefined): LogQuery {
  if (since !== undefined && Number.isNaN(Date.parse(since))) throw fail('BAD_REQUEST', `since must be an ISO 8601 time, got ${JSON.stringify(since)}`);
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > 1000)) throw fail('BAD_REQUEST', 'limit must be 1-1000');
  return { since: since === undefined ? undefined : new Date(since).toISOString(), limit };
}

export function pickSource(sources: readonly LogSource[], name: string): LogSource {
  const s = sources.find((x) => x.name === name);
  if (!s) throw fail('BAD_REQUEST', `source must be one of ${sources.map((x) => x.name).join(', ') || '(none)'}`);
  return s;
}
