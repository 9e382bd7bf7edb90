import { parseBytes } from '../host/pool.js';

/**
 * Per-container caps on everything a tenant can make the daemon store (issue 10.10). Counts refuse the next
 * item with their own error code; logs (`*Kept`) are trimmed oldest first in the transaction that adds a row.
 */
export interface Limits {
  /** Cron entries per container (HOODY_CRON_ENTRY_LIMIT past it). */
  cronEntries: number;
  /** Cron runs kept per entry. */
  cronRunsPerEntry: number;
  /** Cron runs kept per container, all entries together. */
  cronRunsPerContainer: number;
  /** Proxy routes per container (HOODY_PROXY_ROUTE_LIMIT). */
  routes: number;
  /** Certificate bundles per container (HOODY_CERT_LIMIT). */
  certs: number;
  /** Files in a container's scripts area written through the API (HOODY_SCRIPT_LIMIT). */
  scripts: number;
  /** Bytes of one script source (HOODY_SCRIPT_TOO_LARGE). */
  scriptBytes: number;
  /** Exec log rows kept per container. */
  execRunsKept: number;
  /** Revoked tokens kept per container (for audit); each rotation makes one. */
  revokedTokensKept: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = {
  cronEntries: 100,
  cronRunsPerEntry: 1000,
  cronRunsPerContainer: 10_000,
  routes: 50,
  certs: 50,
  scripts: 500,
  scriptBytes: 1024 * 1024,
  execRunsKept: 5000,
  revokedTokensKept: 100,
};

const ENV: Record<keyof Limits, string> = {
  cronEntries: 'HOODY_MAX_CRON_ENTRIES',
  cronRunsPerEntry: 'HOODY_MAX_CRON_RUNS_PER_ENTRY',
  cronRunsPerContainer: 'HOODY_MAX_CRON_RUNS',
  routes: 'HOODY_MAX_ROUTES',
  certs: 'HOODY_MAX_CERTS',
  scripts: 'HOODY_MAX_SCRIPTS',
  scriptBytes: 'HOODY_MAX_SCRIPT_SIZE',
  execRunsKept: 'HOODY_MAX_EXEC_RUNS',
  revokedTokensKept: 'HOODY_MAX_REVOKED_TOKENS',
};

/** The caps from env (`HOODY_MAX_…`), defaults for the rest; a cap is a whole number of at least 1. */
export function limitsFromEnv(env: NodeJS.ProcessEnv): Limits {
  const out = { ...DEFAULT_LIMITS };
  for (const key of Object.keys(ENV) as (keyof Limits)[]) {
    const raw = env[ENV[key]];
    if (raw === undefined || raw === '') continue;
    const n = key === 'scriptBytes' ? parseBytes(raw) : Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${ENV[key]} must be a whole number of at least 1, got ${raw}`);
    out[key] = n;
  }
  return out;
}
