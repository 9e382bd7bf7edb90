import { fail } from '../errors.js';
import { type CompiledSchedule, checkTimezone, compileSchedule, type PatternCache } from './schedule.js';

export const MAX_COMMAND_BYTES = 64 * 1024;
export const MAX_COMMENT_BYTES = 1024;
const MAX_SCHEDULE_CHARS = 256;

/** A new entry as the API takes it (snake_case, as on the wire). */
export interface NewEntry {
  schedule: string;
  command: string;
  comment?: string | null;
  enabled?: boolean;
  expires_at?: string | null;
  timezone?: string;
}

/** PATCH: any subset; `null` clears comment or expires_at. */
export type EntryPatch = Partial<NewEntry>;

/** The validated, normalised fields of an entry. */
export interface EntryFields {
  schedule: string;
  command: string;
  comment: string | null;
  enabled: boolean;
  timezone: string;
  expiresAt: string | null;
}

const KEYS = new Set(['schedule', 'command', 'comment', 'enabled', 'expires_at', 'timezone']);
// ISO 8601 date-time with an explicit zone (Z or ±hh:mm), so the instant is never ambiguous.
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})$/i;

function str(input: Record<string, unknown>, key: string, nullable: boolean): string | null | undefined {
  const v = input[key];
  if (v === undefined || (nullable && v === null)) return v as null | undefined;
  if (typeof v !== 'string') throw fail('BODY_INVALID', `${key} must be a string${nullable ? ' or null' : ''}`);
  return v;
}

function checkKeys(input: unknown): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw fail('BODY_INVALID', 'expected a JSON object');
  const obj = input as Record<string, unknown>;
  for (const k of Object.keys(obj)) if (!KEYS.has(k)) throw fail('CRON_PROPERTY_UNKNOWN', k);
  return obj;
}

function checkCommand(command: string): string {
  // Length first, and by the cheap upper bound, so a huge body costs one comparison.
  if (command.length > MAX_COMMAND_BYTES || Buffer.byteLength(command) > MAX_COMMAND_BYTES)
    throw fail('CRON_COMMAND_TOO_LONG', MAX_COMMAND_BYTES);
  if (command.trim() === '') throw fail('BODY_INVALID', 'command must not be empty');
  if (command.includes('\0')) throw fail('BODY_INVALID', 'command must not contain NUL bytes');
  return command;
}

function checkComment(comment: string | null): string | null {
  if (comment !== null && (comment.length > MAX_COMMENT_BYTES || Buffer.byteLength(comment) > MAX_COMMENT_BYTES))
    throw fail('CRON_COMMENT_TOO_LONG', MAX_COMMENT_BYTES);
  return comment;
}

export function checkExpiresAt(value: string | null, now: Date): string | null {
  if (value === null) return null;
  const text = value.trim();
  const ms = ISO_INSTANT.test(text) ? Date.parse(text) : Number.NaN;
  const [y, m, d] = text.slice(0, 10).split('-').map(Number) as [number, number, number];
  // Date.parse rolls 2026-02-30 over into March; a day the month does not have is a typo, not a date.
  if (Number.isNaN(ms) || new Date(Date.UTC(y, m - 1, d)).getUTCDate() !== d) throw fail('CRON_EXPIRES_INVALID', value);
  if (ms <= now.getTime()) throw fail('CRON_EXPIRES_PAST', new Date(ms).toISOString());
  return new Date(ms).toISOString();
}

function checkSchedule(schedule: string, timezone: string, now: Date, cache?: PatternCache): CompiledSchedule {
  if (schedule.length > MAX_SCHEDULE_CHARS) throw fail('CRON_SCHEDULE_INVALID', `longer than ${MAX_SCHEDULE_CHARS} characters`);
  return compileSchedule(schedule, timezone, now, cache);
}

function normaliseSchedule(schedule: string): string {
  const t = schedule.trim();
  return t.startsWith('@') ? t.toLowerCase() : t.split(/\s+/).join(' ');
}

/** Validates a new entry completely (throws a distinct catalogued code per problem) before anything is stored. */
export function validateNew(input: unknown, now: Date, cache?: PatternCache): EntryFields {
  const obj = checkKeys(input);
  const schedule = str(obj, 'schedule', false);
  const command = str(obj, 'command', false);
  if (schedule === undefined || schedule === null) throw fail('BODY_INVALID', 'schedule is required');
  if (command === undefined || command === null) throw fail('BODY_INVALID', 'command is required');
  const comment = str(obj, 'comment', true) ?? null;
  const timezoneIn = str(obj, 'timezone', false) ?? 'UTC';
  const expiresIn = str(obj, 'expires_at', true) ?? null;
  if (obj.enabled !== undefined && typeof obj.enabled !== 'boolean') throw fail('BODY_INVALID', 'enabled must be a boolean');
  checkCommand(command);
  return checkedFields({ schedule, command, comment, enabled: (obj.enabled as boolean | undefined) ?? true, timezone: timezoneIn }, () => checkExpiresAt(expiresIn, now), now, cache);
}

/** Validates a patch against the current fields; returns the merged result (nothing is stored here). */
export function validatePatch(current: EntryFields, input: unknown, now: Date, cache?: PatternCache): EntryFields {
  const obj = checkKeys(input);
  const schedule = str(obj, 'schedule', false) ?? current.schedule;
  const command = str(obj, 'command', false) ?? current.command;
  const comment = obj.comment === undefined ? current.comment : (str(obj, 'comment', true) ?? null);
  const timezoneIn = str(obj, 'timezone', false) ?? current.timezone;
  if (obj.enabled !== undefined && typeof obj.enabled !== 'boolean') throw fail('BODY_INVALID', 'enabled must be a boolean');
  const expiresIn = obj.expires_at === undefined ? undefined : (str(obj, 'expires_at', true) ?? null);
  if ('command' in obj) checkCommand(command);
  const expiresAt = () => (expiresIn === undefined ? current.expiresAt : checkExpiresAt(expiresIn, now));
  return checkedFields({ schedule, command, comment, enabled: (obj.enabled as boolean | undefined) ?? current.enabled, timezone: timezoneIn }, expiresAt, now, cache);
}

/** The checks a new entry and a patched one share, in the order that picks which error is reported first. */
function checkedFields(f: Omit<EntryFields, 'expiresAt'>, expiresAt: () => string | null, now: Date, cache?: PatternCache): EntryFields {
  checkComment(f.comment);
  const timezone = checkTimezone(f.timezone);
  checkSchedule(f.schedule, timezone, now, cache);
  return { schedule: normaliseSchedule(f.schedule), command: f.command, comment: f.comment, enabled: f.enabled, timezone, expiresAt: expiresAt() };
}
