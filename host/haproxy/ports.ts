/** The public ports HAProxy binds: given ones, or (port 0) free ones picked once and kept while it runs. */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from '../free-port.js';

export interface PublicPorts {
  http: number;
  https: number;
}


/**
 * Port 0 means "any free one": a running HAProxy keeps the ports it has (hoodyd restarts under it), else fresh
 * ones are picked. The choice is saved beside HAProxy's other files.
 */
export async function choosePorts(dir: string, wanted: PublicPorts, running: boolean): Promise<PublicPorts> {
  const file = join(dir, 'ports.json');
  const saved = JSON.parse(await readFile(file, 'utf8').catch(() => 'null')) as PublicPorts | null;
  const pick = async (want: number, kept: number | undefined) => (want !== 0 ? want : running && kept ? kept : freePort('0.0.0.0'));
  const ports = { http: await pick(wanted.http, saved?.http), https: await pick(wanted.https, saved?.https) };
  await writeFile(`${file}.tmp`, JSON.stringify(ports));
  await rename(`${file}.tmp`, file);
  return ports;
}
