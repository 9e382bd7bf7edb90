import { run } from './command.js';

export interface LoopbackRedirect {
  /** Port the container dials on its own loopback (curl resolves *.localhost to 127.0.0.1 itself). */
  fromPort: number;
  toHost: string;
  toPort: number;
}

export interface EgressPolicy {
  /** The host as the container sees it, and every other address of the host. */
  hostAddresses: string[];
  /** The host ports a container may reach (hoody's public listeners). */
  allowedHostPorts: number[];
  /** Networks a container may not reach at all (the bridge: other containers; link-local: metadata). */
  blockedNetworks: string[];
}

export interface NetnsRules {
  redirects: readonly LoopbackRedirect[];
  /** null: egress left open (the operator opted in). */
  egress: EgressPolicy | null;
}

/**
 * The rules file for one container's network namespace. Its nat and filter tables are hoody's alone
 * (Docker puts no rules inside a container's namespace), so the whole tables are replaced, idempotently.
 */
export function netnsRules(rules: NetnsRules): string {
  const nat = ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]'];
  for (const r of rules.redirects)
    nat.push(`-A OUTPUT -o lo -d 127.0.0.1/32 -p tcp --dport ${r.fromPort} -j DNAT --to-destination ${r.toHost}:${r.toPort}`);
  nat.push('-A POSTROUTING -s 127.0.0.1/32 ! -o lo -j MASQUERADE', 'COMMIT');
  const filter = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]'];
  const e = rules.egress;
  if (e) {
    filter.push('-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT', '-A OUTPUT -o lo -j ACCEPT');
    const ports = [...new Set(e.allowedHostPorts)].join(',');
    for (const a of e.hostAddresses) {
      filter.push(`-A OUTPUT -d ${a}/32 -p tcp -m multiport --dports ${ports} -j ACCEPT`);
      filter.push(`-A OUTPUT -d ${a}/32 -j REJECT`);
    }
    for (const n of e.blockedNetworks) filter.push(`-A OUTPUT -d ${n} -j REJECT`);
  }
  filter.push('COMMIT');
  return `${[...nat, ...filter].join('\n')}\n`;
}

/**
 * Applies the rules in a container's network namespace: loopback redirects to the host's listeners (curl and
 * browsers resolve `*.localhost` to 127.0.0.1 without asking /etc/hosts, so inside a container
 * `https://cron.<ctr>.hoody.localhost` would otherwise dial the container itself) and the egress policy
 * (no Docker or admin socket is mounted; the host is reachable only on hoody's public ports; other
 * containers and link-local addresses not at all). One iptables-restore call per start.
 */
export async function applyNetnsRules(pid: number, rules: NetnsRules): Promise<void> {
  const ns = `--net=/proc/${pid}/ns/net`;
  await run('nsenter', [ns, 'sysctl', '-q', '-w', 'net.ipv4.conf.all.route_localnet=1']);
  await run('nsenter', [ns, 'iptables-restore'], { input: netnsRules(rules) });
}
