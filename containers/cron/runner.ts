import type { Logger } from 'pino';
import type { ContainerEngine, ExecResult } from '../../host/engine.js';
import type { ContainerCommands } from '../agent/commands.js';
import { ContainerUsers } from '../agent/users.js';
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

/**
 * Runs one cron command inside its container as the entry's user (`sh -c`), capped in time and output.
 * Never throws: every failure (container gone or stopped, engine error) becomes a `failed` end with a message.
 */
export class CronRunner {
  readonly #users: ContainerUsers;

  constructor(private readonly deps: RunnerDeps) {
    this.#users = new ContainerUsers(deps.commands);
  }

  async run(job: RunJob): Promise<RunEnd> {
    try {
      return await this.#run(job);
    } catch (err) {
      this.deps.log.warn({ err, container: job.container, entry: job.entryId }, 'cron run could not start');
      return this.#failed(`hoody: the command could not be run: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  forget(engineId: string): void {
    this.#users.forget(engineId);
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
      const problem = await this.#users.ensure(target, job.user).catch(whyNot);
      if (typeof problem === 'string') return this.#failed(`hoody: ${problem}`);
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
