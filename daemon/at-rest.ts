import { chmodSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Modes of what the daemon keeps at rest (issue 10.8). The state dir and the keys dir may be traversed but not
 * listed (0711: the engine's remapped root and the bind mounts of the CA bundle pass through them). The database
 * (private keys, tokens in cron commands) with its -wal/-shm, the CA key, the pool image and every log are the
 * daemon's alone (0600). Run at every start, so a host upgraded in place is fixed too.
 */
export const STATE_DIR_MODE = 0o711;
export const PRIVATE_MODE = 0o600;

const PRIVATE_FILES = /^(hoody\.db(-wal|-shm|-journal)?|pool\.img|hoodyd\.log(\.\d+)?|hoodyd\.stderr(\.\d+)?|dockerd\.log)$/;

export function secureStateDir(stateDir: string): void {
  chmodSync(stateDir, STATE_DIR_MODE);
  for (const name of readdirSync(stateDir)) if (PRIVATE_FILES.test(name)) chmodSync(join(stateDir, name), PRIVATE_MODE);
  const keys = join(stateDir, 'keys');
  if (!existsSync(keys)) return;
  chmodSync(keys, STATE_DIR_MODE);
  // Certificates are public (containers mount them); keys and anything else are not.
  for (const name of readdirSync(keys)) chmodSync(join(keys, name), name.endsWith('.crt') ? 0o644 : PRIVATE_MODE);
}
