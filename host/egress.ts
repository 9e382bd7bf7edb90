import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { run } from './command.js';

/**
 * The egress policy of one daemon's containers, enforced on the host rather than inside each container:
 * every container of a daemon sits on that daemon's own bridge, and host-level chains bound to the bridge's
 * interface name hold whether or not the daemon (or even the bridge) exists. A container restarted by the
 * engine while hoodyd is down is filtered from its first packet.
 */
export interface EgressNames {
  /** Docker network and bridge interface (<= 15 chars, IFNAMSIZ). */
  network: string;
  bridge: string;
  /** Traffic from the bridge to any address of the host (INPUT). */
  inChain: string;
  /** Traffic from the bridge routed elsewhere (DOCKER-USER, which Docker evaluates first and never flushes). */
  fwdChain: string;
}

/** Names keyed by the daemon's instance id (a hash of its state dir), so daemons sharing an engine never collide. */
export function egressNames(instance: string): EgressNames {
  return { network: `hoody-${instance}`, bridge: `hoody-${instance}`, inChain: `HOODY-${instance}-IN`, fwdChain: `HOODY-${instance}-FWD` };
}

export type IpFamily = 4 | 6;

/** Where each family's forward chain is jumped to from: Docker runs ip6tables only when asked, so v6 uses FORWARD. */
const FORWARD_PARENT: Record<IpFamily, string> = { 4: 'DOCKER-USER', 6: 'FORWARD' };
const LINK_LOCAL: Record<IpFamily, string> = { 4: '169.254.0.0/16', 6: 'fe80::/10' };

/**
 * The rules file for one family (iptables-restore --noflush: only hoody's two chains are declared, so only
 * they are replaced, whole and atomically). From the bridge: the host only on the public ports; no other
 * container (the bridge itself, docker0, any other Docker or hoody bridge); no link-local (cloud metadata).
 */
export function hostEgressRules(names: EgressNames, allowedPorts: readonly number[], family: IpFamily): string {
  const ports = [...new Set(allowedPorts.filter((p) => p > 0))].sort((a, b) => a - b);
  const reject = family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable';
  const lines = ['*filter', `:${names.inChain} - [0:0]`, `:${names.fwdChain} - [0:0]`];
  const i = `-A ${names.inChain}`;
  lines.push(`${i} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`);
  if (ports.length) lines.push(`${i} -p tcp -m multiport --dports ${ports.join(',')} -j ACCEPT`);
  lines.push(`${i} -p tcp -j REJECT --reject-with tcp-reset`, `${i} -j REJECT --reject-with ${reject}`);
  const f = `-A ${names.fwdChain}`;
  lines.push(`${f} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN`);
  for (const out of [names.bridge, 'hoody-+', 'docker0', 'br-+']) lines.push(`${f} -o ${out} -j REJECT --reject-with ${reject}`);
  lines.push(`${f} -d ${LINK_LOCAL[family]} -j REJECT --reject-with ${reject}`, `${f} -j RETURN`, 'COMMIT');
  return `${lines.join('\n')}\n`;
}

function tool(family: IpFamily): string {
  return family === 4 ? 'iptables' : 'ip6tables';
}

/** The two jumps into hoody's chains; bound to the bridge's name, which iptables matches even before it exists. */
function jumps(names: EgressNames, family: IpFamily): { parent: string; rule: string[] }[] {
  return [
    { parent: 'INPUT', rule: ['-i', names.bridge, '-j', names.inChain] },
    { parent: FORWARD_PARENT[family], rule: ['-i', names.bridge, '-j', names.fwdChain] },
  ];
}

/** The filter table as `-S` lines: one call tells which chains and jumps exist. */
async function ruleLines(family: IpFamily): Promise<Set<string>> {
  return new Set((await run(tool(family), ['-w', '-S'])).stdout.split('\n').map((l) => l.trim()));
}

/**
 * Installs (or replaces) the policy for both families: one iptables-restore each that replaces hoody's chains and
 * adds the jumps into them at the top of their parents when missing. Idempotent; runs on every start and
 * whenever the public ports change (two process spawns per family: the daemon's restart time matters).
 */
