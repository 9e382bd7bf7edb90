import { Command } from 'commander';
import { AdminClient } from '../client.js';
import { VERSION } from '../version.js';
import { benchCommands } from './bench.js';
import { completionCommands } from './completion.js';
import { serviceCommands } from './service.js';
import { containerCommands } from './containers.js';
import { hostCommands } from './host.js';
import { logCommands } from './logs.js';
import { fleetCommands, moveCommand } from './fleet.js';

export function buildProgram(): Command {
  const program = new Command('hoody')
    .description('hoody: containers on BTRFS with KSM, each with its own cron, exec and proxy namespace')
    .version(VERSION)
    .option('--socket <path>', 'admin socket of hoodyd (env HOODY_ADMIN_SOCKET)')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const client = (cmd: Command) => {
    const o = cmd.optsWithGlobals() as { socket?: string; adminSocket?: string };
    return new AdminClient(o.socket ?? o.adminSocket ?? process.env.HOODY_ADMIN_SOCKET ?? '/run/hoody/hoodyd.sock');
  };
  hostCommands(program);
  containerCommands(program, client);
  logCommands(program, client);
  fleetCommands(program, client);
  moveCommand(program, client);
  benchCommands(program);
  serviceCommands(program);
  completionCommands(program); // last: it lists every command
  for (const c of program.commands) c.exitOverride();
  return program;
}
