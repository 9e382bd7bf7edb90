import { startTestDaemon, type TestDaemon } from './host.js';

/** One hoodyd of a test fleet, with its public HTTP port (HAProxy's). */
export interface FleetTestHost {
  name: string;
  d: TestDaemon;
  http: number;
}

/**
 * Hosts `a`, `b`, `c` (or `names`) of fleet `fleet` on `endpoints`, each a real hoodyd on its own state dir, started
 * side by side and returned sorted by name. Short timers (lease TTL 4 s, re-list 3 s) so the cases stay fast; `env`
 * overrides or adds. One that fails to start: the others are destroyed before the error is thrown.
 */
export async function startFleetHosts(endpoints: readonly string[], fleet: string, env: NodeJS.ProcessEnv = {}, names = ['a', 'b', 'c']): Promise<FleetTestHost[]> {
  const base = {
    HOODY_FLEET_ETCD: endpoints.join(','),
    HOODY_FLEET_NAME: fleet,
    HOODY_FLEET_ADDRESS: '127.0.0.1',
    HOODY_FLEET_TTL: '4',
    HOODY_FLEET_RELIST_MS: '3000',
    HOODY_FLEET_PUBLISH_MS: '1000',
    ...env,
  };
  const started = await Promise.allSettled(names.map((name) => startTestDaemon({ ...base, HOODY_FLEET_HOST: name })));
  const hosts: FleetTestHost[] = [];
  started.forEach((s, i) => {
    if (s.status === 'fulfilled') hosts.push({ name: names[i]!, d: s.value, http: 0 });
  });
  try {
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    for (const h of hosts) h.http = (await h.d.client.call<{ listeners: { http: number } }>('GET', '/v1/host')).listeners.http;
  } catch (err) {
    await Promise.allSettled(hosts.map((h) => h.d.destroy()));
    throw err;
  }
  return hosts.sort((x, y) => x.name.localeCompare(y.name));
}
