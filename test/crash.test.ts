import assert from 'node:assert/strict';
import { randomBytes, randomInt, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { LABEL_ID, LABEL_INSTANCE, LABEL_NAME } from '../containers/context.js';
import { HostCa } from '../containers/tls/ca.js';
import { loadConfig } from '../daemon/config.js';
import { BUSYBOX_IMAGE } from '../host/images.js';
import { poolPaths } from '../host/pool.js';
import { startTestDaemon, type TestDaemon } from './support/host.js';
import { servedCertificate } from './support/http.js';
import { checkDatabase, consistencyProblems, processesOf, type Reply, send, staleQgroups } from './support/reliability.js';
import { until } from './support/wait.js';

/**
 * Crash safety: clients write over the public and admin APIs while the daemon is SIGKILLed at random moments.
 * Each writer owns its keys and writes them one request at a time, so at a kill each key has one acknowledged
 * value and at most one value whose outcome is unknown (the request in flight): after the restart the key must
 * hold one of those two, whole. CI runs HOODY_CRASH_CYCLES (default 10) kill-restart cycles.
 */
const CYCLES = Math.max(1, Number(process.env.HOODY_CRASH_CYCLES ?? '10'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The name of an atomic write's temp file beside its target (containers/files-tree.ts tempName()). */
const TEMP_FILE = /^\..+\.[0-9a-f]{12}\.tmp$/s;

interface Ports {
  http: number;
  https: number;
}

/** One key: its acknowledged value (null: absent) and the value of a request whose outcome is unknown. */
class Cell<V> {
  maybe: V | null | undefined = undefined;
  constructor(public known: V | null) {}
}

interface Tally {
  cycles: number;
  acked: number;
  checked: number;
  inFlightAtKill: number;
  inFlightApplied: number;
  lost: number;
  problems: string[];
  unexpected: string[];
  integrityOk: number;
  /** `.name.<hex>.tmp` files of writes cut short still on disk after the last recovery (the start sweeps them). */
  tempFiles: number;
}

const tally: Tally = { cycles: 0, acked: 0, checked: 0, inFlightAtKill: 0, inFlightApplied: 0, lost: 0, problems: [], unexpected: [], integrityOk: 0, tempFiles: 0 };

function show(v: unknown): string {
  if (v === null) return 'absent';
  if (Buffer.isBuffer(v)) return `${v.length} bytes ${v.subarray(0, 12).toString('hex')}…`;
  const s = String(v);
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}

/** Compares what is there with what may be there; the cell then holds what is there. */
function settle<V>(what: string, cell: Cell<V>, observed: V | null, eq: (a: V, b: V) => boolean = (a, b) => a === b): void {
  const same = (a: V | null, b: V | null) => (a === null || b === null ? a === b : eq(a, b));
  tally.checked++;
  if (same(observed, cell.known)) {
    // the acknowledged value (the request in flight, if any, did not apply or wrote the same)
  } else if (cell.maybe !== undefined && same(observed, cell.maybe)) {
    tally.inFlightApplied++;
  } else {
    tally.lost++;
    tally.problems.push(`${what}: acknowledged ${show(cell.known)}${cell.maybe !== undefined ? ` (or in flight ${show(cell.maybe)})` : ''}, found ${show(observed)}`);
  }
  cell.known = observed;
  cell.maybe = undefined;
}

interface Run {
  ports: Ports;
  /** Set just before the SIGKILL: writers send nothing new. */
  killed: boolean;
  adminInFlight: boolean;
  /** The container create or delete whose answer the kill cut off, if any. */
  adminCut?: { op: 'create' | 'delete'; name: string };
}

describe('crash safety: SIGKILL at random moments while clients write', () => {
  let d: TestDaemon;
  let ports: Ports;
  let owner = '';
  let minuteEntry = '';
  const qgroupsBefore = new Set<string>();
  const t0 = Date.now();

  // The model: every key a writer owns.
  const files = new Map<string, Cell<Buffer>>();
  const scripts = new Map<string, Cell<Buffer>>();
  const entries = new Map<string, Cell<string>>();
  let pendingEntry: { comment: string; value: string } | null = null;
  const routes = new Map<string, Cell<string>>();
  const certs = new Map<string, Cell<string>>();
  const certPool = new Map<string, { cert: string; key: string; fingerprint: string }[]>();
  const rot = { current: '', previous: '', inFlight: false };
  const containers = new Map<string, Cell<true>>();
  let nextContainer = 0;

  const api = (method: string, path: string, body?: Buffer | string | object, token = owner, host = 'api.a.hoody.localhost'): Promise<Reply> =>
    send({ port: ports.http, host, path, method, body, headers: { authorization: `Bearer ${token}` }, timeoutMs: 30_000 });

  before(async () => {
    d = await startTestDaemon({ HOODY_TOKEN_FAILURE_LIMIT: '100000' });
    for (const q of await staleQgroups(poolPaths(loadConfig({}, d.env).stateDir).root)) qgroupsBefore.add(q);
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    owner = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'a' })).token;
    rot.current = (await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens', { user: 'rot', scopes: ['cron'] })).token;
    const minute = await api('POST', '/users/me/entries', { schedule: '* * * * *', command: 'sleep 2; echo tick', comment: 'minute' }, owner, 'cron.a.hoody.localhost');
    assert.equal(minute.status, 201, minute.text());
    minuteEntry = minute.json<{ id: string }>().id;
    for (let w = 0; w < 2; w++) for (let k = 0; k < 4; k++) files.set(`w${w}/d${k % 2}/f${k}.bin`, new Cell<Buffer>(null));
    for (let k = 0; k < 4; k++) scripts.set(`crash/s${k}.ts`, new Cell<Buffer>(null));
    for (let k = 0; k < 4; k++) routes.set(`r${k}.crash.test`, new Cell<string>(null));
    const ca = await HostCa.loadOrCreate(join(d.stateDir, 'test-ca'));
    for (let k = 0; k < 2; k++) {
      const domain = `c${k}.crash.test`;
      certs.set(domain, new Cell<string>(null));
      const pool: { cert: string; key: string; fingerprint: string }[] = [];
      for (let i = 0; i < 6; i++) {
        const pem = await ca.issue([domain]);
        pool.push({ ...pem, fingerprint: new X509Certificate(pem.cert).fingerprint256 });
      }
      certPool.set(domain, pool);
    }
  });
  after(() => d?.destroy());

  // ---- writers: each loops until the kill, one request at a time

  /** The data plane's answer for a daemon killed under the request (or already dead): an unknown outcome. */
  const daemonGone = (run: Run, r: Reply) => run.killed && r.status === 503 && r.text().includes('"HOODY_DAEMON_UNAVAILABLE"');

  /** Sends one write; null when the connection failed (the daemon died under it: outcome unknown). */
  async function attempt(run: Run, what: string, go: () => Promise<Reply>): Promise<Reply | null> {
    try {
      const r = await go();
      if (r.status >= 200 && r.status < 300) {
        tally.acked++;
        return r;
      }
      // The data plane's answer for a daemon that died under the request (or was dead): outcome unknown, as
      // for a cut connection; before the kill it is a defect like any other non-2xx.
      if (daemonGone(run, r)) {
        tally.inFlightAtKill++;
        return null;
      }
      tally.unexpected.push(`${what}: ${r.status} ${r.text().slice(0, 200)}`);
      return null;
    } catch (err) {
      if (!run.killed) tally.unexpected.push(`${what}: ${(err as Error).message} before the kill`);
      tally.inFlightAtKill++;
      return null;
    }
  }

  async function fileWriter(run: Run, w: number): Promise<void> {
    const mine = [...files.keys()].filter((p) => p.startsWith(`w${w}/`));
    while (!run.killed) {
      const path = mine[randomInt(mine.length)]!;
      const cell = files.get(path)!;
      if (cell.known && randomInt(5) === 0) {
        cell.maybe = null;
        if (!(await attempt(run, `DELETE file ${path}`, () => api('DELETE', `/api/v1/files/${path}`)))) return;
        cell.known = null;
      } else {
        const size = [0, randomInt(1, 4096), randomInt(4096, 256 * 1024), randomInt(256 * 1024, 1024 * 1024)][randomInt(4)]!;
        const data = randomBytes(size);
        cell.maybe = data;
        if (!(await attempt(run, `PUT file ${path}`, () => api('PUT', `/api/v1/files/${path}`, data)))) return;
        cell.known = data;
      }
      cell.maybe = undefined;
    }
  }

  async function scriptWriter(run: Run): Promise<void> {
    const mine = [...scripts.keys()];
    while (!run.killed) {
      const path = mine[randomInt(mine.length)]!;
      const cell = scripts.get(path)!;
      if (cell.known && randomInt(6) === 0) {
        cell.maybe = null;
        if (!(await attempt(run, `DELETE script ${path}`, () => api('DELETE', `/api/v1/scripts/${path}`)))) return;
        cell.known = null;
      } else {
        const tag = randomBytes(8).toString('hex');
        const padding = Array.from({ length: randomInt(0, 400) }, () => `// ${randomBytes(40).toString('base64')}`).join('\n');
        const source = Buffer.from(`// @timeout 2000\n${padding}\nreturn { tag: ${JSON.stringify(tag)} };\n`);
        cell.maybe = source;
        if (!(await attempt(run, `PUT script ${path}`, () => api('PUT', `/api/v1/scripts/${path}`, source, owner)))) return;
        cell.known = source;
        if (randomInt(4) === 0) {
          // Now and then run it: an acknowledged script is the one that runs.
          const name = path.replace(/\.ts$/, '');
          const r = await api('GET', `/scripts/${name}`, undefined, owner, 'exec.a.hoody.localhost').catch(() => null);
          if (!r || daemonGone(run, r)) return;
          if (r.status !== 200 || r.json<{ tag: string }>().tag !== tag) tally.unexpected.push(`run ${name}: ${r.status} ${r.text().slice(0, 200)}`);
        }
      }
      cell.maybe = undefined;
    }
  }

  const entryValue = (e: { schedule: string; command: string; comment: string | null; enabled: boolean }) =>
    JSON.stringify([e.schedule, e.command, e.comment, e.enabled]);

  async function cronWriter(run: Run): Promise<void> {
    const cron = (method: string, path: string, body?: object) => api(method, path, body, owner, 'cron.a.hoody.localhost');
    while (!run.killed) {
      const live = [...entries].filter(([, c]) => c.known !== null);
      const roll = randomInt(10);
      if (live.length < 3 || (roll < 4 && live.length < 8)) {
        const body = {
          schedule: ['@daily', '0 4 * * 0', '30 2 1 * *', '@reboot', '@monthly'][randomInt(5)]!,
          command: `echo ${randomBytes(randomInt(1, 2000)).toString('hex')}`,
          comment: `crash-${randomBytes(6).toString('hex')}`,
          enabled: randomInt(2) === 0,
        };
        pendingEntry = { comment: body.comment, value: entryValue(body) };
        const r = await attempt(run, 'POST entry', () => cron('POST', '/users/me/entries', body));
        if (!r) return;
        entries.set(r.json<{ id: string }>().id, new Cell(entryValue(body)));
        pendingEntry = null;
      } else {
        const [id, cell] = live[randomInt(live.length)]!;
        if (roll < 8) {
          const [schedule, command] = JSON.parse(cell.known!) as [string, string];
          const patch = { comment: `crash-${randomBytes(6).toString('hex')}`, enabled: randomInt(2) === 0 };
          const next = JSON.stringify([schedule, command, patch.comment, patch.enabled]);
          cell.maybe = next;
          if (!(await attempt(run, `PATCH entry ${id}`, () => cron('PATCH', `/users/me/entries/${id}`, patch)))) return;
          cell.known = next;
        } else {
          cell.maybe = null;
          if (!(await attempt(run, `DELETE entry ${id}`, () => cron('DELETE', `/users/me/entries/${id}`)))) return;
          cell.known = null;
        }
        cell.maybe = undefined;
      }
    }
  }

  async function routeWriter(run: Run): Promise<void> {
    const mine = [...routes.keys()];
    while (!run.killed) {
      const host = mine[randomInt(mine.length)]!;
      const cell = routes.get(host)!;
      if (cell.known && randomInt(4) === 0) {
        cell.maybe = null;
        if (!(await attempt(run, `DELETE route ${host}`, () => api('DELETE', `/api/v1/proxy/routes/${host}`)))) return;
        cell.known = null;
      } else {
        const body = { port: randomInt(1, 65536), https_redirect: randomInt(2) === 0 };
        const value = JSON.stringify([body.port, body.https_redirect]);
        cell.maybe = value;
        if (!(await attempt(run, `PUT route ${host}`, () => api('PUT', `/api/v1/proxy/routes/${host}`, body)))) return;
        cell.known = value;
      }
      cell.maybe = undefined;
    }
  }

  async function certWriter(run: Run): Promise<void> {
    const mine = [...certs.keys()];
    while (!run.killed) {
      const domain = mine[randomInt(mine.length)]!;
      const cell = certs.get(domain)!;
      const pool = certPool.get(domain)!;
      const pick = pool[randomInt(pool.length)]!;
      cell.maybe = pick.fingerprint;
      const r = await attempt(run, `PATCH cert ${domain}`, () => api('PATCH', '/api/v1/proxy/cert/bundle', { domain, cert: pick.cert, key: pick.key }));
      if (!r) return;
      if (r.json<{ fingerprint: string }>().fingerprint !== pick.fingerprint) tally.unexpected.push(`PATCH cert ${domain}: answered another fingerprint`);
      cell.known = pick.fingerprint;
      cell.maybe = undefined;
    }
  }

  async function tokenWriter(run: Run): Promise<void> {
    while (!run.killed) {
      rot.inFlight = true;
      const r = await attempt(run, 'rotate token', () => api('POST', '/api/v1/tokens/rotate', undefined, rot.current));
      if (!r) return;
      rot.previous = rot.current;
      rot.current = r.json<{ token: string }>().token;
      rot.inFlight = false;
      await sleep(randomInt(20, 120));
    }
  }

  async function adminWriter(run: Run): Promise<void> {
    while (!run.killed) {
      const present = [...containers].filter(([, c]) => c.known).map(([n]) => n);
      const create = present.length < 2 || (present.length < 4 && randomInt(2) === 0);
      const name = create ? `x${nextContainer++}` : present[randomInt(present.length)]!;
      const cell = containers.get(name) ?? new Cell<true>(null);
      containers.set(name, cell);
      cell.maybe = create ? true : null;
      run.adminInFlight = true;
      const r = await attempt(run, `${create ? 'POST' : 'DELETE'} container ${name}`, () =>
        create
          ? send({ socketPath: d.socket, path: '/v1/containers', method: 'POST', body: { name, disk: '64m' }, timeoutMs: 60_000 })
          : send({ socketPath: d.socket, path: `/v1/containers/${name}`, method: 'DELETE', timeoutMs: 60_000 }),
      );
      run.adminInFlight = false;
      if (!r) {
        if (run.killed) run.adminCut = { op: create ? 'create' : 'delete', name };
        return;
      }
      cell.known = create ? true : null;
      cell.maybe = undefined;
    }
  }

  // ---- verification after a restart

  async function verify(cycle: number): Promise<void> {
    const where = `cycle ${cycle}`;
    for (const [path, cell] of files) {
      const r = await api('GET', `/api/v1/files/${path}`);
      settle(`${where} file ${path}`, cell, r.status === 404 ? null : r.body, (a, b) => a.equals(b));
    }
    for (const [path, cell] of scripts) {
      const r = await api('GET', `/api/v1/scripts/${path}`);
      settle(`${where} script ${path}`, cell, r.status === 404 ? null : r.body, (a, b) => a.equals(b));
    }
    const listed = (await api('GET', '/users/me/entries', undefined, owner, 'cron.a.hoody.localhost')).json<
      { id: string; schedule: string; command: string; comment: string | null; enabled: boolean }[]
    >();
    const byId = new Map(listed.map((e) => [e.id, e]));
    for (const [id, cell] of entries) {
      const e = byId.get(id);
      settle(`${where} cron entry ${id}`, cell, e ? entryValue(e) : null);
    }
    for (const e of listed) {
      if (e.id === minuteEntry || entries.has(e.id)) continue;
      if (pendingEntry && e.comment === pendingEntry.comment && entryValue(e) === pendingEntry.value) {
        tally.inFlightApplied++;
        entries.set(e.id, new Cell(entryValue(e)));
      } else {
        tally.lost++;
        tally.problems.push(`${where}: cron entry ${e.id} nobody asked for (or half written): ${entryValue(e)}`);
      }
    }
    pendingEntry = null;
    if (!byId.has(minuteEntry)) tally.problems.push(`${where}: the minute entry is gone`);
    const routeList = (await api('GET', '/api/v1/proxy/routes')).json<{ hostname: string; port: number; https_redirect: boolean }[]>();
    const routeBy = new Map(routeList.map((r) => [r.hostname, JSON.stringify([r.port, r.https_redirect])]));
    for (const [host, cell] of routes) settle(`${where} route ${host}`, cell, routeBy.get(host) ?? null);
    const certList = (await api('GET', '/api/v1/proxy/cert/bundle')).json<{ domain: string; fingerprint: string }[]>();
    const certBy = new Map(certList.map((c) => [c.domain, c.fingerprint]));
    for (const [domain, cell] of certs) {
      settle(`${where} cert ${domain}`, cell, certBy.get(domain) ?? null);
      if (cell.known) {
        const served = await servedCertificate(ports.https, domain);
        tally.checked++;
        if (served.fingerprint256 !== cell.known) {
          tally.lost++;
          tally.problems.push(`${where}: a handshake for ${domain} serves ${served.fingerprint256}, not ${cell.known}`);
        }
      }
    }
    await verifyToken(where);
    const names = new Set((await d.client.call<{ name: string }[]>('GET', '/v1/containers')).map((c) => c.name));
    for (const [name, cell] of containers) settle(`${where} container ${name}`, cell, names.has(name) ? true : null);
    for (const p of await consistencyProblems(d, qgroupsBefore)) {
      tally.lost++;
      tally.problems.push(`${where}: ${p}`);
    }
  }

  async function verifyToken(where: string): Promise<void> {
    const probe = (token: string) => api('GET', '/users/me/entries', undefined, token, 'cron.a.hoody.localhost');
    const now = await probe(rot.current);
    tally.checked++;
    if (now.status !== 200) {
      if (rot.inFlight && now.status === 401) {
        // The rotation in flight applied, but its answer (the new token) never came: take a new one.
        tally.inFlightApplied++;
        rot.previous = rot.current;
        rot.current = (await d.client.call<{ token: string }>('POST', '/v1/containers/a/tokens/rotate', { user: 'rot' })).token;
      } else {
        tally.lost++;
        tally.problems.push(`${where}: the latest rotated token answers ${now.status}`);
      }
    }
    rot.inFlight = false;
    if (rot.previous) {
      tally.checked++;
      const old = await probe(rot.previous);
      if (old.status !== 401) {
        tally.lost++;
        tally.problems.push(`${where}: the token before the latest rotation answers ${old.status}, not 401`);
      }
    }
  }

  let boundaryKills = 0;
  /** Per kill: file writes (PUT or DELETE) whose answer was cut off: each may leave one temp file at most. */
  let fileWritesCut = 0;
  const adminCuts: { op: 'create' | 'delete'; name: string }[] = [];

  /**
   * When to kill: at random; now and then right while a container is being created or deleted; and right after
   * a minute boundary, while the minute entry's slot has been claimed and its command runs (the last cycle
   * waits for a boundary if none came yet).
   */
  async function killMoment(run: Run, cycle: number): Promise<string> {
    const toMinute = 60_000 - (Date.now() % 60_000);
    if (toMinute < 5_000 || (cycle === CYCLES && boundaryKills === 0)) {
      await sleep(toMinute + randomInt(100, 1500));
      boundaryKills++;
      return 'just after a minute boundary';
    }
    await sleep(randomInt(150, 2500));
    if (cycle % 2 === 1) {
      for (let i = 0; i < 200 && !run.adminInFlight; i++) await sleep(5);
      await sleep(randomInt(0, 300));
      return run.adminInFlight ? 'during a container create/delete' : 'at random';
    }
    return 'at random';
  }

  test(`${CYCLES} kill -9 cycles: every acknowledged write survives whole, nothing half there, no orphans, no slot twice`, async (t) => {
    const moments: string[] = [];
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      const run: Run = { ports, killed: false, adminInFlight: false };
      const writers = [fileWriter(run, 0), fileWriter(run, 1), scriptWriter(run), cronWriter(run), routeWriter(run), certWriter(run), tokenWriter(run), adminWriter(run)];
      moments.push(await killMoment(run, cycle));
      run.killed = true;
      await d.stop('SIGKILL');
      await Promise.all(writers);
      fileWritesCut += [...files.values()].filter((c) => c.maybe !== undefined).length;
      if (run.adminCut) adminCuts.push(run.adminCut);

      const db = checkDatabase(join(d.stateDir, 'hoody.db'));
      if (db.integrity === 'ok' && db.foreignKeyViolations === 0) tally.integrityOk++;
      else tally.problems.push(`cycle ${cycle}: integrity_check ${db.integrity}, ${db.foreignKeyViolations} foreign key violations`);

      await d.restart();
      ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
      await verify(cycle);
      tally.cycles++;
    }

    // The exec worker of a killed daemon leaves with it (it exits when its IPC channel closes): at most the live one.
    const workers = () => processesOf(d.stateDir).then((ps) => ps.filter((p) => p.cmdline.includes('worker.js')));
    await until('the exec workers of killed daemons to exit', async () => (await workers()).length <= 1, { timeoutMs: 10_000 }).catch(async (err: Error) =>
      assert.fail(`${err.message}: ${JSON.stringify(await workers())}`),
    );

    // Files and scripts: the temp files writes cut short are swept at each start; none is left on disk.
    const volume = join(poolPaths(loadConfig({}, d.env).stateDir).containers, 'a');
    const leftovers = (await readdir(volume, { recursive: true })).filter((p) => TEMP_FILE.test(basename(p)));
    tally.tempFiles = leftovers.length;

    const runs = (await api('GET', `/users/me/entries/${minuteEntry}/runs?limit=1000`, undefined, owner, 'cron.a.hoody.localhost')).json<
      { trigger: string; scheduled_for: string | null; status: string }[]
    >();
    const slots = runs.filter((r) => r.trigger === 'schedule').map((r) => r.scheduled_for);
    // What the restarts had to finish: creates undone, deletes finished, orphans removed.
    const reconciled = { undoneCreates: 0, finishedDeletes: 0, orphanContainers: 0, orphanVolumes: 0 };
    for (const line of (await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8')).split('\n')) {
      if (!line.includes('reconciled with the engine')) continue;
      const r = JSON.parse(line) as Record<keyof typeof reconciled, string[]>;
      for (const k of Object.keys(reconciled) as (keyof typeof reconciled)[]) reconciled[k] += r[k]?.length ?? 0;
    }
    const elapsed = Math.round((Date.now() - t0) / 1000);
    const summary = {
      cycles: tally.cycles,
      acknowledged_writes: tally.acked,
      checks: tally.checked,
      in_flight_at_kill: tally.inFlightAtKill,
      in_flight_applied: tally.inFlightApplied,
      lost: tally.lost,
      integrity_ok: tally.integrityOk,
      cron_minute_runs: slots.length,
      distinct_slots: new Set(slots).size,
      temp_files_left: tally.tempFiles,
      temp_files_swept: (await readReconciled()).tempFiles.length,
      reconciled,
      kill_moments: Object.fromEntries([...new Set(moments)].map((m) => [m, moments.filter((x) => x === m).length])),
      seconds: elapsed,
    };
    console.log(`crash-safety ${JSON.stringify(summary)}`);
    t.diagnostic(`crash-safety ${JSON.stringify(summary)}`);
    assert.deepEqual(tally.unexpected, [], 'every write answered 2xx until the kill');
    assert.deepEqual(tally.problems, []);
    assert.equal(tally.lost, 0);
    assert.equal(tally.integrityOk, CYCLES);
    assert.ok(tally.acked >= CYCLES * 10, `only ${tally.acked} acknowledged writes`);
    assert.equal(new Set(slots).size, slots.length, `a slot fired twice: ${JSON.stringify(slots)}`);
    assert.ok(slots.length >= 1, 'the minute entry fired at least once');
    // A write cut short leaves at most its own temp file (beside its target), and the next start sweeps it.
    assert.deepEqual(leftovers, [], 'temp files left after recovery');
    const swept = (await readReconciled()).tempFiles;
    for (const p of swept) assert.match(p, /^a\/(files\/w[01]\/d[01]\/\.f[0-3]\.bin|scripts\/crash\/\.s[0-3]\.ts)\.[0-9a-f]{12}\.tmp$/, 'only temp files of cut writes are swept');
    assert.ok(swept.length <= fileWritesCut + CYCLES, `${swept.length} temp files swept after ${fileWritesCut} cut-off file writes and ${CYCLES} kills`);
    // Reconciliation touched only what a kill interrupted: each undone create was a create the kill cut off,
    // each finished delete a cut-off delete, and neither is there any more (row, engine container, volume).
    const cutCreates = adminCuts.filter((c) => c.op === 'create').map((c) => c.name);
    const cutDeletes = adminCuts.filter((c) => c.op === 'delete').map((c) => c.name);
    const r = await readReconciled();
    for (const name of r.undoneCreates) assert.ok(cutCreates.includes(name), `undid create ${name}, which no kill cut off (${cutCreates})`);
    for (const name of r.finishedDeletes) assert.ok(cutDeletes.includes(name), `finished delete ${name}, which no kill cut off (${cutDeletes})`);
    for (const name of [...r.orphanContainers, ...r.orphanVolumes]) assert.ok([...cutCreates, ...cutDeletes].includes(name), `orphan ${name} was not in flight at a kill`);
    assert.ok(r.undoneCreates.length + r.finishedDeletes.length <= adminCuts.length, JSON.stringify({ r, adminCuts }));
    const listed = new Set((await d.client.call<{ name: string }[]>('GET', '/v1/containers')).map((c) => c.name));
    const pool = poolPaths(loadConfig({}, d.env).stateDir);
    for (const name of [...r.undoneCreates, ...r.finishedDeletes]) {
      assert.ok(!listed.has(name), `${name} is still listed`);
      assert.ok(!existsSync(join(pool.containers, name)), `${name}'s volume is still there`);
    }
  });

  /** What the restarts' reconciliations report, summed over the daemon's log. */
  async function readReconciled(): Promise<Record<'undoneCreates' | 'finishedDeletes' | 'orphanContainers' | 'orphanVolumes' | 'tempFiles', string[]>> {
    const out = { undoneCreates: [] as string[], finishedDeletes: [] as string[], orphanContainers: [] as string[], orphanVolumes: [] as string[], tempFiles: [] as string[] };
    for (const line of (await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8')).split('\n')) {
      if (!line.includes('reconciled with the engine')) continue;
      const r = JSON.parse(line) as Partial<typeof out>;
      for (const k of Object.keys(out) as (keyof typeof out)[]) out[k].push(...(r[k] ?? []));
    }
    return out;
  }
});

describe('crash safety: what the daemon finds at start that it did not make is removed', () => {
  let d: TestDaemon;
  const planted: string[] = [];
  before(async () => {
    d = await startTestDaemon();
  });
  after(async () => {
    for (const id of planted) await execa('docker', ['rm', '-f', id], { reject: false });
    await d?.destroy();
  });

  test('an engine container with hoody\'s labels and no row, and a volume with no row, are gone after a start', async () => {
    await d.client.call('POST', '/v1/containers', { name: 'kept' });
    const kept = await d.client.call<{ engineId: string }>('GET', '/v1/containers/kept');
    const labels = JSON.parse((await execa('docker', ['inspect', '-f', '{{json .Config.Labels}}', kept.engineId])).stdout) as Record<string, string>;
    const pool = poolPaths(loadConfig({}, d.env).stateDir);
    await d.stop('SIGKILL');
    // Planted while the daemon is down: labelled as hoody labels its own (this instance), but no row names them.
    assert.ok(labels[LABEL_INSTANCE], JSON.stringify(labels));
    const ghostLabels = Object.entries({ ...labels, [LABEL_NAME]: 'ghost', [LABEL_ID]: 'ghost-id' }).flatMap(([k, v]) => ['--label', `${k}=${v}`]);
    const ghost = (await execa('docker', ['create', '--name', `hoody-test-ghost-${randomBytes(3).toString('hex')}`, ...ghostLabels, BUSYBOX_IMAGE])).stdout.trim();
    planted.push(ghost);
    const orphanVolume = join(pool.containers, 'stray');
    await execa('btrfs', ['subvolume', 'create', orphanVolume]);
    await d.restart();
    // Reconciliation ran before the admin socket answered: both are gone now, and reported.
    assert.notEqual((await execa('docker', ['inspect', ghost], { reject: false })).exitCode, 0, 'the orphan container is gone');
    assert.ok(!existsSync(orphanVolume), 'the orphan volume is gone');
    const r = (await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8'))
      .split('\n')
      .filter((l) => l.includes('reconciled with the engine'))
      .map((l) => JSON.parse(l) as { orphanContainers: string[]; orphanVolumes: string[] })
      .at(-1);
    assert.equal(r?.orphanContainers.length, 1, JSON.stringify(r));
    assert.deepEqual(r?.orphanVolumes, ['stray']);
    // What hoody made is untouched.
    assert.deepEqual((await d.client.call<{ name: string; state: string }[]>('GET', '/v1/containers')).map((c) => [c.name, c.state]), [['kept', 'running']]);
    assert.ok(existsSync(join(pool.containers, 'kept')));
  });

  test("temp files of writes a kill cut short are swept at start: hoody's own pattern only, nothing followed, nothing outside", async () => {
    await d.client.call('POST', '/v1/containers', { name: 'tmps' });
    const vol = join(poolPaths(loadConfig({}, d.env).stateDir).containers, 'tmps');
    const outside = join(d.stateDir, 'outside');
    await d.stop('SIGKILL');
    const file = async (rel: string, body = 'x') => {
      await mkdir(join(vol, rel, '..'), { recursive: true });
      await writeFile(join(vol, rel), body);
    };
    // Ours: what write() leaves when killed between the temp file and the rename, in files/ and scripts/.
    const ours = ['files/deep/er/.report.pdf.0123456789ab.tmp', 'files/.a b.ünï.fedcba987654.tmp', 'scripts/certs/.renew.ts.aaaaaaaaaaaa.tmp'];
    for (const rel of ours) await file(rel, 'half written');
    // Not ours, or not a file: each stays.
    const kept = ['files/.notes.txt.tmp', 'files/.x.0123456789AB.tmp', 'files/keep.0123456789ab.tmp', 'files/.x.0123456789ab.tmp.bak', 'files/.dir.0123456789ab.tmp/inner.txt'];
    for (const rel of kept) await file(rel);
    // Links never followed: a link named like ours (to a file outside), and a link to a directory outside holding one.
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, 'target'), 'host file');
    await writeFile(join(outside, '.victim.0123456789ab.tmp'), 'host temp');
    await symlink(join(outside, 'target'), join(vol, 'files', '.link.0123456789ab.tmp'));
    await symlink(outside, join(vol, 'files', 'escape'));
    await d.restart();
    for (const rel of ours) assert.ok(!existsSync(join(vol, rel)), `${rel} was swept`);
    for (const rel of kept) assert.ok(existsSync(join(vol, rel)), `${rel} is kept`);
    assert.ok((await lstat(join(vol, 'files', '.link.0123456789ab.tmp'))).isSymbolicLink(), 'a link named like ours is kept');
    assert.equal(await readFile(join(outside, 'target'), 'utf8'), 'host file');
    assert.equal(await readFile(join(outside, '.victim.0123456789ab.tmp'), 'utf8'), 'host temp', 'nothing outside the area is touched');
    const r = (await readFile(join(d.stateDir, 'hoodyd.log'), 'utf8'))
      .split('\n')
      .filter((l) => l.includes('reconciled with the engine'))
      .map((l) => JSON.parse(l) as { tempFiles: string[] })
      .at(-1);
    assert.deepEqual(r?.tempFiles.slice().sort(), ours.map((p) => `tmps/${p}`).sort());
  });
});
