import { readFile, statfs } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { FleetRouter, Owner } from '../../api/public/forward.js';
import type { ContainerContext, NamespaceHooks } from '../../containers/context.js';
import type { PlaneCert } from '../../containers/proxy/plane.js';
import { fail } from '../../containers/errors.js';
import { hashToken } from '../../containers/tokens.js';
import { type FleetInput, type FleetSettings, forgetFleet, isDraining, saveFleet, setDraining } from './config.js';
import { DirectoryCache } from './directory.js';
import { type EtcdClients, etcdClients, within } from './etcd.js';
import { HopAuth } from './hop.js';
import { callHost, type FanOut, fanOut, isRefusal, type PlacementNeeds, placementOrder, remoteError } from './remote.js';
import { type FleetKeys, fleetKeys, type HostRecord, type HopRecord } from './keys.js';
import { Membership } from './membership.js';
import { type Moved, type MoveMember, Mover } from './move.js';
import { Publisher } from './publisher.js';
import { RemoteCerts } from './remote-certs.js';

export type { FleetSettings } from './config.js';

export interface FleetDeps {
  ctx: ContainerContext;
  stateDir: string;
  version: string;
  startedAt: string;
  /** The public listeners' actual ports (known once they listen). */
  ports: () => { http: number; https: number };
  env: NodeJS.ProcessEnv;
  log: Logger;
  /** Starts (once) the host-to-host hop listener and says where it is and which CA signs it. */
  hop: () => Promise<HopRecord>;
  /** This host's routed hostnames, published so a routed name reaches its container from any host. */
  routes: () => readonly { hostname: string; container: string }[];
  /** This host's tenants' certificates, published (no keys) so other hosts fetch them and serve HTTPS too. */
  certs: () => readonly { domain: string; container: string; fingerprint: string }[];
  /** One of this host's tenants' bundles (PEM with its key), for another host asking over the hop. */
  certBundle: (domain: string) => PlaneCert | undefined;
  /** Other hosts' certificates, whole, to the data plane. */
  serveRemoteCerts: (certs: readonly PlaneCert[]) => Promise<void>;
}

/** The running parts of one membership; made on join (or start), dropped whole on leave. */
interface Member {
  settings: FleetSettings;
  keys: FleetKeys;
  clients: EtcdClients;
  cache: DirectoryCache;
  membership: Membership;
  publisher: Publisher;
  hop: HopAuth;
  remoteCerts: RemoteCerts;
}

export interface FleetHost {
  host: string;
  /** Its lease is alive (it refreshed its record within the TTL). */
  healthy: boolean;
  record: HostRecord | null;
  /** Names the directory places on it. */
  names: number;
}

export interface FleetPlacement {
  name: string;
  host: string;
  id: string;
  state: 'reserving' | 'ready';
  hostHealthy: boolean;
}

/**
 * The process's part in a fleet (issue 12): membership under a lease, the directory cache and what this host
 * publishes into it. No fleet configured: every method says so and nothing else changes.
 */
export class Fleet implements FleetRouter {
  private member: Member | null = null;
  private readonly mover: Mover;

  constructor(private readonly deps: FleetDeps) {
    this.mover = new Mover(deps.ctx, deps.log.child({ fleet: 'move' }));
    // Creates, deletes and starts republish at once; the periodic reconcile covers whatever else changed (tokens).
    const later = () => {
      // After the hook returns, provision() issues the token in the same turn: publish once that is done.
      setTimeout(() => void this.member?.publisher.nudge(), 20);
    };
    const hook: NamespaceHooks = { open: async () => later(), close: async () => later(), started: async () => later() };
    deps.ctx.hooks.push(hook);
  }

  get joined(): boolean {
    return this.member !== null;
  }

