/** A benchmark's command line, parsed with commander: typed options, `--help`, usage errors exit 2. */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { join } from 'node:path';
import { ROOT } from './daemon.js';

/** One `--name <value>` option: its default (already parsed) and how a given value is read. */
export interface OptionSpec<T> {
  readonly help: string;
  readonly value: string;
  readonly default: T;
  /** The default as the help shows it. */
  readonly shown: string;
  parse(raw: string, flag: string): T;
}

export type OptionSpecs = Record<string, OptionSpec<unknown>>;
export type OptionValues<S extends OptionSpecs> = { [K in keyof S]: S[K] extends OptionSpec<infer T> ? T : never };

/** A number within bounds (not necessarily whole). */
export function numberOption(dflt: number, min: number, max: number, help: string): OptionSpec<number> {
  return {
    help,
    value: 'n',
    default: dflt,
    shown: String(dflt),
    parse(raw, flag) {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`${flag} must be a number in ${min}..${max}, got ${raw}`);
      return n;
    },
  };
}

/** Whole numbers within bounds, comma-separated. */
export function numberListOption(dflt: number[], min: number, max: number, help: string): OptionSpec<number[]> {
  return {
    help,
    value: 'list',
    default: dflt,
    shown: dflt.join(','),
    parse(raw, flag) {
      const v = splitList(raw).map(Number);
      if (!v.length || v.some((n) => !Number.isInteger(n) || n < min || n > max)) throw new InvalidArgumentError(`${flag} must be integers in ${min}..${max}, comma-separated`);
      return v;
    },
  };
}

/** Names from a fixed set, comma-separated. */
export function choiceListOption<C extends string>(dflt: C[], allowed: readonly C[], help: string): OptionSpec<C[]> {
  return {
    help: `${help} (of ${allowed.join(', ')})`,
    value: 'list',
    default: dflt,
    shown: dflt.join(','),
    parse(raw, flag) {
      const v = splitList(raw);
      for (const x of v) if (!(allowed as readonly string[]).includes(x)) throw new InvalidArgumentError(`${flag}: unknown ${x} (have: ${allowed.join(', ')})`);
      if (!v.length) throw new InvalidArgumentError(`${flag} needs at least one of ${allowed.join(', ')}`);
      return v as C[];
    },
  };
}

export function textOption(dflt: string, help: string, value = 'text'): OptionSpec<string> {
  return { help, value, default: dflt, shown: dflt, parse: (raw) => raw };
}

function splitList(raw: string): string[] {
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** The options every namespace benchmark has; the time budget's bounds differ per benchmark. */
export function commonOptions(budget: { default: number; min: number; max: number }) {
  return {
    'log-level': textOption('warn', "the daemon's HOODY_LOG_LEVEL", 'level'),
    budget: numberOption(budget.default, budget.min, budget.max, 'wall-clock seconds after which the run stops at its next step'),
    out: textOption(join(ROOT, 'bench/results'), 'where <name>-<time>.{json,md,svg} go', 'dir'),
  };
}

/** Parses argv (without node and the script); `--help` exits 0 and a usage error exits 2, as before commander. */
export function parseOptions<S extends OptionSpecs>(name: string, description: string, specs: S, argv: readonly string[]): OptionValues<S> {
  const cmd = new Command(name).description(description).exitOverride().allowExcessArguments(false);
  const attributes: [key: string, attribute: string][] = [];
  for (const [key, spec] of Object.entries(specs)) {
    const flag = `--${key}`;
    const option = new Option(`${flag} <${spec.value}>`, spec.help).default(spec.default, spec.shown).argParser((raw: string) => spec.parse(raw, flag));
    cmd.addOption(option);
    attributes.push([key, option.attributeName()]);
  }
  try {
    cmd.parse([...argv], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    throw err;
  }
  const raw = cmd.opts();
  return Object.fromEntries(attributes.map(([key, attribute]) => [key, raw[attribute]])) as OptionValues<S>;
}
