import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readdir, readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { basename } from 'node:path';
import Database from 'better-sqlite3';
import { LABEL_INSTANCE, LABEL_NAME } from '../../containers/context.js';
import { loadConfig } from '../../daemon/config.js';
import { DockerEngine } from '../../host/engine.js';
import { run } from '../../host/command.js';
import { poolPaths } from '../../host/pool.js';
import { BtrfsDriver } from '../../host/storage/btrfs.js';
import type { TestDaemon } from './host.js';

/** What came back: status, headers and the raw body bytes. */
export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text(): string;
  json<T = Record<string, unknown>>(): T;
  /** Bytes of the request line and header block sent (a proxy may refuse a head bigger than its buffer). */
  sentHeadBytes: number;
}

export interface SendOptions {
  port?: number;
  /** Unix socket (the admin API) instead of a TCP port on 127.0.0.1. */
  socketPath?: string;
  host?: string;
  path: string;
  method?: string;
  /** Bytes as they are; a string as UTF-8; anything else as JSON. */
  body?: Buffer | string | object;
  headers?: Record<string, string>;
  tls?: { insecure: true; servername?: string };
  timeoutMs?: number;
}

function reply(status: number, headers: IncomingHttpHeaders, body: Buffer, sentHeadBytes: number): Reply {
  return { status, headers, body, text: () => body.toString('utf8'), json: <T>() => JSON.parse(body.toString('utf8')) as T, sentHeadBytes };
}

