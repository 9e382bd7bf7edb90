import { compileSchedule, type PatternCache, REBOOT } from './schedule.js';
import type { EntryRow } from './store.js';

/** What an entry's timer waits for: its next slot, or the moment it expires (when that comes first). */
export type Plan = { kind: 'slot' | 'expire'; at: Date } | null;

export function isExpired(e: Pick<EntryRow, 'expiresAt'>, now: Date): boolean {
  return e.expiresAt !== null && Date.parse(e.expiresAt) <= now.getTime();
}

/**
 * Pure: the entry's next timer at `now`. The slot is strictly after max(after, last_slot), so a claimed slot
 * never comes round again (even when the clock stepped back); null when disabled, expired or `@reboot`.
 * Throws if the schedule no longer parses.
 */
export function planNext(
  e: Pick<EntryRow, 'enabled' | 'schedule' | 'timezone' | 'expiresAt' | 'lastSlot'>,
  after: Date,
  now: Date,
  cache?: PatternCache,
): Plan {
  if (!e.enabled || e.schedule === REBOOT || isExpired(e, now)) return null;
  const s = compileSchedule(e.schedule, e.timezone, after, cache);
  if (s.kind !== 'time') return null;
  const last = e.lastSlot ? Date.parse(e.lastSlot) : 0;
  const next = s.next(new Date(Math.max(after.getTime(), last)));
  if (!next) return null;
  const expires = e.expiresAt ? Date.parse(e.expiresAt) : Number.POSITIVE_INFINITY;
  return next.getTime() >= expires ? { kind: 'expire', at: new Date(expires) } : { kind: 'slot', at: next };
}
