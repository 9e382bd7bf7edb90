import { SnapshotScheduler } from '../containers/snapshot-schedule.js';
import { ensureOwnImage } from '../host/images.js';
import { existsSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { buildAdminApi } from '../api/admin/index.js';
import { type ContainerContext, NO_EXTRAS } from '../containers/context.js';
import { reconcile } from '../containers/lifecycle.js';
import { ensureTemplate } from '../containers/provision.js';
import { collectStats } from '../containers/stats.js';
import { ContainerStore } from '../containers/store.js';
import { ShimPlacement } from '../containers/shim-placement.js';
import { engineGroupsShims } from '../host/shim-groups.js';
import { applyHostEgress, destroyHostEgress, egressNames, ensureEgressNetwork, saveEgressPorts, savedEgressPorts } from '../host/egress.js';
import { DockerEngine } from '../host/engine.js';
import { hostInfo } from '../host/info.js';
import { KsmController } from '../host/ksm.js';
import { poolPaths } from '../host/pool.js';
import { defaultStorageRegistry } from '../host/storage/index.js';
import type { Config } from './config.js';
import { secureStateDir } from './at-rest.js';
import { openDatabase } from './db.js';
import { RotatingLog } from './log-file.js';
import { buildMetrics } from './metrics/index.js';
import { setupHost } from './setup.js';
import { watchStarts } from './events.js';
import { loadHostTrust } from './tls.js';
import { buildPublicServer, type PublicServer } from '../api/public/server.js';
import { buildNamespaces, type Namespaces } from './namespaces.js';
import { dataPlanePorts, type StartedDataPlane, startDataPlane } from './data-plane.js';
import { ServiceNetwork } from '../containers/network.js';
import { ServiceCertificates } from '../containers/tls/sni.js';
import { VERSION } from './version.js';
import { buildCommands } from './commands.js';
import { NAMESPACE_MIGRATIONS } from './migrations.js';
import { Fleet } from './fleet/index.js';
import { fleetHopPort, resolveFleet } from './fleet/config.js';
import type { HopRecord } from './fleet/keys.js';
import { adminOverHop } from './fleet/remote.js';
import { FleetForwarder } from '../api/public/forward.js';

export interface Daemon {
  config: Config;
  ctx: ContainerContext;
  log: Logger;
  admin: FastifyInstance;
  close(): Promise<void>;
}

/** The daemon's logger: to its own rotating file when the config names one, else to stdout. */
export function makeLogger(level: string, config?: Pick<Config, 'logFile' | 'logMaxBytes' | 'logKeep'>): Logger {
  const opts = { level, base: { pid: process.pid, svc: 'hoodyd' }, timestamp: pino.stdTimeFunctions.isoTime };
  if (!config?.logFile) return pino(opts);
  return pino(opts, new RotatingLog(config.logFile, config.logMaxBytes, config.logKeep));
}

/** The container layer's state object, built from config (tests build it the same way). */
export function buildContainerContext(config: Config, db: Database.Database, log: Logger): ContainerContext {
  const engine = new DockerEngine(config.dockerSocket);
  const store = new ContainerStore(db, config.limits.revokedTokensKept);
  return {
    store,
    storage: defaultStorageRegistry().create(config.storageDriver),
    engine,
    ensureImage: (image) => ensureOwnImage(engine, image, join(config.stateDir, 'build'), log),
    pool: poolPaths(config.stateDir),
    instance: config.instance,
    defaults: { image: config.image, ...config.defaults },
    specExtras: NO_EXTRAS,
    hooks: [],
    busy: new Set(),
    // Grouping is switched on by startDaemon once it knows the engine runs hoody's shim wrapper.
    shims: new ShimPlacement(1, config.instance, store),
    log,
  };
}

/**
 * Wires the process: host set-up (idempotent), state database, container context, startup reconciliation,
 * then the admin API on its unix socket. Containers keep running when the daemon stops.
 */
export async function startDaemon(config: Config, log: Logger = makeLogger(config.logLevel, config)): Promise<Daemon> {
  const startedAt = new Date().toISOString();
  // A bad fleet setting stops the start here; an unreachable etcd never does (membership retries in the background).
  const fleetSettings = await resolveFleet(config.fleetFlags, process.env, config.stateDir);
  const setup = await setupHost(config, log);
  const db = openDatabase(config.dbPath, NAMESPACE_MIGRATIONS);
  const ctx = buildContainerContext(config, db, log);
  const grouping = config.shimGroupSize > 1 && (await engineGroupsShims(config.dockerSocket));
  if (config.shimGroupSize > 1 && !grouping)
    log.warn({ engine: config.dockerSocket }, 'the engine was not started with hoody\'s shim wrapper: new containers get one containerd shim each (restart the engine through `hoody up` to share them)');
  ctx.shims = new ShimPlacement(grouping ? config.shimGroupSize : 1, config.instance, ctx.store);
  const { engine, storage } = ctx;
  const ksm = new KsmController();
  await ensureTemplate(ctx);
  const trust = await loadHostTrust(config.stateDir);
  secureStateDir(config.stateDir);
  const certs = new ServiceCertificates(trust.ca, config.domain, (name) => ctx.store.get(name)?.phase === 'ready');
  // A deleted container's service certificate goes with it.
  ctx.hooks.push({ open: async () => undefined, close: async (row) => certs.forget(row.name) });
  const haproxy = config.dataPlane === 'haproxy';
  // HAProxy holds the public ports; hoodyd listens behind it. Without it, hoodyd holds them itself.
  let ports = haproxy ? await dataPlanePorts(config) : { http: config.httpPort, https: config.httpsPort };
  let dataPlane: StartedDataPlane | undefined;
  const egress = egressNames(config.instance);
  const restricted = config.containerEgress === 'restricted';
  // The host chains are in force since setupHost(); the network they are bound to is made here if missing.
  if (restricted) await ensureEgressNetwork(new DockerEngine(config.dockerSocket).docker, egress, config.instance);
  const network = new ServiceNetwork(() => ctx, config.domain, () => ports, trust.bundlePath, trust.caPath, restricted ? egress.network : null);
  const commands = await buildCommands(config, ctx, log);
  ctx.specExtras = (name) => commands.extend(name, network.extras(name));
  ctx.hooks.push(network);
  for (const row of ctx.store.list()) {
    if (row.phase === 'ready') await network.migrate(row).catch((err: unknown) => log.warn({ err, container: row.name }, 'moving to the egress network failed'));
  }
  if (!restricted) await destroyHostEgress(new DockerEngine(config.dockerSocket).docker, config.instance, config.stateDir).catch((err: unknown) => log.warn({ err }, 'removing the egress policy failed'));
  const snapshots = new SnapshotScheduler(ctx, db, config.snapshotMinEveryS);
  snapshots.start();
  let pub: PublicServer | undefined;
  // The proxy namespace exists once buildNamespaces() returned; a scrape comes only after the admin API listens.
  let proxy: Namespaces['proxy'] | undefined;
  const metrics = buildMetrics(
    {
      ctx,
      certificates: () => proxy?.service.certificateExpiries() ?? [],
      proxyFigures: () => dataPlane?.plane.figures() ?? null,
      proxyTimes: () => dataPlane?.plane.times() ?? null,
    },
    ksm,
  );
  // A deleted container's series go with it (counters; the scrape-time gauges follow the store by themselves).
  ctx.hooks.push({ open: async () => undefined, close: (row) => metrics.activity.forget(row.name) });
  const ns = buildNamespaces(config, db, ctx, () => ports.https, () => pub!.app, () => dataPlane?.plane, commands.commands, commands.bun, metrics.activity);
  proxy = ns.proxy;
  // Made after every namespace hook is in: its own hook (publish on create, delete, start) runs last.
  // The hop listener starts with the first fleet record (a host in no fleet opens no extra port).
  let hop: Promise<HopRecord> | undefined;
  const startHop = (): Promise<HopRecord> => {
    hop ??= (async () => {
      const servername = `hoodyd.${fleetSettings?.host ?? 'host'}.fleet.${config.domain}`;
      const pem = await trust.ca.issue([servername]);
      const port = await pub!.listenHop({ port: fleetHopPort(process.env), host: '0.0.0.0', cert: `${pem.cert}${trust.ca.certPem}`, key: pem.key, router: fleet });
      log.info({ port, servername }, 'fleet: host-to-host hop listening');
      return { port, caPem: trust.ca.certPem, servername };
    })();
    return hop;
  };
  const fleet = new Fleet({ ctx, stateDir: config.stateDir, version: VERSION, startedAt, ports: () => ports, env: process.env, log, hop: startHop, routes: () => ns.proxy.service.table().routes,
    certs: () => ns.proxy.service.localCerts(),
    certBundle: (domain) => ns.proxy.service.localBundle(domain),
    serveRemoteCerts: (certs) => ns.proxy.service.setRemoteCerts(certs),
  });
  const forwarder = new FleetForwarder(fleet, config.domain, {
    // A container received from another host is not this host's to answer for until its move commits.
    hasContainer: (name) => ctx.store.get(name) !== undefined && !fleet.receiving(name),
    tokenContainer: (hash) => {
      const t = ctx.store.tokenByHash(hash);
      return t && !fleet.receiving(t.container) ? t.container : undefined;
    },
  });

  const report = await reconcile(ctx);
  log.info(report, 'reconciled with the engine');

  pub = await buildPublicServer({
    ctx,
    domain: config.domain,
    log,
    namespaces: ns.routes,
    rootRoutes: ns.rootRoutes,
    calls: ns.calls,
    tokenFailureLimit: config.tokenFailureLimit,
    headersTimeoutMs: config.headersTimeoutMs,
    fleet: () => (fleet.joined ? forwarder : null),
    hopIntercept: (req, res) => ns.proxy.forwarder.handle(req, res),
    hopAdmin: adminOverHop(config.adminSocket),
    hopUpgrade: (req, socket, head) => ns.proxy.forwarder.upgrade(req, socket, head),
    // Routed hostnames reach hoodyd only when it is the data plane itself.
    intercept: haproxy ? undefined : (req, res) => ns.proxy.forwarder.handle(req, res),
    upgrade: haproxy ? undefined : (req, socket, head) => ns.proxy.forwarder.upgrade(req, socket, head),
    // Service hostnames always get the host CA's certificate, whatever a tenant installed (issue 10.4).
    sni: async (name) => (await certs.contextFor(name)) ?? ns.proxy.service.context(name) ?? null,
    defaultContext: () => certs.defaultContext(),
  });
  if (haproxy) dataPlane = await startDataPlane(config, ports, trust.ca, pub, ns.proxy, log);
  else ports = await pub.listen(config.httpPort, config.httpsPort);
  log.info({ http: ports.http, https: ports.https, domain: config.domain, dataPlane: config.dataPlane }, 'public listeners up');
  const saved = await savedEgressPorts(config.stateDir);
  if (restricted && (saved?.[0] !== ports.http || saved?.[1] !== ports.https)) {
    await applyHostEgress(egress, [ports.http, ports.https]); // setupHost() put the last ones in: only a change rewrites
    await saveEgressPorts(config.stateDir, [ports.http, ports.https]);
  }
  // Network namespaces keep their redirects while running, but the ports may have changed since.
  for (const row of ctx.store.list()) {
    if (row.phase === 'ready') await network.apply(row).catch((err: unknown) => log.warn({ err, container: row.name }, 'network set-up failed'));
  }
  fleet.start(fleetSettings);
  const stopEvents = watchStarts(ctx);
  await ns.cron.start();

  const admin = await buildAdminApi({
    ctx,
    log,
    version: VERSION,
    instance: config.instance,
    metrics: metrics.registry,
    hostInfo: async () => ({
      ...(await hostInfo(ctx.pool, storage, engine, ksm, setup.pool.kind === 'loop')),
      shims: { configuredSize: config.shimGroupSize, grouping: ctx.shims.grouping, groups: new Set(ctx.store.list().flatMap((r) => (r.shimGroup ? [r.shimGroup] : []))).size },
    }),
    stats: () => collectStats(ctx, ksm, (name) => ns.exec.persistent(name)),
    listeners: async () => ({
      http: ports.http,
      https: ports.https,
      domain: config.domain,
      data_plane: { kind: config.dataPlane, pid: (await dataPlane?.haproxy.pid()) ?? (haproxy ? null : process.pid) },
    }),
    logSources: ns.logSources,
    grants: { get: (name) => ns.proxy.service.grants(name), set: (name, domains) => ns.proxy.service.setGrants(name, domains) },
    snapshots,
    fleet,
  });
  await mkdir(dirname(config.adminSocket), { recursive: true });
  if (existsSync(config.adminSocket)) await rm(config.adminSocket); // stale from a killed daemon
  await admin.listen({ path: config.adminSocket });
  await chmod(config.adminSocket, 0o660);
  await writeFile(join(config.stateDir, 'hoodyd.pid'), `${process.pid}\n`);
  log.info({ socket: config.adminSocket, stateDir: config.stateDir, instance: config.instance }, 'hoodyd ready');

  let closed = false;
  return {
    config,
    ctx,
    log,
    admin,
    async close() {
      if (closed) return;
      closed = true;
      stopEvents();
      snapshots.close();
      await fleet.stop(false); // the host record expires with its lease: a restart does not flap the fleet
      await admin.close();
      await pub?.close();
      forwarder.close();
      await dataPlane?.plane.close(); // HAProxy itself keeps serving: the data plane outlives hoodyd
      await ns.close();
      await commands.commands.close();
      db.close();
      log.info('hoodyd stopped');
    },
  };
}
