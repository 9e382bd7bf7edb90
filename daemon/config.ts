import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { type Limits, limitsFromEnv } from '../containers/limits.js';
import { parseBytes } from '../host/pool.js';
import { type ExecConfig, loadExecConfig, positive } from './exec-config.js';

export interface Config {
  stateDir: string;
  poolSizeBytes: number;
  dockerSocket: string;
  adminSocket: string;
  domain: string;
  httpPort: number;
  httpsPort: number;
  acmeDirectory: string;
  /** Where dry runs order from; Let's Encrypt's staging when the directory is Let's Encrypt's production. */
  acmeStagingDirectory: string | null;
  acmeCaFile: string | null;
  image: string;
  storageDriver: 'btrfs' | 'dir';
  engineStorageDriver: 'overlay2' | 'btrfs';
  /**
   * User namespaces for a dockerd hoody starts (HOODY_USERNS): 'auto' (default) remaps unless the engine's data
   * root already holds containers made without it; 'on' always; 'off' never (containers run rootful).
   */
  userns: 'auto' | 'on' | 'off';
  logLevel: string;
  /** 'restricted' (default): containers reach the host only on the public ports, and no other container. */
  containerEgress: 'restricted' | 'open';
  /** Bad tokens per client address per minute before 429s. */
  tokenFailureLimit: number;
  /** A cron run still going after this is killed in its container and logged `timeout`. */
  cronRunTimeoutMs: number;
  /** Cron runs at once (HOODY_CRON_CONCURRENCY 16), of one container (HOODY_CRON_CONTAINER_RUNS 4), and the longest a run waits for a runner before it is logged `late` (HOODY_CRON_MAX_WAIT 60s). */
  cronQueue: { concurrency: number; perContainer: number; maxWaitMs: number };
  /**
   * How commands start in containers (HOODY_COMMAND_AGENT): 'on' (default) through hoody's agent inside each
   * container made since, started once with docker exec; 'off' with one docker exec per command.
   */
  commandAgent: boolean;
  /** Containers per shared containerd shim (host/shim-groups.ts); 1: one shim each, as plain Docker. */
  shimGroupSize: number;
  /** The shortest snapshot schedule interval accepted (seconds; 60 unless HOODY_SNAPSHOT_MIN_EVERY_S says less, for tests). */
  snapshotMinEveryS: number;
  /** Public listeners: a client must send its whole header block within this (slow clients are cut off). */
  headersTimeoutMs: number;
  /** Extra names of this host that no tenant may route or certify (HOODY_RESERVED_NAMES, comma list). */
  reservedNames: string[];
  /** Proxy: a container must send its response head within this, and may not stall a body longer. */
  proxyUpstreamTimeoutMs: number;
  /**
   * Who serves tenants' routed hostnames (HOODY_DATA_PLANE): 'haproxy' (default) is a process of its own that
   * keeps serving while hoodyd restarts; 'node' forwards inside hoodyd (a box without HAProxy).
   */
  dataPlane: 'haproxy' | 'node';
  /** Short id of this daemon (from its state dir); labels its containers on a shared engine. */
  instance: string;
  dbPath: string;
  defaults: { memoryBytes: number; nanoCpus: number; diskBytes: number | null; pidsLimit: number };
  /** Per-container caps (HOODY_MAX_…). */
  limits: Limits;
  /** When set, the daemon writes its own log here (0600; relative = in the state dir), rotating by size; else to stdout. */
  logFile: string | null;
  logMaxBytes: number;
  /** Rotated files kept beside the live one (file.1 … file.N). */
  logKeep: number;
  exec: ExecConfig;
  /** The fleet as flags named it (--fleet-etcd, --fleet-host, --fleet-address); env and fleet.json in daemon/fleet/config.ts. */
  fleetFlags: { endpoints?: string; host?: string; address?: string };
}

/** Containers per shared shim unless HOODY_SHIM_GROUP_SIZE says otherwise (chosen from bench/density.ts runs). */
export const DEFAULT_SHIM_GROUP_SIZE = 8;

