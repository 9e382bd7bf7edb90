import { join } from 'node:path';
import type { Logger } from 'pino';
import { applyHostEgress, egressNames, savedEgressPorts } from '../host/egress.js';
import { DockerEngine, ensureEngine } from '../host/engine.js';
import { BASE_IMAGE, BUSYBOX_IMAGE, buildBaseImage, buildBusyboxImage } from '../host/images.js';
import { KsmController } from '../host/ksm.js';
import { ensurePool, type PoolSetupResult } from '../host/pool.js';
import type { Config } from './config.js';

export interface SetupReport {
  pool: PoolSetupResult;
  engineStarted: boolean;
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
  const engine = await ensureEngine({
    socketPath: config.dockerSocket,
    dataRoot: pool.paths.engine,
    storageDriver: config.engineStorageDriver,
    logFile: join(config.stateDir, 'dockerd.log'),
  });
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
  log.info({ pool: pool.paths.root, poolKind: pool.kind, engineStarted: engine.started, ksm: ksmOn, imagesBuilt }, 'host ready');
  return { pool, engineStarted: engine.started, ksm: ksmOn, imagesBuilt };
}
