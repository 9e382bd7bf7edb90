/**
 * HAProxy as the data plane: routes in two run-time maps swapped whole (`prepare map`/`commit map`), tenants'
 * certificates added and replaced through the admin socket with no reload. Every change is also written to the
 * files HAProxy loads at start, so a restarted HAProxy serves the same table.
 */
import { AddressCache } from './addresses.js';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { writeAtomic } from '../../host/atomic-file.js';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import type { Haproxy } from '../../host/haproxy/process.js';
import { type BackendTimes, type ContainerProxyFigures, parseBackendTimes, parseContainerTable } from '../../host/haproxy/stats.js';
import type { DataPlane, PlaneTable } from './plane.js';
import { sniTable } from './plane.js';

/** A domain's file name (`*` cannot be in one that HAProxy's crt-list parses well). */
const certFile = (dir: string, sni: string, own: boolean) => join(dir, `${own ? '' : '_default_for_'}${sni.replace('*', '_wildcard_')}.pem`);

/** A tenant's crt-list line offers HTTP/2 (the bind's default, for hoody's own names, is HTTP/1.1 only). */
const TENANT_SSL = '[alpn h2,http/1.1]';
/** A crt-list line's options and filter as compared here (`show ssl crt-list` writes `[alpn h2,http/1.1 ]`). */
const lineKey = (rest: string) => rest.replace(/\s+/g, ' ').replace(/\s*\]/, ']').trim();

/** The SHA-1 of a PEM's first certificate, as HAProxy shows it (hex, upper case, no colons). */
function sha1Of(pem: string): string {
  try {
    return new X509Certificate(pem).fingerprint.replaceAll(':', '').toUpperCase();
  } catch {
    return '';
  }
}

function expectOk(out: string, what: string): void {
  // The run-time API answers errors in prose; these are the success markers of the commands used here.
  if (!/Success|New version created|Transaction created|New empty certificate store|^$/m.test(out) || /error|unknown|can't|cannot|failed|not found/i.test(out)) {
    throw new Error(`${what}: ${out.slice(0, 300)}`);
  }
}

export class HaproxyPlane implements DataPlane {
  readonly kind = 'haproxy' as const;
  /** Certificate stores HAProxy holds (by file), with the SHA-1 of the certificate committed in each. */
  #stores = new Map<string, string>();
  /** Files in the crt-list, with their options and SNI filter. */
  #listed = new Map<string, string>();
  /** The routes last handed to HAProxy (an address change republishes them). */
  #table: PlaneTable = { routes: [], certs: [] };
  readonly #addresses: AddressCache;
  #queue: Promise<unknown> = Promise.resolve();
  #watch: NodeJS.Timeout | undefined;

  constructor(
    private readonly haproxy: Haproxy,
    /** The host's own certificate for unknown names (PEM: cert, chain, key). */
    private readonly defaultPem: string,
    resolveAddress: (container: string) => Promise<string | null>,
    private readonly log: Logger,
    /** The proxy namespace's table as it is now: what a restarted HAProxy is brought back to. */
    private readonly current: () => PlaneTable,
  ) {
    this.#addresses = new AddressCache(resolveAddress);
  }

  /** Starts or adopts HAProxy, reads back what it holds, then brings it to the current table. */
  async start(): Promise<void> {
    const l = this.haproxy.layout;
    await mkdir(l.certDir, { recursive: true, mode: 0o700 });
    await writeAtomic(l.defaultCert, this.defaultPem);
    // The first line is the default certificate (served for unknown names and clients without SNI).
    if (!(await readFile(l.crtList, 'utf8').catch(() => '')).trim()) await writeAtomic(l.crtList, `${l.defaultCert}\n`);
    const how = await this.haproxy.ensure();
    await this.readBack();
    this.log.info({ how, pid: await this.haproxy.pid(), certs: this.#listed.size }, 'data plane (haproxy) up');
    await this.publish(this.current());
    // HAProxy gone (killed, crashed): start it again from its files and bring it back to the current table.
    this.#watch = setInterval(() => {
      void this.enqueue(async () => {
        if (await this.haproxy.answers()) return;
        // Alive but late to answer (a loaded box, or hoodyd's own loop late): a reload would reset the connections
        // in its accept queue, and a stuck process would not leave anyway. Only a gone HAProxy is started again.
        if (await this.haproxy.pid()) {
          this.log.warn('data plane (haproxy) slow to answer its admin socket; left running');
          return;
        }
        this.log.warn('data plane (haproxy) gone; starting it again');
        await this.haproxy.ensure();
        await this.readBack();
        await this.apply(this.current());
      }).catch((err: unknown) => this.log.error({ err }, 'restarting the data plane failed'));
    }, 2_000);
    this.#watch.unref();
  }

