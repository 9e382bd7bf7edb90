/**
 * The exec worker: a child process of the daemon (fork, `--no-node-snapshot`) that owns every V8 isolate.
 * It compiles and runs scripts and enforces their limits; everything a script may reach outside its isolate
 * (fetch, files, acme) is a `call` message answered by the daemon. A catastrophic isolate failure or a
 * crash kills only this process: the daemon fails the runs in flight and starts a new worker.
 */
import type ivm from 'isolated-vm';
import { type Control, prepareSpare, type RunContext, release, takeContext } from './contexts.js';
import { cpuOf, IsolatePool, type Slot } from './pool.js';
import { HeavyThreads } from './threads.js';
import type { FromWorker, HostOp, RunFailure, RunOutcome, ToWorker, WorkerConfig } from './protocol.js';

type RunMessage = Extract<ToWorker, { type: 'run' }>;

/** At most this many host calls (fetch, files, acme) of one run in flight at once. */
const MAX_PENDING_CALLS = 32;
/** Characters of a thrown error's message kept (the rest is cut): a script must not make the log row huge. */
export const MESSAGE_CAP = 4096;

const HOST_OPS: readonly string[] = ['fetch', 'files.read', 'files.write', 'files.list', 'files.delete', 'acme.order'];

function send(msg: FromWorker): void {
  process.send?.(msg);
}

function capped(message: string): string {
  return message.length > MESSAGE_CAP ? `${message.slice(0, MESSAGE_CAP)}… [${message.length - MESSAGE_CAP} more characters cut]` : message;
}

interface Run {
  msg: RunMessage;
  slot: Slot;
  finished: boolean;
  timedOut: boolean;
  /** The prelude's control function in the run's context: answers host calls. */
  settle: ivm.Reference<Control> | null;
  console: string[];
  consoleBytes: number;
  consoleCut: boolean;
  pending: Set<number>;
  timers: Set<NodeJS.Timeout>;
}

type Encoded = RunOutcome | { kind: 'error'; message: string; stack: string };

const config: WorkerConfig = {
  maxLiveIsolates: 64,
  idleMs: 60_000,
  containerMemoryMb: 256,
  hostMemoryMb: 4096,
  ...(JSON.parse(process.argv[2] ?? '{}') as Partial<WorkerConfig>),
};
const pool = new IsolatePool(
  config,
  (message) => {
    // v8 lost control of an isolate: nothing in this process can be trusted any more
    send({ type: 'fatal', message });
    setTimeout(() => process.exit(70), 50);
  },
  (text) => process.stderr.write(`${text}\n`),
  prepareSpare,
);
const heavy = new HeavyThreads(config.heavyThreads ?? null);
const runs = new Map<number, Run>();

function answer(run: Run, call: number, ok: boolean, value: unknown): void {
  if (run.finished || !run.settle) return;
  run.settle.apply(undefined, [0, call, ok, value], { arguments: { copy: true } }).catch(() => undefined);
}

function onLog(run: Run, level: string, text: string): void {
  if (run.finished || run.consoleCut) return;
  const line = level === 'log' ? String(text) : `[${level}] ${String(text)}`;
  const room = run.msg.limits.consoleCap - run.consoleBytes;
  if (line.length + 1 > room) {
    if (room > 0) run.console.push(line.slice(0, room));
    run.console.push('[console output truncated]');
    run.consoleCut = true;
    run.consoleBytes = run.msg.limits.consoleCap;
    return;
  }
  run.console.push(line);
  run.consoleBytes += line.length + 1;
}

function onCall(run: Run, call: number, op: string, args: unknown): void {
  if (run.finished) return;
  if (op === 'sleep') {
    const ms = Math.min(Math.max(0, Number((args as { ms?: unknown } | null)?.ms) || 0), run.msg.limits.timeoutMs);
    const t = setTimeout(() => {
      run.timers.delete(t);
      answer(run, call, true, null);
    }, ms);
    run.timers.add(t);
    return;
  }
  if (!HOST_OPS.includes(op)) answer(run, call, false, `unknown host function ${op}`);
  else if (run.pending.size >= MAX_PENDING_CALLS)
    answer(run, call, false, `too many fetch/files/acme calls at once (at most ${MAX_PENDING_CALLS})`);
  else {
    run.pending.add(call);
    send({ type: 'call', id: run.msg.id, call, op: op as HostOp, args });
  }
}