/** Where `hoody up` writes the shim wrapper its dockerd starts with. */
export function shimWrapperDir(config: Pick<Config, 'stateDir'>): string {
  return join(config.stateDir, 'shims');
}

export const LETS_ENCRYPT = 'https://acme-v02.api.letsencrypt.org/directory';
export const LETS_ENCRYPT_STAGING = 'https://acme-staging-v02.api.letsencrypt.org/directory';

/** Settings a flag may give; undefined means "not given" and falls through to env, then defaults. */
export type ConfigFlags = Partial<{
  stateDir: string;
  poolSize: string;
  dockerSocket: string;
  adminSocket: string;
  domain: string;
  httpPort: string | number;
  httpsPort: string | number;
  image: string;
  logLevel: string;
  logFile: string;
  fleetEtcd: string;
  fleetHost: string;
  fleetAddress: string;
}>;

/** Parses durations like 1500ms, 90s, 5m, 1h; a bare number is seconds. */
export function parseDuration(text: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/i.exec(text.trim());
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m?.[2] ?? 's').toLowerCase() as 'ms' | 's' | 'm' | 'h'];
  const ms = m ? Math.round(Number(m[1]) * unit) : Number.NaN;
  if (!Number.isFinite(ms) || ms <= 0) throw new Error(`${name} must be a duration like 1500ms, 90s, 5m or 1h, got ${text}`);
  return ms;
}

