/**
 * The fresh context each run gets (`@mode serverless`), made ahead of time. Making one (a V8 context, the host
 * callback, the prelude) is most of a trivial run's cost, so it is done for the next run as soon as an isolate
 * turns idle, off the request path; the run itself then only defines `request` and runs the script. Only hoody's
 * own code runs while a context is made: the tenant's script is evaluated inside its run, under its limits.
 */
import ivm from 'isolated-vm';
import { cpuOf, type Slot } from './pool.js';
import { PRELUDE } from './prelude.js';

/** The prelude's `control(op, ...)`: op 0 answers a host call, op 1 begins the run. */
export type Control = (op: number, a: unknown, b?: unknown, c?: unknown) => void;

/** What a context's host callback reaches: the run it serves, set when the run takes the context. */
export interface HostTarget {
  call(call: number, op: string, args: unknown): void;
  log(level: string, text: string): void;
}

export interface RunContext {
  context: ivm.Context;
  control: ivm.Reference<Control>;
  /** The run this context serves; a host call before one took it is dropped (none can come: no script ran). */
  target: HostTarget | null;
  /** The isolate's CPU time before this context was made: the run that takes it is billed from here. */
  cpuStartNs: bigint;
}

/** Our own code only (createContext, one global, the prelude): bounded, so a fixed limit is enough. */
const MAKE_TIMEOUT_MS = 1000;

async function make(slot: Slot): Promise<RunContext> {
  const cpuStartNs = cpuOf(slot);
  const context = await slot.isolate.createContext();
  const rc: RunContext = { context, control: null as unknown as ivm.Reference<Control>, target: null, cpuStartNs };
  try {
    const host = new ivm.Callback(
      (kind: number, a: unknown, b: unknown, c: unknown) => {
        const t = rc.target;
        if (!t) return;
        if (kind === 0) t.call(Number(a), String(b), c);
        else t.log(String(a), String(b));
      },
      { ignored: true },
    );
    await context.global.set('__hoody_host', host);
    slot.prelude ??= await slot.isolate.compileScript(PRELUDE, { filename: 'hoody:prelude' });
    rc.control = (await slot.prelude.run(context, { reference: true, timeout: MAKE_TIMEOUT_MS })) as ivm.Reference<Control>;
    return rc;
  } catch (err) {
    release(rc);
    throw err;
  }
}

/** Frees a context and its control reference (both may be gone with their isolate already). */
export function release(rc: RunContext): void {
  rc.target = null;
  try {
    rc.control?.release();
    rc.context.release();
  } catch {
    // the isolate was disposed
  }
}

/** Starts making the next run's context for an idle slot (replacing none: a slot holds at most one spare). */
export function prepareSpare(slot: Slot): void {
  if (slot.dead || slot.spare) return;
  const spare = make(slot).catch(() => null);
  slot.spare = spare;
  // The spare's making doubles as the idle isolate's responsiveness probe (pool.watchdog).
  slot.probeSince = Date.now();
  void spare.then((rc) => {
    slot.probeSince = 0;
    slot.spareReady = rc !== null && slot.spare === spare;
    // The isolate's CPU while it made the context is not a runaway continuation's.
    slot.idleCpuNs = cpuOf(slot);
    if (slot.dead && rc) release(rc);
  });
}

/** The context for a run starting on slot: the spare made while it idled, or a new one. */
export async function takeContext(slot: Slot): Promise<RunContext> {
  const spare = slot.spare;
  slot.spare = null;
  slot.spareReady = false;
  const rc = spare ? await spare : null;
  return rc && !slot.dead ? rc : make(slot);
}
