import { readdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Writable } from 'node:stream';
import Docker from 'dockerode';
import { BUSYBOX_IMAGE } from './images.js';
import { engineDefaultProfile, type SeccompProfile, withoutSubvolumeIoctls } from './seccomp.js';
import { mappingFromInfo, type UsernsMapping } from './userns.js';

export interface ContainerSpec {
  name: string;
  image: string;
  labels: Record<string, string>;
  hostname: string;
  memoryBytes: number;
  nanoCpus: number;
  pidsLimit: number;
  binds: string[];
  extraHosts?: string[];
  env?: string[];
  /** The engine network to attach to at create (default: the engine's default bridge). */
  network?: string;
  /** Namespaced kernel settings, in force before the container's first instruction (e.g. IPv6 off). */
  sysctls?: Record<string, string>;
  /** Bound on the root filesystem's writes where the engine enforces one itself (btrfs graph driver). */
  rootDiskBytes?: number | null;
}

export interface EngineContainer {
  id: string;
  name: string;
  labels: Record<string, string>;
  running: boolean;
  status: string;
  pid: number;
  /** The container's default gateway on its network: the host as the container sees it. */
  gateway: string;
  /** The container's address on its network (where the proxy forwards to). */
  ip: string;
  /** Its network in CIDR form (e.g. 172.17.0.0/16), '' when unknown. */
  subnet: string;
  /** Names of the engine networks it is attached to ([] from list()). */
  networks: string[];
  /** overlay2: the directory of its writable layer (upper dir and work dir inside), '' otherwise/unknown. */
  layerDir: string;
  /** Where its mounts are inside it ([] from list()). */
  mounts: string[];
  /** The namespaced kernel settings the engine applies at each start ({} from list()). */
  sysctls: Record<string, string>;
}

export interface EngineEvent {
  action: string;
  id: string;
  labels: Record<string, string>;
}

export interface ExecOptions {
  cmd: string[];
  user?: string;
  env?: string[];
  workingDir?: string;
  /** Wall-time cap: past it the process is killed from the host and timedOut is set. */
  timeoutMs?: number;
  /** Output (stdout and stderr interleaved) beyond this is dropped and truncated is set. */
  maxOutputBytes?: number;
  /** Aborting kills the command's process tree (a long-lived command hoodyd stops); exitCode is then null. */
  signal?: AbortSignal;
}

export interface ExecResult {
  exitCode: number | null;
  output: string;
  truncated: boolean;
  timedOut: boolean;
}

/** The container runtime behind hoody; DockerEngine is the real one. */
export interface ContainerEngine {
  readonly name: string;
  ping(): Promise<boolean>;
  create(spec: ContainerSpec): Promise<string>;
  start(id: string): Promise<void>;
  stop(id: string, timeoutS?: number): Promise<void>;
  restart(id: string, timeoutS?: number): Promise<void>;
  remove(id: string): Promise<void>;
  inspect(id: string): Promise<EngineContainer | null>;
  list(labels: Record<string, string>): Promise<EngineContainer[]>;
  imageExists(ref: string): Promise<boolean>;
  /** Attaches a container to this network only (detached from every other); the engine keeps it across restarts. */
  moveToNetwork(id: string, network: string): Promise<void>;
  info(): Promise<EngineInfo>;
  /** The engine's user-namespace mapping (what a container's root is on the host), null when rootful. */
  userns(): Promise<UsernsMapping | null>;
  /** Runs a command inside a running container (docker exec), capped in time and output. */
  exec(id: string, opts: ExecOptions): Promise<ExecResult>;
  /** Starts a command inside a running container and returns at once (docker exec -d). */
  execDetached(id: string, cmd: string[], user: string): Promise<void>;
  /** Container events with these labels, reconnecting after an engine restart; returns an unsubscribe. */
  events(labels: Record<string, string>, onEvent: (e: EngineEvent) => void, onError?: (err: Error) => void): () => void;
}

export interface EngineInfo {
  serverVersion: string;
  storageDriver: string;
  backingFilesystem: string;
  dockerRootDir: string;
  containers: number;
  images: number;
  /** User namespaces (`--userns-remap`): the host uid/gid a container's root is; null when containers run rootful. */
  userns: UsernsMapping | null;
}