function port(value: string | number, name: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name} must be a port number 0-65535, got ${value}`);
  return n;
}

function usernsSetting(value: string | undefined): Config['userns'] {
  const v = (value ?? 'auto').trim().toLowerCase();
  if (v === 'auto' || v === '') return 'auto';
  if (['on', '1', 'true', 'yes'].includes(v)) return 'on';
  if (['off', '0', 'false', 'no'].includes(v)) return 'off';
  throw new Error(`HOODY_USERNS must be auto, on or off, got ${value}`);
}

/** Flags override env; env overrides defaults (DESIGN.md, Configuration). */
export function loadConfig(flags: ConfigFlags = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const pick = (flag: string | number | undefined, envName: string, def: string): string =>
    flag !== undefined ? String(flag) : (env[envName] ?? def);
  const stateDir = resolve(pick(flags.stateDir, 'HOODY_STATE_DIR', '/var/lib/hoody'));
  const instance = createHash('sha256').update(stateDir).digest('hex').slice(0, 6);
  return {
    stateDir,
    poolSizeBytes: parseBytes(pick(flags.poolSize, 'HOODY_POOL_SIZE', '20G')),
    dockerSocket: pick(flags.dockerSocket, 'HOODY_DOCKER_SOCKET', '/var/run/docker.sock'),
    adminSocket: pick(flags.adminSocket, 'HOODY_ADMIN_SOCKET', '/run/hoody/hoodyd.sock'),
    domain: pick(flags.domain, 'HOODY_DOMAIN', 'hoody.localhost').toLowerCase(),
    httpPort: port(pick(flags.httpPort, 'HOODY_HTTP_PORT', '80'), 'HOODY_HTTP_PORT'),
    httpsPort: port(pick(flags.httpsPort, 'HOODY_HTTPS_PORT', '443'), 'HOODY_HTTPS_PORT'),
    acmeDirectory: env.HOODY_ACME_DIRECTORY ?? LETS_ENCRYPT,
    acmeStagingDirectory:
      env.HOODY_ACME_STAGING_DIRECTORY ?? ((env.HOODY_ACME_DIRECTORY ?? LETS_ENCRYPT) === LETS_ENCRYPT ? LETS_ENCRYPT_STAGING : null),
    acmeCaFile: env.HOODY_ACME_CA_FILE ?? null,
    image: pick(flags.image, 'HOODY_IMAGE', 'hoody/base'),
    storageDriver: (env.HOODY_STORAGE_DRIVER as 'btrfs' | 'dir' | undefined) ?? 'btrfs',
    engineStorageDriver: (env.HOODY_ENGINE_STORAGE_DRIVER as 'overlay2' | 'btrfs' | undefined) ?? 'overlay2',
    userns: usernsSetting(env.HOODY_USERNS),
    logLevel: pick(flags.logLevel, 'HOODY_LOG_LEVEL', 'info'),
    containerEgress: env.HOODY_CONTAINER_EGRESS === 'open' ? 'open' : 'restricted',
    tokenFailureLimit: Number(env.HOODY_TOKEN_FAILURE_LIMIT ?? '100') || 100,
    cronRunTimeoutMs: parseDuration(env.HOODY_CRON_RUN_TIMEOUT ?? '1h', 'HOODY_CRON_RUN_TIMEOUT'),
    cronQueue: {
      concurrency: positive(env.HOODY_CRON_CONCURRENCY ?? '16', 'HOODY_CRON_CONCURRENCY'),
      perContainer: positive(env.HOODY_CRON_CONTAINER_RUNS ?? '4', 'HOODY_CRON_CONTAINER_RUNS'),
      maxWaitMs: parseDuration(env.HOODY_CRON_MAX_WAIT ?? '60s', 'HOODY_CRON_MAX_WAIT'),
    },
    commandAgent: onOff(env.HOODY_COMMAND_AGENT, 'HOODY_COMMAND_AGENT'),
    shimGroupSize: positive(env.HOODY_SHIM_GROUP_SIZE ?? String(DEFAULT_SHIM_GROUP_SIZE), 'HOODY_SHIM_GROUP_SIZE'),
    snapshotMinEveryS: positive(env.HOODY_SNAPSHOT_MIN_EVERY_S ?? '60', 'HOODY_SNAPSHOT_MIN_EVERY_S'),
    headersTimeoutMs: parseDuration(env.HOODY_HEADERS_TIMEOUT ?? '20s', 'HOODY_HEADERS_TIMEOUT'),
    reservedNames: (env.HOODY_RESERVED_NAMES ?? '').split(',').map((n) => n.trim()).filter(Boolean),
    proxyUpstreamTimeoutMs: parseDuration(env.HOODY_PROXY_UPSTREAM_TIMEOUT ?? '60s', 'HOODY_PROXY_UPSTREAM_TIMEOUT'),
    dataPlane: dataPlaneSetting(env.HOODY_DATA_PLANE),
    instance,
    dbPath: join(stateDir, 'hoody.db'),
    defaults: {
      memoryBytes: parseBytes(env.HOODY_DEFAULT_MEMORY ?? '256m'),
      nanoCpus: Math.round(Number(env.HOODY_DEFAULT_CPUS ?? '1') * 1e9),
      diskBytes: parseBytes(env.HOODY_DEFAULT_DISK ?? '2g'),
      pidsLimit: Number(env.HOODY_DEFAULT_PIDS ?? '512'),
    },
    limits: limitsFromEnv(env),
    // A relative log path is inside the state dir.
    logFile: (flags.logFile ?? env.HOODY_LOG_FILE) ? resolve(stateDir, flags.logFile ?? env.HOODY_LOG_FILE ?? '') : null,
    logMaxBytes: parseBytes(env.HOODY_LOG_MAX_SIZE ?? '16m'),
    logKeep: Math.max(1, Number(env.HOODY_LOG_KEEP ?? '5') || 5),
    exec: loadExecConfig(env),
    fleetFlags: { endpoints: flags.fleetEtcd, host: flags.fleetHost, address: flags.fleetAddress },
  };
}

function onOff(value: string | undefined, name: string): boolean {
  if (value === undefined || value === '' || value === 'on') return true;
  if (value === 'off') return false;
  throw new Error(`${name} must be on or off, not ${JSON.stringify(value)}`);
}

function dataPlaneSetting(value: string | undefined): 'haproxy' | 'node' {
  if (value === undefined || value === '' || value === 'haproxy') return 'haproxy';
  if (value === 'node') return 'node';
  throw new Error(`HOODY_DATA_PLANE must be haproxy or node, not ${JSON.stringify(value)}`);
}
