#!/usr/bin/env node
import { Command } from 'commander';
import { daemonFlags } from './flags.js';
import { runSupervisor } from './supervisor.js';

// What `hoody up` starts: a small process that keeps hoodyd running (see supervisor.ts).
const program = daemonFlags(new Command('hoodyd-supervisor').description('runs hoodyd and restarts it whenever it exits'));
program.parse();
void runSupervisor(program.opts()).then((code) => process.exit(code));
