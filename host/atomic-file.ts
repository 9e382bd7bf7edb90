import { link, rename, rm, stat, writeFile } from 'node:fs/promises';

/** Writes a file whole or not at all: a temp file beside it, then a rename (readers never see half of it). */
export async function writeAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  await writeFile(`${path}.tmp`, data, { mode });
  await rename(`${path}.tmp`, path);
}

/**
 * Makes `to` a hard link of `from` (one inode wherever it is linked: one copy in page cache), through a temp link
 * and a rename, so `to` is never missing; a no-op when it already is that inode.
 */
export async function linkAtomic(from: string, to: string): Promise<void> {
  const [want, have] = await Promise.all([stat(from), stat(to).catch(() => null)]);
  if (have?.ino === want.ino) return;
  const tmp = `${to}.tmp`;
  await rm(tmp, { force: true });
  await link(from, tmp);
  await rename(tmp, to);
}
