/** Messages between ExecService (daemon) and the exec worker process, over the fork IPC channel. */
import type { HeavyThreadFiles } from '../../host/cgroup.js';

/** `request` inside a script. */
export interface ScriptRequest {
  method: string;
  path: string;
  query: Record<string, string | string[]>;
  headers: Record<string, string>;
  /** Parsed JSON for a JSON body, the text otherwise, null without a body. */
  body: unknown;
  dry_run: boolean;
}

export interface RunLimits {
  timeoutMs: number;
  memoryMb: number;
  /** Bytes of console output kept per run. */
  consoleCap: number;
}

/** Host functions a script can reach; each one is served by the daemon (never by the worker). */
export type HostOp = 'fetch' | 'files.read' | 'files.write' | 'files.list' | 'files.delete' | 'acme.order';

/** What a script's returned value became, inside the isolate. */
export type RunOutcome =
  | { kind: 'json'; body: string }
  | { kind: 'empty' }
  | { kind: 'bytes'; body: Uint8Array }
  | { kind: 'response'; status: number; headers: Record<string, string>; body: string | Uint8Array | null };

/**
 * thrown: the script threw; aborted: another run disposed the shared isolate; busy: no isolate could be made
 * within the worker's caps; oom: the worker was killed at its cgroup's memory limit; internal: the worker's fault.
 */
export type RunFailure = 'thrown' | 'timeout' | 'memory' | 'aborted' | 'busy' | 'oom' | 'internal';

export type ToWorker =
  | {
      type: 'run';
      id: number;
      /** Isolates are pooled per key: container id + script file. */
      key: string;
      container: string;
      hash: string;
      code: string;
      limits: RunLimits;
      request: ScriptRequest;
    }
  | { type: 'reply'; id: number; call: number; ok: true; value: unknown }
  | { type: 'reply'; id: number; call: number; ok: false; error: string }
  | { type: 'dispose'; container: string }
  | { type: 'stats'; id: number };

/** Passed to the worker as its one argv entry (JSON). */
export interface WorkerConfig {
  /** Live isolates (idle or busy), never exceeded: idle ones are disposed to make room. */
  maxLiveIsolates: number;
  idleMs: number;
  /** Sum of the memory limits of one container's live isolates (MB). */
  containerMemoryMb: number;
  /** Sum of the memory limits of all live isolates (MB). */
  hostMemoryMb: number;
  /** The cgroup files that demote a thread computing for long, and restore it (null: nice only). */
  heavyThreads?: HeavyThreadFiles | null;
}

export type FromWorker =
  | { type: 'done'; id: number; cpuMs: number; console: string; outcome: RunOutcome }
  | { type: 'failed'; id: number; cpuMs: number; console: string; failure: RunFailure; message: string }
  | { type: 'call'; id: number; call: number; op: HostOp; args: unknown }
  | { type: 'fatal'; message: string }
  | { type: 'stats'; id: number; stats: WorkerStats };

export interface WorkerStats {
  /** Isolates alive in the worker (idle or busy). */
  liveIsolates: number;
  /** Runs executing in the worker. */
  runs: number;
  /** The compiled-code cache: entries, bytes, and compiles it served or had to make (code-cache.ts). */
  codeCache?: { entries: number; bytes: number; hits: number; misses: number };
}
