import { readFileSync } from 'node:fs';
import { hostname, networkInterfaces } from 'node:os';

/** Every address of the box's interfaces (lowercase; IPv6 without zone). */
export function interfaceAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) out.push(a.address.toLowerCase().replace(/%.*$/, ''));
  }
  return out;
}

/**
 * The names this box answers to: its hostname, the names /etc/hosts gives it (its FQDN, as `hostname -f` finds
 * it, and every name on a loopback or own-address line), its interface addresses and any `extra` names (an
 * operator's HOODY_RESERVED_NAMES). Read without DNS, so a slow resolver never delays the daemon.
 */
export function ownHostNames(extra: readonly string[] = [], hostsFile = '/etc/hosts'): Set<string> {
  const me = hostname().toLowerCase();
  const addresses = interfaceAddresses();
  const names = new Set<string>([me, ...addresses, ...extra.map((n) => n.trim().toLowerCase().replace(/\.$/, '')).filter(Boolean)]);
  let text = '';
  try {
    text = readFileSync(hostsFile, 'utf8');
  } catch {
    // no hosts file: the hostname and the addresses are all we know
  }
  for (const line of text.split('\n')) {
    const [addr, ...aliases] = line.replace(/#.*$/, '').trim().split(/\s+/);
    if (!addr || !aliases.length) continue;
    const lower = aliases.map((a) => a.toLowerCase().replace(/\.$/, ''));
    const own = addr.startsWith('127.') || addr === '::1' || addresses.includes(addr.toLowerCase()) || lower.includes(me);
    if (own) for (const a of lower) names.add(a);
  }
  return names;
}
