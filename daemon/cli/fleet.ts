import type { Command } from 'commander';
import type { AdminClient } from '../client.js';
import { mib, printJson, table } from './format.js';

interface HostView {
  host: string;
  healthy: boolean;
  names: number;
  record: {
    addresses: string[];
    ports: { http: number; https: number };
    capacity: { poolFreeBytes: number | null; memoryAvailableBytes: number; ksmSavedBytes: number | null; containers: number; draining: boolean };
    version: string;
    updatedAt: string;
  } | null;
}

/** `hoody fleet join|ls|leave|status`. */
export function fleetCommands(program: Command, client: (cmd: Command) => AdminClient): void {
  const fleet = program.command('fleet').description('this host in a fleet of hoodyd on etcd (preview: membership, directory, routing, placement, drain)');
  fleet
    .command('join')
    .description("join a fleet: saved in the daemon's state dir (used at every start) and joined now, no restart")
    .argument('<endpoints>', 'etcd endpoints, host:port[,host:port…]')
    .option('--host <name>', "this host's name in the fleet (default: HOODY_FLEET_HOST, else the hostname)")
    .option('--address <addr>', 'address(es) other hosts reach this one at (comma list)')
    .option('--fleet <name>', 'fleet name, when several share one etcd (default `default`)')
    .option('--json', 'print JSON')
    .action(async (endpoints: string, o: { host?: string; address?: string; fleet?: string; json?: boolean }, cmd: Command) => {
      const body = { endpoints, ...(o.host ? { host: o.host } : {}), ...(o.address ? { address: o.address } : {}), ...(o.fleet ? { fleet: o.fleet } : {}) };
      const s = await client(cmd).call<{ fleet: string; host: string }>('POST', '/v1/fleet/join', body);
      if (o.json) return printJson(s);
      process.stdout.write(`joining fleet ${s.fleet} as ${s.host} (registration runs in the background: see \`hoody fleet ls\`)\n`);
    });
  fleet
    .command('ls')
    .description('hosts of the fleet: health (lease alive), load and capacity')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const hosts = await client(cmd).call<HostView[]>('GET', '/v1/fleet/hosts');
      if (o.json) return printJson(hosts);
      const rows = hosts.map((h) => {
        const c = h.record?.capacity;
        return [
          h.host,
          h.healthy ? (c?.draining ? 'draining' : 'up') : 'down',
          h.record ? `${h.record.addresses[0] ?? '-'}:${h.record.ports.https}` : '-',
          c ? c.containers : h.names,
          mib(c?.poolFreeBytes),
          mib(c?.memoryAvailableBytes),
          mib(c?.ksmSavedBytes),
          h.record?.version ?? '-',
        ];
      });
      process.stdout.write(`${table(['HOST', 'HEALTH', 'ADDRESS', 'CONTAINERS', 'POOL FREE', 'MEM AVAIL', 'KSM SAVED', 'VERSION'], rows)}\n`);
    });
  fleet
    .command('status')
    .description("this host's membership and directory cache")
    .action(async (_o: unknown, cmd: Command) => printJson(await client(cmd).call('GET', '/v1/fleet')));
  fleet
    .command('drain')
    .description('placement skips this host (a `--host` pin still lands here); kept across restarts; --off opens it again')
    .option('--off', 'stop draining')
    .option('--json', 'print JSON')
    .action(async (o: { off?: boolean; json?: boolean }, cmd: Command) => {
      const r = await client(cmd).call<{ host: string; draining: boolean }>('POST', '/v1/fleet/drain', { on: !o.off });
      if (o.json) return printJson(r);
      process.stdout.write(r.draining ? `host ${r.host} is draining: new containers are placed elsewhere\n` : `host ${r.host} takes new containers again\n`);
    });
  fleet
    .command('leave')
    .description("leave the fleet: this host's names and tokens leave the directory, fleet.json is removed")
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const r = await client(cmd).call<{ left: string; withdrawn: number }>('POST', '/v1/fleet/leave');
      if (o.json) return printJson(r);
      process.stdout.write(`left fleet ${r.left} (${r.withdrawn} directory entries withdrawn)\n`);
    });
}

/** `hoody move NAME HOST`: a stopped container to another host of the fleet. */
export function moveCommand(program: Command, client: (cmd: Command) => AdminClient): void {
  program
    .command('move')
    .description(
      'move a stopped container to another host of the fleet: its volume (btrfs send | receive), tokens, cron entries, routes and certificates; its name, URLs and tokens stay the same. Snapshots do not move (delete them first); run history stays on the old host',
    )
    .argument('<name>')
    .argument('<host>', 'the host it goes to (`hoody fleet ls`)')
    .option('--json', 'print JSON')
    .action(async (name: string, host: string, o: { json?: boolean }, cmd: Command) => {
      const r = await client(cmd).call<{ name: string; from: string; to: string; bytes: number; ms: number }>('POST', `/v1/containers/${encodeURIComponent(name)}/move`, { host });
      if (o.json) return printJson(r);
      process.stdout.write(`moved ${r.name} from ${r.from} to ${r.to} (${mib(r.bytes)} sent in ${(r.ms / 1000).toFixed(1)} s); start it on ${r.to}: hoody start ${r.name}\n`);
    });
}
