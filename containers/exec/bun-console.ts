import type { ExecResult } from '../../host/engine.js';

export const CONSOLE_CAP = 16 * 1024;

/** Console lines of one request, as the isolate worker keeps them (`[level] text`, capped). */
export class ConsoleLines {
  readonly #lines: string[] = [];
  #bytes = 0;
  #cut = false;

  add(level: string, text: string): void {
    if (this.#cut) return;
    const line = level === 'log' ? text : `[${level}] ${text}`;
    const room = CONSOLE_CAP - this.#bytes;
    if (line.length + 1 > room) {
      if (room > 0) this.#lines.push(line.slice(0, room));
      this.#lines.push('[console output truncated]');
      this.#cut = true;
      this.#bytes = CONSOLE_CAP;
      return;
    }
    this.#lines.push(line);
    this.#bytes += line.length + 1;
  }

  text(extra = ''): string {
    const out = extra.trim();
    if (out) this.add('output', out);
    return this.#lines.join('\n');
  }
}

/** What a runner that stopped before answering tells its caller (the Bun process's own last words). */
export function exitMessage(r: ExecResult): string {
  const tail = r.output.trim().split('\n').slice(-5).join('\n').slice(-2000);
  const how = r.exitCode === null ? 'was killed' : r.exitCode > 128 ? `was killed by signal ${r.exitCode - 128}` : `exited with code ${r.exitCode}`;
  return `the Bun process ${how} before answering${tail ? `: ${tail}` : ''}`;
}

