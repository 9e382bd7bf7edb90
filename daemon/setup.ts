import { join } from 'node:path';
import type { Logger } from 'pino';
import { applyHostEgress, egressNames, savedEgressPorts } from '../host/egress.js';
import { DockerEngine } from '../host/engine.js';
import { ensureEngine } from '../host/engine-start.js';
import { BASE_IMAGE, BUSYBOX_IMAGE, buildBaseImage, buildBusyboxImage } from '../host/images.js';
import { raiseKeyQuota } from '../host/keys.js';
import { KsmController } from '../host/ksm.js';
import { ensurePool, type PoolSetupResult } from '../host/pool.js';
import { ensureRemapUser, REMAP_USER, rootfulContainersIn } from '../host/userns.js';
import { type Config, shimWrapperDir } from './config.js';

export interface SetupReport {
  pool: PoolSetupResult;
  engineStarted: boolean;
  /** The user dockerd was started with `--userns-remap` for; null when hoody did not start it or left remap off. */
  usernsRemap: string | null;
  ksm: boolean;
  imagesBuilt: string[];
}

/**
 * Makes the box usable, idempotently: the BTRFS pool, a Docker engine (started under memory-merge with its
 * data root on the pool when none answers), KSM on, and optionally the local images.
 */
export async function setupHost(
  config: Config,
  log: Logger,
  opts: { images?: 'none' | 'busybox' | 'all'; onStep?: (step: string) => void } = {},
): Promise<SetupReport> {
  const step = opts.onStep ?? ((s: string) => log.info(s));
  step(`pool: ${join(config.stateDir, 'pool')}`);
  const pool = await ensurePool(config.stateDir, config.poolSizeBytes);
  if (pool.mountWarning) {
    log.warn({ pool: pool.paths.root }, pool.mountWarning);
    opts.onStep?.(`WARNING: ${pool.mountWarning}`);
  }
  if (config.containerEgress === 'restricted') {
    // Before the engine: at boot it restarts containers on its own, and they must be filtered from their first packet.
    step(`egress: ${egressNames(config.instance).bridge}`);
    await applyHostEgress(egressNames(config.instance), (await savedEgressPorts(config.stateDir)) ?? [config.httpPort, config.httpsPort]);
  }
  step(`engine: ${config.dockerSocket}`);
  const remap = await usernsRemapFor(config, pool.paths.engine, log, step);
  const engine = await ensureEngine({
    socketPath: config.dockerSocket,
    dataRoot: pool.paths.engine,
    storageDriver: config.engineStorageDriver,
    logFile: join(config.stateDir, 'dockerd.log'),
    usernsRemap: remap,
    shimDir: shimWrapperDir(config),
  });
  // Before any container of a remapped engine starts: they all share one key quota (host/keys.ts).
  try {
    const keys = await raiseKeyQuota();
    log.info(keys, 'kernel key quota per user');
  } catch (err) {
    log.warn({ err }, 'could not raise the kernel key quota: past ~200 containers, commands in them may fail to start');
  }
  const ksm = new KsmController();
  let ksmOn = false;
  if (await ksm.available()) {
    await ksm.enable();
    ksmOn = true;
  }
  const imagesBuilt: string[] = [];
  const want = opts.images ?? 'none';
  if (want !== 'none') {
    const docker = new DockerEngine(config.dockerSocket);
    if (!(await docker.imageExists(BUSYBOX_IMAGE))) {
      step(`image: building ${BUSYBOX_IMAGE}`);
      await buildBusyboxImage(docker.docker);
      imagesBuilt.push(BUSYBOX_IMAGE);
    }
    if (want === 'all' && !(await docker.imageExists(BASE_IMAGE))) {
      step(`image: building ${BASE_IMAGE} with debootstrap (about a minute)`);
      await buildBaseImage(docker.docker, join(config.stateDir, 'build'));
      imagesBuilt.push(BASE_IMAGE);
    }
  }
  const usernsRemap = engine.started ? remap : null;
  log.info({ pool: pool.paths.root, poolKind: pool.kind, engineStarted: engine.started, usernsRemap, ksm: ksmOn, imagesBuilt }, 'host ready');
  return { pool, engineStarted: engine.started, usernsRemap, ksm: ksmOn, imagesBuilt };
}

/**
 * The `--userns-remap` user for a dockerd this call may start (issue 10.9): root in a container is then an
 * unprivileged host uid. 'auto' leaves an engine whose data root already holds rootful containers as it was
 * (a remapped engine would not see them), loudly; HOODY_USERNS=on switches it anyway, off never remaps.
 */
async function usernsRemapFor(config: Config, dataRoot: string, log: Logger, step: (s: string) => void): Promise<string | null> {
  if (config.userns === 'off') return null;
  if (await new DockerEngine(config.dockerSocket).ping()) return null; // an engine that answers is used as it is
  if (config.userns === 'auto') {
    const rootful = await rootfulContainersIn(dataRoot);
    if (rootful > 0) {
      const message = `the engine's data root ${dataRoot} holds ${rootful} containers made without user namespaces: starting it rootful as before (HOODY_USERNS=on remaps it; those containers then show as missing)`;
      log.warn({ dataRoot, rootful }, message);
      step(`WARNING: ${message}`);
      return null;
    }
  }
  const mapping = await ensureRemapUser();
  step(`engine: user namespaces, container root = host uid ${mapping.uid} (${REMAP_USER})`);
  return REMAP_USER;
}
