/** Reading database rows (snake_case columns, 0/1 flags, NULLs) into typed objects from one column list. */

/** A raw row as better-sqlite3 returns it. */
export type Raw = Record<string, unknown>;

/** How a field is stored: text, a number, a 0/1 flag, or nullable text / number. */
type KindOf<V> = [V] extends [boolean]
  ? 'flag'
  : [V] extends [string]
    ? 'text'
    : [V] extends [number]
      ? 'number'
      : [V] extends [string | null]
        ? 'text?'
        : [V] extends [number | null]
          ? 'number?'
          : never;

/** Every field of T: its kind, read from the snake_case column of its name, or [column, kind]. */
export type RowSpec<T> = { [K in keyof T]-?: KindOf<T[K]> | readonly [column: string, kind: KindOf<T[K]>] };

type Kind = 'flag' | 'text' | 'number' | 'text?' | 'number?';

const snake = (field: string) => field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** The row mapper for a spec; fields come out in the spec's order. */
export function rowReader<T>(spec: RowSpec<T>): (r: Raw) => T {
  const columns = Object.entries(spec as Record<string, Kind | readonly [string, Kind]>).map(([field, s]) =>
    typeof s === 'string' ? { field, column: snake(field), kind: s } : { field, column: s[0], kind: s[1] },
  );
  return (r) => {
    const out: Raw = {};
    for (const c of columns) {
      const v = r[c.column];
      out[c.field] = c.kind === 'flag' ? v === 1 : c.kind === 'text?' || c.kind === 'number?' ? (v ?? null) : v;
    }
    return out as T;
  };
}