/** One request on a fresh connection, bytes in and bytes out (fetch would normalize paths and hosts). */
export function send(opts: SendOptions): Promise<Reply> {
  const payload =
    opts.body === undefined ? undefined : Buffer.isBuffer(opts.body) ? opts.body : Buffer.from(typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body));
  const headers: Record<string, string | number> = { ...(opts.host !== undefined ? { host: opts.host } : {}), ...(opts.headers ?? {}) };
  if (payload) {
    headers['content-length'] = payload.length;
    if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type'))
      headers['content-type'] = Buffer.isBuffer(opts.body) || typeof opts.body === 'string' ? 'application/octet-stream' : 'application/json';
  }
  return new Promise((resolve, reject) => {
    const base = {
      ...(opts.socketPath ? { socketPath: opts.socketPath } : { host: '127.0.0.1', port: opts.port }),
      path: opts.path,
      method: opts.method ?? 'GET',
      headers,
      agent: false as const,
    };
    const done = (res: import('node:http').IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const head = `${base.method} ${opts.path} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
      res.on('end', () => resolve(reply(res.statusCode ?? 0, res.headers, Buffer.concat(chunks), Buffer.byteLength(head))));
      res.on('error', reject);
    };
    const req = opts.tls
      ? httpsRequest({ ...base, servername: opts.tls.servername ?? opts.host?.replace(/:\d+$/, ''), rejectUnauthorized: false }, done)
      : httpRequest(base, done);
    req.setTimeout(opts.timeoutMs ?? 60_000, () => req.destroy(new Error(`timeout after ${opts.timeoutMs ?? 60_000} ms`)));
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

/** The catalogue code of an error answer, or null when the body is not the `{"error":{code,message}}` shape. */
export function errorShape(r: Reply): { code: string; message: string } | null {
  try {
    const e = r.json<{ error?: { code?: unknown; message?: unknown } }>().error;
    if (e && typeof e.code === 'string' && /^HOODY_[A-Z0-9_]+$/.test(e.code) && typeof e.message === 'string') return { code: e.code, message: e.message };
  } catch {
    // not JSON
  }
  return null;
}

/** Raw bytes on a fresh TCP connection; resolves with everything the server sent until it closed. */
export function rawExchange(port: number, text: string | Buffer, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.end(text));
    const chunks: Buffer[] = [];
    s.setTimeout(timeoutMs, () => s.destroy());
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.on('error', reject);
  });
}

/** `PRAGMA integrity_check` and `foreign_key_check` on a read-only handle (the daemon is expected to be dead). */
export function checkDatabase(dbPath: string): { integrity: string; foreignKeyViolations: number } {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const integrity = (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join('; ');
    const fk = (db.pragma('foreign_key_check') as unknown[]).length;
    return { integrity, foreignKeyViolations: fk };
  } finally {
    db.close();
  }
}

/** Level-0 qgroups of the pool that belong to no subvolume (left behind by a delete). */
export async function staleQgroups(poolRoot: string): Promise<Set<string>> {
  const live = new Set<string>(['0/5']);
  const list = await run('btrfs', ['subvolume', 'list', poolRoot]);
  for (const line of list.stdout.split('\n')) {
    const id = /^ID (\d+) /.exec(line)?.[1];
    if (id) live.add(`0/${id}`);
  }
  const ids = await new BtrfsDriver().qgroupIds(poolRoot);
  return new Set([...ids].filter((q) => q.startsWith('0/') && !live.has(q)));
}

/**
 * Rows, volumes, qgroups and engine containers of a daemon agree: every row is ready with its volume (and its
 * quota) and its engine container; every volume and every labelled engine container has its row; no stale
 * qgroup beyond `baseline` (those already there before the test). Returns the problems found (empty: consistent).
 */
export async function consistencyProblems(d: TestDaemon, baseline: ReadonlySet<string> = new Set()): Promise<string[]> {
  const config = loadConfig({}, d.env);
  const paths = poolPaths(config.stateDir);
  const storage = new BtrfsDriver();
  const engine = new DockerEngine(config.dockerSocket);
  const problems: string[] = [];
  const rows = await d.client.call<{ name: string; state: string; engineId: string | null; diskBytes: number | null }[]>('GET', '/v1/containers');
  const volumes = new Set((await storage.listVolumes(paths.containers)).map((p) => basename(p)));
  const live = await engine.list({ [LABEL_INSTANCE]: config.instance });
  const liveByName = new Map(live.map((c) => [c.labels[LABEL_NAME] ?? '', c]));
  for (const row of rows) {
    if (row.state !== 'running') problems.push(`${row.name}: state ${row.state}`);
    if (!volumes.has(row.name)) problems.push(`${row.name}: row without a volume`);
    else if (row.diskBytes !== null) {
      const u = await storage.usage(`${paths.containers}/${row.name}`).catch(() => null);
      if (u?.limitBytes !== row.diskBytes) problems.push(`${row.name}: qgroup limit ${u?.limitBytes} != ${row.diskBytes}`);
    }
    const c = liveByName.get(row.name);
    if (!c) problems.push(`${row.name}: row without an engine container`);
    else if (c.id !== row.engineId) problems.push(`${row.name}: engine id ${c.id} != row's ${row.engineId}`);
  }
  const names = new Set(rows.map((r) => r.name));
  for (const v of volumes) if (!names.has(v)) problems.push(`volume ${v} without a row`);
  for (const c of live) if (!names.has(c.labels[LABEL_NAME] ?? '')) problems.push(`engine container ${c.name} without a row`);
  // A deleted subvolume's qgroup goes once the cleaner dropped it: give it a moment.
  let stale: string[] = [];
  for (let i = 0; i < 20; i++) {
    stale = [...(await staleQgroups(paths.root))].filter((q) => !baseline.has(q));
    if (!stale.length) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  for (const q of stale) problems.push(`stale qgroup ${q}`);
  return problems;
}

/** The daemon process is still there (not a zombie, not exited). */
export function alive(d: TestDaemon): boolean {
  return d.process.exitCode === null && d.process.signalCode === null;
}

/** Live processes whose environment names this state dir (the daemon, its exec worker, commands in flight). */
export async function processesOf(stateDir: string): Promise<{ pid: number; cmdline: string }[]> {
  const out: { pid: number; cmdline: string }[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const env = await readFile(`/proc/${p}/environ`).catch(() => null);
    if (!env?.toString('latin1').split('\0').includes(`HOODY_STATE_DIR=${stateDir}`)) continue;
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    if (!stat || /\) Z /.test(stat)) continue;
    const cmdline = (await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')).split('\0').join(' ').trim();
    out.push({ pid: Number(p), cmdline });
  }
  return out;
}
