import { createHash } from 'node:crypto';
import { type Message, transform } from 'esbuild';
import { fail } from '../errors.js';

export type Loader = 'ts' | 'js';

export interface Compiled {
  /** Content hash of (loader, source): the key of every cache downstream (the worker's compiled scripts). */
  hash: string;
  /** JavaScript that, run as a classic script in a context the prelude set up, starts the script. */
  code: string;
}

// The body goes inside an async function so top-level `await` and `return` work. The wrapper opens on the
// script's first line, so line numbers in esbuild's messages are the file's own.
const OPEN = '__hoody_start(async function () {';
const CLOSE = '\n});\n';

export function loaderFor(file: string): Loader {
  return file.endsWith('.js') ? 'js' : 'ts';
}

function describe(m: Message): string {
  const loc = m.location;
  if (!loc) return m.text;
  const column = loc.line === 1 ? loc.column - OPEN.length : loc.column;
  return `line ${loc.line}, column ${column + 1}: ${m.text}`;
}

/** esbuild strips types (and checks syntax); results are cached by content hash, least recently used out. */
export class Transpiler {
  private readonly cache = new Map<string, Compiled>();

  constructor(private readonly max = 256) {}

  async compile(source: string, loader: Loader): Promise<Compiled> {
    const hash = createHash('sha256').update(loader).update('\0').update(source).digest('hex').slice(0, 32);
    const hit = this.cache.get(hash);
    if (hit) {
      this.cache.delete(hash);
      this.cache.set(hash, hit);
      return hit;
    }
    let code: string;
    try {
      const out = await transform(OPEN + source + CLOSE, {
        loader,
        target: 'es2022',
        sourcefile: 'script',
        logLevel: 'silent',
        tsconfigRaw: { compilerOptions: { useDefineForClassFields: true } },
      });
      code = out.code;
    } catch (err) {
      const errors = (err as { errors?: Message[] }).errors;
      if (errors?.length) throw fail('SCRIPT_SYNTAX', errors.slice(0, 3).map(describe).join('; '));
      throw err;
    }
    const compiled = { hash, code };
    this.cache.set(hash, compiled);
    if (this.cache.size > this.max) this.cache.delete(this.cache.keys().next().value!);
    return compiled;
  }
}