  /** Starts taking part; never waits on etcd (an unreachable store is retried in the background). */
  start(settings: FleetSettings | null): void {
    if (!settings || this.member) return;
    const { ctx, log } = this.deps;
    const keys = fleetKeys(settings.fleet);
    const clients = etcdClients(settings.endpoints);
    const flog = log.child({ fleet: settings.fleet, fleetHost: settings.host });
    let publisher: Publisher | null = null;
    let membership: Membership | null = null;
    const cache = new DirectoryCache(clients.relaxed, keys, settings.relistMs, flog, (kinds, deleted) => {
      // Certificates of other hosts to fetch (or drop); a host coming back may now answer for one.
      if (kinds.has('certs') || kinds.has('hosts')) this.member?.remoteCerts.sync();
      if (!deleted) return;
      // Something went from the directory (a wipe, an expired lease): put back what is ours.
      if (kinds.has('names') || kinds.has('tokens') || kinds.has('routes') || kinds.has('certs')) void publisher?.nudge();
      if (kinds.has('hosts') && !this.member?.cache.view.hosts.has(settings.host)) membership?.nudge();
    });
    publisher = new Publisher(clients, keys, settings.host, cache, ctx.store, ctx.busy, settings.publishMs, flog, this.deps.routes, this.deps.certs);
    membership = new Membership(clients, keys, settings, () => this.record(settings), flog);
    const hop = new HopAuth(settings.host, clients, keys, flog);
    const remoteCerts = new RemoteCerts(this, () => this.member?.cache.view ?? null, this.deps.serveRemoteCerts, flog);
    this.member = { settings, keys, clients, cache, membership, publisher, hop, remoteCerts };
    ctx.names = publisher;
    hop.start();
    cache.start();
    membership.start();
    publisher.start();
    flog.info({ endpoints: settings.endpoints, ttlS: settings.ttlS }, 'fleet: joining (registration and directory run in the background)');
  }

  private async record(settings: FleetSettings): Promise<HostRecord> {
    const { ctx } = this.deps;
    const fs = await statfs(ctx.pool.root).catch(() => null);
    const meminfo = await readFile('/proc/meminfo', 'utf8').catch(() => '');
    const avail = /MemAvailable:\s+(\d+) kB/.exec(meminfo);
    const sharing = await readFile('/sys/kernel/mm/ksm/pages_sharing', 'utf8').catch(() => null);
    const now = new Date().toISOString();
    return {
      host: settings.host,
      addresses: settings.addresses,
      ports: this.deps.ports(),
      hop: await this.deps.hop(),
      capacity: {
        poolFreeBytes: fs ? fs.bavail * fs.bsize : null,
        memoryAvailableBytes: avail ? Number(avail[1]) * 1024 : 0,
        ksmSavedBytes: sharing === null ? null : Number(sharing.trim()) * 4096,
        containers: ctx.store.list().length,
        draining: await isDraining(this.deps.stateDir),
      },
      version: this.deps.version,
      startedAt: this.deps.startedAt,
      updatedAt: now,
    };
  }

  private need(): Member {
    if (!this.member) throw fail('FLEET_NOT_JOINED');
    return this.member;
  }

  /** `hoody fleet join`: saved in the state dir (used at the next start too) and joined live. */
  async join(input: FleetInput): Promise<FleetStatus> {
    const settings = await saveFleet(this.deps.stateDir, input, this.deps.env);
    await this.stop(false);
    this.start(settings);
    return this.status();
  }

  /**
   * `hoody fleet leave`: this host's names and token hashes leave the directory (others may take the names), its
   * record goes at once, and fleet.json is removed. A fleet named by env or flag is joined again at the next start.
   */
  async leave(): Promise<{ left: string; withdrawn: number }> {
    const m = this.need();
    m.publisher.close(); // else it would put back what is being withdrawn
    const { strict } = m.clients;
    const mine = [
      ...[...m.cache.view.names].filter(([, e]) => e.value.host === m.settings.host).map(([n, e]) => ({ key: m.keys.name(n), rev: e.rev })),
      ...[...m.cache.view.tokens].filter(([, e]) => e.value.host === m.settings.host).map(([t, e]) => ({ key: m.keys.token(t), rev: e.rev })),
      ...[...m.cache.view.routes].filter(([, e]) => e.value.host === m.settings.host).map(([r, e]) => ({ key: m.keys.route(r), rev: e.rev })),
      ...[...m.cache.view.certs].filter(([, e]) => e.value.host === m.settings.host).map(([d, e]) => ({ key: m.keys.cert(d), rev: e.rev })),
    ];
    let withdrawn = 0;
    try {
      for (const { key, rev } of mine) {
        // On the revision we saw: a name someone else took meanwhile is not ours to delete.
        const res = await within(3000, 'leave', strict.if(key, 'Mod', '==', rev).then(strict.delete().key(key)).commit());
        if (res.succeeded) withdrawn++;
      }
    } catch (err) {
      // Undo: still in the fleet, publishing again (what was withdrawn comes back with the next reconcile).
      await this.stop(false);
      this.start(m.settings);
      throw err;
    }
    await this.stop(true);
    await m.remoteCerts.clear().catch((err: unknown) => this.deps.log.warn({ err }, 'fleet: other hosts\' certificates are still served'));
    await forgetFleet(this.deps.stateDir);
    return { left: m.settings.fleet, withdrawn };
  }

