/** Starting the Docker engine hoody runs on: its arguments, and dockerd detached when none answers. */
import { spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DockerEngine } from './engine.js';
import { enableMemoryMerge } from './memory-merge.js';
import { engineEnv, installShimWrapper } from './shim-groups.js';

export interface StartEngineOptions {
  socketPath: string;
  dataRoot: string;
  storageDriver: 'overlay2' | 'btrfs';
  logFile: string;
  /** `--userns-remap` with this user (its /etc/subuid and /etc/subgid ranges); null: containers run rootful. */
  usernsRemap?: string | null;
  /** Where the shim wrapper goes (host/shim-groups.ts); null: dockerd as the box has it, one shim per container. */
  shimDir?: string | null;
  timeoutMs?: number;
}

/** dockerd's arguments for an engine hoody starts (also what the test suite's private engines add to theirs). */
export function engineArgs(opts: Pick<StartEngineOptions, 'dataRoot' | 'storageDriver' | 'socketPath' | 'usernsRemap'>): string[] {
  return [
    '--data-root',
    opts.dataRoot,
    '--storage-driver',
    opts.storageDriver,
    '-H',
    `unix://${opts.socketPath}`,
    ...(opts.usernsRemap ? ['--userns-remap', opts.usernsRemap] : []),
  ];
}

/**
 * Starts dockerd detached when no engine answers on the socket. The spawning process turns memory-merge
 * on first, so dockerd, containerd, every shim and every container inherit KSM eligibility.
 */
export async function ensureEngine(opts: StartEngineOptions): Promise<{ started: boolean; mergeInherited: boolean }> {
  const engine = new DockerEngine(opts.socketPath);
  if (await engine.ping()) return { started: false, mergeInherited: false };
  const merge = enableMemoryMerge();
  await mkdir(opts.dataRoot, { recursive: true });
  await mkdir(dirname(opts.logFile), { recursive: true });
  await mkdir(dirname(opts.socketPath), { recursive: true });
  const dockerd = ['/usr/sbin/dockerd', '/usr/bin/dockerd'].find((p) => existsSync(p)) ?? 'dockerd';
  const out = openSync(opts.logFile, 'a');
  // containerd resolves its shim through the PATH and working directory dockerd hands down (and caches it).
  const wrapper = opts.shimDir ? await installShimWrapper(opts.shimDir) : null;
  const child = spawn(dockerd, engineArgs(opts), {
    detached: true,
    stdio: ['ignore', out, out],
    env: engineEnv(wrapper),
    ...(wrapper ? { cwd: wrapper.dir } : {}),
  });
  child.unref();
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  while (Date.now() < deadline) {
    if (await engine.ping()) return { started: true, mergeInherited: merge };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`dockerd did not answer on ${opts.socketPath}; see ${opts.logFile}`);
}
