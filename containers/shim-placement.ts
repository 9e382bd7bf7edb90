/**
 * Which shared shim a container joins (host/shim-groups.ts does the joining). A group is full at `size` members;
 * a new container joins a group that has a running member (a group whose last member left shuts its shim down,
 * and a start racing that shutdown would fail), preferring one with no start in flight (one shim serialises its
 * starts), else it opens a new group. Starts, stops and removals of one group's members take turns.
 */
import { randomBytes } from 'node:crypto';
import type { ContainerStore } from './store.js';

export class ShimPlacement {
  readonly #turns = new Map<string, Promise<unknown>>();
  readonly #inFlight = new Map<string, number>();

  constructor(
    /** Members per group; 1: no groups (one shim per container, as plain Docker). */
    readonly size: number,
    private readonly instance: string,
    private readonly store: ContainerStore,
  ) {}

  get grouping(): boolean {
    return this.size > 1;
  }

  /** The group a new container should join, or null when grouping is off. */
  choose(): string | null {
    if (!this.grouping) return null;
    const members = new Map<string, { all: number; live: number }>();
    for (const row of this.store.list()) {
      if (!row.shimGroup || row.phase === 'deleting') continue;
      const m = members.get(row.shimGroup) ?? { all: 0, live: 0 };
      m.all += 1;
      if (row.phase === 'ready' && row.desired === 'running') m.live += 1;
      members.set(row.shimGroup, m);
    }
    let best: { group: string; all: number } | null = null;
    for (const [group, m] of members) {
      if (m.all >= this.size || m.live === 0 || this.#inFlight.get(group)) continue;
      if (!best || m.all > best.all) best = { group, all: m.all };
    }
    // A new group is named by this daemon's instance: daemons sharing one engine never share a shim.
    return best?.group ?? `${this.instance}-${randomBytes(4).toString('hex')}`;
  }

  /**
   * Runs `step` (an engine start, stop or removal of one member) after the group's earlier steps, so a start never
   * meets the shutdown of a shim whose last member is leaving. Retries a start that met a dying shim anyway
   * (a member that exited on its own).
   */
  async within<T>(group: string | null, step: () => Promise<T>, opts: { start?: boolean } = {}): Promise<T> {
    if (!group) return step();
    this.#inFlight.set(group, (this.#inFlight.get(group) ?? 0) + 1);
    const before = this.#turns.get(group) ?? Promise.resolve();
    const mine = before.catch(() => undefined).then(() => (opts.start ? retryingShimRace(step) : step()));
    this.#turns.set(group, mine);
    try {
      return await mine;
    } finally {
      const left = (this.#inFlight.get(group) ?? 1) - 1;
      if (left > 0) this.#inFlight.set(group, left);
      else this.#inFlight.delete(group);
      if (this.#turns.get(group) === mine) this.#turns.delete(group);
    }
  }
}

/** What an engine start says when the shim it was handed exited under it (the group's last member had just left). */
const SHIM_RACE = /ttrpc: closed|shim.*(disconnected|exited|closed)|connection refused|transport is closing|failed to connect/i;

async function retryingShimRace<T>(step: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step();
    } catch (err) {
      if (attempt >= 3 || !SHIM_RACE.test(String((err as Error).message ?? err))) throw err;
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
}
