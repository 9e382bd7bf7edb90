import type { Logger } from 'pino';
import type { ContainerEngine } from '../host/engine.js';
import type { PoolPaths } from '../host/pool.js';
import type { StorageDriver } from '../host/storage/index.js';
import type { ContainerRow } from './store.js';
import type { ContainerStore } from './store.js';
import type { ShimPlacement } from './shim-placement.js';

export interface ContainerDefaults {
  image: string;
  memoryBytes: number;
  nanoCpus: number;
  diskBytes: number | null;
  pidsLimit: number;
}

export interface SpecExtras {
  extraHosts: string[];
  binds: string[];
  env: string[];
  /** The engine network the container is created on (the daemon's egress-filtered bridge). */
  network?: string;
  sysctls?: Record<string, string>;
}

export const NO_EXTRAS = (): SpecExtras => ({ extraHosts: [], binds: [], env: [] });

/** Per-container namespaces (cron, exec, proxy) plug in here: opened after create, closed before delete. */
export interface NamespaceHooks {
  open(row: ContainerRow): Promise<void>;
  close(row: ContainerRow): Promise<void>;
  /** Called when the container (re)started, e.g. for @reboot cron entries. */
  started?(row: ContainerRow): Promise<void>;
}

/**
 * Fleet-wide name reservations (daemon/fleet/): a create takes the name before anything is provisioned and gives
 * it back when provisioning fails. Absent on a host in no fleet.
 */
export interface NameRegistry {
  /** Throws HOODY_NAME_TAKEN when another host holds the name, HOODY_FLEET_… (503) when the store cannot say. */
  reserve(name: string, id: string): Promise<void>;
  release(name: string, id: string): Promise<void>;
  /** A routed hostname is the fleet's to hand out: HOODY_PROXY_HOSTNAME_TAKEN when another host routes it. */
  claimRoute(hostname: string, container: string): Promise<void>;
  /** A certificate may not name another host's tenant's domain, nor wildcard over its routes (the directory says). */
  checkCert(domain: string, container: string): void;
}

/** Everything the container layer needs, passed explicitly (no singletons). */
export interface ContainerContext {
  store: ContainerStore;
  storage: StorageDriver;
  engine: ContainerEngine;
  pool: PoolPaths;
  /** Label value that tells this daemon's containers from other daemons' on a shared engine. */
  instance: string;
  defaults: ContainerDefaults;
  /** Extra engine settings the daemon decides per container: service hostnames, the host CA bundle. */
  specExtras: (name: string) => SpecExtras;
  hooks: NamespaceHooks[];
  /** Names being created or deleted right now: a second request for one gets a clear 409. */
  busy: Set<string>;
  /** Which shared shim a new container joins, and turns for its members' starts, stops and removals. */
  shims: ShimPlacement;
  /** Set while the host is in a fleet (joined at start or live). */
  names?: NameRegistry;
  /** Builds an image hoody makes itself (hoody/base, hoody/busybox) when the engine lost it; false: not hoody's. */
  ensureImage?: (image: string) => Promise<boolean>;
  log: Logger;
}

export const LABEL_INSTANCE = 'io.hoody.instance';
export const LABEL_NAME = 'io.hoody.name';
export const LABEL_ID = 'io.hoody.id';

export function engineName(ctx: Pick<ContainerContext, 'instance'>, name: string): string {
  return `hoody-${ctx.instance}-${name}`;
}
