import Docker from 'dockerode';
import { LABEL_INSTANCE } from '../containers/context.js';
import type { HostCa } from '../containers/tls/ca.js';
import type { BenchDaemon } from './daemon.js';
import { publicCall } from './http.js';
import { runPool } from './stats.js';
import type { ActivityFigures } from './types.js';
import type { Workload } from './workloads.js';

export const BENCH_LABEL = 'io.hoody.bench';

/** Namespaces a hoody container can have populated; "absent" once the daemon answered 404 HOODY_NOT_FOUND. */
export type NamespaceName = 'proxy' | 'cron' | 'exec';
type NamespaceState = 'untried' | 'populated' | 'absent';

/** Seconds to provision one container: in total (ready, namespaces populated), and the create call alone. */
export interface ProvisionTime {
  total: number;
  create: number;
}

/** The containers of one (workload, mode): grows in steps, measured between steps, torn down at the end. */
export interface Fleet {
  readonly size: number;
  /** Engine ids of every container made so far. */
  engineIds(): Promise<string[]>;
  /** Adds n containers with up to `parallel` in flight; returns each one's provisioning time in seconds. */
  add(n: number, parallel: number, onOne: () => void, stop: () => boolean): Promise<ProvisionTime[]>;
  /** Namespaces populated in every container so far (hoody only). */
  namespaces(): NamespaceName[];
  namespaceErrors(): Record<string, number>;
  /** Removes every container, one per API call, a few at a time. */
  destroy(onOne?: () => void): Promise<void>;
  /** Containers that failed to provision (the first few messages); they are not counted in `size`. */
  failures(): string[];
}

/** Provisions every name, `parallel` at a time, timing each from its start (t0); a null time is a failure. */
async function timedPool(
  names: readonly string[],
  parallel: number,
  onOne: () => void,
  stop: () => boolean,
  provision: (name: string, t0: number) => Promise<ProvisionTime | null>,
): Promise<ProvisionTime[]> {
  const times: ProvisionTime[] = [];
  await runPool(
    names,
    parallel,
    async (name) => {
      const time = await provision(name, performance.now());
      if (time) times.push(time);
      onOne();
    },
    stop,
  );
  return times;
}

/** Plain `docker run -d` of the workload's image through dockerode: the baseline. */
export class DockerFleet implements Fleet {
  private readonly docker: Docker;
  private count = 0;
  private readonly failed: string[] = [];
  constructor(
    socketPath: string,
    private readonly runId: string,
    private readonly workload: Workload,
    private readonly removeParallel = 3,
  ) {
    this.docker = new Docker({ socketPath });
  }

  get size(): number {
    return this.count;
  }

  private filters(): string {
    return JSON.stringify({ label: [`${BENCH_LABEL}=${this.runId}`] });
  }

  async engineIds(): Promise<string[]> {
    return (await this.docker.listContainers({ all: true, filters: this.filters() })).map((c) => c.Id);
  }

  add(n: number, parallel: number, onOne: () => void, stop: () => boolean): Promise<ProvisionTime[]> {
    const names = Array.from({ length: n }, (_, i) => `hoody-bench-${this.runId}-${this.workload.name}-${this.count + i + 1}`);
    return timedPool(names, parallel, onOne, stop, async (name, t0) => {
      try {
        const c = await this.docker.createContainer({ name, Image: this.workload.image, Labels: { [BENCH_LABEL]: this.runId } });
        await c.start();
      } catch (err) {
        this.failed.push(`${name}: ${(err as Error).message}`);
        return null;
      }
      this.count++;
      const total = (performance.now() - t0) / 1000;
      return { total, create: total };
    });
  }

  namespaces(): NamespaceName[] {
    return [];
  }
  failures(): string[] {
    return this.failed.slice(0, 10);
  }
  namespaceErrors(): Record<string, number> {
    return {};
  }

  async destroy(onOne?: () => void): Promise<void> {
    const list = await this.docker.listContainers({ all: true, filters: this.filters() });
    await runPool(list, this.removeParallel, async (c) => {
      await this.docker
        .getContainer(c.Id)
        .remove({ force: true, v: true })
        .catch(() => undefined);
      onOne?.();
    });
    this.count = 0;
  }
}

/**
 * The seed's pipeline shape, run once a minute by every active container's cron: write a file through the
 * script's files host call, then PATCH its TLS bundle (alternating two certificates, so every PATCH is a real swap).
 */
