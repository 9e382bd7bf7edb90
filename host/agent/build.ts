import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../command.js';

/** The agent's C source, beside this module's source (dist/host/agent -> host/agent). */
export const AGENT_SOURCE = fileURLToPath(new URL('../../../host/agent/hoody-agent.c', import.meta.url));

/**
 * Builds the in-container command agent once per source version (`<dir>/hoody-agent-<hash>`), static so it runs
 * on any image (busybox has no libc to link against). Returns its path; a failed build throws (the caller falls
 * back to `docker exec`). Builds of older sources are removed: running agents keep their inode.
 */
export async function ensureAgentBinary(dir: string): Promise<string> {
  const source = await readFile(AGENT_SOURCE);
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const target = join(dir, `hoody-agent-${hash}`);
  if (existsSync(target)) return target;
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = `${target}.tmp-${process.pid}`;
  await run('gcc', ['-static', '-O2', '-Wall', '-o', tmp, AGENT_SOURCE]);
  await rename(tmp, target);
  for (const f of await readdir(dir)) if (f.startsWith('hoody-agent-') && join(dir, f) !== target) await rm(join(dir, f), { force: true });
  return target;
}
