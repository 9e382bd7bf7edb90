import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../command.js';

/** The agent's C source, beside this module's source (dist/host/agent -> host/agent). */
export const AGENT_SOURCE = fileURLToPath(new URL('../../../host/agent/hoody-agent.c', import.meta.url));
/** Builds kept for every daemon on the box (each state dir gets a copy: hard links need one filesystem). */
export const AGENT_CACHE = '/var/cache/hoody/agent';

/**
 * The in-container command agent for this source version (`<dir>/hoody-agent-<hash>`), static so it runs on any
 * image (busybox has no libc to link against): copied from the box's cache, built there first if missing. Returns
 * its path; a failed build throws (the caller falls back to `docker exec`). Copies of older sources are removed:
 * running agents keep their inode.
 */
export async function ensureAgentBinary(dir: string, cache = AGENT_CACHE): Promise<string> {
  const source = await readFile(AGENT_SOURCE);
  const name = `hoody-agent-${createHash('sha256').update(source).digest('hex').slice(0, 16)}`;
  const target = join(dir, name);
  if (existsSync(target)) return target;
  const built = join(cache, name);
  if (!existsSync(built)) {
    await mkdir(cache, { recursive: true, mode: 0o755 });
    const tmp = `${built}.tmp-${process.pid}`;
    await run('gcc', ['-static', '-O2', '-Wall', '-o', tmp, AGENT_SOURCE]);
    await rename(tmp, built);
  }
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = `${target}.tmp-${process.pid}`;
  await copyFile(built, tmp);
  await rename(tmp, target);
  for (const f of await readdir(dir)) if (f.startsWith('hoody-agent-') && f !== name) await rm(join(dir, f), { force: true });
  return target;
}
