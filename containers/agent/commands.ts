import { chmod, mkdir, rm, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { linkAtomic } from '../../host/atomic-file.js';
import type { ContainerEngine, ExecOptions, ExecResult } from '../../host/engine.js';
import { AgentLink } from './link.js';
import { FRAME, type Frame, FrameReader } from './protocol.js';

/** The container a command runs in. */
export interface CommandTarget {
  name: string;
  engineId: string;
}

/** Starts a command inside a running container, capped in time and output (one interface, two drivers). */
export interface ContainerCommands {
  readonly kind: 'engine' | 'agent';
  exec(target: CommandTarget, opts: ExecOptions): Promise<ExecResult>;
  /**
   * Gets ready for commands in this container ahead of time (the agent starts in the background, a few at a
   * time): the top of the hour then finds every agent running. `fresh`: the container just started, an earlier
   * failure to start there no longer counts. `engineId` is asked only when something is to be done.
   */
  warm(name: string, engineId: () => string | null | undefined, fresh?: boolean): void;
  /** A deleted container's leftovers go (its agent's socket and directory). */
  forget(name: string): Promise<void>;
  close(): Promise<void>;
}

/** `docker exec` per command: what every command cost before the agent (about 15 ms of the engine's CPU). */
export class EngineCommands implements ContainerCommands {
  readonly kind = 'engine';
  constructor(private readonly engine: ContainerEngine) {}
  exec(target: CommandTarget, opts: ExecOptions): Promise<ExecResult> {
    return this.engine.exec(target.engineId, opts);
  }
  warm(): void {}
  async forget(): Promise<void> {}
  async close(): Promise<void> {}
}

/** Where the agent's directory is mounted in every container (read-only: the tenant cannot swap the socket). */
export const AGENT_MOUNT = '/.hoody';
const HELLO_MS = 3000;
const RETRY_MS = 30_000;
/** Agents started ahead of time at once (each is one docker exec): a daemon start does not stampede the engine. */
const WARM_PARALLEL = 4;

interface Slot {
  engineId: string;
  server: Server | null;
  link: AgentLink | null;
  /** A connection that has not said hello yet: one at a time (a tenant's connect storm costs nothing). */
  pending: Socket | null;
  waiters: ((l: AgentLink) => void)[];
  starting: Promise<AgentLink | null> | null;
  retryAt: number;
  /** The engine container was made before the agent (no mount): docker exec for its whole life. */
  unmounted: boolean;
}

export interface AgentDeps {
  engine: ContainerEngine;
  /** Per-container directories (`<dir>/<name>/`: the agent binary, linked, and hoodyd's socket). */
  dir: string;
  /** The built agent, or null when it could not be built (every command then goes through docker exec). */
  binary: string | null;
  log: Logger;
}

/**
 * Commands through an agent inside each container, started once with `docker exec` and reached over a unix
 * socket hoodyd listens on in a directory mounted read-only into that container only: the agent's children
 * get the container's user namespace, capabilities, seccomp, no-new-privileges and cgroup, as docker exec's do.
 * Whenever the agent cannot be had (an older container without the mount, a stopped container, an agent that
 * does not say hello) the command goes through docker exec instead: slower, never wrong.
 */
export class AgentCommands implements ContainerCommands {
  readonly kind = 'agent';
  readonly #slots = new Map<string, Slot>();
  readonly #fallback: EngineCommands;
  readonly #warmQueue = new Map<string, () => string | null | undefined>();
  #warming = 0;

  constructor(private readonly deps: AgentDeps) {
    this.#fallback = new EngineCommands(deps.engine);
  }

  /** The bind every new container gets. */
  bind(name: string): string {
    return `${join(this.deps.dir, name)}:${AGENT_MOUNT}:ro`;
  }

  async exec(target: CommandTarget, opts: ExecOptions): Promise<ExecResult> {
    const link = this.deps.binary ? await this.#linkFor(target) : null;
    if (!link) return this.#fallback.exec(target, opts);
    return link.run(opts);
  }

  warm(name: string, engineId: () => string | null | undefined, fresh = false): void {
    if (!this.deps.binary) return;
    const slot = this.#slots.get(name);
    if (slot && fresh) slot.retryAt = 0;
    if (slot?.link?.alive || slot?.starting || slot?.unmounted || (slot && Date.now() < slot.retryAt)) return;
    this.#warmQueue.set(name, engineId);
    this.#pumpWarm();
  }

  #pumpWarm(): void {
    while (this.#warming < WARM_PARALLEL && this.#warmQueue.size > 0) {
      const [name, engineIdOf] = this.#warmQueue.entries().next().value!;
      this.#warmQueue.delete(name);
      const engineId = engineIdOf();
      if (!engineId) continue;
      this.#warming++;
      void this.#linkFor({ name, engineId }).finally(() => {
        this.#warming--;
        this.#pumpWarm();
      });
    }
  }

  /** How many containers have a live agent right now (for stats and tests). */
  get connected(): number {
    let n = 0;
    for (const s of this.#slots.values()) if (s.link?.alive) n++;
    return n;
  }

  async forget(name: string): Promise<void> {
    const slot = this.#slots.get(name);
    this.#slots.delete(name);
    this.#warmQueue.delete(name);
    if (slot) this.#closeSlot(slot);
    await rm(join(this.deps.dir, name), { recursive: true, force: true });
  }

  async close(): Promise<void> {
    this.#warmQueue.clear();
    for (const slot of this.#slots.values()) this.#closeSlot(slot);
    this.#slots.clear();
  }

  #closeSlot(slot: Slot): void {
    slot.link?.close();
    slot.pending?.destroy();
    slot.server?.close();
  }

  #linkFor(target: CommandTarget): Promise<AgentLink | null> {
    let slot = this.#slots.get(target.name);
    if (slot && slot.engineId !== target.engineId) {
      this.#closeSlot(slot); // the container was made again: a new engine container, maybe without the mount
      slot = undefined;
    }
    if (!slot) {
      slot = { engineId: target.engineId, server: null, link: null, pending: null, waiters: [], starting: null, retryAt: 0, unmounted: false };
      this.#slots.set(target.name, slot);
    }
    if (slot.link?.alive) return Promise.resolve(slot.link);
    if (slot.unmounted || Date.now() < slot.retryAt) return Promise.resolve(null);
    const s = slot;
    s.starting ??= this.#start(target.name, s).finally(() => {
      s.starting = null;
    });
    return s.starting;
  }

  async #start(name: string, slot: Slot): Promise<AgentLink | null> {
    const { engine, log } = this.deps;
    try {
      if (!slot.server) {
        const live = await engine.inspect(slot.engineId);
        if (!live?.running) return this.#later(slot);
        if (!live.mounts.includes(AGENT_MOUNT)) {
          slot.unmounted = true;
          log.info({ container: name }, 'container predates the command agent: commands go through docker exec');
          return null;
        }
        slot.server = await this.#listen(name, slot);
      }
      await this.#placeBinary(name);
      const hello = new Promise<AgentLink | null>((resolve) => {
        const timer = setTimeout(() => resolve(null), HELLO_MS);
        slot.waiters.push((l) => {
          clearTimeout(timer);
          resolve(l);
        });
      });
      await engine.execDetached(slot.engineId, [`${AGENT_MOUNT}/hoody-agent`, `${AGENT_MOUNT}/hoody.sock`], 'root');
      const link = await hello;
      if (!link) {
        log.warn({ container: name }, 'command agent did not say hello: commands go through docker exec for now');
        return this.#later(slot);
      }
      log.debug({ container: name }, 'command agent connected');
      return link;
    } catch (err) {
      log.debug({ err, container: name }, 'command agent could not start');
      return this.#later(slot);
    }
  }

  #later(slot: Slot): null {
    slot.retryAt = Date.now() + RETRY_MS;
    slot.waiters = [];
    return null;
  }

  /** The agent binary, hard-linked into the container's directory (one inode: one copy in page cache). */
  async #placeBinary(name: string): Promise<void> {
    await linkAtomic(this.deps.binary!, join(this.deps.dir, name, 'hoody-agent'));
  }

  async #listen(name: string, slot: Slot): Promise<Server> {
    const dir = join(this.deps.dir, name);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await chmod(dir, 0o755); // the engine made it for the bind if hoodyd had not
    const path = join(dir, 'hoody.sock');
    await unlink(path).catch(() => undefined); // left by an earlier hoodyd
    const server = createServer((socket) => this.#accept(slot, socket));
    server.maxConnections = 4;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    server.on('error', (err) => this.deps.log.warn({ err, container: name }, 'command agent socket failed'));
    await chmod(path, 0o666); // the container's root is an unprivileged uid on the host under user namespaces
    return server;
  }

  #accept(slot: Slot, socket: Socket): void {
    if (slot.link?.alive || slot.pending) {
      socket.destroy();
      return;
    }
    slot.pending = socket;
    const reader = new FrameReader();
    const timer = setTimeout(() => socket.destroy(), HELLO_MS);
    const onData = (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      if (frames.length === 0) return;
      socket.off('data', onData);
      clearTimeout(timer);
      slot.pending = null;
      if (frames[0]!.type !== FRAME.hello) {
        socket.destroy();
        return;
      }
      const l = new AgentLink(socket, reader, () => {
        if (slot.link === l) slot.link = null;
      });
      slot.link = l;
      for (const w of slot.waiters.splice(0)) w(l);
      // Frames that came with the hello (none from the real agent) are not replayed: runs are not out yet.
    };
    socket.on('data', onData);
    socket.on('close', () => {
      clearTimeout(timer);
      if (slot.pending === socket) slot.pending = null;
    });
    socket.on('error', () => undefined);
  }
}
