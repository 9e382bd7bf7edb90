import { Cron } from 'croner';
import { fail } from '../errors.js';

/** Vixie cron's macros as 5-field patterns; `@reboot` is not a time pattern (runs when the container starts). */
export const MACROS: Readonly<Record<string, string>> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};
export const REBOOT = '@reboot';

const FIELDS = ['minute', 'hour', 'day-of-month', 'month', 'day-of-week'] as const;
const NUM = '\\d{1,2}';
const NAME = '[A-Za-z]{3}';

/** One list element in Vixie syntax: `*`, `*\/n`, `a`, `a-b`, `a-b/n` (no `?`, `L`, `W`, `#`, `+` extensions). */
function fieldPattern(value: string): RegExp {
  const elem = `(?:\\*(?:/\\d{1,2})?|${value}-${value}(?:/\\d{1,2})?|${value})`;
  return new RegExp(`^${elem}(?:,${elem})*$`);
}
const SYNTAX: readonly RegExp[] = [
  fieldPattern(NUM),
  fieldPattern(NUM),
  fieldPattern(NUM),
  fieldPattern(`(?:${NUM}|${NAME})`),
  fieldPattern(`(?:${NUM}|${NAME})`),
];

/**
 * Parsed patterns shared by entries. A croner Cron is ~80 KB (it keeps a 10,000-slot year table), so entries
 * do not each hold one: most entries use a handful of patterns, and nextRun(date) is stateless.
 */
export class PatternCache {
  readonly #map = new Map<string, Cron>();
  constructor(readonly size = 256) {}

  get(key: string): Cron | undefined {
    const c = this.#map.get(key);
    if (c) {
      this.#map.delete(key); // most recently used last
      this.#map.set(key, c);
    }
    return c;
  }

  set(key: string, cron: Cron): void {
    if (this.#map.size >= this.size) this.#map.delete(this.#map.keys().next().value as string);
    this.#map.set(key, cron);
  }
}

/** A parsed schedule: either `@reboot` or a time pattern whose next slot can be computed. */
export type CompiledSchedule =
  | { kind: 'reboot' }
  | { kind: 'time'; pattern: string; next(after: Date): Date | null };

/** An IANA time zone name, normalised (`utc` -> `UTC`); CRON_TIMEZONE_UNKNOWN otherwise. */
export function checkTimezone(tz: string): string {
  if (tz.length === 0 || tz.length > 64) throw fail('CRON_TIMEZONE_UNKNOWN', tz);
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    throw fail('CRON_TIMEZONE_UNKNOWN', tz);
  }
}

/**
 * Parses a schedule the way Vixie cron does: exactly 5 fields or a macro; when both day-of-month and
 * day-of-week are restricted (neither starts with `*`) a day matching either runs, otherwise both must match.
 * Throws CRON_MACRO_UNKNOWN, CRON_FIELD_COUNT or CRON_SCHEDULE_INVALID.
 */
export function compileSchedule(
  schedule: string,
  timezone: string,
  now: Date = new Date(),
  cache?: PatternCache,
): CompiledSchedule {
  const text = schedule.trim();
  if (text.startsWith('@')) {
    const macro = text.toLowerCase();
    if (macro === REBOOT) return { kind: 'reboot' };
    const expanded = MACROS[macro];
    if (!expanded) throw fail('CRON_MACRO_UNKNOWN', text);
    return compileFields(expanded, timezone, now, cache);
  }
  return compileFields(text, timezone, now, cache);
}

function compileFields(text: string, timezone: string, now: Date, cache: PatternCache | undefined): CompiledSchedule {
  const fields = text.split(/\s+/).filter(Boolean);
  if (fields.length !== 5) throw fail('CRON_FIELD_COUNT', text);
  fields.forEach((f, i) => {
    if (!SYNTAX[i]!.test(f)) throw fail('CRON_SCHEDULE_INVALID', `${FIELDS[i]} field ${JSON.stringify(f)}`);
  });
  const pattern = fields.join(' ');
  // Vixie: a day field starting with `*` is "unrestricted", and then the two are ANDed; otherwise ORed.
  const domAndDow = fields[2]!.startsWith('*') || fields[4]!.startsWith('*');
  const key = `${pattern}|${timezone}|${domAndDow}`;
  let cron = cache?.get(key);
  if (!cron) {
    try {
      cron = new Cron(pattern, { mode: '5-part', timezone, domAndDow, paused: true });
    } catch (err) {
      const msg = err instanceof Error ? err.message.replace(/^CronPattern:\s*/, '') : String(err);
      throw fail('CRON_SCHEDULE_INVALID', msg);
    }
    if (!cron.nextRun(now)) throw fail('CRON_SCHEDULE_INVALID', `${JSON.stringify(pattern)} never matches a date`);
    cache?.set(key, cron);
  }
  const compiled = cron;
  return { kind: 'time', pattern, next: (after) => compiled.nextRun(after) };
}
