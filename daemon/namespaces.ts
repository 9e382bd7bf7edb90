import type { ContainerCommands } from '../containers/agent/commands.js';
import type Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import type { NamespaceRoutes } from '../api/container/index.js';
import { cronRoutes } from '../api/container/cron.js';
import { execRoutes } from '../api/container/exec.js';
import { filesRoutes } from '../api/container/files.js';
import { logRoutes } from '../api/container/logs.js';
import { proxyRoutes } from '../api/container/proxy.js';
import { CALL_HEADER, CallAuthority } from '../api/public/authority.js';
import { Http01Challenges } from '../containers/acme/challenges.js';
import { acmeChallengeRoute } from '../containers/acme/route.js';
import { AcmeService } from '../containers/acme/service.js';
import type { ContainerContext } from '../containers/context.js';
import { CronService } from '../containers/cron/service.js';
import { type ExecDeps, ExecService } from '../containers/exec/service.js';
import type { LogSource } from '../containers/logs.js';
import { ProxyNamespace } from '../containers/proxy/namespace.js';
import type { DataPlane } from '../containers/proxy/plane.js';
import { ownHostNames } from '../host/names.js';
import type { AcmeObserver, CronObserver, ExecObserver } from '../containers/observe.js';
import type { Config } from './config.js';

/** Where the namespaces report what they do (the daemon's metrics); absent: nowhere. */
export interface NamespaceObservers {
  cron?: CronObserver;
  exec?: ExecObserver;
  acme?: AcmeObserver;
}

export interface Namespaces {
  proxy: ProxyNamespace;
  acme: AcmeService;
  exec: ExecService;
  cron: CronService;
  logSources: LogSource[];
  /** Each container's routes (inside the container plugin) and the root ones (ACME http-01). */
  routes: NamespaceRoutes[];
  rootRoutes: ((app: FastifyInstance) => Promise<void>)[];
  /** The in-process calls of scripts' relative fetches (the public server resolves their handles). */
  calls: CallAuthority;
  close(): Promise<void>;
}

/**
 * Builds every namespace of every container (cron, exec, files, proxy, ACME) and
 * registers their lifecycle hooks on the container context. `inject` reaches the public app once it exists.
 */
export function buildNamespaces(
  config: Config,
  db: Database.Database,
  ctx: ContainerContext,
  httpsPort: () => number,
  publicApp: () => FastifyInstance,
  plane: () => DataPlane | undefined = () => undefined,
  commands?: ContainerCommands,
  bun?: ExecDeps['bun'],
  observers: NamespaceObservers = {},
): Namespaces {
  const log = ctx.log;
  const calls = new CallAuthority();
  const proxy = new ProxyNamespace(db, ctx, config.domain, httpsPort, {
    hostNames: () => ownHostNames(config.reservedNames),
    limits: { routes: config.limits.routes, certs: config.limits.certs },
    upstream: { headersTimeoutMs: config.proxyUpstreamTimeoutMs, idleTimeoutMs: config.proxyUpstreamTimeoutMs },
    plane,
  });
  const challenges = new Http01Challenges();
  const acme = new AcmeService({
    db,
    log: log.child({ ns: 'acme' }),
    directoryUrl: config.acmeDirectory,
    stagingDirectoryUrl: config.acmeStagingDirectory,
    caFile: config.acmeCaFile,
    challenges,
    ownsHostname: (container, hostname) => proxy.service.ownsHostname(container, hostname),
    claims: proxy.claims,
    // Poll fast first: a CA that validates at once (pebble) finishes a whole order in well under a second.
    poll: { attempts: 30, minMs: 100, maxMs: 5000 },
    observer: observers.acme,
  });
  const exec = new ExecService({
    db,
    log: log.child({ ns: 'exec' }),
    domain: config.domain,
    acme,
    limits: { scripts: config.limits.scripts, scriptBytes: config.limits.scriptBytes, runsKept: config.limits.execRunsKept },
    maxLiveIsolates: config.exec.maxLiveIsolates,
    idleMs: config.exec.isolateIdleMs,
    bun,
    observer: observers.exec,
    budget: config.exec,
    // One group per daemon (tests run several at once); a SIGKILLed daemon's group is swept at the next start.
    cgroup:
      config.exec.cgroup === 'off'
        ? null
        : { name: `hoody-exec-${process.pid}`, sweepPrefix: 'hoody-exec-', memoryBytes: config.exec.workerMemoryBytes, cpus: config.exec.workerCpus },
    // A script's relative fetch: this container's own API, in process. Who calls stays in the daemon's table;
    // the request carries only a one-time handle, taken off before any hook, route or script sees it.
    selfFetch: async (call, req) => {
      const handle = calls.issue(call);
      try {
        const res = await publicApp().inject({
          method: req.method as 'GET',
          url: `/c/${call.container}${req.path.startsWith('/') ? '' : '/'}${req.path}`,
          headers: { ...req.headers, host: `api.${call.container}.${config.domain}`, [CALL_HEADER]: handle },
          payload: req.body ?? undefined,
        });
        return { status: res.statusCode, headers: res.headers, body: res.rawPayload };
      } finally {
        calls.release(handle);
      }
    },
  });
  const cron = new CronService({
    db,
    engine: ctx.engine,
    commands,
    store: ctx.store,
    log: log.child({ ns: 'cron' }),
    runTimeoutMs: config.cronRunTimeoutMs,
    queue: config.cronQueue,
    maxEntries: config.limits.cronEntries,
    maxRunsPerEntry: config.limits.cronRunsPerEntry,
    maxRunsPerContainer: config.limits.cronRunsPerContainer,
    observer: observers.cron,
  });
  ctx.hooks.push(proxy, exec, cron);
  const logSources: LogSource[] = [cron.logSource(), exec.logSource()];
  const routes: NamespaceRoutes[] = [
    async (app) => void (await app.register(cronRoutes, { cron })),
    async (app) => void (await app.register(proxyRoutes, { proxy: proxy.service })),
    async (app) => void (await app.register(filesRoutes, {})),
    // Twice the script cap, so a source just over it gets HOODY_SCRIPT_TOO_LARGE rather than a bare 413.
    async (app) => void (await app.register(execRoutes, { exec, scriptLimit: 2 * config.limits.scriptBytes })),
    async (app) => void (await app.register(logRoutes, { sources: logSources })),
  ];
  return {
    proxy,
    acme,
    exec,
    cron,
    logSources,
    routes,
    rootRoutes: [async (app) => void app.route(acmeChallengeRoute(challenges))],
    calls,
    async close() {
      await cron.stop();
      proxy.forwarder.close();
      acme.close();
      await exec.close();
    },
  };
}
