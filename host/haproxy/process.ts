/** The HAProxy process of one hoody instance: started detached (it outlives hoodyd), adopted, reloaded, asked. */
import { spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { writeAtomic } from '../atomic-file.js';
import { connect } from 'node:net';
import { join } from 'node:path';
import { pidAlive } from '../pid-alive.js';
import { errorPages, type HaproxySettings, opensslConfig, renderHaproxyConfig } from './config.js';

export class HaproxyError extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly args: readonly string[],
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'HaproxyError';
  }
}


/** The pid of the HAProxy whose pid file this is, when that process lives. */
export async function runningPid(pidFile: string): Promise<number | null> {
  const raw = await readFile(pidFile, 'utf8').catch(() => '');
  const pid = Number(raw.trim().split(/\s+/)[0]);
  return Number.isInteger(pid) && pid > 0 && pidAlive(pid) ? pid : null;
}

export class Haproxy {
  constructor(
    readonly settings: HaproxySettings,
    readonly binary: string = process.env.HOODY_HAPROXY_BIN ?? 'haproxy',
  ) {}

  get layout() {
    return this.settings.layout;
  }

  /** The pid in the pid file when that process lives. */
  pid(): Promise<number | null> {
    return runningPid(this.layout.pidFile);
  }

  /**
   * One run-time API command (one connection each: the socket answers and closes). A payload goes after `<<`,
   * ended by an empty line (certificates, crt-list lines, map entries).
   */
  command(cmd: string, payload?: string, timeoutMs = 5_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = connect(this.layout.adminSocket);
      let out = '';
      s.setEncoding('utf8');
      s.setTimeout(timeoutMs, () => s.destroy(new HaproxyError(`no answer to ${cmd.split(' ')[0]} within ${timeoutMs} ms`, 'admin-socket', [cmd], '')));
      s.on('data', (d: string) => {
        out += d;
      });
      s.on('error', (err) => reject(new HaproxyError(`admin socket: ${err.message}`, 'admin-socket', [cmd], '')));
      s.on('close', () => resolve(out.trim()));
      s.end(payload === undefined ? `${cmd}\n` : `${cmd} <<\n${payload.trimEnd()}\n\n`);
    });
  }

  /** Whether this instance's HAProxy answers on its admin socket. */
  async answers(): Promise<boolean> {
    if (!existsSync(this.layout.adminSocket)) return false;
    return this.command('show info', undefined, 1_000).then(
      (out) => out.includes('Pid:'),
      () => false,
    );
  }

  private async answersWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (await this.answers()) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  private async writeFiles(): Promise<boolean> {
    const l = this.layout;
    await mkdir(l.certDir, { recursive: true, mode: 0o700 });
    await mkdir(l.errorDir, { recursive: true, mode: 0o700 });
    for (const [name, page] of Object.entries(errorPages())) await writeAtomic(join(l.errorDir, name), page, 0o644);
    for (const f of [l.routesMap, l.redirectMap, l.serversMap]) if (!existsSync(f)) await writeAtomic(f, '');
    await writeAtomic(l.opensslConf, opensslConfig(), 0o644);
    const config = renderHaproxyConfig(this.settings);
    const before = await readFile(l.config, 'utf8').catch(() => '');
    if (before === config) return false;
    await writeAtomic(l.config, config);
    return true;
  }

  /** Checks the configuration with `haproxy -c` (files must be in place). */
  async check(): Promise<void> {
    await this.run(['-c', '-q', '-f', this.layout.config]);
  }

  private run(args: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const out = openSync(this.layout.log, 'a');
      const child = spawn(this.binary, args, { detached: true, stdio: ['ignore', out, 'pipe'], env: { ...process.env, OPENSSL_CONF: this.layout.opensslConf } });
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        stderr += d;
      });
      child.on('error', (err) => reject(new HaproxyError(`${this.binary}: ${err.message}`, this.binary, args, stderr)));
      child.on('exit', (code) => {
        if (code === 0) resolve();
        else reject(new HaproxyError(`${this.binary} exited with ${code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`, this.binary, args, stderr));
      });
      child.unref();
    });
  }

  /**
   * Makes sure this instance's HAProxy runs the current configuration: adopts a running one (the data plane
   * outlives hoodyd), reloads it when the configuration changed (`-sf`: the old process finishes its
   * connections), or starts it detached. The crt-list and maps must be written before.
   */
  async ensure(): Promise<'adopted' | 'reloaded' | 'started'> {
    const changed = await this.writeFiles();
    const pid = await this.pid();
    // A running HAProxy of this configuration is adopted, given a few seconds to answer on a loaded box: a reload
    // that is not needed resets the connections waiting in its accept queue.
    if (pid && !changed && (await this.answersWithin(5_000))) return 'adopted';
    await this.check();
    const base = ['-D', '-f', this.layout.config, '-p', this.layout.pidFile];
    await this.run(pid ? [...base, '-sf', String(pid)] : base);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const now = await this.pid();
      if (now && now !== pid && (await this.answers())) return pid ? 'reloaded' : 'started';
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new HaproxyError(`haproxy did not answer on ${this.layout.adminSocket}; see ${this.layout.log}`, this.binary, base, '');
  }

}

/** Stops the HAProxy of the instance on this state dir, if one runs (tests and benchmarks clean up with it). */
export async function stopHaproxyOf(stateDir: string): Promise<void> {
  await stopPid(await runningPid(join(stateDir, 'dataplane', 'haproxy.pid')));
}

async function stopPid(pid: number | null): Promise<void> {
  if (!pid) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 5_000;
  while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
}