export const TICK_SCRIPT = `// @timeout 20000
const minute = Math.floor(Date.now() / 60000);
await files.write('tick/last.txt', String(Date.now()));
const bundle = await files.read(minute % 2 ? 'tick/a.json' : 'tick/b.json');
const r = await fetch('/api/v1/proxy/cert/bundle', { method: 'PATCH', body: bundle });
if (!r.ok) throw new Error('PATCH ' + r.status + ' ' + (await r.text()));
return { ok: true, minute };
`;

/** The cron command of an active container: busybox wget of its own exec URL (its service names resolve to the host). */
export function tickCommand(name: string, httpPort: number, token: string): string {
  return `wget -q -O - "http://exec.${name}.hoody.localhost:${httpPort}/scripts/tick?token=${encodeURIComponent(token)}"`;
}

/** Containers made through a real hoodyd, each with its namespaces populated over the per-container API. */
export class HoodyFleet implements Fleet {
  private readonly docker: Docker;
  private count = 0;
  private readonly failed: string[] = [];
  private readonly state: Record<NamespaceName, NamespaceState> = { proxy: 'untried', cron: 'untried', exec: 'untried' };
  private readonly errors: Record<string, number> = {};
  readonly errorSamples: string[] = [];
  /** Tokens of the containers made, by name (active fleets read their logs with them). */
  private readonly tokens = new Map<string, string>();

  constructor(
    socketPath: string,
    readonly daemon: BenchDaemon,
    private readonly workload: Workload,
    private readonly ca: HostCa,
    private readonly prefix: string,
    /** Every container also gets the once-a-minute pipeline (TICK_SCRIPT from a cron entry). */
    private readonly active = false,
  ) {
    this.docker = new Docker({ socketPath });
  }

  get size(): number {
    return this.count;
  }

  async engineIds(): Promise<string[]> {
    const filters = JSON.stringify({ label: [`${LABEL_INSTANCE}=${this.daemon.instance}`] });
    return (await this.docker.listContainers({ all: true, filters })).map((c) => c.Id);
  }

  failures(): string[] {
    return this.failed.slice(0, 10);
  }

  namespaces(): NamespaceName[] {
    return (Object.keys(this.state) as NamespaceName[]).filter((k) => this.state[k] === 'populated');
  }
  namespaceErrors(): Record<string, number> {
    return { ...this.errors };
  }

  private fail(ns: string, detail: string): void {
    this.errors[ns] = (this.errors[ns] ?? 0) + 1;
    if (this.errorSamples.length < 10) this.errorSamples.push(`${ns}: ${detail}`);
  }

  /** One namespace step: 404 HOODY_NOT_FOUND means the namespace is not built yet, so it is skipped from then on. */
  private async step(ns: NamespaceName, call: () => Promise<{ status: number; code: string | undefined; text: string }>): Promise<boolean> {
    if (this.state[ns] === 'absent') return false;
    const r = await call().catch((err: Error) => ({ status: 0, code: undefined, text: err.message }));
    if (r.status === 404 && r.code === 'HOODY_NOT_FOUND') {
      this.state[ns] = 'absent';
      return false;
    }
    if (r.status < 200 || r.status >= 300) {
      this.fail(ns, `${r.status} ${r.text.slice(0, 200)}`);
      return false;
    }
    if (this.state[ns] === 'untried') this.state[ns] = 'populated';
    return true;
  }

  private async populate(name: string, token: string): Promise<void> {
    const port = this.daemon.ports.http;
    const host = `api.${name}.hoody.localhost`;
    const q = `?token=${encodeURIComponent(token)}`;
    const hostname = `${name}.bench.test`;
    await this.step('proxy', async () => {
      const route = await publicCall(port, host, 'PUT', `/api/v1/proxy/routes/${hostname}${q}`, { port: this.workload.port });
      if (route.status !== 200) return route;
      const pem = await this.ca.issue([hostname]);
      return publicCall(port, host, 'PATCH', `/api/v1/proxy/cert/bundle${q}`, { domain: hostname, cert: pem.cert, key: pem.key, chain: this.ca.certPem });
    });
    await this.step('cron', () => publicCall(port, host, 'POST', `/users/me/entries${q}`, { schedule: '@daily', command: 'true' }));
    await this.step('exec', () => publicCall(port, host, 'PUT', `/api/v1/scripts/hello${q}`, 'return { ok: true };\n'));
    if (this.active) await this.activate(name, token, hostname);
  }

