/**
 * `hoody move NAME HOST` (issue 12.3): a stopped container goes to another host of the fleet whole — its volume by
 * `btrfs send | receive` over the signed hop, its rows (tokens, cron, routes, certificates) in a bundle ahead of
 * the stream — and one etcd transaction flips its name, token hashes and routes to the new host. Until the flip
 * every step is undone; after it the old copy is deleted. Requests for it wait at the old host while it moves and
 * are forwarded to the new one after (the old host forwards for as long as any cache still points at it).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { ContainerContext } from '../../containers/context.js';
import { fail, isHoodyError } from '../../containers/errors.js';
import { engineFailure, storageFailure } from '../../containers/failures.js';
import { exportBundle, importBundle, type MoveBundle } from '../../containers/move-bundle.js';
import { checkName } from '../../containers/names.js';
import { finishDelete, makeEngineContainer, readyRow } from '../../containers/provision.js';
import { removeEngineContainer } from '../../containers/rootfs.js';
import { Undo } from '../../containers/undo.js';
import type { DirectoryCache } from './directory.js';
import { type EtcdClients, within } from './etcd.js';
import { type FleetKeys, type NameRecord, parseValue } from './keys.js';
import type { Publisher } from './publisher.js';
import { callHost, type FleetPeers, openHostCall, remoteError } from './remote.js';

/** The bundle of rows ahead of the volume stream may not be larger than this. */
const MAX_BUNDLE = 16 * 1024 * 1024;
/** A move's stream that makes no progress (no bytes taken, no answer) for this long is given up. */
const MOVE_IDLE_MS = 120_000;
/** A received container whose flip never came (the sender died) is checked against etcd after this long. */
const PENDING_MS = 120_000;

/** What one membership gives a move. */
export interface MoveMember {
  self: string;
  keys: FleetKeys;
  clients: EtcdClients;
  cache: DirectoryCache;
  publisher: Publisher;
  peers: FleetPeers;
}

export interface Moved {
  name: string;
  from: string;
  to: string;
  /** Bytes of the volume stream (send's output). */
  bytes: number;
  ms: number;
}

interface Pending {
  id: string;
  from: string;
  timer: NodeJS.Timeout;
}

/** A container's staging snapshot, on the pool: what is sent, and what is received. */
function stagingOf(ctx: ContainerContext): string {
  return join(ctx.pool.root, 'moving');
}

/** Reads exactly `n` bytes off the front of a stream; the rest stays in it. */
async function readHead(input: Readable, n: number): Promise<Buffer> {
  if (n === 0) return Buffer.alloc(0);
  return new Promise((resolve, reject) => {
    const tryRead = () => {
      const chunk = input.read(n) as Buffer | null;
      if (chunk === null) return;
      cleanup();
      resolve(chunk);
    };
    const ended = () => {
      cleanup();
      reject(fail('MOVE_REFUSED', 'the stream ended inside its bundle of rows'));
    };
    const failed = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      input.off('readable', tryRead);
      input.off('end', ended);
      input.off('error', failed);
    };
    input.on('readable', tryRead);
    input.on('end', ended);
    input.on('error', failed);
    tryRead();
  });
}

