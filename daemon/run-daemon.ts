import { loadConfig } from './config.js';
import { makeLogger, startDaemon } from './daemon.js';
import { installCrashGuard } from './guard.js';

/** hoodyd: runs the daemon in the foreground until SIGTERM/SIGINT. */
export async function runDaemon(flags: Record<string, string | undefined>): Promise<void> {
  const config = loadConfig(flags);
  const log = makeLogger(config.logLevel, config);
  installCrashGuard(log);
  let daemon: Awaited<ReturnType<typeof startDaemon>>;
  try {
    daemon = await startDaemon(config, log);
  } catch (err) {
    log.fatal({ err }, 'hoodyd failed to start');
    process.exit(1);
  }
  const stop = async (signal: string) => {
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    await daemon.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
}

export { daemonFlags } from './flags.js';
