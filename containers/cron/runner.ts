import type { Logger } from 'pino';
import type { ContainerEngine, ExecResult } from '../../host/engine.js';
import type { CommandTarget, ContainerCommands } from '../agent/commands.js';
import type { ContainerStore } from '../store.js';
import type { RunEnd } from './store.js';

export interface RunnerDeps {
  engine: ContainerEngine;
  /** How a command is started in the container: the in-container agent, or docker exec. */
  commands: ContainerCommands;
  store: ContainerStore;
  log: Logger;
  runTimeoutMs: number;
  maxOutputBytes: number;
  now: () => Date;
}

export interface RunJob {
  entryId: string;
  container: string;
  user: string;
  command: string;
  trigger: string;
}

// Creates the user on first use: shadow's useradd, else busybox adduser, else (images with neither, like
// hoody/busybox) a passwd/group line and a home. The name is passed as $1, never spliced into the script.
const ENSURE_USER = `u="$1"
id -u "$u" >/dev/null 2>&1 && exit 0
command -v useradd >/dev/null 2>&1 && useradd -m -s /bin/sh "$u" && exit 0
command -v adduser >/dev/null 2>&1 && adduser -D -s /bin/sh "$u" 2>/dev/null && exit 0
n=1000
while grep -q "^[^:]*:[^:]*:$n:" /etc/passwd /etc/group 2>/dev/null; do n=$((n + 1)); done
echo "$u:x:$n:$n::/home/$u:/bin/sh" >> /etc/passwd && echo "$u:x:$n:" >> /etc/group &&
  mkdir -p "/home/$u" && chown "$n:$n" "/home/$u"`;

/**
 * Runs one cron command inside its container as the entry's user (`sh -c`), capped in time and output.
 * Never throws: every failure (container gone or stopped, engine error) becomes a `failed` end with a message.
 */
export class CronRunner {
  /** engineId + user pairs known to exist, so a user is created at most once per container incarnation. */
  readonly #users = new Set<string>();

  constructor(private readonly deps: RunnerDeps) {}

  async run(job: RunJob): Promise<RunEnd> {
    try {
      return await this.#run(job);
    } catch (err) {
      this.deps.log.warn({ err, container: job.container, entry: job.entryId }, 'cron run could not start');
      return this.#failed(`hoody: the command could not be run: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  forget(engineId: string): void {
    for (const k of this.#users) if (k.startsWith(`${engineId}\n`)) this.#users.delete(k);
  }

  async #run(job: RunJob): Promise<RunEnd> {
    const { engine, store } = this.deps;
    const row = store.get(job.container);
    if (!row) return this.#failed(`hoody: container ${job.container} no longer exists; the command did not run`);
    if (row.phase !== 'ready') return this.#failed(`hoody: container ${job.container} is being ${row.phase === 'creating' ? 'created' : 'deleted'}; the command did not run`);
    const engineId = row.engineId;
    if (!engineId) return this.#failed(`hoody: container ${job.container} has no engine container; the command did not run`);
    const target = { name: job.container, engineId };
    // The engine is asked whether the container runs only when an exec fails: one API call less per run.
    const whyNot = async (err: unknown): Promise<RunEnd> => {
      const live = await engine.inspect(engineId).catch(() => undefined);
      if (live === null) return this.#failed(`hoody: container ${job.container} is missing from the engine; the command did not run`);
      if (live && !live.running)
        return this.#failed(`hoody: container ${job.container} is not running (${live.status}); the command did not run`);
      throw err;
    };
    if (job.user !== 'root') {
      const problem = await this.#ensureUser(target, job.user).catch(whyNot);
      if (typeof problem === 'string') return this.#failed(problem);
      if (problem) return problem;
    }
    const r = await this.deps.commands.exec(target, {
      cmd: ['sh', '-c', job.command],
      user: job.user,
      env: [
        `USER=${job.user}`,
        `LOGNAME=${job.user}`,
        'SHELL=/bin/sh',
        `HOODY_CRON_ENTRY=${job.entryId}`,
        `HOODY_CRON_TRIGGER=${job.trigger}`,
      ],
      timeoutMs: this.deps.runTimeoutMs,
      maxOutputBytes: this.deps.maxOutputBytes,
    }).catch(whyNot);
    return 'status' in r ? r : this.#ended(r);
  }

  async #ensureUser(target: CommandTarget, user: string): Promise<string | null> {
    const key = `${target.engineId}\n${user}`;
    if (this.#users.has(key)) return null;
    const r = await this.deps.commands.exec(target, {
      cmd: ['sh', '-c', ENSURE_USER, 'sh', user],
      user: 'root',
      timeoutMs: 30_000,
      maxOutputBytes: 4096,
    });
    if (r.exitCode !== 0)
      return `hoody: user ${user} does not exist in the container and could not be created (exit ${r.exitCode}): ${r.output.trim()}`;
    this.#users.add(key);
    return null;
  }

  #ended(r: ExecResult): RunEnd {
    const finishedAt = this.deps.now().toISOString();
    if (r.timedOut) {
      const note = `\nhoody: killed after ${this.deps.runTimeoutMs} ms (run timeout)\n`;
      return { status: 'timeout', finishedAt, exitCode: null, output: r.output + note, truncated: r.truncated };
    }
    return {
      status: r.exitCode === 0 ? 'ok' : 'failed',
      finishedAt,
      exitCode: r.exitCode,
      output: r.output,
      truncated: r.truncated,
    };
  }

  #failed(message: string): RunEnd {
    return { status: 'failed', finishedAt: this.deps.now().toISOString(), exitCode: null, output: `${message}\n`, truncated: false };
  }
}
