/** One benchmark run's life: clean-up on every exit path, SIGINT/SIGTERM, a time budget, the exit code. */
import type { ChildProcess } from 'node:child_process';
import { sleep } from './stats.js';

/** Clean-up steps, run in reverse order, each at most once, whatever happened before. */
export class Cleanup {
  private readonly steps: { label: string; fn: () => Promise<void> }[] = [];
  private running: Promise<void> | null = null;

  push(label: string, fn: () => Promise<void>): () => void {
    const step = { label, fn };
    this.steps.push(step);
    return () => {
      const i = this.steps.indexOf(step);
      if (i >= 0) this.steps.splice(i, 1);
    };
  }

  run(onStep?: (label: string) => void): Promise<void> {
    this.running ??= (async () => {
      while (this.steps.length) {
        const step = this.steps.pop()!;
        onStep?.(step.label);
        await step.fn().catch((err: Error) => process.stderr.write(`clean-up of ${step.label} failed: ${err.message}\n`));
      }
    })();
    return this.running;
  }
}

/** Child processes started by a benchmark (wrk, nginx, …): killed on SIGINT/SIGTERM before the clean-up. */
export const children = new Set<ChildProcess>();

/** The exit code a signal asked for (130/143), once one arrived. */
let signalExit: number | null = null;

export interface Session {
  readonly cleanup: Cleanup;
  /** True once SIGINT/SIGTERM arrived or the time budget ran out. */
  stopped(): boolean;
  /** Throws when stopped (call it between steps). */
  check(): void;
  /** Sleeps, but wakes early (and throws) when stopped. */
  nap(ms: number): Promise<void>;
  log(line: string): void;
  dispose(): void;
}

/**
 * One benchmark run: a clean-up list, SIGINT/SIGTERM handling (kill our children, clean up, exit 130/143)
 * and a wall-clock budget after which every loop stops at its next check.
 */
export function session(name: string, budgetS: number): Session {
  const cleanup = new Cleanup();
  let stop = false;
  const deadline = Date.now() + budgetS * 1000;
  const log = (line: string) => process.stderr.write(`[${name} ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
  const onSignal = (signal: NodeJS.Signals) => {
    if (stop && signal) {
      process.stderr.write(`\n${signal}: still cleaning up, please wait\n`);
      return;
    }
    stop = true;
    signalExit = signal === 'SIGINT' ? 130 : 143;
    process.stderr.write(`\n${signal}: stopping and removing what the benchmark made…\n`);
    for (const c of children) c.kill('SIGTERM');
    void (async () => {
      await cleanup.run((label) => process.stderr.write(`  removing ${label}\n`));
      process.exit(signalExit ?? 130);
    })();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const stopped = () => {
    if (!stop && Date.now() > deadline) {
      stop = true;
      log(`time budget of ${budgetS} s used up: stopping`);
    }
    return stop;
  };
  return {
    cleanup,
    stopped,
    check() {
      if (stopped()) throw new Error('stopped (signal or time budget)');
    },
    async nap(ms) {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        if (stopped()) throw new Error('stopped (signal or time budget)');
        await sleep(Math.min(500, end - Date.now()));
      }
    },
    log,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Runs a benchmark's main: prints its error and exits 1 on failure. */
export function main(fn: () => Promise<void>): void {
  fn().then(
    () => process.exit(0),
    (err: Error) => {
      // Interrupted: the signal handler cleans up and exits with its own code.
      if (signalExit !== null) return;
      process.stderr.write(`error: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
