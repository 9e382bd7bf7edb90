/** Small numeric helpers for the benchmark's figures. */

/** Least-squares slope of y over x; null when fewer than two distinct x. */
export function slope(points: readonly (readonly [number, number])[]): number | null {
  const n = points.length;
  if (n < 2) return null;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (const [x, y] of points) {
    sxx += (x - mx) ** 2;
    sxy += (x - mx) * (y - my);
  }
  return sxx === 0 ? null : sxy / sxx;
}

/** Nearest-rank percentile (p in 0..100) of the values; null when empty. */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

/** Rounds to a fixed number of decimals, keeping null. */
export function round(value: number | null | undefined, decimals = 2): number | null {
  if (value === null || value === undefined || !Number.isFinite(value)) return null;
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

export const MIB = 1024 * 1024;
export const KIB = 1024;

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Runs fn over items with at most `concurrency` in flight; stops taking new items once `stop()` is true. */
export async function runPool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>, stop: () => boolean = () => false): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length && !stop()) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
}

/** Count, p50/p90/p99, max and mean of a list, rounded (nulls when empty). */
export function dist(values: readonly number[], decimals = 3): { n: number; p50: number | null; p90: number | null; p99: number | null; max: number | null; mean: number | null } {
  const n = values.length;
  return {
    n,
    p50: round(percentile(values, 50), decimals),
    p90: round(percentile(values, 90), decimals),
    p99: round(percentile(values, 99), decimals),
    max: round(n ? Math.max(...values) : null, decimals),
    mean: round(n ? values.reduce((a, b) => a + b, 0) / n : null, decimals),
  };
}

export type Dist = ReturnType<typeof dist>;

/** The 0, 1, …, 100 % quantiles (nearest rank), rounded; empty when there are no values. */
export function quantiles(values: readonly number[], decimals = 3): number[] {
  if (!values.length) return [];
  const s = [...values].sort((a, b) => a - b);
  return Array.from({ length: 101 }, (_, q) => round(s[Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1))]!, decimals) ?? 0);
}

export function median(values: readonly number[]): number | null {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
