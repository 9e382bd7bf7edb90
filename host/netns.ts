import { CommandError, run } from './command.js';

export interface LoopbackRedirect {
  /** Port the container dials on its own loopback (curl resolves *.localhost to 127.0.0.1 itself). */
  fromPort: number;
  toHost: string;
  toPort: number;
}

/** hoody's chains in a container's nat table; Docker's own (embedded DNS on 127.0.0.11) are left alone. */
export const NETNS_CHAINS = { output: 'HOODY-LO', postrouting: 'HOODY-LO-SNAT' } as const;

/**
 * The rules file for one container's network namespace, for iptables-restore --noflush: only hoody's two
 * chains are declared, so only they are replaced (whole, atomically). The egress policy is not here: it is
 * enforced on the host (host/egress.ts), where the tenant's restarts and the daemon's absence cannot skip it.
 */
export function netnsRules(redirects: readonly LoopbackRedirect[]): string {
  const { output, postrouting } = NETNS_CHAINS;
  const nat = ['*nat', `:${output} - [0:0]`, `:${postrouting} - [0:0]`];
  for (const r of redirects)
    nat.push(`-A ${output} -o lo -d 127.0.0.1/32 -p tcp --dport ${r.fromPort} -j DNAT --to-destination ${r.toHost}:${r.toPort}`);
  nat.push(`-A ${postrouting} -s 127.0.0.1/32 ! -o lo -j MASQUERADE`, 'COMMIT');
  return `${nat.join('\n')}\n`;
}

/**
 * Applies the loopback redirects in a container's network namespace (curl and browsers resolve `*.localhost`
 * to 127.0.0.1 without asking /etc/hosts, so inside a container `https://cron.<ctr>.hoody.localhost` would
 * otherwise dial the container itself). A convenience, not a boundary: it is set after start.
 */
export async function applyNetnsRules(pid: number, redirects: readonly LoopbackRedirect[]): Promise<void> {
  const ns = `--net=/proc/${pid}/ns/net`;
  await run('nsenter', [ns, 'sysctl', '-q', '-w', 'net.ipv4.conf.all.route_localnet=1']);
  await run('nsenter', [ns, 'iptables-restore', '-w', '--noflush'], { input: netnsRules(redirects) });
  for (const [parent, chain] of [
    ['OUTPUT', NETNS_CHAINS.output],
    ['POSTROUTING', NETNS_CHAINS.postrouting],
  ] as const) {
    try {
      await run('nsenter', [ns, 'iptables', '-w', '-t', 'nat', '-C', parent, '-j', chain]);
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      await run('nsenter', [ns, 'iptables', '-w', '-t', 'nat', '-I', parent, '1', '-j', chain]);
    }
  }
}
