import { mkdirSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { AgentCommands, type ContainerCommands, EngineCommands } from '../containers/agent/commands.js';
import type { ContainerContext, SpecExtras } from '../containers/context.js';
import type { ExecDeps } from '../containers/exec/service.js';
import { ensureAgentBinary } from '../host/agent/build.js';
import type { BunFiles } from '../containers/exec/bun-runtime.js';
import { ensureBunFiles } from '../host/agent/bun.js';
import type { Config } from './config.js';

export interface Commands {
  commands: ContainerCommands;
  /** What `@runtime bun` needs (the agent's directories, Bun placed in the state dir); absent without the agent. */
  bun?: NonNullable<ExecDeps['bun']>;
  /** Adds the agent's mount to a new container's engine settings. */
  extend(name: string, extras: SpecExtras): SpecExtras;
}

/**
 * How commands start in containers: the agent (built here once per source version) unless HOODY_COMMAND_AGENT=off
 * or the build fails (then docker exec, logged). Agent directories of containers that no longer exist go.
 */
export async function buildCommands(config: Config, ctx: ContainerContext, log: Logger): Promise<Commands> {
  const engineOnly: Commands = { commands: new EngineCommands(ctx.engine), extend: (_name, extras) => extras };
  if (!config.commandAgent) return engineOnly;
  let binary: string;
  try {
    binary = await ensureAgentBinary(join(config.stateDir, 'agent'));
  } catch (err) {
    log.warn({ err }, 'the command agent could not be built: commands go through docker exec');
    return engineOnly;
  }
  const dir = join(config.stateDir, 'agents');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const known = new Set(ctx.store.list().map((r) => r.name));
  for (const name of await readdir(dir)) if (!known.has(name)) await rm(join(dir, name), { recursive: true, force: true });
  const commands = new AgentCommands({ engine: ctx.engine, dir, binary, log: log.child({ ns: 'agent' }) });
  ctx.hooks.push({ open: async () => undefined, close: (row) => commands.forget(row.name) });
  let files: BunFiles | null = null;
  let unavailable: string | undefined;
  try {
    files = await ensureBunFiles(join(config.stateDir, 'agent'));
  } catch (err) {
    unavailable = `Bun could not be placed on this host: ${(err as Error).message}`;
    log.warn({ err }, 'the Bun runtime is not available: @runtime bun scripts answer HOODY_RUNTIME_UNAVAILABLE');
  }
  return {
    commands,
    bun: { engine: ctx.engine, commands, dir, files, unavailable },
    extend(name, extras) {
      // Made here, owned by root, before the engine would make it (as the container's mapped root) for the bind.
      mkdirSync(join(dir, name), { recursive: true, mode: 0o755 });
      return { ...extras, binds: [...extras.binds, commands.bind(name)] };
    },
  };
}
