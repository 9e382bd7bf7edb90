import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, link, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The runner Bun starts for every exec script, beside this module's source (dist/host/agent -> host/agent). */
export const RUNNER_SOURCE = fileURLToPath(new URL('../../../host/agent/bun-runner.mjs', import.meta.url));
/** The Bun release hoody runs scripts with: the npm package pinned in package.json. */
export const BUN_PACKAGE = '@oven/bun-linux-x64';

/** Where npm put the Bun binary, and its version. Throws when the package is missing. */
export async function bunFromPackage(): Promise<{ path: string; version: string }> {
  const pkg = createRequire(import.meta.url).resolve(`${BUN_PACKAGE}/package.json`);
  const { version } = JSON.parse(await readFile(pkg, 'utf8')) as { version: string };
  return { path: join(dirname(pkg), 'bin', 'bun'), version };
}

async function placeOnce(from: string, target: string, mode: 'link-or-copy' | 'copy'): Promise<void> {
  if (existsSync(target)) return;
  const tmp = `${target}.tmp-${process.pid}`;
  await rm(tmp, { force: true });
  // A hard link when the package sits on the state dir's filesystem (no second copy); a copy otherwise.
  if (mode === 'link-or-copy') await link(from, tmp).catch(() => copyFile(from, tmp));
  else await copyFile(from, tmp);
  await rename(tmp, target);
}

/**
 * The Bun binary and the runner in `dir` (the state dir's agent directory, on the filesystem of the per-container
 * directories they are hard-linked into): `bun-<version>` and `bun-runner-<hash>.mjs`. Older copies go.
 */
export async function ensureBunFiles(dir: string): Promise<{ bun: string; runner: string; version: string }> {
  const pkg = await bunFromPackage();
  const source = await readFile(RUNNER_SOURCE);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const bun = join(dir, `bun-${pkg.version}`);
  const runner = join(dir, `bun-runner-${createHash('sha256').update(source).digest('hex').slice(0, 16)}.mjs`);
  await placeOnce(pkg.path, bun, 'link-or-copy');
  await placeOnce(RUNNER_SOURCE, runner, 'copy');
  for (const f of await readdir(dir)) {
    const ours = f === `bun-${pkg.version}` || f === runner.slice(dir.length + 1);
    if (!ours && /^bun-(\d|runner-)/.test(f)) await rm(join(dir, f), { force: true });
  }
  return { bun, runner, version: pkg.version };
}
