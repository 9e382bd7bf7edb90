import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, fchmodSync, openSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { AdminClient } from '../client.js';
import { type Config, type ConfigFlags, loadConfig } from '../config.js';
import { daemonFlags, runDaemon } from '../run-daemon.js';
import { rotateFiles } from '../log-file.js';
import { setupHost } from '../setup.js';
import { flagArgs, livePid, runSupervisor, SUPERVISOR_ENTRY, SUPERVISOR_PID_FILE } from '../supervisor.js';
import { mib, printJson } from './format.js';

function configFrom(cmd: Command): Config {
  const o = cmd.optsWithGlobals() as ConfigFlags & { socket?: string };
  return loadConfig({ ...o, adminSocket: o.adminSocket ?? o.socket });
}

const quietLog = () => pino({ level: 'warn' });

interface HostInfoView {
  listeners: { http: number | null; https: number | null; domain: string; data_plane?: { kind: string; pid: number | null } };
  pool: { path: string; image: string | null; filesystem: { fstype: string; source: string }; usage: { sizeBytes: number; usedBytes: number; freeBytes: number } };
  engine: { available: boolean; serverVersion?: string; storageDriver?: string; backingFilesystem?: string; dockerRootDir?: string; dataRootOnPool?: boolean; userns?: { uid: number; gid: number } | null; error?: string };
  ksm: { available: boolean; knobs: Record<string, string>; pagesSharing: number; generalProfitBytes: number };
  host: { kernel: string; cpus: number; memory: { totalBytes: number; usedBytes: number } };
  shims?: { configuredSize: number; grouping: boolean; groups: number };
}

/**
 * Starts the supervisor in the background (it runs hoodyd and restarts it if it dies; both log to the state
 * dir) and waits until the admin socket answers. A supervisor already starting hoodyd is waited for instead.
 */
async function startSupervised(config: Config, flags: ConfigFlags): Promise<void> {
  await mkdir(config.stateDir, { recursive: true });
  // hoodyd writes and rotates its own log (0600). The supervisor's lines (starts, restarts, crash loops) and
  // hoodyd's raw stderr (a crash before the logger, a V8 abort) go to hoodyd.stderr, rotated here when it outgrew the log size.
  const logFile = config.logFile ?? join(config.stateDir, 'hoodyd.log');
  const errFile = join(config.stateDir, 'hoodyd.stderr');
  const client = new AdminClient(config.adminSocket);
  const existing = livePid(join(config.stateDir, SUPERVISOR_PID_FILE), 'supervis');
  let child: ChildProcess | undefined;
  if (existing) process.stderr.write(`hoodyd is starting under supervisor pid ${existing}\n`);
  else {
    process.stderr.write('starting hoodyd (supervised)\n');
    if (existsSync(errFile) && statSync(errFile).size > config.logMaxBytes) rotateFiles(errFile, 1);
    const err = openSync(errFile, 'a', 0o600);
    fchmodSync(err, 0o600);
    const env = { ...process.env, HOODY_LOG_FILE: logFile };
    child = spawn(process.execPath, [SUPERVISOR_ENTRY, ...flagArgs(flags)], { detached: true, stdio: ['ignore', err, err], env });
    child.unref();
  }
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (await client.alive()) return;
    if (child && child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`hoodyd did not come up; see ${logFile} and ${errFile}`);
}

