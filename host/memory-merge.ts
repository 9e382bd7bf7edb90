import { createRequire } from 'node:module';

// prctl options from linux/prctl.h (Linux >= 6.4).
const PR_SET_MEMORY_MERGE = 67;
const PR_GET_MEMORY_MERGE = 68;

type Prctl = (option: number, a: number, b: number, c: number, d: number) => number;
let prctl: Prctl | null | undefined;

function load(): Prctl | null {
  if (prctl !== undefined) return prctl;
  try {
    const require = createRequire(import.meta.url);
    const koffi = require('koffi') as {
      load(lib: string): { func(sig: string): Prctl };
    };
    prctl = koffi.load('libc.so.6').func('int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)');
  } catch {
    prctl = null;
  }
  return prctl;
}

/**
 * Marks this process merge-eligible for KSM. The flag is inherited on fork and kept across execve,
 * so everything spawned afterwards (dockerd, its shims, every container) is eligible too.
 */
export function enableMemoryMerge(): boolean {
  const fn = load();
  if (!fn) return false;
  return fn(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) === 0;
}

export function memoryMergeEnabled(): boolean {
  const fn = load();
  return fn ? fn(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) === 1 : false;
}
