import { access, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { hostname, networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { fail } from '../../containers/errors.js';

/** How this host takes part in a fleet; null endpoints: in none. */
export interface FleetSettings {
  endpoints: string[];
  /** This host's name in the fleet (HOODY_FLEET_HOST, default the machine's hostname). */
  host: string;
  /** Addresses other hosts reach this one at (HOODY_FLEET_ADDRESS, default the machine's non-loopback IPs). */
  addresses: string[];
  /** Several fleets may share one etcd: keys live under hoody/<fleet>/ (HOODY_FLEET_NAME, default `default`). */
  fleet: string;
  ttlS: number;
  refreshMs: number;
  relistMs: number;
  publishMs: number;
}

/** What flags, env or `hoody fleet join` (the state dir's fleet.json) may say; the rest has defaults. */
export interface FleetInput {
  endpoints?: string | string[];
  host?: string;
  address?: string;
  fleet?: string;
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/i;

function fromInput(input: FleetInput, env: NodeJS.ProcessEnv): FleetSettings {
  const endpoints = (Array.isArray(input.endpoints) ? input.endpoints : (input.endpoints ?? '').split(','))
    .map((e) => e.trim())
    .filter(Boolean)
    .map((e) => (/^https?:\/\//.test(e) ? e : `http://${e}`));
  if (!endpoints.length) throw fail('FLEET_CONFIG_INVALID', 'no etcd endpoints (give host:port[,host:port…])');
  for (const e of endpoints) {
    try {
      const u = new URL(e);
      if (!u.port || u.pathname !== '/') throw new Error('no port');
    } catch {
      throw fail('FLEET_CONFIG_INVALID', `etcd endpoint ${JSON.stringify(e)} is not host:port`);
    }
  }
  const host = input.host ?? env.HOODY_FLEET_HOST ?? hostname();
  const fleet = input.fleet ?? env.HOODY_FLEET_NAME ?? 'default';
  for (const [what, v] of [['host', host], ['fleet', fleet]] as const)
    if (!NAME.test(v)) throw fail('FLEET_CONFIG_INVALID', `${what} name ${JSON.stringify(v)} (use 1-63 of a-z, 0-9, '.', '_', '-')`);
  const address = input.address ?? env.HOODY_FLEET_ADDRESS;
  const ms = (name: string, def: number) => {
    const n = Number(env[name] ?? def);
    if (!Number.isFinite(n) || n <= 0) throw fail('FLEET_CONFIG_INVALID', `${name} must be a positive number`);
    return n;
  };
  // etcd rounds a TTL below ~1.5 s (its election timeout × 1.5) up anyway.
  const ttlS = Math.max(2, Math.round(ms('HOODY_FLEET_TTL', 10)));
  return {
    endpoints,
    host,
    addresses: address ? address.split(',').map((a) => a.trim()).filter(Boolean) : machineAddresses(),
    fleet,
    ttlS,
    refreshMs: Math.min(ms('HOODY_FLEET_REFRESH_MS', 3000), (ttlS * 1000) / 3),
    relistMs: ms('HOODY_FLEET_RELIST_MS', 10_000),
    publishMs: ms('HOODY_FLEET_PUBLISH_MS', 2_000),
  };
}

function machineAddresses(): string[] {
  const all = Object.values(networkInterfaces()).flatMap((list) => list ?? []);
  const outside = all.filter((a) => !a.internal && !a.address.startsWith('fe80:')).map((a) => a.address);
  return outside.length ? outside : ['127.0.0.1'];
}

export function fleetFile(stateDir: string): string {
  return join(stateDir, 'fleet.json');
}

/**
 * The fleet this daemon is in: --fleet-etcd / HOODY_FLEET_ETCD when given, else what `hoody fleet join` saved in
 * the state dir, else none. A broken fleet.json is an error (an operator wrote it), never silently no fleet.
 */
export async function resolveFleet(flags: FleetInput, env: NodeJS.ProcessEnv, stateDir: string): Promise<FleetSettings | null> {
  const given = flags.endpoints ?? env.HOODY_FLEET_ETCD;
  if (given) return fromInput({ ...flags, endpoints: given }, env);
  const saved = await readFile(fleetFile(stateDir), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (saved === null) return null;
  let input: FleetInput;
  try {
    input = JSON.parse(saved) as FleetInput;
  } catch {
    throw fail('FLEET_CONFIG_INVALID', `${fleetFile(stateDir)} is not JSON`);
  }
  return fromInput({ ...input, ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)) }, env);
}

/** Validates and saves what `hoody fleet join` gave (atomically: a crash leaves the old file or the new one). */
export async function saveFleet(stateDir: string, input: FleetInput, env: NodeJS.ProcessEnv): Promise<FleetSettings> {
  const settings = fromInput(input, env);
  const file = fleetFile(stateDir);
  await writeFile(`${file}.tmp`, `${JSON.stringify({ endpoints: settings.endpoints, host: input.host, address: input.address, fleet: input.fleet }, null, 2)}\n`, { mode: 0o600 });
  await rename(`${file}.tmp`, file);
  return settings;
}

export async function forgetFleet(stateDir: string): Promise<void> {
  await rm(fleetFile(stateDir), { force: true });
  await rm(drainFile(stateDir), { force: true });
}

/** `hoody fleet drain`: a marker in the state dir, so a restart does not open a host being emptied to placement again. */
export function drainFile(stateDir: string): string {
  return join(stateDir, 'fleet-draining');
}

export async function isDraining(stateDir: string): Promise<boolean> {
  return access(drainFile(stateDir)).then(
    () => true,
    () => false,
  );
}

export async function setDraining(stateDir: string, on: boolean): Promise<void> {
  if (on) await writeFile(drainFile(stateDir), `${new Date().toISOString()}\n`, { mode: 0o600 });
  else await rm(drainFile(stateDir), { force: true });
}

/** The hop listener's port (HOODY_FLEET_PORT; 0, the default, takes a free one: it is published in the host record). */
export function fleetHopPort(env: NodeJS.ProcessEnv): number {
  const n = Number(env.HOODY_FLEET_PORT ?? 0);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw fail('FLEET_CONFIG_INVALID', 'HOODY_FLEET_PORT must be a port number');
  return n;
}
