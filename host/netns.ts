import { run } from './command.js';

export interface LoopbackRedirect {
  /** Port the container dials on its own loopback (curl resolves *.localhost to 127.0.0.1 itself). */
  fromPort: number;
  toHost: string;
  toPort: number;
}

/** hoody's chains in a container's nat table; Docker's own (embedded DNS on 127.0.0.11) are left alone. */
export const NETNS_CHAINS = { output: 'HOODY-LO', postrouting: 'HOODY-LO-SNAT' } as const;

/** The sysctl the redirects need (DNAT to a non-loopback host of packets sent to 127.0.0.1). */
export const ROUTE_LOCALNET = 'net.ipv4.conf.all.route_localnet';

/** Which of hoody's jumps (OUTPUT -> HOODY-LO, POSTROUTING -> HOODY-LO-SNAT) the rules file adds. */
export interface NetnsJumps {
  output: boolean;
  postrouting: boolean;
}

/**
 * The rules file for one container's network namespace, for iptables-restore --noflush: only hoody's two
 * chains are declared, so only they are replaced (whole, atomically). The egress policy is not here: it is
 * enforced on the host (host/egress.ts), where the tenant's restarts and the daemon's absence cannot skip it.
 * `jumps` adds the jumps into them that the namespace does not have yet, in the same transaction.
 */
export function netnsRules(redirects: readonly LoopbackRedirect[], jumps: NetnsJumps = { output: false, postrouting: false }): string {
  const { output, postrouting } = NETNS_CHAINS;
  const nat = ['*nat', `:${output} - [0:0]`, `:${postrouting} - [0:0]`];
  for (const r of redirects)
    nat.push(`-A ${output} -o lo -d 127.0.0.1/32 -p tcp --dport ${r.fromPort} -j DNAT --to-destination ${r.toHost}:${r.toPort}`);
  nat.push(`-A ${postrouting} -s 127.0.0.1/32 ! -o lo -j MASQUERADE`);
  if (jumps.output) nat.push(`-I OUTPUT 1 -j ${output}`);
  if (jumps.postrouting) nat.push(`-I POSTROUTING 1 -j ${postrouting}`);
  nat.push('COMMIT');
  return `${nat.join('\n')}\n`;
}

/** The jumps into hoody's chains missing from an `iptables-save -t nat` of a namespace. */
export function missingJumps(saved: string): NetnsJumps {
  const lines = new Set(saved.split('\n').map((l) => l.trim()));
  return { output: !lines.has(`-A OUTPUT -j ${NETNS_CHAINS.output}`), postrouting: !lines.has(`-A POSTROUTING -j ${NETNS_CHAINS.postrouting}`) };
}

/** Applies in flight per namespace: two at once (create and the start event) would both add the missing jumps. */
const applying = new Map<number, Promise<void>>();

/**
 * Applies the loopback redirects in a container's network namespace (curl and browsers resolve `*.localhost`
 * to 127.0.0.1 without asking /etc/hosts, so inside a container `https://cron.<ctr>.hoody.localhost` would
 * otherwise dial the container itself). A convenience, not a boundary: it is set after start. Two programs
 * (one read, one atomic write): each costs the daemon a process spawn. `routeLocalnet`: the engine already
 * set ROUTE_LOCALNET in it (ContainerSpec.sysctls), so no third program for it.
 */
export function applyNetnsRules(pid: number, redirects: readonly LoopbackRedirect[], routeLocalnet = false): Promise<void> {
  const previous = applying.get(pid) ?? Promise.resolve();
  const mine = previous.catch(() => undefined).then(async () => {
    const ns = `--net=/proc/${pid}/ns/net`;
    if (!routeLocalnet) await run('nsenter', [ns, 'sysctl', '-q', '-w', `${ROUTE_LOCALNET}=1`]);
    const { stdout } = await run('nsenter', [ns, 'iptables-save', '-t', 'nat']);
    await run('nsenter', [ns, 'iptables-restore', '-w', '--noflush'], { input: netnsRules(redirects, missingJumps(stdout)) });
  });
  applying.set(pid, mine);
  const forget = () => {
    if (applying.get(pid) === mine) applying.delete(pid);
  };
  mine.then(forget, forget);
  return mine;
}