/** Containers we create drop every capability but the few ordinary programs need. */
const CAP_ADD = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'NET_BIND_SERVICE'];

function statusCode(err: unknown): number | undefined {
  return (err as { statusCode?: number }).statusCode;
}

export class DockerEngine implements ContainerEngine {
  readonly name = 'docker';
  readonly docker: Docker;
  #profile: Promise<SeccompProfile> | undefined;
  #driver: Promise<string> | undefined;
  #userns: Promise<UsernsMapping | null> | undefined;

  constructor(readonly socketPath: string) {
    this.docker = new Docker({ socketPath });
  }

  /** The engine's default seccomp profile minus subvolume creation (a subvolume would escape the disk quota). */
  seccompProfile(image: string): Promise<SeccompProfile> {
    this.#profile ??= engineDefaultProfile(this.docker, [image, BUSYBOX_IMAGE], CAP_ADD).then(withoutSubvolumeIoctls);
    this.#profile.catch(() => {
      this.#profile = undefined; // retry on the next create
    });
    return this.#profile;
  }

  #storageDriver(): Promise<string> {
    this.#driver ??= this.info().then((i) => i.storageDriver);
    this.#driver.catch(() => {
      this.#driver = undefined;
    });
    return this.#driver;
  }

  userns(): Promise<UsernsMapping | null> {
    this.#userns ??= this.info().then((i) => i.userns);
    this.#userns.catch(() => {
      this.#userns = undefined;
    });
    return this.#userns;
  }

  async ping(): Promise<boolean> {
    try {
      await this.docker.ping();
      return true;
    } catch {
      return false;
    }
  }

  async create(spec: ContainerSpec): Promise<string> {
    const seccomp = JSON.stringify(await this.seccompProfile(spec.image));
    const sizeOpt = spec.rootDiskBytes && (await this.#storageDriver()) === 'btrfs' ? { StorageOpt: { size: String(spec.rootDiskBytes) } } : {};
    const c = await this.docker.createContainer({
      name: spec.name,
      Image: spec.image,
      Hostname: spec.hostname,
      Labels: spec.labels,
      Env: spec.env ?? [],
      HostConfig: {
        Memory: spec.memoryBytes,
        MemorySwap: spec.memoryBytes,
        NanoCpus: spec.nanoCpus,
        PidsLimit: spec.pidsLimit,
        SecurityOpt: ['no-new-privileges', `seccomp=${seccomp}`],
        ...sizeOpt,
        CapDrop: ['ALL'],
        CapAdd: CAP_ADD,
        RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
        Binds: spec.binds,
        ExtraHosts: spec.extraHosts ?? [],
        ...(spec.network ? { NetworkMode: spec.network } : {}),
        ...(spec.sysctls ? { Sysctls: spec.sysctls } : {}),
        LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '1' } },
      },
    });
    return c.id;
  }

  async start(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).start();
    } catch (err) {
      if (statusCode(err) !== 304) throw err; // already running
    }
  }

  async stop(id: string, timeoutS = 5): Promise<void> {
    try {
      await this.docker.getContainer(id).stop({ t: timeoutS });
    } catch (err) {
      if (statusCode(err) !== 304) throw err; // already stopped
    }
  }

  async restart(id: string, timeoutS = 5): Promise<void> {
    await this.docker.getContainer(id).restart({ t: timeoutS });
  }

  async remove(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true });
    } catch (err) {
      if (statusCode(err) !== 404) throw err;
    }
  }

  async inspect(id: string): Promise<EngineContainer | null> {
    try {
      const i = await this.docker.getContainer(id).inspect();
      const net = Object.values(i.NetworkSettings?.Networks ?? {})[0];
      return {
        id: i.Id,
        name: i.Name.replace(/^\//, ''),
        labels: i.Config.Labels ?? {},
        running: i.State.Running,
        status: i.State.Status,
        pid: i.State.Pid,
        gateway: net?.Gateway ?? '',
        ip: net?.IPAddress ?? '',
        subnet: subnetOf(net?.IPAddress, net?.IPPrefixLen),
        networks: Object.keys(i.NetworkSettings?.Networks ?? {}),
        layerDir: layerDirOf(i.GraphDriver),
        mounts: (i.Mounts ?? []).map((m) => m.Destination),
        sysctls: i.HostConfig?.Sysctls ?? {},
      };
    } catch (err) {
      if (statusCode(err) === 404) return null;
      throw err;
    }
  }

  async list(labels: Record<string, string>): Promise<EngineContainer[]> {
    const filters = { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) };
    const rows = await this.docker.listContainers({ all: true, filters: JSON.stringify(filters) });
    return rows.map((r) => ({
      id: r.Id,
      name: (r.Names[0] ?? '').replace(/^\//, ''),
      labels: r.Labels,
      running: r.State === 'running',
      status: r.State,
      pid: 0,
      gateway: '',
      ip: '',
      subnet: '',
      networks: [],
      layerDir: '',
      mounts: [],
      sysctls: {},
    }));
  }

  async imageExists(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect();
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return false;
      throw err;
    }
  }

  async moveToNetwork(id: string, network: string): Promise<void> {
    const live = await this.inspect(id);
    if (!live) return;
    if (!live.networks.includes(network)) await this.docker.getNetwork(network).connect({ Container: id });
    for (const other of live.networks) if (other !== network) await this.docker.getNetwork(other).disconnect({ Container: id, Force: true });
  }

  async exec(id: string, opts: ExecOptions): Promise<ExecResult> {
    const max = opts.maxOutputBytes ?? 64 * 1024;
    const exec = await this.docker.getContainer(id).exec({
      Cmd: opts.cmd,
      User: opts.user ?? '',
      Env: opts.env ?? [],
      WorkingDir: opts.workingDir,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
    });
    const stream = await exec.start({ hijack: true, stdin: false });
    const chunks: Buffer[] = [];
    let size = 0;
    let truncated = false;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        if (size < max) chunks.push(chunk.subarray(0, max - size));
        if (size + chunk.length > max) truncated = true;
        size += chunk.length;
        cb();
      },
    });
    this.docker.modem.demuxStream(stream, sink, sink);
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const ended = new Promise<void>((resolve) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', () => resolve());
    });
    // docker exec has no kill; the exec's process is visible from the host, so kill it there.
    const kill = async () => {
      const info = await exec.inspect().catch(() => null);
      if (info?.Pid) await killTree(info.Pid);
      setTimeout(() => stream.destroy(), 2000).unref();
    };
    if (opts.timeoutMs) {
      timer = setTimeout(() => {
        timedOut = true;
        void kill();
      }, opts.timeoutMs);
    }
    const onAbort = () => void kill();
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
    await ended;
    if (timer) clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    const info = await exec.inspect().catch(() => null);
    return {
      exitCode: timedOut || opts.signal?.aborted ? null : (info?.ExitCode ?? null),
      output: Buffer.concat(chunks).toString('utf8'),
      truncated,
      timedOut,
    };
  }

  async execDetached(id: string, cmd: string[], user: string): Promise<void> {
    const exec = await this.docker.getContainer(id).exec({ Cmd: cmd, User: user, AttachStdout: false, AttachStderr: false, Tty: false });
    // The engine answers a detached start with an empty body; reading it to the end frees the connection.
    const res = (await exec.start({ Detach: true })) as NodeJS.ReadableStream | undefined;
    if (res) {
      await new Promise<void>((resolve) => {
        res.on('end', resolve).on('close', resolve).on('error', () => resolve());
        res.resume();
      });
    }
  }

  events(labels: Record<string, string>, onEvent: (e: EngineEvent) => void, onError?: (err: Error) => void): () => void {
    let stopped = false;
    let current: NodeJS.ReadableStream | null = null;
    // Where to resume after an interruption: the engine replays what it logged since then (its own log: after
    // an engine restart that is everything the new engine did, e.g. the containers it started again while this
    // stream was down). Events already delivered are skipped by their timestamp.
    let resumeFrom: number | null = null; // unix seconds
    let lastNano = 0;
    let atLast = new Set<string>();
    const fresh = (nano: number, key: string): boolean => {
      if (nano < lastNano || (nano === lastNano && atLast.has(key))) return false;
      if (nano > lastNano) {
        lastNano = nano;
        atLast = new Set();
      }
      atLast.add(key);
      return true;
    };
    const connect = async () => {
      while (!stopped) {
        try {
          const filters = { type: ['container'], label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) };
          const since = lastNano ? Math.floor(lastNano / 1e9) : resumeFrom;
          const connectedAt = Math.floor(Date.now() / 1000);
          const stream = (await this.docker.getEvents({ filters: JSON.stringify(filters), ...(since !== null ? { since } : {}) })) as NodeJS.ReadableStream;
          resumeFrom ??= connectedAt;
          current = stream;
          let buf = '';
          await new Promise<void>((resolve) => {
            stream.on('data', (chunk: Buffer) => {
              buf += chunk.toString('utf8');
              let nl = buf.indexOf('\n');
              while (nl >= 0) {
                const line = buf.slice(0, nl).trim();
                buf = buf.slice(nl + 1);
                nl = buf.indexOf('\n');
                if (!line) continue;
                try {
                  const e = JSON.parse(line) as {
                    Action?: string;
                    status?: string;
                    id?: string;
                    time?: number;
                    timeNano?: number;
                    Actor?: { ID?: string; Attributes?: Record<string, string> };
                  };
                  const event = { action: e.Action ?? e.status ?? '', id: e.Actor?.ID ?? e.id ?? '', labels: e.Actor?.Attributes ?? {} };
                  if (!fresh(e.timeNano ?? (e.time ?? 0) * 1e9, `${event.id} ${event.action}`)) continue;
                  onEvent(event);
                } catch (err) {
                  onError?.(err as Error);
                }
              }
            });
            stream.on('end', resolve);
            stream.on('close', resolve);
            stream.on('error', () => resolve());
          });
        } catch (err) {
          onError?.(err as Error);
        }
        if (!stopped) await new Promise((r) => setTimeout(r, 1000)); // engine gone: retry
      }
    };
    void connect();
    return () => {
      stopped = true;
      (current as unknown as { destroy?: () => void } | null)?.destroy?.();
    };
  }

  async info(): Promise<EngineInfo> {
    const i = (await this.docker.info()) as {
      ServerVersion: string;
      Driver: string;
      DriverStatus: [string, string][];
      DockerRootDir: string;
      Containers: number;
      Images: number;
      SecurityOptions?: string[];
    };
    const backing = i.DriverStatus?.find(([k]) => k === 'Backing Filesystem')?.[1] ?? '';
    return {
      serverVersion: i.ServerVersion,
      storageDriver: i.Driver,
      backingFilesystem: backing,
      dockerRootDir: i.DockerRootDir,
      containers: i.Containers,
      images: i.Images,
      userns: mappingFromInfo(i.SecurityOptions, i.DockerRootDir),
    };
  }
}

