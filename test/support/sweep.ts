import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LABEL_INSTANCE } from '../../containers/context.js';
import { destroyHostEgress } from '../../host/egress.js';
import { stopHaproxyOf } from '../../host/haproxy/process.js';
import { type ContainerEngine, DockerEngine } from '../../host/engine.js';
import type { StorageDriver } from '../../host/storage/index.js';

const OWNER = 'test-owner.pid';

/** Marks a test state dir as in use by this test process (the sweep leaves it alone while it lives). */
export async function claimTestDir(dir: string): Promise<void> {
  await writeFile(join(dir, OWNER), `${process.pid}\n`);
}

async function alive(file: string): Promise<boolean> {
  const pid = Number(await readFile(file, 'utf8').catch(() => '0'));
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes what earlier test runs left behind when they were killed before cleaning up: test state dirs
 * whose test process and daemon are both gone, their engine containers and their subvolumes.
 */
export async function sweepTestLeftovers(testsRoot: string, engine: ContainerEngine, storage: StorageDriver): Promise<number> {
  let swept = 0;
  for (const name of await readdir(testsRoot).catch(() => [] as string[])) {
    const dir = join(testsRoot, name);
    if ((await alive(join(dir, OWNER))) || (await alive(join(dir, 'hoodyd.pid')))) continue;
    const instance = createHash('sha256').update(dir).digest('hex').slice(0, 6);
    for (const c of await engine.list({ [LABEL_INSTANCE]: instance }).catch(() => [])) await engine.remove(c.id).catch(() => undefined);
    if (engine instanceof DockerEngine) await destroyHostEgress(engine.docker, instance, dir).catch(() => undefined);
    await stopHaproxyOf(dir).catch(() => undefined);
    for (const sub of ['pool/snapshots', 'pool/containers', 'pool/templates', '']) {
      const parent = join(dir, sub);
      for (const s of existsSync(parent) ? await readdir(parent).catch(() => [] as string[]) : []) {
        const p = join(parent, s);
        if (await storage.isVolume(p)) await storage.deleteVolume(p).catch(() => undefined);
        else if (sub === 'pool/snapshots') for (const v of await storage.listVolumes(p)) await storage.deleteVolume(v).catch(() => undefined);
      }
    }
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    swept++;
  }
  return swept;
}
