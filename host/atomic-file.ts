import { rename, writeFile } from 'node:fs/promises';

/** Writes a file whole or not at all: a temp file beside it, then a rename (readers never see half of it). */
export async function writeAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  await writeFile(`${path}.tmp`, data, { mode });
  await rename(`${path}.tmp`, path);
}
