#!/usr/bin/env node
import { CommanderError } from 'commander';
import { ApiError, DaemonUnreachable } from '../client.js';
import { buildProgram } from './program.js';

// Exit codes: 0 ok, 1 operation failed, 2 usage error (DESIGN.md).
async function main(): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
      process.exit(2);
    }
    if (err instanceof ApiError) {
      process.stderr.write(`error: ${err.code}: ${err.message}\n`);
      process.exit(err.code === 'HOODY_BODY_INVALID' || err.status === 400 ? 2 : 1);
    }
    if ((err as { usage?: boolean }).usage) {
      process.stderr.write(`error: ${(err as Error).message}\n`);
      process.exit(2);
    }
    process.stderr.write(`error: ${(err as Error).message}\n`);
    if (!(err instanceof DaemonUnreachable) && process.env.HOODY_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    process.exit(1);
  }
}

void main();
