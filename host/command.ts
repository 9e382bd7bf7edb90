import { execa } from 'execa';

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

/** Runs a program with an argv array (never a shell string) and throws CommandError on failure. */
export async function run(
  command: string,
  args: readonly string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  const res = await execa(command, args, {
    reject: false,
    input: opts.input,
    timeout: opts.timeoutMs ?? 120_000,
    stripFinalNewline: true,
    env: { LC_ALL: 'C' },
  });
  if (res.failed) {
    throw new CommandError(command, args, res.exitCode, String(res.stderr || res.message || ''));
  }
  return { stdout: String(res.stdout), stderr: String(res.stderr) };
}
