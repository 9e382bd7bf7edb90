import type { Logger } from 'pino';

/** hoodyd's exit code after an unexpected exception (EX_SOFTWARE): the supervisor restarts it. */
export const CRASH_EXIT_CODE = 70;

/**
 * The process guard. Node documents that after an uncaught exception the process is in an undefined state and
 * must not resume ("the correct use of 'uncaughtException' is to perform synchronous cleanup ... before shutting
 * down"), so hoodyd logs the error with its stack, grep-able as "hoodyd crashed", and exits non-zero; its
 * supervisor restarts it. Acknowledged writes are in SQLite (WAL, synchronous), so nothing acknowledged is lost.
 */
export function installCrashGuard(log: Logger): void {
  const die = (kind: 'uncaught exception' | 'unhandled rejection') => (err: unknown) => {
    try {
      log.fatal({ err, kind }, `hoodyd crashed: ${kind}; exiting with ${CRASH_EXIT_CODE} for the supervisor to restart it`);
      log.flush?.();
    } catch {
      process.stderr.write(`hoodyd crashed: ${kind}: ${(err as Error)?.stack ?? String(err)}\n`);
    }
    process.exit(CRASH_EXIT_CODE);
  };
  process.on('uncaughtException', die('uncaught exception'));
  process.on('unhandledRejection', die('unhandled rejection'));
}