  /**
   * `hoody fleet drain [--off]`: placement on other hosts skips this one once their caches have the record (an
   * explicit `--host` still lands here). Answers once etcd has the new record; if it cannot, the flag is put back.
   */
  async drain(on: boolean): Promise<{ host: string; draining: boolean }> {
    const m = this.need();
    const before = await isDraining(this.deps.stateDir);
    await setDraining(this.deps.stateDir, on);
    try {
      await m.membership.refreshNow();
    } catch (err) {
      await setDraining(this.deps.stateDir, before); // undo: the record etcd holds still says `before`
      throw err;
    }
    return { host: m.settings.host, draining: on };
  }

  status(): FleetStatus {
    const m = this.member;
    if (!m) return { joined: false };
    return {
      joined: true,
      fleet: m.settings.fleet,
      host: m.settings.host,
      endpoints: m.settings.endpoints,
      membership: { ...m.membership.status },
      directory: { ...m.cache.status, names: m.cache.view.names.size, tokens: m.cache.view.tokens.size, hosts: m.cache.view.hosts.size },
      publishError: m.publisher.lastError,
      conflicts: m.publisher.conflictNames(),
    };
  }

  /** Live hosts, plus hosts the directory still places names on whose lease is gone (down). */
  hosts(): FleetHost[] {
    const m = this.need();
    const { hosts, names } = m.cache.view;
    const counts = new Map<string, number>();
    for (const e of names.values()) counts.set(e.value.host, (counts.get(e.value.host) ?? 0) + 1);
    const all = new Set([...hosts.keys(), ...counts.keys()]);
    return [...all].sort().map((h) => ({ host: h, healthy: hosts.has(h), record: hosts.get(h)?.value ?? null, names: counts.get(h) ?? 0 }));
  }

  /** From the cache only: never waits on etcd. */
  placement(name: string): FleetPlacement {
    const m = this.need();
    const e = m.cache.view.names.get(name);
    if (!e) throw fail('FLEET_NAME_UNKNOWN', name);
    return { name, ...e.value, hostHealthy: m.cache.view.hosts.has(e.value.host) };
  }

  /** token -> container, from the cache (by the token's hash: the directory never holds a token). */
  resolveToken(token: string): FleetPlacement & { user: string } {
    const m = this.need();
    const t = m.cache.view.tokens.get(hashToken(token));
    if (!t) throw fail('UNAUTHORIZED');
    const n = m.cache.view.names.get(t.value.container);
    return {
      name: t.value.container,
      host: t.value.host,
      id: n?.value.id ?? '',
      state: n?.value.state ?? 'ready',
      user: t.value.user,
      hostHealthy: m.cache.view.hosts.has(t.value.host),
    };
  }

  /** This host's name in the fleet. */
  get self(): string {
    return this.need().settings.host;
  }

  /** Hosts whose lease is alive, with their last record (cache only). */
  liveHosts(): HostRecord[] {
    return [...(this.member?.cache.view.hosts.values() ?? [])].map((e) => e.value);
  }

  hostOwner(host: string): Owner {
    return this.owner(this.need(), host);
  }

  /**
   * Creates a container on the host placement picks (`body.host` pins it): capacity filters, the better of two
   * random candidates, and a host that refuses (5xx, unreachable) hands over to the next. Answers with the host.
   */
  async create<T extends object>(body: { host?: string } & Record<string, unknown>, needs: PlacementNeeds, local: () => Promise<T>): Promise<T & { host: string }> {
    const m = this.need();
    const self = m.settings.host;
    const order = body.host ? [body.host] : placementOrder(this.liveHosts(), needs).map((h) => h.host);
    if (!order.length) throw fail('FLEET_NO_CAPACITY', `no live host has ${Math.ceil(needs.memoryBytes / 2 ** 20)} MiB of memory and ${Math.ceil(needs.diskBytes / 2 ** 20)} MiB of pool free`);
    let last: unknown;
    for (const host of order) {
      try {
        if (host === self) return { ...(await local()), host };
        const a = await callHost<T>(this, host, 'POST', '/v1/containers', { ...body, host }, 120_000);
        if (a.status === 201) return { ...a.body, host };
        throw remoteError(host, a);
      } catch (err) {
        if (body.host || !isRefusal(err)) throw err;
        this.deps.log.warn({ err, host, container: body.name }, 'fleet placement: the host refused; trying the next one');
        last = err;
      }
    }
    throw last;
  }