/** overlay2 keeps a layer's upper dir and work dir side by side in one directory: that directory. */
export function layerDirOf(graph: { Name?: string; Data?: Record<string, string> | null } | undefined): string {
  if (graph?.Name !== 'overlay2') return '';
  const upper = graph.Data?.UpperDir ?? '';
  const work = graph.Data?.WorkDir ?? '';
  if (!upper.endsWith('/diff') || !upper.startsWith('/')) return '';
  const dir = dirname(upper);
  // Anything else is a layout this code does not know: better no quota step than one on the wrong directory.
  return work === `${dir}/work` && !dir.includes('/../') ? dir : '';
}

/** 172.17.0.5 + 16 -> 172.17.0.0/16. */
export function subnetOf(ip: string | undefined, prefix: number | undefined): string {
  if (!ip || !prefix || !/^\d+\.\d+\.\d+\.\d+$/.test(ip)) return '';
  const n = ip.split('.').reduce((acc, o) => (acc << 8) + Number(o), 0) >>> 0;
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  const net = (n & mask) >>> 0;
  return `${[24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.')}/${prefix}`;
}

/** Kills a process and all its descendants (a shell's children would keep the exec stream open). */
export async function killTree(pid: number): Promise<void> {
  const children = new Map<number, number[]>();
  for (const d of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(d)) continue;
    const stat = await readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid) children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
  }
  const all: number[] = [];
  const walk = (p: number) => {
    all.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  for (const p of all) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
