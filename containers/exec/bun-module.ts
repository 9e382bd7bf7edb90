import { type Message, transform } from 'esbuild';
import { fail } from '../errors.js';
import type { Loader } from './transpile.js';

/**
 * A Bun serverless script is written like an isolate script (top-level `await` and `return`, `request` in scope)
 * and may also `import` packages. Its leading `import` declarations stay at the top of a module and the rest
 * becomes the body of its default export, `async function (request)`; line numbers stay the file's own.
 * A persistent script is a plain module (`export default { fetch }`) and runs as written.
 */

// One static import declaration at the start of the text: `import x from 'y'`, `import {a, b} from "y"`,
// `import type …`, `import 'y'`, with an optional `with {…}` and `;`. `import(` and `import.meta` are code.
const IMPORT = /^import(?=[\s{*'"])(?:[^'";]*?\bfrom)?\s*(['"])[^'"\n]*\1(?:\s*(?:with|assert)\s*\{[^}]*\})?[ \t]*;?/;
const SKIP = /^(?:\s+|\/\/[^\n]*|\/\*[\s\S]*?\*\/|#![^\n]*)/;

/** Splits a script into its leading imports and its body (the first statement that is not an import on). */
export function splitImports(source: string): { imports: string; body: string } {
  let at = 0;
  let end = 0;
  for (;;) {
    const rest = source.slice(at);
    const skip = SKIP.exec(rest);
    if (skip) {
      at += skip[0].length;
      continue;
    }
    const m = IMPORT.exec(rest);
    if (!m) break;
    at += m[0].length;
    end = at;
  }
  return { imports: source.slice(0, end), body: source.slice(end) };
}

const OPEN = 'export default async function (request) {';

/** The module Bun runs for a serverless script (TypeScript or JavaScript as written; Bun strips the types). */
export function serverlessModule(source: string): string {
  const { imports, body } = splitImports(source);
  return `${imports}${OPEN}${body}\n}\n`;
}

function describe(m: Message, shift: { line: number; column: number } | null): string {
  const loc = m.location;
  if (!loc) return m.text;
  const column = shift && loc.line === shift.line ? loc.column - shift.column : loc.column;
  return `line ${loc.line}, column ${column + 1}: ${m.text}`;
}

/** Checks a Bun script's syntax as the module it will run as (SCRIPT_SYNTAX naming the line, as for isolates). */
export async function checkBunScript(source: string, loader: Loader, mode: 'serverless' | 'persistent'): Promise<void> {
  let code = source;
  let shift: { line: number; column: number } | null = null;
  if (mode === 'serverless') {
    const { imports } = splitImports(source);
    const lines = imports.split('\n');
    shift = { line: lines.length, column: OPEN.length };
    code = serverlessModule(source);
  }
  try {
    await transform(code, { loader, format: 'esm', target: 'esnext', sourcefile: 'script', logLevel: 'silent' });
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors;
    if (errors?.length) throw fail('SCRIPT_SYNTAX', errors.slice(0, 3).map((e) => describe(e, shift)).join('; '));
    throw err;
  }
}
