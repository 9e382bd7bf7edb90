import { DEFAULT_BUDGET, DEFAULT_WORKER_LIMITS } from '../containers/exec/budget.js';
import { MAX_MEMORY_MB } from '../containers/exec/directives.js';
import { parseBytes } from '../host/pool.js';
import { parseDuration } from './config.js';

/** Exec budgets and the exec worker's cgroup, from the environment (README fragment: /work/notes/exec-budget.md). */
export interface ExecConfig {
  /** Live isolates on the host, never exceeded (HOODY_EXEC_MAX_ISOLATES, 64). */
  maxLiveIsolates: number;
  /** Runs of one container at once (HOODY_EXEC_CONTAINER_RUNS, 4). */
  containerRuns: number;
  /** Sum of `@memory` of one container's runs at once, MB (HOODY_EXEC_CONTAINER_MEMORY, 256m). */
  containerMemoryMb: number;
  /** Runs of one container waiting for a slot (HOODY_EXEC_CONTAINER_QUEUE, 8). */
  containerQueue: number;
  /** The longest a run waits in the queue (HOODY_EXEC_QUEUE_WAIT, 5s). */
  queueWaitMs: number;
  /** Sum of `@memory` of all live isolates, MB (HOODY_EXEC_ISOLATE_MEMORY, 64 MB per allowed live isolate). */
  hostMemoryMb: number;
  /** CPU of one container's runs in cores, 0 for no CPU budget (HOODY_EXEC_CONTAINER_CPU, 1). */
  containerCpu: number;
  /** The worker's cgroup: 'auto' (default) or 'off' (HOODY_EXEC_CGROUP). */
  cgroup: 'auto' | 'off';
  /** Hard memory limit of the worker's cgroup (HOODY_EXEC_WORKER_MEMORY, 1g). */
  workerMemoryBytes: number;
  /** CPU limit in cores of the worker's threads that compute for long, 0 for none (HOODY_EXEC_WORKER_CPUS, 1). */
  workerCpus: number;
  /** An isolate idle this long is dropped; its compiled code stays cached (HOODY_EXEC_ISOLATE_IDLE, 10s). */
  isolateIdleMs: number;
}

export function positive(text: string, name: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive whole number, got ${text}`);
  return n;
}

export function loadExecConfig(env: NodeJS.ProcessEnv): ExecConfig {
  const mb = (name: string, def: string): number => Math.floor(parseBytes(env[name] ?? def) / 1048576);
  const workerMemoryBytes = parseBytes(env.HOODY_EXEC_WORKER_MEMORY ?? String(DEFAULT_WORKER_LIMITS.memoryBytes));
  const workerCpus = Number(env.HOODY_EXEC_WORKER_CPUS ?? String(DEFAULT_WORKER_LIMITS.cpus));
  if (!Number.isFinite(workerCpus) || workerCpus < 0) throw new Error(`HOODY_EXEC_WORKER_CPUS must be a number of cores >= 0, got ${env.HOODY_EXEC_WORKER_CPUS}`);
  const containerMemoryMb = mb('HOODY_EXEC_CONTAINER_MEMORY', `${DEFAULT_BUDGET.containerMemoryMb}m`);
  // One script at the @memory ceiling must always fit its container's budget.
  if (containerMemoryMb < MAX_MEMORY_MB) throw new Error(`HOODY_EXEC_CONTAINER_MEMORY must be at least ${MAX_MEMORY_MB}m (the @memory ceiling)`);
  const containerCpu = Number(env.HOODY_EXEC_CONTAINER_CPU ?? String(DEFAULT_BUDGET.containerCpu));
  if (!Number.isFinite(containerCpu) || containerCpu < 0)
    throw new Error(`HOODY_EXEC_CONTAINER_CPU must be a number of cores >= 0, got ${env.HOODY_EXEC_CONTAINER_CPU}`);
  const maxLiveIsolates = positive(env.HOODY_EXEC_MAX_ISOLATES ?? '64', 'HOODY_EXEC_MAX_ISOLATES');
  return {
    maxLiveIsolates,
    containerRuns: positive(env.HOODY_EXEC_CONTAINER_RUNS ?? String(DEFAULT_BUDGET.containerRuns), 'HOODY_EXEC_CONTAINER_RUNS'),
    containerMemoryMb,
    containerQueue: Number(env.HOODY_EXEC_CONTAINER_QUEUE ?? String(DEFAULT_BUDGET.containerQueue)) || 0,
    queueWaitMs: parseDuration(env.HOODY_EXEC_QUEUE_WAIT ?? `${DEFAULT_BUDGET.queueWaitMs}ms`, 'HOODY_EXEC_QUEUE_WAIT'),
    // Limits, not use: by default the host's live isolates may all have the default 64 MB; the cgroup is the hard stop.
    hostMemoryMb: env.HOODY_EXEC_ISOLATE_MEMORY ? mb('HOODY_EXEC_ISOLATE_MEMORY', '0') : maxLiveIsolates * 64,
    containerCpu,
    cgroup: env.HOODY_EXEC_CGROUP === 'off' ? 'off' : 'auto',
    workerMemoryBytes,
    workerCpus,
    // Short: an isolate's heap is megabytes, and a script run once a minute would otherwise keep one for good.
    isolateIdleMs: parseDuration(env.HOODY_EXEC_ISOLATE_IDLE ?? '10s', 'HOODY_EXEC_ISOLATE_IDLE'),
  };
}