  private moveMember(): MoveMember {
    const m = this.need();
    return { self: m.settings.host, keys: m.keys, clients: m.clients, cache: m.cache, publisher: m.publisher, peers: this };
  }

  /** `hoody move NAME HOST`, asked of any host: the container's own host moves it. */
  async move(name: string, to: string): Promise<Moved> {
    const mm = this.moveMember();
    if (!this.deps.ctx.store.get(name)) {
      const e = mm.cache.view.names.get(name);
      if (e && e.value.host !== mm.self) {
        const a = await callHost<Moved>(this, e.value.host, 'POST', `/v1/containers/${encodeURIComponent(name)}/move`, { host: to }, 600_000);
        if (a.status !== 200) throw remoteError(e.value.host, a);
        return a.body;
      }
    }
    return this.mover.move(mm, name, to);
  }

  receiveMove(q: { name: string; id: string; from: string; bundleBytes: number }, input: Readable): Promise<{ name: string; volume: string }> {
    return this.mover.receive(this.moveMember(), q, input);
  }

  commitMove(name: string, id: string, revision: number): Promise<{ name: string; committed: boolean }> {
    return this.mover.commit(this.moveMember(), name, id, revision);
  }

  abortMove(name: string, id: string): Promise<{ name: string; aborted: boolean }> {
    return this.mover.abort(this.moveMember(), name, id);
  }

  /** A tenant's bundle for another fleet host (asked over the hop): this host's holder only. */
  certBundle(domain: string): PlaneCert {
    this.need();
    const c = this.deps.certBundle(domain);
    if (!c) throw fail('CERT_UNKNOWN', domain);
    return c;
  }

  /** A move of `name` away from this host is under way: resolves when it ends. */
  movingWait(name: string): Promise<void> | undefined {
    return this.mover.waitFor(name);
  }

  /** Received from another host and not committed yet: not this host's to answer for. */
  receiving(name: string): boolean {
    return this.mover.receiving(name);
  }

  fanOut<T>(path: string, local: () => Promise<T>, timeoutMs: number): Promise<FanOut<T>> {
    this.need();
    return fanOut(this, path, local, timeoutMs);
  }

  /** A host as a forward sees it: up with its hop, or down (its lease expired) with why. */
  private owner(m: Member, host: string): Owner {
    const rec = m.cache.view.hosts.get(host)?.value;
    if (!rec) return { host, up: false, why: 'no live record in the fleet: its lease expired (or no such host)' };
    const address = rec.addresses[0];
    if (!rec.hop || !address) return { host, up: false, why: 'its record names no host-to-host hop' };
    return { host, up: true, address, port: rec.hop.port, ca: rec.hop.caPem, servername: rec.hop.servername };
  }

  /** The directory places it on another host (cache only: a request never waits on etcd). */
  ownerOfName(name: string): Owner | null {
    const m = this.member;
    const e = m?.cache.view.names.get(name);
    return m && e && e.value.host !== m.settings.host ? this.owner(m, e.value.host) : null;
  }

  ownerOfToken(hash: string): Owner | null {
    const m = this.member;
    const e = m?.cache.view.tokens.get(hash);
    return m && e && e.value.host !== m.settings.host ? this.owner(m, e.value.host) : null;
  }

  ownerOfRoute(hostname: string): Owner | null {
    const m = this.member;
    const e = m?.cache.view.routes.get(hostname);
    return m && e && e.value.host !== m.settings.host ? this.owner(m, e.value.host) : null;
  }

  sign(method: string, host: string, url: string, client: string): Record<string, string> | null {
    return this.member?.hop.sign(method, host, url, client) ?? null;
  }

  verify(req: IncomingMessage): { from: string; client: string } | null {
    return this.member?.hop.verify(req) ?? null;
  }

  /** Stops taking part. `revoke`: the host record goes now (leave); else it expires with its lease (a stop). */
  async stop(revoke: boolean): Promise<void> {
    const m = this.member;
    if (!m) return;
    this.member = null;
    if (this.deps.ctx.names === m.publisher) this.deps.ctx.names = undefined;
    m.publisher.close();
    m.hop.close();
    await m.membership.close(revoke);
    await m.cache.close();
    m.clients.close();
  }
}

export type FleetStatus =
  | { joined: false }
  | {
      joined: true;
      fleet: string;
      host: string;
      endpoints: string[];
      membership: Membership['status'];
      directory: DirectoryCache['status'] & { names: number; tokens: number; hosts: number };
      publishError: string | null;
      conflicts: string[];
    };
