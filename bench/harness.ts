/**
 * The shared frame of the namespace benchmarks (cron, exec, proxy, runtimes, soak): options and --help, a session
 * (clean-up on every exit path, signals, time budget), the host and a bench dir on the pool, whether other runs
 * share the box, and the result files. Each benchmark file holds only its own measurement.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../daemon/config.js';
import { setupHost } from '../daemon/setup.js';
import { BUSYBOX_IMAGE } from '../host/images.js';
import { commonOptions, type OptionSpecs, type OptionValues, parseOptions } from './options.js';
import { processTable } from './procs.js';
import { hostFacts, printWritten, type ResultHeader, runIdOf, writeResults } from './results.js';
import { type Cleanup, main, type Session, session } from './session.js';
import { round } from './stats.js';

export interface BenchHost {
  stateDir: string;
  dockerSocket: string;
  /** A directory on the BTRFS pool for this run (removed at clean-up). */
  benchDir: string;
  image: string;
}

/** Pool, engine and the busybox image (idempotent), and a bench dir on the pool for this run. */
export async function prepareHost(kind: string, runId: string, cleanup: Cleanup): Promise<BenchHost> {
  const config = loadConfig({});
  await setupHost(config, pino({ level: 'silent' }), { images: 'busybox' });
  const benchDir = join(config.stateDir, 'pool', 'bench', `${kind}-${runId}`);
  await mkdir(benchDir, { recursive: true });
  cleanup.push(`bench dir ${benchDir}`, () => rm(benchDir, { recursive: true, force: true }));
  return { stateDir: config.stateDir, dockerSocket: config.dockerSocket, benchDir, image: BUSYBOX_IMAGE };
}

/**
 * Other benchmarks or test runs on this shared box right now (the density benchmark, `node --test`): their load
 * skews ours, so every measurement records whether one was running.
 */
export async function othersRunning(): Promise<string[]> {
  const out: string[] = [];
  for (const p of await processTable()) {
    if (p.pid === process.pid) continue;
    const cmd = p.cmdline.join(' ');
    if (/dist\/bench\/density\.js|hoody(\.js)? bench density|node .*--test\b/.test(cmd)) out.push(`${p.pid} ${cmd.slice(0, 120)}`);
  }
  return out;
}

/** Runs one measurement and names the other runs seen on the box at its start or end. */
export async function watchOthers<T>(measure: () => Promise<T>): Promise<{ value: T; others: string[] }> {
  const before = await othersRunning();
  const value = await measure();
  return { value, others: [...new Set([...before, ...(await othersRunning())])] };
}

/** The note for measurements that shared the box with another run, or null when none did. */
export function disturbedNote(runs: readonly { others: readonly string[] }[], what: string): string | null {
  const disturbed = runs.filter((r) => r.others.length);
  if (!disturbed.length) return null;
  return `Another benchmark or test run was on the box during ${disturbed.length} of ${runs.length} ${what} (${[...new Set(disturbed.flatMap((r) => r.others))].slice(0, 3).join(' | ')}): those figures are skewed by its load.`;
}

export interface BenchSpec<S extends OptionSpecs> {
  /** Names the log lines, the bench dir and the result files (`<name>-<time>.*`). */
  name: string;
  description: string;
  options: S;
  /** --budget's default and bounds (seconds). */
  budget: { default: number; min: number; max: number };
  /** The session's budget when it is not --budget itself (e.g. at least the run's own length). */
  sessionBudget?: (o: BenchOptions<S>) => number;
}

export type BenchOptions<S extends OptionSpecs> = OptionValues<S> & OptionValues<ReturnType<typeof commonOptions>>;

/** What a benchmark's measurement gets from the harness. */
export interface BenchRun<S extends OptionSpecs> {
  readonly o: BenchOptions<S>;
  readonly s: Session;
  readonly started: Date;
  readonly runId: string;
  /** Notes for the result; the benchmark puts them into its result. */
  readonly notes: string[];
  /** Pool, engine, busybox image and a bench dir of this run (removed at clean-up). */
  prepareHost(): Promise<BenchHost>;
  /** The fields every result starts with: tool, run id, times, options, host facts. */
  header<O extends Record<string, unknown>>(options: O): Promise<Omit<ResultHeader, 'options'> & { options: O }>;
  /** Writes `<out>/<name>-<time>.{json,md,svg}` and prints their paths. */
  write(result: unknown, md: (svgName: string | null) => string, svg: string | null): Promise<void>;
}

/** Parses the command line (exits 0 on --help, 2 on a usage error), then runs the measurement in a session. */
export function runBench<S extends OptionSpecs>(spec: BenchSpec<S>, measure: (b: BenchRun<S>) => Promise<void>): void {
  const o = parseOptions(spec.name, spec.description, { ...spec.options, ...commonOptions(spec.budget) }, process.argv.slice(2)) as BenchOptions<S>;
  main(async () => {
    const started = new Date();
    const runId = runIdOf(started);
    const s = session(spec.name, spec.sessionBudget?.(o) ?? o.budget);
    const b: BenchRun<S> = {
      o,
      s,
      started,
      runId,
      notes: [],
      prepareHost: () => prepareHost(spec.name, runId, s.cleanup),
      async header(options) {
        const finished = new Date();
        return {
          tool: `hoody bench ${spec.name}`,
          run_id: runId,
          started: started.toISOString(),
          finished: finished.toISOString(),
          duration_s: round((finished.getTime() - started.getTime()) / 1000, 1) ?? 0,
          options,
          host: await hostFacts(),
        };
      },
      async write(result, md, svg) {
        printWritten(await writeResults(o.out, spec.name, started, result, md, svg));
      },
    };
    try {
      await measure(b);
    } finally {
      await s.cleanup.run((label) => s.log(`  removing ${label}`));
      s.dispose();
    }
  });
}
