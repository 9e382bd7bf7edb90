/** A benchmark's result files (JSON + Markdown + SVG chart under --out) and the pieces every report shares. */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

/** The fields every namespace benchmark's result starts with. */
export interface ResultHeader {
  tool: string;
  run_id: string;
  started: string;
  finished: string;
  duration_s: number;
  options: Record<string, unknown>;
  host: Record<string, unknown>;
}

export interface ResultFiles {
  json: string;
  md: string;
  svg: string | null;
}

/** `20261130-123221Z`: the time part of result file names. */
export function stamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z').replace('T', '-');
}

export function runIdOf(d: Date): string {
  return `${stamp(d).slice(0, 15).replace('-', '')}${randomBytes(2).toString('hex')}`;
}

/** Host facts for the result files. */
export async function hostFacts(): Promise<Record<string, unknown>> {
  const os = await import('node:os');
  return { kernel: os.release(), cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model ?? '', mem_total_mib: Math.round(os.totalmem() / 1048576), node: process.version };
}

export const fmt = (v: number | null | undefined, d = 2): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));

export function mdTable(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** "Run `id`, N s. Host: …" and "Options: k=v, …" (the caller ends the second line). */
export function runLines(r: ResultHeader): [run: string, options: string] {
  const h = r.host;
  return [
    `Run \`${r.run_id}\`, ${Math.round(r.duration_s)} s. Host: ${h.kernel}, ${h.cpus} cores (${h.cpu_model}), ${h.mem_total_mib} MiB; node ${h.node}.`,
    `Options: ${Object.entries(r.options).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}.`,
  ];
}

/** The closing "## Notes" section, or nothing. */
export function notesSection(notes: readonly string[]): string[] {
  return notes.length ? ['## Notes', '', ...notes.map((n) => `- ${n}`), ''] : [];
}

/** Writes `<base>.json`, the chart `<base>.svg` (when given) and `<base>.md` (which links the chart by file name). */
export async function writeResultFiles(base: string, json: unknown, md: (svgName: string | null) => string, svgText: string | null): Promise<ResultFiles> {
  const files = { json: `${base}.json`, md: `${base}.md`, svg: svgText ? `${base}.svg` : null };
  await writeFile(files.json, `${JSON.stringify(json, null, 2)}\n`);
  if (svgText && files.svg) await writeFile(files.svg, svgText);
  await writeFile(files.md, md(files.svg ? basename(files.svg) : null));
  return files;
}

/** Writes `<out>/<name>-<time>.json`, `.md` and (when given) `.svg`; returns the paths. */
export async function writeResults(out: string, name: string, started: Date, json: unknown, md: (svgName: string | null) => string, svgText: string | null): Promise<ResultFiles> {
  await mkdir(out, { recursive: true });
  return writeResultFiles(join(out, `${name}-${stamp(started)}`), json, md, svgText);
}

/** The lines every benchmark ends with. */
export function printWritten(files: ResultFiles): void {
  process.stdout.write(`\nwrote ${files.json}\n      ${files.md}\n      ${files.svg}\n`);
}
