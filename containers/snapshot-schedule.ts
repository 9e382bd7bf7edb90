import type { Database } from 'better-sqlite3';
import type { ContainerContext } from './context.js';
import { fail } from './errors.js';
import { AUTO_PREFIX, deleteSnapshot, snapshotContainer } from './snapshots.js';

export interface SnapshotSchedule {
  container: string;
  everyS: number;
  keep: number;
  nextAt: string;
}

/** From a minute to 30 days (a test may go down to a second: HOODY_SNAPSHOT_MIN_EVERY_S). */
export const MAX_EVERY_S = 30 * 86_400;
export const MAX_KEEP = 1000;
const DURATION = /^(\d+)(s|m|h|d)$/;
const UNIT_S: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** `90s`, `15m`, `1h`, `7d` as seconds; SNAPSHOT_SCHEDULE_INVALID otherwise. */
export function parseEvery(text: string, minS = 60): number {
  const m = DURATION.exec(text.trim());
  if (!m) throw fail('SNAPSHOT_SCHEDULE_INVALID', `every ${JSON.stringify(text)}: expected a duration such as 15m, 1h or 1d`);
  const s = Number(m[1]) * UNIT_S[m[2]!]!;
  if (s < minS || s > MAX_EVERY_S) throw fail('SNAPSHOT_SCHEDULE_INVALID', `every ${text}: between ${minS}s and 30d`);
  return s;
}

/** The name of an automatic snapshot taken at `at` (UTC, sortable, unique to the second). */
export function autoName(at: Date): string {
  return `${AUTO_PREFIX}${at.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
}

/**
 * Snapshots on a schedule with retention, per container (Incus's snapshots.schedule and snapshots.expiry, as one
 * interval and a count): every `everyS` an `auto-<time>` snapshot, then the oldest automatic ones beyond `keep`
 * are deleted; the operator's own snapshots are never pruned. One timer for the host, at the next due time.
 */
export class SnapshotScheduler {
  #timer: NodeJS.Timeout | null = null;
  #running = false;
  #inflight: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(
    private readonly ctx: ContainerContext,
    private readonly db: Database,
    private readonly minEveryS = 60,
    private readonly now: () => Date = () => new Date(),
  ) {}

  get(container: string): SnapshotSchedule | null {
    const r = this.db.prepare('SELECT * FROM snapshot_schedules WHERE container = ?').get(container) as Record<string, unknown> | undefined;
    return r ? { container, everyS: r.every_s as number, keep: r.keep as number, nextAt: r.next_at as string } : null;
  }

  /** Sets (or replaces) a container's schedule; the first snapshot is one interval from now. */
  set(container: string, every: string, keep: number): SnapshotSchedule {
    const everyS = parseEvery(every, this.minEveryS);
    if (!Number.isInteger(keep) || keep < 1 || keep > MAX_KEEP) throw fail('SNAPSHOT_SCHEDULE_INVALID', `keep ${keep}: between 1 and ${MAX_KEEP}`);
    const nextAt = new Date(this.now().getTime() + everyS * 1000).toISOString();
    this.db
      .prepare('INSERT INTO snapshot_schedules (container, every_s, keep, next_at) VALUES (?, ?, ?, ?) ON CONFLICT(container) DO UPDATE SET every_s = excluded.every_s, keep = excluded.keep, next_at = excluded.next_at')
      .run(container, everyS, keep, nextAt);
    this.#arm();
    return { container, everyS, keep, nextAt };
  }

  /**
   * Removes a container's schedule (its automatic snapshots stay until deleted). true if there was one. Resolves once
   * a snapshot already being taken is done and pruned: after the answer, nothing more is taken or deleted.
   */
  async clear(container: string): Promise<boolean> {
    const had = this.db.prepare('DELETE FROM snapshot_schedules WHERE container = ?').run(container).changes > 0;
    await this.#inflight;
    return had;
  }

  start(): void {
    this.#arm();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #arm(): void {
    if (this.#closed || this.#running) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const r = this.db.prepare('SELECT MIN(next_at) AS at FROM snapshot_schedules').get() as { at: string | null };
    if (!r.at) return;
    // A far due time is re-checked daily (setTimeout's range is ~24.8 days).
    const wait = Math.min(Math.max(0, Date.parse(r.at) - this.now().getTime()), 86_400_000);
    this.#timer = setTimeout(() => {
      this.#inflight = this.#tick().catch((err) => this.ctx.log.error({ err }, 'the snapshot schedule failed; re-armed'));
    }, wait);
  }

  async #tick(): Promise<void> {
    this.#timer = null;
    this.#running = true;
    try {
      const now = this.now();
      const due = this.db.prepare('SELECT container FROM snapshot_schedules WHERE next_at <= ? ORDER BY next_at').all(now.toISOString()) as { container: string }[];
      for (const { container } of due) {
        if (this.#closed) return;
        const s = this.get(container);
        if (!s) continue;
        // The next one is counted from now: a daemon that was down does not take the missed ones in a burst.
        this.db.prepare('UPDATE snapshot_schedules SET next_at = ? WHERE container = ?').run(new Date(now.getTime() + s.everyS * 1000).toISOString(), container);
        await this.#take(s, now);
      }
    } finally {
      this.#running = false;
      this.#arm();
    }
  }

  async #take(s: SnapshotSchedule, now: Date): Promise<void> {
    const log = this.ctx.log.child({ container: s.container });
    const row = this.ctx.store.get(s.container);
    if (row?.phase !== 'ready' || this.ctx.busy.has(s.container)) {
      log.info('scheduled snapshot skipped: the container is busy');
      return;
    }
    try {
      await snapshotContainer(this.ctx, s.container, autoName(now), { auto: true });
      const autos = this.ctx.store
        .snapshots(s.container)
        .filter((x) => x.name.startsWith(AUTO_PREFIX))
        .sort((a, b) => a.name.localeCompare(b.name));
      for (const old of autos.slice(0, Math.max(0, autos.length - s.keep))) await deleteSnapshot(this.ctx, s.container, old.name);
    } catch (err) {
      log.warn({ err }, 'scheduled snapshot failed; the next one is due at its time');
    }
  }
}