function classify(run: Run, err: unknown): { failure: RunFailure; message: string } {
  const message = capped(err instanceof Error ? err.message : String(err));
  if (run.timedOut || /execution timed out/i.test(message)) return { failure: 'timeout', message };
  if (/memory limit/i.test(message)) return { failure: 'memory', message };
  if (run.slot.dead || run.slot.isolate.isDisposed) return { failure: 'aborted', message };
  return { failure: 'thrown', message };
}

async function execute(msg: RunMessage): Promise<void> {
  const { limits } = msg;
  const slot = pool.acquire(msg.key, msg.container, limits.memoryMb);
  if (!slot) {
    const message = `${pool.size} live isolates, every one busy (at most ${config.maxLiveIsolates}, ${config.hostMemoryMb} MB)`;
    send({ type: 'failed', id: msg.id, cpuMs: 0, console: '', failure: 'busy', message });
    return;
  }
  const run: Run = {
    msg,
    slot,
    finished: false,
    timedOut: false,
    settle: null,
    console: [],
    consoleBytes: 0,
    consoleCut: false,
    pending: new Set(),
    timers: new Set(),
  };
  runs.set(msg.id, run);
  heavy.setActive(true);
  heavy.beforeRun();
  let cpu0 = cpuOf(slot);
  // isolated-vm's own timeout covers synchronous execution only; this covers the whole run, awaits included
  const wall = setTimeout(() => {
    run.timedOut = true;
    pool.discard(slot);
  }, limits.timeoutMs);
  let rc: RunContext | null = null;
  let result: FromWorker;
  try {
    rc = await takeContext(slot);
    // The context was made for this run (maybe while the isolate idled): its making is billed to the run.
    if (rc.cpuStartNs < cpu0) cpu0 = rc.cpuStartNs;
    rc.target = { call: (call, op, args) => onCall(run, call, op, args), log: (level, text) => onLog(run, level, text) };
    run.settle = rc.control;
    await rc.control.apply(undefined, [1, msg.request, limits.consoleCap], { arguments: { copy: true }, timeout: limits.timeoutMs });
    const script = await pool.script(slot, msg.hash, msg.code);
    const out = (await script.run(rc.context, { timeout: limits.timeoutMs, promise: true, copy: true })) as Encoded;
    result =
      out.kind === 'error'
        ? { type: 'failed', id: msg.id, cpuMs: 0, console: '', failure: 'thrown', message: capped(String(out.message)) }
        : { type: 'done', id: msg.id, cpuMs: 0, console: '', outcome: out };
  } catch (err) {
    const c = classify(run, err);
    result = { type: 'failed', id: msg.id, cpuMs: 0, console: '', ...c };
  }
  clearTimeout(wall);
  run.finished = true;
  runs.delete(msg.id);
  if (runs.size === 0) heavy.setActive(false);
  for (const t of run.timers) clearTimeout(t);
  if (result.type === 'failed' && result.failure !== 'thrown') pool.discard(slot);
  if (rc) release(rc);
  result.cpuMs = Number(cpuOf(slot) - cpu0) / 1e6;
  result.console = run.console.join('\n');
  pool.release(slot);
  send(result);
}

process.on('message', (msg: ToWorker) => {
  switch (msg.type) {
    case 'run':
      execute(msg).catch((err: unknown) =>
        send({ type: 'failed', id: msg.id, cpuMs: 0, console: '', failure: 'internal', message: String(err) }),
      );
      break;
    case 'reply': {
      const run = runs.get(msg.id);
      if (!run) break;
      run.pending.delete(msg.call);
      answer(run, msg.call, msg.ok, msg.ok ? msg.value : msg.error);
      break;
    }
    case 'dispose':
      pool.disposeContainer(msg.container);
      break;
    case 'stats':
      send({ type: 'stats', id: msg.id, stats: { liveIsolates: pool.size, runs: runs.size, codeCache: { entries: pool.code.size, bytes: pool.code.bytes, hits: pool.code.hits, misses: pool.code.misses } } });
      break;
  }
});

// The daemon is gone (or closed the channel): so is this worker.
process.on('disconnect', () => process.exit(0));
setInterval(() => pool.sweep(), Math.max(1000, Math.min(config.idleMs / 2, 10_000))).unref();
setInterval(() => pool.watchdog(), 1000).unref();
