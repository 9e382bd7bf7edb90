import { fail } from '../errors.js';
import type { EntryRow, RunQuery, RunRow, RunStatus, RunTrigger } from './store.js';

/** An entry as the API shows it (snake_case, as DESIGN.md). */
export interface CronEntryView {
  id: string;
  user: string;
  schedule: string;
  command: string;
  comment: string | null;
  enabled: boolean;
  timezone: string;
  expires_at: string | null;
  expired: boolean;
  /** Next scheduled slot; null when disabled, expired, `@reboot`, or when no slot comes before expires_at. */
  next_run: string | null;
  created_at: string;
  updated_at: string;
}

/** One run: one row of the cron log. */
export interface CronRunView {
  id: number;
  entry_id: string;
  user: string;
  trigger: RunTrigger;
  status: RunStatus;
  started_at: string;
  finished_at: string | null;
  exit_code: number | null;
  output: string;
  truncated: boolean;
  /** The token id that asked for the run, or 'scheduler'. */
  triggered_by: string;
  scheduled_for: string | null;
}

/** A run as a row of the container log (`time` orders and pages it). A type alias: a plain record. */
export type CronLogRow = { time: string } & { [K in keyof CronRunView]: CronRunView[K] };

export interface RunQueryInput {
  limit?: number;
  /** ISO 8601 instant (or a Date): runs started at or after it. */
  since?: string | Date;
}

export const DEFAULT_RUN_LIMIT = 100;
export const MAX_RUN_LIMIT = 1000;

export function entryView(e: EntryRow, expired: boolean, nextRun: Date | null): CronEntryView {
  return {
    id: e.id,
    user: e.user,
    schedule: e.schedule,
    command: e.command,
    comment: e.comment,
    enabled: e.enabled,
    timezone: e.timezone,
    expires_at: e.expiresAt,
    expired,
    next_run: nextRun?.toISOString() ?? null,
    created_at: e.createdAt,
    updated_at: e.updatedAt,
  };
}

export function runView(r: RunRow): CronRunView {
  return {
    id: r.id,
    entry_id: r.entryId,
    user: r.user,
    trigger: r.trigger,
    status: r.status,
    started_at: r.startedAt,
    finished_at: r.finishedAt,
    exit_code: r.exitCode,
    output: r.output,
    truncated: r.truncated,
    triggered_by: r.triggeredBy,
    scheduled_for: r.scheduledFor,
  };
}

export function runQuery(q: RunQueryInput = {}): RunQuery {
  const limit = q.limit ?? DEFAULT_RUN_LIMIT;
  if (!Number.isInteger(limit) || limit < 1) throw fail('BAD_REQUEST', `limit must be a positive integer, got ${limit}`);
  if (q.since === undefined) return { limit: Math.min(limit, MAX_RUN_LIMIT) };
  const ms = q.since instanceof Date ? q.since.getTime() : Date.parse(q.since);
  if (Number.isNaN(ms)) throw fail('BAD_REQUEST', `since must be an ISO 8601 date-time, got ${JSON.stringify(String(q.since))}`);
  return { limit: Math.min(limit, MAX_RUN_LIMIT), since: new Date(ms).toISOString() };
}
