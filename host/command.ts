import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

/** A host command that failed; carries what an operator needs to reproduce it. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
  ) {
    super(`${command} ${args.join(' ')} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || 'no stderr'}`);
    this.name = 'CommandError';
  }
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Past the timeout: SIGTERM, then SIGKILL this much later if the program is still there. */
const KILL_AFTER_MS = 5000;

function stripFinalNewline(s: string): string {
  return s.endsWith('\r\n') ? s.slice(0, -2) : s.endsWith('\n') ? s.slice(0, -1) : s;
}

/**
 * Runs a program with an argv array (never a shell string) and throws CommandError on failure. Plain
 * child_process, not execa: a create runs about ten of these, and execa cost twice the daemon's CPU per call.
 */
export function run(command: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, LC_ALL: 'C' },
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    let timedOut = false;
    let force: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      force = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
    }, opts.timeoutMs ?? 120_000);
    let spawnError: Error | undefined;
    child.on('error', (e) => {
      spawnError = e; // ENOENT and the like; 'close' still follows
    });
    if (opts.input !== undefined) {
      child.stdin?.on('error', () => undefined); // a program that exits without reading: its status tells
      child.stdin?.end(opts.input);
    }
    child.on('close', (code) => {
      clearTimeout(timer);
      clearTimeout(force);
      const stdout = stripFinalNewline(Buffer.concat(out).toString('utf8'));
      const stderr = stripFinalNewline(Buffer.concat(err).toString('utf8'));
      if (code === 0 && !timedOut && !spawnError) return resolve({ stdout, stderr });
      const why = spawnError?.message ?? (timedOut ? `timed out after ${opts.timeoutMs ?? 120_000} ms` : '');
      reject(new CommandError(command, args, code ?? undefined, stderr || why));
    });
  });
}

/**
 * Runs a program whose stdin and/or stdout are byte streams (`btrfs send | receive`), argv array, no shell.
 * Resolves once the program exited 0 and its output was written out; anything else is a CommandError with stderr.
 */
export function runStream(command: string, args: readonly string[], io: { stdin?: Readable; stdout?: Writable; timeoutMs?: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, LC_ALL: 'C' }, stdio: [io.stdin ? 'pipe' : 'ignore', io.stdout ? 'pipe' : 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    let why = '';
    const timer = setTimeout(() => {
      why = `timed out after ${io.timeoutMs ?? 600_000} ms`;
      child.kill('SIGKILL');
    }, io.timeoutMs ?? 600_000);
    child.on('error', (e) => {
      why = e.message; // ENOENT and the like; 'close' still follows
    });
    if (io.stdin && child.stdin) {
      child.stdin.on('error', () => undefined); // a program that exits without reading all: its status tells
      io.stdin.on('error', (e) => {
        why ||= `its input failed: ${e.message}`;
        child.kill('SIGKILL');
      });
      io.stdin.pipe(child.stdin);
    }
    // The consumer ends with the program: a receive that stops early must not hang the sender.
    if (io.stdout && child.stdout) child.stdout.pipe(io.stdout);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0 && !why) return resolve();
      reject(new CommandError(command, args, code ?? undefined, stripFinalNewline(Buffer.concat(err).toString('utf8')) || why));
    });
  });
}
