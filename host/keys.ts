import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The kernel's key quota per non-root user. runc gives each process it starts in a container (its init, every
 * `docker exec`) a session keyring, and under user namespaces every container's root is one host uid, so all
 * containers share one quota (`kernel.keys.maxkeys` 200, `maxbytes` 20000 by default): around 200 containers,
 * every exec fails with "unable to create session key: disk quota exceeded". Tenants cannot add keys themselves
 * (the engine's seccomp profile refuses add_key and keyctl), so a larger quota is runc's alone.
 */
export const KEY_QUOTA = Object.freeze({ maxkeys: 20_000, maxbytes: 2_000_000 });

/** Raises the quota to at least KEY_QUOTA (a larger value is kept); returns what is in force afterwards. */
export async function raiseKeyQuota(dir = '/proc/sys/kernel/keys'): Promise<{ maxkeys: number; maxbytes: number }> {
  const out = { maxkeys: 0, maxbytes: 0 };
  for (const name of ['maxkeys', 'maxbytes'] as const) {
    const file = join(dir, name);
    const now = Number((await readFile(file, 'utf8')).trim());
    if (now < KEY_QUOTA[name]) await writeFile(file, String(KEY_QUOTA[name]));
    out[name] = Number((await readFile(file, 'utf8')).trim());
  }
  return out;
}