export async function applyHostEgress(names: EgressNames, allowedPorts: readonly number[]): Promise<void> {
  for (const family of [4, 6] as const) {
    let have = await ruleLines(family);
    const parent = FORWARD_PARENT[family];
    // Docker creates DOCKER-USER at its start; before that (boot), hoody's rules must already be in place.
    if (!have.has(`-N ${parent}`) && !have.has(`-P ${parent} ACCEPT`) && !have.has(`-P ${parent} DROP`)) {
      await run(tool(family), ['-w', '-N', parent]);
      have = await ruleLines(family);
    }
    const missing = jumps(names, family).filter((j) => !have.has(`-A ${j.parent} ${j.rule.join(' ')}`));
    const text = hostEgressRules(names, allowedPorts, family).replace(/COMMIT\n$/, '');
    const add = missing.map((j) => `-I ${j.parent} 1 ${j.rule.join(' ')}`);
    await run(`${tool(family)}-restore`, ['-w', '--noflush'], { input: `${text}${add.map((l) => `${l}\n`).join('')}COMMIT\n` });
  }
}

/** Removes the jumps and the chains (the daemon's state is being destroyed); missing pieces are fine. */
export async function removeHostEgress(names: EgressNames): Promise<void> {
  for (const family of [4, 6] as const) {
    const have = await ruleLines(family);
    const lines: string[] = [];
    for (const j of jumps(names, family)) if (have.has(`-A ${j.parent} ${j.rule.join(' ')}`)) lines.push(`-D ${j.parent} ${j.rule.join(' ')}`);
    for (const chain of [names.inChain, names.fwdChain]) if (have.has(`-N ${chain}`)) lines.push(`-F ${chain}`, `-X ${chain}`);
    if (lines.length) await run(`${tool(family)}-restore`, ['-w', '--noflush'], { input: `*filter\n${lines.join('\n')}\nCOMMIT\n` });
  }
}

export interface EgressNetwork {
  name: string;
  /** The bridge's address: the host as the containers see it. */
  gateway: string;
  subnet: string;
}

/**
 * The daemon's own bridge network: containers on it cannot talk to each other (icc off), and its interface
 * name is the one the host chains are bound to. Created when missing; labelled with the instance id.
 */
export async function ensureEgressNetwork(docker: Docker, names: EgressNames, instance: string): Promise<EgressNetwork> {
  const read = async (): Promise<EgressNetwork | null> => {
    try {
      const n = (await docker.getNetwork(names.network).inspect()) as { Name: string; IPAM?: { Config?: { Subnet?: string; Gateway?: string }[] } };
      const c = n.IPAM?.Config?.[0] ?? {};
      return { name: n.Name, gateway: c.Gateway ?? '', subnet: c.Subnet ?? '' };
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return null;
      throw err;
    }
  };
  const existing = await read();
  if (existing) return existing;
  try {
    await docker.createNetwork({
      Name: names.network,
      Driver: 'bridge',
      CheckDuplicate: true,
      Labels: { 'io.hoody.instance': instance },
      Options: {
        'com.docker.network.bridge.name': names.bridge,
        'com.docker.network.bridge.enable_icc': 'false',
        'com.docker.network.bridge.enable_ip_masquerade': 'true',
      },
    });
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode !== 409) throw err; // a concurrent start made it
  }
  const made = await read();
  if (!made) throw new Error(`docker network ${names.network} was not created`);
  return made;
}

/** Removes the daemon's network (its containers must be gone first); a missing one is fine. */
export async function removeEgressNetwork(docker: Docker, names: EgressNames): Promise<void> {
  try {
    await docker.getNetwork(names.network).remove();
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode !== 404) throw err;
  }
}

/** The public ports last put in force, kept in the state dir so a boot can restore the rules before the engine. */
const PORTS_FILE = 'egress-ports.json';

export async function savedEgressPorts(stateDir: string): Promise<number[] | null> {
  try {
    const ports = JSON.parse(await readFile(join(stateDir, PORTS_FILE), 'utf8')) as unknown;
    return Array.isArray(ports) && ports.every((p) => Number.isInteger(p)) ? (ports as number[]) : null;
  } catch {
    return null;
  }
}

export async function saveEgressPorts(stateDir: string, ports: readonly number[]): Promise<void> {
  await writeFile(join(stateDir, PORTS_FILE), `${JSON.stringify(ports)}\n`);
}

/** Everything the policy put on the host: jumps, chains, network and the saved ports. */
export async function destroyHostEgress(docker: Docker, instance: string, stateDir: string): Promise<void> {
  const names = egressNames(instance);
  await removeEgressNetwork(docker, names);
  await removeHostEgress(names);
  await rm(join(stateDir, PORTS_FILE), { force: true });
}