  /** Two bundles in the files area, the tick script, and the cron entry that runs it every minute. */
  private async activate(name: string, token: string, hostname: string): Promise<void> {
    const port = this.daemon.ports.http;
    const host = `api.${name}.hoody.localhost`;
    const q = `?token=${encodeURIComponent(token)}`;
    const ok = (r: { status: number; text: string }, what: string) => {
      if (r.status < 200 || r.status >= 300) throw new Error(`${what}: ${r.status} ${r.text.slice(0, 200)}`);
    };
    try {
      for (const f of ['a', 'b']) {
        const pem = await this.ca.issue([hostname]);
        const bundle = JSON.stringify({ domain: hostname, cert: pem.cert, key: pem.key, chain: this.ca.certPem });
        ok(await publicCall(port, host, 'PUT', `/api/v1/files/tick/${f}.json${q}`, bundle), `PUT files/tick/${f}.json`);
      }
      ok(await publicCall(port, host, 'PUT', `/api/v1/scripts/tick.ts${q}`, TICK_SCRIPT), 'PUT scripts/tick.ts');
      ok(await publicCall(port, host, 'POST', `/users/me/entries${q}`, { schedule: '* * * * *', command: tickCommand(name, port, token), comment: 'bench: active' }), 'POST cron entry');
    } catch (err) {
      this.fail('active', (err as Error).message);
    }
  }

  /** What the active containers' pipelines did since `since`: their cron runs and the tick's exec log rows. */
  async activity(since: Date, parallel = 4): Promise<ActivityFigures> {
    const port = this.daemon.ports.http;
    const out: ActivityFigures = {
      since: since.toISOString(),
      seconds: Math.round((Date.now() - since.getTime()) / 1000),
      containers: this.tokens.size,
      cron_runs: 0,
      cron_ok: 0,
      cron_failed: 0,
      cron_lateness_ms: [],
      exec_ms: [],
      exec_failed: 0,
      min_runs_per_container: Number.POSITIVE_INFINITY,
      errors: [],
    };
    type Run = { trigger: string; status: string; started_at: string; scheduled_for: string | null; output: string };
    type ExecRow = { script: string; status: number; durationMs: number; error?: string | null };
    const get = async <T>(host: string, path: string): Promise<T[]> => {
      const r = await publicCall(port, host, 'GET', path);
      if (r.status !== 200) throw new Error(`GET ${path.replace(/token=[^&]+/, 'token=…')}: ${r.status} ${r.text.slice(0, 160)}`);
      return JSON.parse(r.text) as T[];
    };
    await runPool([...this.tokens], parallel, async ([name, token]) => {
      const host = `api.${name}.hoody.localhost`;
      const q = `since=${encodeURIComponent(out.since)}&limit=1000&token=${encodeURIComponent(token)}`;
      try {
        const runs = (await get<Run>(host, `/users/me/runs?${q}`)).filter((r) => r.trigger === 'schedule');
        out.min_runs_per_container = Math.min(out.min_runs_per_container, runs.length);
        for (const r of runs) {
          if (r.status === 'queued' || r.status === 'running') continue;
          out.cron_runs++;
          if (r.status === 'ok') out.cron_ok++;
          else {
            out.cron_failed++;
            if (out.errors.length < 5) out.errors.push(`${name} cron ${r.status}: ${r.output.slice(0, 160)}`);
          }
          if (r.scheduled_for) out.cron_lateness_ms.push(Date.parse(r.started_at) - Date.parse(r.scheduled_for));
        }
        for (const e of await get<ExecRow>(host, `/api/v1/logs?source=exec&${q}`)) {
          if (e.script !== 'tick.ts') continue;
          out.exec_ms.push(e.durationMs);
          if (e.status !== 200) {
            out.exec_failed++;
            if (out.errors.length < 5) out.errors.push(`${name} exec ${e.status}: ${String(e.error ?? '').slice(0, 160)}`);
          }
        }
      } catch (err) {
        if (out.errors.length < 5) out.errors.push(`${name}: ${(err as Error).message}`);
      }
    });
    if (!Number.isFinite(out.min_runs_per_container)) out.min_runs_per_container = 0;
    return out;
  }

  add(n: number, parallel: number, onOne: () => void, stop: () => boolean): Promise<ProvisionTime[]> {
    const names = Array.from({ length: n }, (_, i) => `${this.prefix}-${this.count + i + 1}`);
    return timedPool(names, parallel, onOne, stop, async (name, t0) => {
      let token: string;
      try {
        token = (await this.daemon.client.call<{ token: string }>('POST', '/v1/containers', { name, image: this.workload.image })).token;
      } catch (err) {
        this.failed.push(`${name}: ${(err as Error).message}`);
        return null;
      }
      this.count++;
      this.tokens.set(name, token);
      const create = (performance.now() - t0) / 1000;
      await this.populate(name, token);
      return { total: (performance.now() - t0) / 1000, create };
    });
  }

  async destroy(onOne?: () => void): Promise<void> {
    await this.daemon.destroy(onOne);
    this.tokens.clear();
    this.count = 0;
  }
}
