import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../host/free-port.js';

export interface EtcdCluster {
  /** Client endpoints, host:port, one per member. */
  endpoints: string[];
  /** SIGKILL of member i (its data dir stays, so start(i) brings it back as the same member). */
  kill(i: number): Promise<void>;
  start(i: number): Promise<void>;
  /** Starts every member not running (a cluster made with `start: false`, or members killed). */
  startAll(): Promise<void>;
  /** Waits until every running member reports healthy (a quorum with a leader). */
  healthy(timeoutMs?: number): Promise<void>;
  /** The last lines a member wrote (for failure messages). */
  output(i: number): string;
  stop(): Promise<void>;
}

interface Member {
  name: string;
  client: number;
  peer: number;
  proc: ChildProcess | null;
  out: string;
}

/** Debian's etcd, `size` members on free loopback ports, data dirs under one temp dir (removed by stop()). */
export async function startEtcdCluster(size = 3, opts: { start?: boolean } = {}): Promise<EtcdCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'hoody-etcd-'));
  const token = `hoody-test-${randomBytes(4).toString('hex')}`;
  const members: Member[] = [];
  for (let i = 0; i < size; i++) members.push({ name: `m${i}`, client: await freePort(), peer: await freePort(), proc: null, out: '' });
  const cluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(',');

  const launch = (m: Member) => {
    const args = [
      `--name=${m.name}`,
      `--data-dir=${join(dir, m.name)}`,
      `--listen-client-urls=http://127.0.0.1:${m.client}`,
      `--advertise-client-urls=http://127.0.0.1:${m.client}`,
      `--listen-peer-urls=http://127.0.0.1:${m.peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${m.peer}`,
      `--initial-cluster=${cluster}`,
      `--initial-cluster-token=${token}`,
      '--initial-cluster-state=new', // ignored once the data dir holds the member (a restart)
      '--logger=zap', // the default capnslog logger is deprecated and noisy on 3.4
      '--log-level=warn',
    ];
    const p = spawn('etcd', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (c: Buffer) => {
      m.out = (m.out + c.toString()).slice(-16 * 1024);
    };
    p.stdout?.on('data', keep);
    p.stderr?.on('data', keep);
    m.proc = p;
  };
  const healthy = async (m: Member) => {
    const r = await fetch(`http://127.0.0.1:${m.client}/health`, { signal: AbortSignal.timeout(1000) }).catch(() => null);
    return r?.ok === true && ((await r.json()) as { health?: string }).health === 'true';
  };
  const waitHealthy = async (list: Member[], timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    for (const m of list) {
      while (!(await healthy(m))) {
        if (m.proc?.exitCode !== null) throw new Error(`etcd ${m.name} exited (${m.proc?.exitCode}):\n${m.out}`);
        if (Date.now() > deadline) throw new Error(`etcd ${m.name} not healthy in ${timeoutMs} ms:\n${m.out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const kill = async (m: Member) => {
    const p = m.proc;
    m.proc = null;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  };
  const stop = async () => {
    for (const m of members) await kill(m);
    await rm(dir, { recursive: true, force: true });
  };
  if (opts.start !== false) {
    try {
      for (const m of members) launch(m);
      await waitHealthy(members);
    } catch (err) {
      await stop();
      throw err;
    }
  }
  return {
    endpoints: members.map((m) => `127.0.0.1:${m.client}`),
    kill: (i) => kill(members[i]!),
    start: async (i) => {
      const m = members[i]!;
      if (m.proc) return;
      launch(m);
    },
    startAll: async () => {
      for (const m of members) if (!m.proc) launch(m);
    },
    healthy: (timeoutMs) => waitHealthy(members.filter((m) => m.proc), timeoutMs),
    output: (i) => members[i]!.out,
    stop,
  };
}
