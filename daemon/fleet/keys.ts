/** The fleet's key layout in etcd, under one prefix per fleet: `hoody/<fleet>/`. */
export interface FleetKeys {
  prefix: string;
  host(host: string): string;
  name(container: string): string;
  token(hash: string): string;
  route(hostname: string): string;
  cert(domain: string): string;
}

export function fleetKeys(fleet: string): FleetKeys {
  const prefix = `hoody/${fleet}/`;
  return {
    prefix,
    host: (h) => `${prefix}hosts/${h}`,
    name: (n) => `${prefix}names/${n}`,
    token: (t) => `${prefix}tokens/${t}`,
    route: (r) => `${prefix}routes/${r}`,
    cert: (d) => `${prefix}certs/${d}`,
  };
}

/** The host-to-host hop: HTTPS on `port` of the first address, certificate for `servername` signed by `caPem`. */
export interface HopRecord {
  port: number;
  caPem: string;
  servername: string;
}

/** What a host says about itself, under its lease (gone when the host stops refreshing it). */
export interface HostRecord {
  host: string;
  addresses: string[];
  ports: { http: number; https: number };
  /** Where other hosts forward to (absent in records of hoodyd before routing). */
  hop?: HopRecord;
  capacity: {
    poolFreeBytes: number | null;
    memoryAvailableBytes: number;
    /** Bytes KSM saves now (pages_sharing × page size); null where KSM is not readable. */
    ksmSavedBytes: number | null;
    containers: number;
    draining: boolean;
  };
  version: string;
  startedAt: string;
  updatedAt: string;
}

/**
 * A container name in the directory. A plain key, not under the lease: a dead host's names stay reserved (nobody
 * else may take `web` while the host holding its data is down). `reserving` while the owner provisions it.
 */
export interface NameRecord {
  host: string;
  id: string;
  state: 'reserving' | 'ready';
}

/** token hash (sha256 hex, never the token) -> container; plain keys, like names. */
export interface TokenRecord {
  host: string;
  container: string;
  user: string;
}

/** A tenant's routed hostname (proxy route) -> the container and host that serve it; plain keys, like names. */
export interface RouteRecord {
  host: string;
  container: string;
}

/**
 * A tenant's certificate (by its domain) -> who holds it and which one (SHA-256 fingerprint). Never the key: other
 * hosts fetch the bundle from its holder over the hop, so HTTPS for a routed name works on every host.
 */
export interface CertRecord {
  host: string;
  container: string;
  fingerprint: string;
}

export type Kind = 'hosts' | 'names' | 'tokens' | 'routes' | 'certs';
export const KINDS: readonly Kind[] = ['hosts', 'names', 'tokens', 'routes', 'certs'];

/** Splits a key of this fleet into its kind and id; null for anything else under the prefix. */
export function parseKey(keys: FleetKeys, key: string): { kind: Kind; id: string } | null {
  if (!key.startsWith(keys.prefix)) return null;
  const rest = key.slice(keys.prefix.length);
  const slash = rest.indexOf('/');
  if (slash < 0) return null;
  const kind = rest.slice(0, slash);
  const id = rest.slice(slash + 1);
  if (!KINDS.includes(kind as Kind) || !id) return null;
  return { kind: kind as Kind, id };
}

/** A value read from etcd: JSON of an object, or null (somebody else's garbage is ignored, not trusted). */
export function parseValue<T>(raw: Buffer | string): T | null {
  try {
    const v: unknown = JSON.parse(raw.toString());
    return v && typeof v === 'object' ? (v as T) : null;
  } catch {
    return null;
  }
}
