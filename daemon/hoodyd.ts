#!/usr/bin/env node
import { Command } from 'commander';
import { daemonFlags, runDaemon } from './run-daemon.js';

const program = daemonFlags(new Command('hoodyd').description('the hoody daemon (foreground)'));
program.parse();
void runDaemon(program.opts());
