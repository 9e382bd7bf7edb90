import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HostCa } from '../containers/tls/ca.js';

export interface HostTrust {
  ca: HostCa;
  /** The host CA alone, and the system bundle plus the host CA (mounted into containers). */
  caPath: string;
  bundlePath: string;
}

const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/** Loads (or makes, once) the host CA and writes the trust bundle that containers mount. */
export async function loadHostTrust(stateDir: string): Promise<HostTrust> {
  const dir = join(stateDir, 'keys');
  const ca = await HostCa.loadOrCreate(dir);
  const system = existsSync(SYSTEM_BUNDLE) ? await readFile(SYSTEM_BUNDLE, 'utf8') : '';
  const bundlePath = join(dir, 'ca-bundle.crt');
  await writeFile(`${bundlePath}.tmp`, `${system.trimEnd()}\n${ca.certPem}`);
  await rename(`${bundlePath}.tmp`, bundlePath);
  return { ca, caPath: join(dir, 'ca.crt'), bundlePath };
}
