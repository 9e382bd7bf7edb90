import { run } from './command.js';

export interface LoopbackRedirect {
  /** Port the container dials on its own loopback (curl resolves *.localhost to 127.0.0.1 itself). */
  fromPort: number;
  toHost: string;
  toPort: number;
}

const CHAIN = 'HOODY_LOOPBACK';

async function inNetns(pid: number, command: string, args: string[]): Promise<string> {
  return (await run('nsenter', [`--net=/proc/${pid}/ns/net`, command, ...args])).stdout;
}

/**
 * Sends a container's loopback connections on the given ports to the host's listeners. Needed because
 * curl (and browsers) resolve `*.localhost` to 127.0.0.1 without asking /etc/hosts, so inside a container
 * `https://cron.<ctr>.hoody.localhost` would otherwise dial the container itself. Idempotent: our own
 * chain is flushed and refilled. Runs in the container's network namespace only.
 */
export async function redirectLoopback(pid: number, redirects: readonly LoopbackRedirect[]): Promise<void> {
  await inNetns(pid, 'sysctl', ['-q', '-w', 'net.ipv4.conf.all.route_localnet=1']);
  const hasChain = await inNetns(pid, 'iptables', ['-t', 'nat', '-S', CHAIN]).then(
    () => true,
    () => false,
  );
  if (hasChain) await inNetns(pid, 'iptables', ['-t', 'nat', '-F', CHAIN]);
  else {
    await inNetns(pid, 'iptables', ['-t', 'nat', '-N', CHAIN]);
    await inNetns(pid, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', '-o', 'lo', '-d', '127.0.0.1/32', '-p', 'tcp', '-j', CHAIN]);
    await inNetns(pid, 'iptables', ['-t', 'nat', '-A', 'POSTROUTING', '-s', '127.0.0.1/32', '!', '-o', 'lo', '-j', 'MASQUERADE']);
  }
  for (const r of redirects) {
    await inNetns(pid, 'iptables', [
      '-t', 'nat', '-A', CHAIN, '-p', 'tcp', '--dport', String(r.fromPort), '-j', 'DNAT', '--to-destination', `${r.toHost}:${r.toPort}`,
    ]);
  }
}
