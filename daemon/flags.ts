import type { Command } from 'commander';

/** hoodyd's flags (shared by hoodyd, `hoody daemon|up|supervise` and the supervisor entry). */
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
    .option('--log-file <path>', 'write the log here, 0600, rotated by size (env HOODY_LOG_FILE; default stdout)')
    .option('--fleet-etcd <endpoints>', 'join the fleet on these etcd endpoints, host:port[,…] (env HOODY_FLEET_ETCD)')
    .option('--fleet-host <name>', "this host's name in the fleet (env HOODY_FLEET_HOST, default the hostname)")
    .option('--fleet-address <addr>', 'address(es) other hosts reach this one at (env HOODY_FLEET_ADDRESS)');
}