export function hostCommands(program: Command): void {
  const host = program.command('host').description('the box: pool, engine, KSM');
  daemonFlags(
    host
      .command('setup')
      .description('idempotent: BTRFS pool (loop file if needed), Docker engine under memory-merge, KSM on, local images')
      .option('--images <which>', 'none | busybox | all', 'all')
      .option('--json', 'print JSON'),
  ).action(async (o: { images: 'none' | 'busybox' | 'all'; json?: boolean }, cmd: Command) => {
    const config = configFrom(cmd);
    const r = await setupHost(config, quietLog(), { images: o.images, onStep: (s) => !o.json && process.stderr.write(`${s}\n`) });
    if (o.json) printJson(r);
    else process.stdout.write(`pool ${r.pool.paths.root} (${r.pool.kind}${r.pool.created ? ', new' : ''}); engine ${r.engineStarted ? `started${r.usernsRemap ? ` with --userns-remap ${r.usernsRemap}` : ' rootful'}` : 'already running'}; KSM ${r.ksm ? 'on' : 'unavailable'}${r.imagesBuilt.length ? `; built ${r.imagesBuilt.join(', ')}` : ''}\n`);
  });
  host
    .command('info')
    .description('pool filesystem and usage, engine storage driver and data root, KSM, listeners')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const client = new AdminClient(configFrom(cmd).adminSocket);
      const i = await client.call<HostInfoView>('GET', '/v1/host');
      if (o.json) return printJson(i);
      const e = i.engine;
      process.stdout.write(
        [
          `pool:    ${i.pool.path} on ${i.pool.filesystem.fstype} (${i.pool.filesystem.source}), ${mib(i.pool.usage.usedBytes)} used of ${mib(i.pool.usage.sizeBytes)}`,
          e.available
            ? `engine:  docker ${e.serverVersion}, storage driver ${e.storageDriver} on ${e.backingFilesystem || '-'}, data root ${e.dockerRootDir}${e.dataRootOnPool ? ' (on the pool)' : ''}, ${e.userns ? `user namespaces (container root = host uid ${e.userns.uid})` : 'no user namespaces (container root = host root)'}`
            : `engine:  unavailable: ${e.error}`,
          `ksm:     run=${i.ksm.knobs.run ?? '-'} pages_sharing=${i.ksm.pagesSharing} general_profit=${mib(i.ksm.generalProfitBytes)}`,
          `shims:   ${!i.shims ? '-' : i.shims.grouping ? `shared, up to ${i.shims.configuredSize} containers each (${i.shims.groups} groups)` : i.shims.configuredSize > 1 ? `one per container: the engine was started without hoody's shim wrapper (restart it through \`hoody up\`)` : 'one per container (HOODY_SHIM_GROUP_SIZE=1)'}`,
          `host:    ${i.host.kernel}, ${i.host.cpus} cpus, ${mib(i.host.memory.usedBytes)} used of ${mib(i.host.memory.totalBytes)}`,
          `listen:  http ${i.listeners.http ?? '-'} https ${i.listeners.https ?? '-'} domain ${i.listeners.domain}`,
          `data plane: ${i.listeners.data_plane ? `${i.listeners.data_plane.kind} (pid ${i.listeners.data_plane.pid ?? 'restarting'})` : '-'}`,
        ].join('\n') + '\n',
      );
    });

  daemonFlags(program.command('daemon').description('run hoodyd in the foreground')).action(async (_o: unknown, cmd: Command) => {
    await runDaemon(cmd.optsWithGlobals());
    await new Promise(() => undefined); // runs until a signal ends the process
  });

  daemonFlags(
    program
      .command('supervise')
      .description('run hoodyd in the foreground and restart it whenever it exits (what `hoody up` starts); SIGTERM stops both'),
  ).action(async (_o: unknown, cmd: Command) => {
    const { socket: _s, ...flags } = cmd.optsWithGlobals() as ConfigFlags & { socket?: string };
    process.exitCode = await runSupervisor(flags);
  });

  daemonFlags(
    program
      .command('up')
      .description('set up the host if needed, start the daemon in the background, and create a demo container on an empty host')
      .option('--no-demo', 'do not create the demo container')
      .option('--images <which>', 'none | busybox | all', 'all'),
  ).action(async (o: { demo: boolean; images: 'none' | 'busybox' | 'all' }, cmd: Command) => {
    const flags = cmd.optsWithGlobals() as ConfigFlags & { demo?: boolean; images?: string; socket?: string };
    const { demo: _d, images: _i, socket: _s, ...daemonOnly } = flags;
    const config = loadConfig(daemonOnly);
    await setupHost(config, quietLog(), { images: o.images, onStep: (s) => process.stderr.write(`${s}\n`) });
    const client = new AdminClient(config.adminSocket);
    if (await client.alive()) {
      const supervised = livePid(join(config.stateDir, SUPERVISOR_PID_FILE), 'supervis');
      process.stderr.write(`hoodyd already running on ${config.adminSocket}${supervised ? ` (supervisor pid ${supervised})` : ' (not supervised: it will not restart by itself)'}\n`);
    } else await startSupervised(config, daemonOnly);
    const list = await client.call<{ name: string }[]>('GET', '/v1/containers');
    process.stdout.write(`hoodyd is up: admin socket ${config.adminSocket}, state ${config.stateDir}, log ${config.logFile ?? join(config.stateDir, 'hoodyd.log')}\n`);
    if (list.length || !o.demo) return;
    const demo = await client.call<{ name: string; token: string }>('POST', '/v1/containers', { name: 'demo' });
    const info = await client.call<HostInfoView>('GET', '/v1/host');
    const httpsPort = info.listeners.https && info.listeners.https !== 443 ? `:${info.listeners.https}` : '';
    const d = info.listeners.domain;
    const ca = join(config.stateDir, 'keys', 'ca.crt');
    const t = demo.token;
    process.stdout.write(
      [
        `created container demo; its token (shown once): ${t}`,
        `  cron:  https://cron.demo.${d}${httpsPort}/users/me/entries?token=${t}`,
        `  exec:  https://exec.demo.${d}${httpsPort}/scripts/<path>?token=${t}`,
        `  api:   https://api.demo.${d}${httpsPort}/api/v1/files/?token=${t}`,
        'try (the host CA is in the state dir; inside a container it is trusted already):',
        `  curl --cacert ${ca} -H 'content-type: application/json' -d '{"schedule":"* * * * *","command":"date >> /files/dates"}' "https://cron.demo.${d}${httpsPort}/users/me/entries?token=${t}"`,
        `  curl --cacert ${ca} "https://api.demo.${d}${httpsPort}/api/v1/files/dates?token=${t}"     # a minute later`,
        '  hoody ls; hoody stats; hoody logs demo --cron --follow',
      ].join('\n') + '\n',
    );
  });
}
