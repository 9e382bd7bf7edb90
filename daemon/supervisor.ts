import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { type ConfigFlags, loadConfig } from './config.js';

export const SUPERVISOR_PID_FILE = 'supervisor.pid';
export const DAEMON_PID_FILE = 'hoodyd.pid';
export const HOODYD_ENTRY = fileURLToPath(new URL('./hoodyd.js', import.meta.url));
export const SUPERVISOR_ENTRY = fileURLToPath(new URL('./hoodyd-supervisor.js', import.meta.url));

export interface Backoff {
  /** Longest wait between two restarts. */
  maxMs: number;
  /** A run this long counts as stable: the next exit restarts at once again. */
  stableMs: number;
  /** This many exits in a row, each before `stableMs`, is called a crash loop in the log (restarts go on). */
  crashLoop: number;
}

export const DEFAULT_BACKOFF: Backoff = { maxMs: 5_000, stableMs: 60_000, crashLoop: 10 };

/** The wait before restart number `fastExits` (0-based) of a run of quick exits: 0, 250, 500, … capped. */
export function restartDelay(fastExits: number, b: Backoff = DEFAULT_BACKOFF): number {
  return fastExits === 0 ? 0 : Math.min(b.maxMs, 250 * 2 ** (fastExits - 1));
}

/** The pid in a pid file when that process is alive and its command line contains `marker` (pids get reused). */
export function livePid(file: string, marker: string): number | null {
  const pid = Number(existsSync(file) ? readFileSync(file, 'utf8').trim() : '0');
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker) ? pid : null;
  } catch {
    return null;
  }
}

/** hoodyd's command-line flags again, for the child (flags override env, as for hoodyd itself). */
export function flagArgs(flags: ConfigFlags): string[] {
  const args: string[] = [];
  for (const [k, v] of Object.entries(flags)) {
    if (v !== undefined && (typeof v === 'string' || typeof v === 'number')) args.push(`--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, String(v));
  }
  return args;
}

function removeIfOurs(file: string, pid: number | undefined): void {
  try {
    if (pid && readFileSync(file, 'utf8').trim() === String(pid)) rmSync(file);
  } catch {
    // already gone
  }
}

/**
 * `hoody supervise`: runs hoodyd as a foreground child and restarts it on any exit (a crash, a SIGKILL, an OOM
 * kill): the first restart at once, then with back-off up to `maxMs`, reset after a stable run. SIGTERM/SIGINT
 * go to hoodyd and then the supervisor exits without restarting it. One supervisor per state dir
 * (`supervisor.pid`); a second one says so and exits 0. Resolves with the exit code once stopped.
 */
export function runSupervisor(flags: ConfigFlags, backoff: Backoff = DEFAULT_BACKOFF): Promise<number> {
  const config = loadConfig(flags);
  const log: Logger = pino({ base: { pid: process.pid, svc: 'hoody-supervise' }, timestamp: pino.stdTimeFunctions.isoTime });
  const supervisorFile = join(config.stateDir, SUPERVISOR_PID_FILE);
  const daemonFile = join(config.stateDir, DAEMON_PID_FILE);
  const other = livePid(supervisorFile, 'supervis');
  if (other && other !== process.pid) {
    log.info({ supervisor: other }, 'another supervisor already runs hoodyd for this state dir; exiting');
    return Promise.resolve(0);
  }
  const running = livePid(daemonFile, 'hoodyd');
  if (running) {
    log.warn({ daemonPid: running }, 'an unsupervised hoodyd runs for this state dir; not starting a second one');
    return Promise.resolve(1);
  }
  writeFileSync(supervisorFile, `${process.pid}\n`);
  const args = ['--no-node-snapshot', HOODYD_ENTRY, ...flagArgs(flags)];

  return new Promise<number>((resolve) => {
    let child: ChildProcess | null = null;
    let stopping = false;
    let fastExits = 0;
    let restarts = 0;
    let timer: NodeJS.Timeout | undefined;

    const finish = (code: number) => {
      removeIfOurs(daemonFile, child?.pid);
      removeIfOurs(supervisorFile, process.pid);
      log.info({ code }, 'supervisor stopped');
      resolve(code);
    };

    const exited = (startedAt: number, code: number | null, signal: NodeJS.Signals | null, pid: number | undefined) => {
      child = null;
      removeIfOurs(daemonFile, pid);
      if (stopping) return finish(0);
      if (!existsSync(config.stateDir)) {
        log.error({ stateDir: config.stateDir }, 'the state dir is gone; not restarting hoodyd');
        return finish(1);
      }
      const ranMs = Date.now() - startedAt;
      if (ranMs >= backoff.stableMs) fastExits = 0;
      const delay = restartDelay(fastExits, backoff);
      fastExits++;
      const crashLoop = fastExits >= backoff.crashLoop;
      const fields = { code, signal, daemonPid: pid, ranMs, restartInMs: delay, fastExits, restarts, crashLoop };
      if (crashLoop) log.error(fields, `hoodyd is crash-looping (${fastExits} quick exits in a row); restarting with back-off`);
      else log.warn(fields, 'hoodyd exited; restarting');
      timer = setTimeout(start, delay);
    };

    const start = () => {
      timer = undefined;
      if (stopping) return finish(0);
      const startedAt = Date.now();
      restarts++;
      const c = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'], env: process.env });
      child = c;
      let done = false;
      const once = (code: number | null, signal: NodeJS.Signals | null) => {
        if (done) return;
        done = true;
        exited(startedAt, code, signal, c.pid);
      };
      c.on('exit', once);
      c.on('error', (err) => {
        log.error({ err }, 'could not start hoodyd');
        once(null, null);
      });
      if (c.pid) {
        writeFileSync(daemonFile, `${c.pid}\n`);
        log.info({ daemonPid: c.pid, start: restarts }, 'hoodyd started by the supervisor');
      }
    };

    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal, daemonPid: child?.pid }, 'stopping hoodyd; no restart');
      if (timer) clearTimeout(timer);
      if (!child) return finish(0);
      child.kill(signal);
      const c = child;
      setTimeout(() => c.kill('SIGKILL'), 20_000).unref(); // hoodyd forces its own exit after 10 s
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => undefined); // detached from a terminal that may go away
    log.info({ stateDir: config.stateDir, supervisorPid: process.pid }, 'supervisor up');
    start();
  });
}