  /**
   * What HAProxy holds, asked from HAProxy itself (a hoodyd killed mid-change leaves its files and HAProxy's
   * memory apart): a transaction left open is aborted, stores and crt-list lines are read with their certificates.
   */
  private async readBack(): Promise<void> {
    const l = this.haproxy.layout;
    const shown = await this.haproxy.command('show ssl cert');
    let section = '';
    const stores: string[] = [];
    for (const line of shown.split('\n').map((x) => x.trim())) {
      if (line.startsWith('#')) section = line;
      else if (line && section === '# transaction') await this.haproxy.command(`abort ssl cert ${line.replace(/^\*/, '')}`);
      else if (line && section === '# filename' && line.startsWith(l.certDir) && line !== l.defaultCert) stores.push(line);
    }
    this.#stores = new Map();
    for (const file of stores) {
      const detail = await this.haproxy.command(`show ssl cert ${file}`);
      this.#stores.set(file, /SHA1 FingerPrint: ([0-9A-F]+)/i.exec(detail)?.[1]?.toUpperCase() ?? '');
    }
    this.#listed = new Map();
    for (const line of (await this.haproxy.command(`show ssl crt-list -n ${l.crtList}`)).split('\n')) {
      const m = /^(\S+):\d+(?:\s+(.*))?$/.exec(line.trim());
      if (m?.[1] && m[1] !== l.defaultCert && m[1].startsWith(l.certDir)) this.#listed.set(m[1], lineKey(m[2] ?? ''));
    }
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
    this.#addresses.invalidate(container);
    if (!this.#table.routes.some((r) => r.container === container)) return;
    void this.enqueue(() => this.applyRoutes(this.#table)).catch((err: unknown) => this.log.error({ err, container }, 'republishing routes failed'));
  }

  private address(container: string): Promise<string | null> {
    return this.#addresses.get(container);
  }

  /** Puts a certificate into HAProxy's store for this file; an open transaction is never left behind. */
  private async putCert(file: string, pem: string, sni: string): Promise<void> {
    if (!this.#stores.has(file)) {
      expectOk(await this.haproxy.command(`new ssl cert ${file}`), `new ssl cert ${sni}`);
      this.#stores.set(file, '');
    }
    try {
      expectOk(await this.haproxy.command(`set ssl cert ${file}`, pem), `set ssl cert ${sni}`);
      expectOk(await this.haproxy.command(`commit ssl cert ${file}`), `commit ssl cert ${sni}`);
    } catch (err) {
      await this.haproxy.command(`abort ssl cert ${file}`).catch(() => undefined);
      throw err;
    }
    this.#stores.set(file, sha1Of(pem));
  }

  private async apply(table: PlaneTable): Promise<void> {
    const l = this.haproxy.layout;
    const pems = new Map(table.certs.map((c) => [c.domain, c.pem]));
    const desired = new Map<string, { pem: string; sni: string }>();
    for (const e of sniTable(table)) {
      const pem = e.certDomain ? (pems.get(e.certDomain) ?? this.defaultPem) : this.defaultPem;
      desired.set(certFile(l.certDir, e.sni, e.certDomain !== null), { pem, sni: e.sni });
    }
    // New and changed certificates first, so a route never goes live before its certificate. The file is
    // written before HAProxy may list it: a restarted HAProxy must find every file its crt-list names.
    for (const [file, { pem, sni }] of desired) {
      if (this.#stores.get(file) !== sha1Of(pem)) {
        await writeAtomic(file, pem);
        await this.putCert(file, pem, sni);
      }
      const line = lineKey(`${TENANT_SSL} ${sni}`);
      if (this.#listed.get(file) !== line) {
        if (this.#listed.has(file)) await this.haproxy.command(`del ssl crt-list ${l.crtList} ${file}`);
        expectOk(await this.haproxy.command(`add ssl crt-list ${l.crtList}`, `${file} ${line}`), `add ssl crt-list ${sni}`);
        this.#listed.set(file, line);
        await this.saveCrtList();
      }
    }
    await this.applyRoutes(table);
    // Gone ones: out of the crt-list (HAProxy, then its file), then out of the store, then off the disk.
    for (const file of [...this.#listed.keys()].filter((f) => !desired.has(f))) {
      await this.haproxy.command(`del ssl crt-list ${l.crtList} ${file}`);
      this.#listed.delete(file);
    }
    await this.saveCrtList();
    for (const file of [...this.#stores.keys()].filter((f) => !desired.has(f))) {
      await this.haproxy.command(`del ssl cert ${file}`);
      this.#stores.delete(file);
      await rm(file, { force: true });
    }
    this.#table = table;
  }

  private async saveCrtList(): Promise<void> {
    const l = this.haproxy.layout;
    const lines = [l.defaultCert, ...[...this.#listed].map(([f, sni]) => `${f} ${sni}`.trim())];
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
    const owners = table.routes.map((r) => `${r.hostname} ${r.container}`);
    for (const [file, lines] of [
      [l.routesMap, routes],
      [l.redirectMap, redirects],
      [l.serversMap, owners],
    ] as const) {
      const prepared = await this.haproxy.command(`prepare map ${file}`);
      const version = /New version created: (\d+)/.exec(prepared)?.[1];
      if (!version) throw new Error(`prepare map: ${prepared.slice(0, 200)}`);
      if (lines.length) expectOk(await this.haproxy.command(`add map @${version} ${file}`, lines.join('\n')), `add map ${file}`);
      expectOk(await this.haproxy.command(`commit map @${version} ${file}`), `commit map ${file}`);
      await writeAtomic(file, lines.length ? `${lines.join('\n')}\n` : '');
    }
  }

  /** HAProxy's own counts per container (its stick table, by container name): requests, errors, bytes. */
  async figures(): Promise<Map<string, ContainerProxyFigures>> {
    return parseContainerTable(await this.haproxy.command('show table tenant'));
  }

  /** The tenant backend's average times (HAProxy has them per backend or server, not per stick-table key). */
  async times(): Promise<BackendTimes | null> {
    return parseBackendTimes(await this.haproxy.command('show stat tenant 2 -1'), 'tenant');
  }

  async close(): Promise<void> {
    clearInterval(this.#watch);
    await this.#queue;
  }
}
