/**
 * HAProxy as the data plane: routes in two run-time maps swapped whole (`prepare map`/`commit map`), tenants'
 * certificates added and replaced through the admin socket with no reload. Every change is also written to the
 * files HAProxy loads at start, so a restarted HAProxy serves the same table.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Haproxy } from '../../host/haproxy/process.js';
import type { DataPlane, PlaneTable } from './plane.js';
import { sniTable } from './plane.js';

async function writeAtomic(path: string, content: string): Promise<void> {
  await writeFile(`${path}.tmp`, content, { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

/** A domain's file name (`*` cannot be in one that HAProxy's crt-list parses well). */
const certFile = (dir: string, sni: string, own: boolean) => join(dir, `${own ? '' : '_default_for_'}${sni.replace('*', '_wildcard_')}.pem`);

function expectOk(out: string, what: string): void {
  // The run-time API answers errors in prose; these are the success markers of the commands used here.
  if (!/Success|New version created|Transaction created|New empty certificate store|^$/m.test(out) || /error|unknown|can't|cannot|failed|not found/i.test(out)) {
    throw new Error(`${what}: ${out.slice(0, 300)}`);
  }
}

export class HaproxyPlane implements DataPlane {
  readonly kind = 'haproxy' as const;
  /** What HAProxy serves now: certificate file -> PEM (read back from its files when adopted). */
  #served = new Map<string, string>();
  /** The routes last handed to HAProxy (an address change republishes them). */
  #table: PlaneTable = { routes: [], certs: [] };
  readonly #addresses = new Map<string, Promise<string | null>>();
  #queue: Promise<unknown> = Promise.resolve();
  #watch: NodeJS.Timeout | undefined;

  constructor(
    private readonly haproxy: Haproxy,
    /** The host's own certificate for unknown names (PEM: cert, chain, key). */
    private readonly defaultPem: string,
    private readonly resolveAddress: (container: string) => Promise<string | null>,
    private readonly log: Logger,
    /** The proxy namespace's table as it is now: what a restarted HAProxy is brought back to. */
    private readonly current: () => PlaneTable,
  ) {}

  /** Starts or adopts HAProxy with the files as they are, reads back which certificates it holds, then syncs. */
  async start(): Promise<void> {
    const l = this.haproxy.layout;
    await mkdir(l.certDir, { recursive: true, mode: 0o700 });
    await writeAtomic(l.defaultCert, this.defaultPem);
    const listed = (await readFile(l.crtList, 'utf8').catch(() => ''))
      .split('\n')
      .map((line) => line.trim().split(/\s+/)[0] ?? '')
      .filter((f) => f && f !== l.defaultCert);
    // The first line is the default certificate (served for unknown names and clients without SNI).
    if (!listed.length) await writeAtomic(l.crtList, `${l.defaultCert}\n`);
    const how = await this.haproxy.ensure();
    this.#served = new Map();
    for (const f of listed) this.#served.set(f, await readFile(f, 'utf8').catch(() => ''));
    this.log.info({ how, pid: await this.haproxy.pid(), certs: this.#served.size }, 'data plane (haproxy) up');
    await this.publish(this.current());
    // HAProxy gone (killed, crashed): start it again from its files and republish.
    this.#watch = setInterval(() => {
      void this.enqueue(async () => {
        if (await this.haproxy.answers()) return;
        this.log.warn('data plane (haproxy) not answering; restarting it');
        await this.haproxy.ensure();
        await this.apply(this.current());
      }).catch((err: unknown) => this.log.error({ err }, 'restarting the data plane failed'));
    }, 2_000);
    this.#watch.unref();
  }

  private enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(job, job);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  publish(table: PlaneTable): Promise<void> {
    return this.enqueue(() => this.apply(table));
  }

  invalidate(container: string): void {
    this.#addresses.delete(container);
    if (!this.#table.routes.some((r) => r.container === container)) return;
    void this.enqueue(() => this.applyRoutes(this.#table)).catch((err: unknown) => this.log.error({ err, container }, 'republishing routes failed'));
  }

  private address(container: string): Promise<string | null> {
    let a = this.#addresses.get(container);
    if (!a) {
      a = this.resolveAddress(container).catch(() => null);
      this.#addresses.set(container, a);
      a.then((ip) => ip ?? this.#addresses.delete(container));
    }
    return a;
  }

  private async apply(table: PlaneTable): Promise<void> {
    const l = this.haproxy.layout;
    const pems = new Map(table.certs.map((c) => [c.domain, c.pem]));
    const desired = new Map<string, { pem: string; sni: string }>();
    for (const e of sniTable(table)) {
      const pem = e.certDomain ? (pems.get(e.certDomain) ?? this.defaultPem) : this.defaultPem;
      desired.set(certFile(l.certDir, e.sni, e.certDomain !== null), { pem, sni: e.sni });
    }
    // New and changed certificates first, so a route never goes live before its certificate.
    for (const [file, { pem, sni }] of desired) {
      const known = this.#served.has(file);
      if (known && this.#served.get(file) === pem) continue;
      await writeAtomic(file, pem);
      if (!known) expectOk(await this.haproxy.command(`new ssl cert ${file}`), `new ssl cert ${sni}`);
      expectOk(await this.haproxy.command(`set ssl cert ${file}`, pem), `set ssl cert ${sni}`);
      expectOk(await this.haproxy.command(`commit ssl cert ${file}`), `commit ssl cert ${sni}`);
      if (!known) expectOk(await this.haproxy.command(`add ssl crt-list ${l.crtList}`, `${file} ${sni}`), `add ssl crt-list ${sni}`);
      this.#served.set(file, pem);
      await this.saveCrtList(desired);
    }
    await this.applyRoutes(table);
    for (const file of [...this.#served.keys()].filter((f) => !desired.has(f))) {
      await this.haproxy.command(`del ssl crt-list ${l.crtList} ${file}`);
      await this.haproxy.command(`del ssl cert ${file}`);
      this.#served.delete(file);
      await rm(file, { force: true });
    }
    await this.saveCrtList(desired);
    this.#table = table;
  }

  private async saveCrtList(desired: Map<string, { sni: string }>): Promise<void> {
    const l = this.haproxy.layout;
    const lines = [l.defaultCert, ...[...this.#served.keys()].map((f) => `${f} ${desired.get(f)?.sni ?? ''}`.trim())];
    await writeAtomic(l.crtList, `${lines.join('\n')}\n`);
  }

  /** Both maps, each replaced whole: a reader sees the old table or the new one. */
  private async applyRoutes(table: PlaneTable): Promise<void> {
    const l = this.haproxy.layout;
    const routes: string[] = [];
    for (const r of table.routes) {
      const ip = await this.address(r.container);
      routes.push(`${r.hostname} ${ip ? `${ip}:${r.port}` : 'down'}`);
    }
    const redirects = table.routes.filter((r) => r.httpsRedirect).map((r) => `${r.hostname} 1`);
    for (const [file, lines] of [
      [l.routesMap, routes],
      [l.redirectMap, redirects],
    ] as const) {
      const prepared = await this.haproxy.command(`prepare map ${file}`);
      const version = /New version created: (\d+)/.exec(prepared)?.[1];
      if (!version) throw new Error(`prepare map: ${prepared.slice(0, 200)}`);
      if (lines.length) expectOk(await this.haproxy.command(`add map @${version} ${file}`, lines.join('\n')), `add map ${file}`);
      expectOk(await this.haproxy.command(`commit map @${version} ${file}`), `commit map ${file}`);
      await writeAtomic(file, lines.length ? `${lines.join('\n')}\n` : '');
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#watch);
    await this.#queue;
  }
}