/** Both ends of a move, and the waits of requests for containers moving away from this host. */
export class Mover {
  private readonly moving = new Map<string, { done: Promise<void>; end: () => void }>();
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly ctx: ContainerContext,
    private readonly log: Logger,
  ) {}

  /** Resolves when the move of `name` away from this host ends; undefined when none is under way. */
  waitFor(name: string): Promise<void> | undefined {
    return this.moving.get(name)?.done;
  }

  /** Received here, not committed yet: requests still go to the old host. */
  receiving(name: string): boolean {
    return this.pending.has(name);
  }

  close(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
  }

  // ---- the old host

  async move(m: MoveMember, name: string, to: string): Promise<Moved> {
    const { ctx } = this;
    const t0 = Date.now();
    if (to === m.self) throw fail('MOVE_REFUSED', `${name} is on host ${to} already`);
    const row = readyRow(ctx, name);
    if (ctx.busy.has(name)) throw fail('CONTAINER_BUSY', name);
    const target = m.peers.hostOwner(to);
    if (!target.up) throw fail('MOVE_REFUSED', `host ${to} is not a live host of the fleet (${target.why})`);
    const live = row.engineId ? await ctx.engine.inspect(row.engineId).catch((e) => Promise.reject(engineFailure(e))) : null;
    if (live?.running) throw fail('CONTAINER_RUNNING', name);
    const snaps = ctx.store.snapshots(name);
    if (snaps.length) throw fail('MOVE_REFUSED', `${name} has ${snaps.length} snapshot(s) (${snaps.map((s) => s.name).join(', ')}); snapshots do not move: delete them first`);
    ctx.busy.add(name);
    let end: () => void = () => undefined;
    const done = new Promise<void>((r) => (end = r));
    this.moving.set(name, { done, end });
    const staged = join(stagingOf(ctx), `${name}.${row.id}`);
    try {
      let bytes = 0;
      {
        await using undo = new Undo((label, error) => this.log.error({ err: error, step: label, container: name }, 'move: undo step failed'));
        // The directory's word first (and a quorum): the name must be ours, on the revision the flip compares.
        const key = m.keys.name(name);
        const kv = (await within(3000, 'move', m.clients.strict.get(key).exec())).kvs[0];
        const have = kv ? parseValue<NameRecord>(kv.value) : null;
        if (!kv || have?.host !== m.self || have.id !== row.id) throw fail('MOVE_REFUSED', `the fleet directory does not place ${name} on this host (${have ? `it says ${have.host}` : 'no entry'})`);
        m.publisher.hold(name);
        undo.push('publisher hold', async () => m.publisher.unhold(name));

        await mkdir(stagingOf(ctx), { recursive: true });
        try {
          await ctx.storage.deleteVolume(staged); // a leftover of an earlier attempt
          await ctx.storage.snapshot(row.volume, staged, { readonly: true });
        } catch (err) {
          throw storageFailure(err);
        }
        undo.push('staged snapshot', () => ctx.storage.deleteVolume(staged));

        bytes = await this.send(m, to, name, row.id, exportBundle(ctx.store.db, name), staged);
        let flipUnknown = false;
        undo.push('copy on the new host', async () => {
          // Whether the flip took is not known: the new host asks etcd itself and keeps or drops its copy.
          if (flipUnknown) return;
          const a = await callHost(m.peers, to, 'DELETE', `/v1/fleet/moves/${encodeURIComponent(name)}?id=${row.id}`, undefined, 60_000);
          if (a.status !== 200) throw remoteError(to, a);
        });

        // The flip: name, token hashes, routes and certificates to the new host, in one transaction on the name's revision.
        const view = m.cache.view;
        const puts: { key: string; value: string }[] = [{ key, value: JSON.stringify({ host: to, id: row.id, state: 'ready' } satisfies NameRecord) }];
        for (const [hash, e] of view.tokens) if (e.value.container === name && e.value.host === m.self) puts.push({ key: m.keys.token(hash), value: JSON.stringify({ ...e.value, host: to }) });
        for (const [hostname, e] of view.routes) if (e.value.container === name && e.value.host === m.self) puts.push({ key: m.keys.route(hostname), value: JSON.stringify({ ...e.value, host: to }) });
        for (const [domain, e] of view.certs) if (e.value.container === name && e.value.host === m.self) puts.push({ key: m.keys.cert(domain), value: JSON.stringify({ ...e.value, host: to }) });
        const { strict } = m.clients;
        let revision: number;
        try {
          const res = await within(5000, 'move', strict.if(key, 'Mod', '==', Number(kv.mod_revision)).then(...puts.map((p) => strict.put(p.key).value(p.value))).commit());
          if (!res.succeeded) throw fail('MOVE_REFUSED', `the directory entry of ${name} changed during the move`);
          revision = Number(res.header.revision);
        } catch (err) {
          if (isHoodyError(err) && err.code === 'HOODY_MOVE_REFUSED') throw err;
          // No answer is not a no: the transaction may have taken. Read the entry until etcd says which.
          const took = await this.flipTook(m, key, to, row.id);
          if (took === null) flipUnknown = true;
          if (!took) throw err;
          revision = took;
        }
        m.cache.apply(puts.map((p) => ({ kv: { key: Buffer.from(p.key), value: Buffer.from(p.value), mod_revision: String(revision) }, deleted: false })));
        undo.done();
        // Past the flip nothing is undone: the new host holds the container for the whole fleet.
        const commit = await callHost(m.peers, to, 'POST', `/v1/fleet/moves/${encodeURIComponent(name)}/commit`, { id: row.id, revision }, 30_000).catch(
          (err: unknown) => ({ status: 0, body: String(err) }),
        );
        // It asks etcd by itself within PENDING_MS and commits: a lost answer costs time, no data.
        if (commit.status !== 200) this.log.warn({ container: name, to, answer: commit.body }, 'move: the new host did not confirm the commit; it commits when it sees the flip');
      }
      ctx.store.setPhase(name, 'deleting'); // a crash from here on is finished by reconcile()
      await finishDelete(ctx, { ...row, phase: 'deleting' }).catch((err: unknown) =>
        this.log.error({ err, container: name }, 'move: deleting the old copy failed; a restart of hoodyd finishes it'),
      );
      await ctx.storage.deleteVolume(staged).catch((err: unknown) => this.log.warn({ err, path: staged }, 'move: the staged snapshot stays'));
      const moved = { name, from: m.self, to, bytes, ms: Date.now() - t0 };
      this.log.info(moved, 'container moved');
      return moved;
    } finally {
      m.publisher.unhold(name);
      this.moving.delete(name);
      end();
      ctx.busy.delete(name);
    }
  }

  /** After a flip without an answer: its revision if it took, 0 if it did not, null if etcd says nothing for 30 s. */
  private async flipTook(m: MoveMember, key: string, to: string, id: string): Promise<number | null> {
    for (let i = 0; i < 10; i++) {
      try {
        const kv = (await within(3000, 'move', m.clients.strict.get(key).exec())).kvs[0];
        const have = kv ? parseValue<NameRecord>(kv.value) : null;
        return have?.host === to && have.id === id ? Number(kv!.mod_revision) : 0;
      } catch {
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    this.log.error({ key, to }, 'move: etcd did not say whether the flip took; the new host settles it by etcd, this copy stays');
    return null;
  }

  /** The bundle's length, the bundle, then the volume stream, to the new host's hop (signed like any hop request). */
  private async send(m: MoveMember, to: string, name: string, id: string, bundle: MoveBundle, staged: string): Promise<number> {
    const head = Buffer.from(JSON.stringify(bundle));
    const path = `/v1/fleet/moves?name=${encodeURIComponent(name)}&id=${encodeURIComponent(id)}&from=${encodeURIComponent(m.self)}&bundle_bytes=${head.length}`;
    const { req, answer } = openHostCall(m.peers, to, 'POST', path, {
      headers: { 'content-type': 'application/x-hoody-move', 'transfer-encoding': 'chunked' },
      // A new host that stops reading or answering for this long is given up on (the undo runs).
      timeoutMs: MOVE_IDLE_MS,
      transportError: (why) => fail('MOVE_REFUSED', `sending to host ${to} failed: ${why}`),
    });
    let bytes = 0;
    const counted = new PassThrough();
    counted.on('data', (c: Buffer) => (bytes += c.length)); // also keeps it flowing once the request is gone
    req.write(head);
    counted.pipe(req);
    const sent = this.ctx.storage.send(staged, counted);
    const answered = answer.then((a) => {
      if (a.status !== 201) throw remoteError(to, a);
    });
    // An early answer (a refusal) or a broken connection: the rest of the stream is read and dropped, so the send
    // ends and its snapshot can go before the undo deletes it.
    answered.catch(() => {
      counted.unpipe(req);
      counted.resume();
    });
    const [a, b] = await Promise.allSettled([answered, sent]);
    if (a.status === 'rejected') throw a.reason;
    if (b.status === 'rejected') throw storageFailure(b.reason);
    return bytes;
  }

  // ---- the new host

  /** Receives a moved container: volume, rows, engine container (stopped); held back from the fleet until commit. */
  async receive(m: MoveMember, q: { name: string; id: string; from: string; bundleBytes: number }, input: Readable): Promise<{ name: string; volume: string }> {
    const { ctx } = this;
    const name = checkName(q.name);
    if (!/^[0-9a-f-]{36}$/.test(q.id)) throw fail('MOVE_REFUSED', 'the move names no container id');
    if (!(q.bundleBytes > 0 && q.bundleBytes <= MAX_BUNDLE)) throw fail('MOVE_REFUSED', `a bundle of rows of ${q.bundleBytes} bytes`);
    if (ctx.store.get(name)) throw fail('MOVE_REFUSED', `this host has a container ${name} already`);
    if (ctx.busy.has(name)) throw fail('CONTAINER_BUSY', name);
    const entry = m.cache.view.names.get(name);
    if (entry?.value.host !== q.from || entry.value.id !== q.id) throw fail('MOVE_REFUSED', `the fleet directory does not place ${name} on host ${q.from}`);
    ctx.busy.add(name);
    let kept = false;
    try {
      await using undo = new Undo((label, error) => this.log.error({ err: error, step: label, container: name }, 'move (receive): undo step failed'));
      const bundle = JSON.parse((await readHead(input, q.bundleBytes)).toString('utf8')) as MoveBundle;
      if (bundle?.container?.name !== name || bundle.container.id !== q.id) throw fail('MOVE_REFUSED', 'the bundle is of another container');
      const staged = `${name}.${q.id}`;
      const volume = join(ctx.pool.containers, name);
      try {
        await mkdir(stagingOf(ctx), { recursive: true });
        await ctx.storage.deleteVolume(join(stagingOf(ctx), staged));
        await ctx.storage.receive(stagingOf(ctx), staged, input);
        undo.push('received snapshot', () => ctx.storage.deleteVolume(join(stagingOf(ctx), staged)));
        await ctx.storage.snapshot(join(stagingOf(ctx), staged), volume); // writable: a received one is read-only
        undo.push('volume', () => ctx.storage.deleteVolume(volume));
        const disk = bundle.container.disk_bytes;
        if (typeof disk === 'number') await ctx.storage.setQuota(volume, disk);
      } catch (err) {
        throw storageFailure(err);
      }
      m.publisher.hold(name);
      undo.push('publisher hold', async () => m.publisher.unhold(name));
      importBundle(ctx.store.db, bundle, { volume });
      undo.push('rows', async () => ctx.store.delete(name));
      await makeEngineContainer(ctx, ctx.store.get(name)!, undo);
      await ctx.storage.deleteVolume(join(stagingOf(ctx), staged)).catch(() => undefined);
      const timer = setTimeout(() => void this.settle(m, name, q.id), PENDING_MS);
      timer.unref();
      this.pending.set(name, { id: q.id, from: q.from, timer });
      kept = true;
      undo.done();
      this.log.info({ container: name, from: q.from }, 'move: container received; waiting for the directory flip');
      return { name, volume };
    } finally {
      if (!kept) ctx.busy.delete(name);
    }
  }

  /** The flip happened: namespaces open (cron, routes, certificates) and the container is this host's. */
  async commit(m: MoveMember, name: string, id: string, revision = 0): Promise<{ name: string; committed: boolean }> {
    const p = this.pending.get(name);
    if (!p) {
      if (this.ctx.store.get(name)?.id === id) return { name, committed: true }; // committed already (the timer was first)
      throw fail('MOVE_REFUSED', `no move of ${name} is waiting here`);
    }
    if (p.id !== id) throw fail('MOVE_REFUSED', `the move waiting here is of another ${name}`);
    // The cache catches up with the flip first, so the publisher sees the name as ours (not as a conflict).
    for (let i = 0; i < 40 && m.cache.status.revision < revision; i++) await new Promise((r) => setTimeout(r, 50));
    this.pending.delete(name);
    clearTimeout(p.timer);
    const row = this.ctx.store.get(name)!;
    for (const hook of this.ctx.hooks) await hook.open(row).catch((err: unknown) => this.log.error({ err, container: name }, 'move: opening a namespace failed'));
    m.publisher.unhold(name);
    this.ctx.busy.delete(name);
    void m.publisher.nudge();
    this.log.info({ container: name, from: p.from }, 'move: committed; the container is this host\'s');
    return { name, committed: true };
  }

  /** The old host gave up before the flip: everything received goes. */
  async abort(m: MoveMember, name: string, id: string): Promise<{ name: string; aborted: boolean }> {
    const p = this.pending.get(name);
    if (!p || p.id !== id) return { name, aborted: false };
    this.pending.delete(name);
    clearTimeout(p.timer);
    const row = this.ctx.store.get(name);
    try {
      if (row?.engineId) await removeEngineContainer(this.ctx, row.engineId);
      if (row) {
        await this.ctx.storage.deleteVolume(row.volume);
        this.ctx.store.delete(name);
      }
    } finally {
      m.publisher.unhold(name);
      this.ctx.busy.delete(name);
    }
    this.log.info({ container: name, from: p.from }, 'move: aborted by the old host; what was received is gone');
    return { name, aborted: true };
  }

  /** No commit came: etcd says whose it is. Ours: commit; still the old host's: drop it; etcd silent: ask again. */
  private async settle(m: MoveMember, name: string, id: string): Promise<void> {
    const p = this.pending.get(name);
    if (!p || p.id !== id) return;
    try {
      const kv = (await within(3000, 'move settle', m.clients.strict.get(m.keys.name(name)).exec())).kvs[0];
      const have = kv ? parseValue<NameRecord>(kv.value) : null;
      if (have?.host === m.self && have.id === id) await this.commit(m, name, id);
      else await this.abort(m, name, id);
    } catch (err) {
      this.log.warn({ err, container: name }, 'move: cannot tell whether the flip happened; asking again');
      p.timer = setTimeout(() => void this.settle(m, name, id), 10_000);
      p.timer.unref();
    }
  }
}
