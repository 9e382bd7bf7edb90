import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { execa } from 'execa';
import { serviceUnit } from '../service-unit.js';
import { HOODYD_ENTRY } from '../supervisor.js';

const UNIT = 'hoodyd.service';
/** systemd runs as PID 1 here (else `hoody up` keeps supervising). */
const hasSystemd = () => existsSync('/run/systemd/system');

/** The HOODY_* settings of this shell: the service runs with the configuration `hoody up` would. */
function settings(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('HOODY_') && v !== undefined && k !== 'HOODY_DEBUG') out[k] = v;
  return out;
}

/** `hoody service install|uninstall|print`: hoodyd under systemd. */
export function serviceCommands(program: Command): void {
  const service = program.command('service').description('run hoodyd as a systemd service (where there is no systemd, `hoody up` supervises it)');
  const unitText = () => serviceUnit({ node: process.execPath, entry: HOODYD_ENTRY, env: settings(), docs: join(dirname(HOODYD_ENTRY), '..', '..', 'README.md') });
  service
    .command('print')
    .description('print the unit `install` would write (with the HOODY_* settings of this shell)')
    .action(() => void process.stdout.write(unitText()));
  service
    .command('install')
    .description('write the unit, then (with systemd running) daemon-reload and enable --now')
    .option('--unit-dir <dir>', 'where units go', '/etc/systemd/system')
    .option('--no-start', 'write the unit only')
    .action(async (o: { unitDir: string; start: boolean }) => {
      await mkdir(o.unitDir, { recursive: true });
      const path = join(o.unitDir, UNIT);
      await writeFile(path, unitText(), { mode: 0o644 });
      process.stdout.write(`wrote ${path}\n`);
      if (!o.start) return;
      if (!hasSystemd()) {
        process.stdout.write('systemd is not running here: start hoodyd with `hoody up` (it supervises hoodyd itself)\n');
        return;
      }
      await execa('systemctl', ['daemon-reload']);
      await execa('systemctl', ['enable', '--now', UNIT]);
      process.stdout.write(`enabled and started ${UNIT}\n`);
    });
  service
    .command('uninstall')
    .description('stop and disable the service (containers keep running), then remove the unit')
    .option('--unit-dir <dir>', 'where units go', '/etc/systemd/system')
    .action(async (o: { unitDir: string }) => {
      if (hasSystemd()) await execa('systemctl', ['disable', '--now', UNIT], { reject: false });
      await rm(join(o.unitDir, UNIT), { force: true });
      if (hasSystemd()) await execa('systemctl', ['daemon-reload'], { reject: false });
      process.stdout.write(`removed ${join(o.unitDir, UNIT)}\n`);
    });
}
