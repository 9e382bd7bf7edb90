import type { Command } from 'commander';
import { loadConfig } from './config.js';
import { makeLogger, startDaemon } from './daemon.js';

/** hoodyd: runs the daemon in the foreground until SIGTERM/SIGINT. */
export async function runDaemon(flags: Record<string, string | undefined>): Promise<void> {
  const config = loadConfig(flags);
  const log = makeLogger(config.logLevel, config);
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
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
}

export function daemonFlags(cmd: Command): Command {
  return cmd
    .option('--state-dir <dir>', 'state dir: database, pool, keys (env HOODY_STATE_DIR, default /var/lib/hoody)')
    .option('--admin-socket <path>', 'admin API unix socket (env HOODY_ADMIN_SOCKET)')
    .option('--docker-socket <path>', 'Docker engine socket (env HOODY_DOCKER_SOCKET)')
    .option('--pool-size <size>', 'size of the loop-file pool when one is made (env HOODY_POOL_SIZE, default 20G)')
    .option('--domain <domain>', 'base domain of the service hosts (env HOODY_DOMAIN)')
    .option('--http-port <port>', 'public HTTP port, 0 = any free (env HOODY_HTTP_PORT)')
    .option('--https-port <port>', 'public HTTPS port, 0 = any free (env HOODY_HTTPS_PORT)')
    .option('--image <image>', 'default image of new containers (env HOODY_IMAGE)')
    .option('--log-level <level>', 'pino log level (env HOODY_LOG_LEVEL)')
    .option('--log-file <path>', 'write the log here, 0600, rotated by size (env HOODY_LOG_FILE; default stdout)');
}

