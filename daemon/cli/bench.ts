import type { Command } from 'commander';
import { addDensityOptions, densityAction } from '../../bench/density.js';

/** `hoody bench density`: the density benchmark (bench/density.ts); it talks to the engine and starts its own hoodyd. */
export function benchCommands(program: Command): void {
  const bench = program.command('bench').description('benchmarks (results as JSON + Markdown + SVG in bench/results)');
  addDensityOptions(
    bench
      .command('density')
      .description('memory, disk and provisioning cost of one more container: docker baseline vs hoody with KSM off/on'),
  ).action((o: Record<string, string | boolean | undefined>) => densityAction(o));
  bench.exitOverride();
  for (const c of bench.commands) c.exitOverride();
}
