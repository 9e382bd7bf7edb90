import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { AgentCommands, ContainerCommands } from '../containers/agent/commands.js';
import { type ContainerContext, NO_EXTRAS } from '../containers/context.js';
import { buildCommands, type Commands } from '../daemon/commands.js';
import type { EntryPatch, NewEntry } from '../containers/cron/input.js';
import { planNext } from '../containers/cron/plan.js';
import { compileSchedule } from '../containers/cron/schedule.js';
import { cronMigrations } from '../containers/cron/schema.js';
import { type QueuedRun, RunQueue } from '../containers/cron/queue.js';
import { CronStore, newRun } from '../containers/cron/store.js';
import { TimerWheel } from '../containers/cron/wheel.js';
import { CronService } from '../containers/cron/service.js';
import type { CronRunView } from '../containers/cron/views.js';
import { isHoodyError } from '../containers/errors.js';
import { loadConfig } from '../daemon/config.js';
import { migrate, openDatabase } from '../daemon/db.js';
import { startContainer, stopContainer } from '../containers/lifecycle.js';
import { createContainer, removeContainer } from '../containers/provision.js';
import type { ContainerRow } from '../containers/store.js';
import { type TestContext, testContext } from './support/host.js';

const log = pino({ level: process.env.HOODY_TEST_LOG ?? 'warn' });

/** A context's way of starting commands (the agent) when it has one, else docker exec (the service's default). */
const commandsOf = new WeakMap<TestContext, ContainerCommands>();

function service(t: TestContext, extra: Partial<ConstructorParameters<typeof CronService>[0]> = {}): CronService {
  return new CronService({ db: t.db, engine: t.ctx.engine, commands: commandsOf.get(t), store: t.ctx.store, log, ...extra });
}

/** The catalogued code a call throws (or 'no error'). */
function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'no error';
  } catch (err) {
    if (isHoodyError(err)) return err.code;
    throw err;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, timeoutMs: number, probe: () => T | undefined | false): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

function minuteBoundariesBetween(from: number, to: number): number {
  let n = 0;
  for (let m = Math.floor(from / 60_000) * 60_000 + 60_000; m < to; m += 60_000) n++;
  return n;
}

describe('cron schedules (pure, injected time)', () => {
  const at = (iso: string) => new Date(iso);
  const base = { enabled: true, timezone: 'UTC', expiresAt: null, lastSlot: null };

  test('Vixie day matching: both day fields restricted means either; a `*` one means both', () => {
    const next = (schedule: string, from: string, n = 4) => {
      const out: string[] = [];
      let d: Date | null = at(from);
      for (let i = 0; i < n && d; i++) {
        d = planNext({ ...base, schedule }, d, at(from))?.at ?? null;
        if (d) out.push(d.toISOString().slice(0, 10));
      }
      return out;
    };
    // 13th of the month OR a Friday (2025-03-07 and 03-14 are Fridays)
    assert.deepEqual(next('0 0 13 * 5', '2025-03-01T00:00:00Z'), ['2025-03-07', '2025-03-13', '2025-03-14', '2025-03-21']);
    // day-of-month starting with `*`: odd days AND Mondays
    assert.deepEqual(next('0 0 */2 * 1', '2025-03-01T00:00:00Z', 3), ['2025-03-03', '2025-03-17', '2025-03-31']);
    assert.deepEqual(next('@weekly', '2025-03-01T00:00:00Z', 2), ['2025-03-02', '2025-03-09']);
    assert.deepEqual(next('@monthly', '2025-03-01T00:00:00Z', 2), ['2025-04-01', '2025-05-01']);
    assert.deepEqual(next('@annually', '2025-03-01T00:00:00Z', 2), ['2026-01-01', '2027-01-01']);
    assert.deepEqual(next('@midnight', '2025-03-01T10:00:00Z', 2), ['2025-03-02', '2025-03-03']);
  });

  test('next run is strictly after now and after the last claimed slot, in the entry time zone', () => {
    const now = at('2025-03-01T10:00:30Z');
    assert.equal(planNext({ ...base, schedule: '* * * * *' }, now, now)?.at.toISOString(), '2025-03-01T10:01:00.000Z');
    const claimed = { ...base, schedule: '* * * * *', lastSlot: '2025-03-01T10:05:00.000Z' };
    assert.equal(planNext(claimed, now, now)?.at.toISOString(), '2025-03-01T10:06:00.000Z');
    // slots missed while the daemon was down are not replayed: the next one comes after now
    const stale = { ...base, schedule: '* * * * *', lastSlot: '2025-03-01T08:00:00.000Z' };
    assert.equal(planNext(stale, now, now)?.at.toISOString(), '2025-03-01T10:01:00.000Z');
    const berlin = { ...base, schedule: '0 4 * * *', timezone: 'Europe/Berlin' };
    assert.equal(planNext(berlin, now, now)?.at.toISOString(), '2025-03-02T03:00:00.000Z');
  });

  test('expiry before the next slot becomes the timer; disabled, expired and @reboot have none', () => {
    const now = at('2025-03-01T10:00:30Z');
    const soon = { ...base, schedule: '@hourly', expiresAt: '2025-03-01T10:30:00.000Z' };
    assert.deepEqual(planNext(soon, now, now), { kind: 'expire', at: at('2025-03-01T10:30:00.000Z') });
    assert.equal(planNext({ ...soon, expiresAt: '2025-03-01T10:00:00.000Z' }, now, now), null);
    assert.equal(planNext({ ...base, schedule: '* * * * *', enabled: false }, now, now), null);
    assert.equal(planNext({ ...base, schedule: '@reboot' }, now, now), null);
    assert.equal(compileSchedule('@ReBoot', 'UTC').kind, 'reboot');
  });
});

describe('cron at scale (units)', () => {
  test('the timer wheel hands keys due at once to batches of at most its size, the event loop free between; a batch that throws stops nothing later', async () => {
    let now = 1_000_000;
    const fired: string[][] = [];
    let batches = 0;
    let throwNext = false;
    const between: number[] = []; // batches seen when an I/O callback got its turn
    const wheel = new TimerWheel<string>(
      (key) => fired[fired.length - 1]!.push(key),
      () => now,
      (fires) => {
        batches++;
        fired.push([]);
        fires();
        setImmediate(() => between.push(batches)); // runs before the next batch only if the loop got a turn
        if (throwNext) {
          throwNext = false;
          throw new Error('commit failed');
        }
      },
      20,
    );
    try {
      for (let i = 0; i < 50; i++) wheel.set(`k${i}`, now + 20);
      wheel.set('later', now + 60);
      now += 20;
      throwNext = true;
      await until('the first keys to fire', 5000, () => batches >= 3);
      assert.deepEqual(fired.map((f) => f.length), [20, 20, 10], 'fifty keys due at once: batches of 20, 20 and 10');
      assert.deepEqual(between.slice(0, 2), [1, 2], 'the event loop had a turn after each batch');
      now += 40;
      await until('the later key to fire', 5000, () => batches >= 4);
      assert.equal(batches, 4, 'the wheel went on after the throwing batch');
      assert.deepEqual(fired[3], ['later']);
    } finally {
      wheel.stop();
    }
  });

  test('the run queue is fair: one container with 40 runs due cannot starve another with one', async () => {
    const started: string[] = [];
    const gates: (() => void)[] = [];
    const run = (container: string, tag: string): QueuedRun => ({
      container,
      start: () => {
        started.push(tag);
        return new Promise<void>((r) => gates.push(r));
      },
      late: () => assert.fail(`${tag} went late`),
    });
    const q = new RunQueue({ concurrency: 2, perContainer: 4, maxWaitMs: 60_000 });
    for (let i = 0; i < 40; i++) q.push(run('noisy', `n${i}`));
    q.push(run('quiet', 'q0'));
    assert.deepEqual(started, ['n0', 'n1'], 'two at once');
    assert.equal(q.waiting, 39);
    gates.shift()!();
    await until('a runner to be free again', 5000, () => started.length >= 3);
    assert.deepEqual(started.slice(2), ['q0'], 'the quiet container gets the next free runner');
    while (gates.length) {
      gates.shift()!();
      await sleep(1);
    }
    await until('the queue to drain', 5000, () => q.running === 0 && q.waiting === 0 && gates.length === 0);
    assert.equal(started.length, 41);
  });

  test('a run that waits past its limit is handed over as late, with how long and why; clear() gives up the rest', async () => {
    let now = 0;
    const late: { tag: string; waited: number; why: string }[] = [];
    const hang = new Promise<void>(() => undefined);
    const run = (container: string, tag: string): QueuedRun => ({
      container,
      start: () => hang,
      late: (waited, why) => late.push({ tag, waited, why }),
    });
    const q = new RunQueue({ concurrency: 1, perContainer: 1, maxWaitMs: 5000 }, () => now);
    q.push(run('a', 'a0'));
    q.push(run('a', 'a1'));
    q.push(run('b', 'b0'));
    now = 6000;
    q.push(run('c', 'c0')); // the next turn of the queue gives up what waited too long
    assert.deepEqual(late.map((l) => l.tag), ['a1', 'b0']);
    assert.equal(late[0]!.waited, 6000);
    assert.match(late[0]!.why, /waited 6 s for a free runner/);
    q.clear('the daemon stopped before it started');
    assert.deepEqual(late.map((l) => l.tag), ['a1', 'b0', 'c0']);
    assert.equal(late[2]!.why, 'the daemon stopped before it started');
    assert.equal(q.waiting, 0);
  });

  test('the queue settings: defaults, HOODY_CRON_* values, and a clear error for a bad one', () => {
    assert.deepEqual(loadConfig({}, {}).cronQueue, { concurrency: 16, perContainer: 4, maxWaitMs: 60_000 });
    const env = { HOODY_CRON_CONCURRENCY: '8', HOODY_CRON_CONTAINER_RUNS: '2', HOODY_CRON_MAX_WAIT: '90s' };
    assert.deepEqual(loadConfig({}, env).cronQueue, { concurrency: 8, perContainer: 2, maxWaitMs: 90_000 });
    assert.throws(() => loadConfig({}, { HOODY_CRON_CONCURRENCY: '0' }), /HOODY_CRON_CONCURRENCY must be a positive whole number, got 0/);
    assert.throws(() => loadConfig({}, { HOODY_CRON_CONTAINER_RUNS: 'many' }), /HOODY_CRON_CONTAINER_RUNS/);
    assert.throws(() => loadConfig({}, { HOODY_CRON_MAX_WAIT: 'soon' }), /HOODY_CRON_MAX_WAIT/);
  });

  test('the run log migrates to the queued and late statuses with its rows and ids', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hoody-cron-migrate-'));
    const db = openDatabase(join(dir, 'state.db'));
    try {
      migrate(db, [{ name: 'cron', steps: cronMigrations.steps.slice(0, 1) }]);
      db.prepare(`INSERT INTO containers (name, id, image, memory_bytes, nano_cpus, pids_limit, volume, phase, created_at)
                  VALUES ('c', 'cid', 'img', 1, 1, 8, '/v', 'ready', 'now')`).run();
      db.prepare(`INSERT INTO cron_entries (id, container, user, schedule, command, enabled, timezone, created_at, updated_at)
                  VALUES ('e', 'c', 'root', '* * * * *', 'true', 1, 'UTC', 'now', 'now')`).run();
      const insert = db.prepare(`INSERT INTO cron_runs (entry_id, container, user, trigger, status, started_at, triggered_by)
                                 VALUES ('e', 'c', 'root', 'schedule', ?, 'now', 'scheduler')`);
      for (const st of ['ok', 'failed', 'running']) insert.run(st);
      assert.throws(() => insert.run('late'), /CHECK constraint/, 'the old table refuses the new status');
      migrate(db, [cronMigrations]);
      const rows = db.prepare('SELECT id, status FROM cron_runs ORDER BY id').all() as { id: number; status: string }[];
      assert.deepEqual(rows, [{ id: 1, status: 'ok' }, { id: 2, status: 'failed' }, { id: 3, status: 'running' }]);
      insert.run('late');
      insert.run('queued');
      assert.equal((db.prepare('SELECT max(id) AS id FROM cron_runs').get() as { id: number }).id, 5, 'ids go on');
      assert.throws(() => insert.run('bogus'), /CHECK constraint/);
      db.prepare("DELETE FROM cron_entries WHERE id = 'e'").run();
      assert.equal((db.prepare('SELECT count(*) AS n FROM cron_runs').get() as { n: number }).n, 0, 'runs still go with their entry');
    } finally {
      db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a run\'s deferred start and end: every read sees them, one commit writes them, a failed commit is reported', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hoody-cron-defer-'));
    const db = openDatabase(join(dir, 'state.db'), [cronMigrations]);
    try {
      db.prepare(`INSERT INTO containers (name, id, image, memory_bytes, nano_cpus, pids_limit, volume, phase, created_at)
                  VALUES ('c1', 'cid1', 'img', 1, 1, 8, '/v', 'ready', 'now')`).run();
      const iso = new Date(0).toISOString();
      const errors: unknown[] = [];
      const store = new CronStore(db, 1000, 10_000, (err) => errors.push(err));
      store.insertEntry({ id: 'e1', container: 'c1', user: 'root', schedule: '* * * * *', command: 'true', comment: null, enabled: true, timezone: 'UTC', expiresAt: null, createdAt: iso, updatedAt: iso, lastSlot: null });
      const run = store.insertRun(newRun({ id: 'e1', container: 'c1', user: 'root' }, 'schedule', 't', iso, iso, undefined));
      const onDisk = () => (db.prepare('SELECT status FROM cron_runs WHERE id = ?').get(run.id) as { status: string }).status;
      store.markStarted(run.id, iso);
      assert.equal(onDisk(), 'queued', 'not written yet: it waits for the next turn');
      assert.equal(store.getRun(run.id)?.status, 'running', 'a read in the same turn sees it');
      const ended = store.finishRun({ ...run, status: 'running' }, { status: 'ok', finishedAt: iso, exitCode: 0, output: 'x', truncated: false });
      assert.equal(ended.status, 'ok');
      assert.equal(store.runsOfContainer('c1', { limit: 10 })[0]?.status, 'ok');
      store.markStarted(run.id, iso); // no effect on an ended run, but deferred all the same
      await new Promise((r) => setImmediate(r));
      assert.equal(onDisk(), 'ok', 'the next turn wrote what waited');
      db.exec("CREATE TRIGGER refuse BEFORE UPDATE ON cron_runs BEGIN SELECT RAISE(ABORT, 'refused'); END");
      store.finishRun(run, { status: 'failed', finishedAt: iso, exitCode: 1, output: '', truncated: false }, true);
      assert.equal(errors.length, 1, 'the failed commit went to the error hook, not up the stack');
      assert.equal(onDisk(), 'ok', 'and changed nothing');
    } finally {
      db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('runs are pruned every twentieth of the cap: at most 5% over on disk', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hoody-cron-prune-'));
    const db = openDatabase(join(dir, 'state.db'), [cronMigrations]);
    try {
      db.prepare(`INSERT INTO containers (name, id, image, memory_bytes, nano_cpus, pids_limit, volume, phase, created_at)
                  VALUES ('c1', 'cid1', 'img', 1, 1, 8, '/v', 'ready', 'now'), ('c2', 'cid2', 'img', 1, 1, 8, '/v', 'ready', 'now')`).run();
      const iso = new Date(0).toISOString();
      const count = (where: string, arg: string) => (db.prepare(`SELECT count(*) AS n FROM cron_runs WHERE ${where} = ?`).get(arg) as { n: number }).n;
      // c1: three entries, 40 runs kept per entry; c2: three entries, 100 runs kept for the container.
      for (const [container, perEntry, perContainer] of [['c1', 40, 10_000], ['c2', 1000, 100]] as const) {
        const store = new CronStore(db, perEntry, perContainer);
        const ids = [1, 2, 3].map((n) => `${container}-e${n}`);
        for (const id of ids)
          store.insertEntry({ id, container, user: 'root', schedule: '* * * * *', command: 'true', comment: null, enabled: true, timezone: 'UTC', expiresAt: null, createdAt: iso, updatedAt: iso, lastSlot: null });
        let most = 0;
        for (let i = 0; i < 300; i++) {
          const run = newRun({ id: ids[i % 3]!, container, user: 'root' }, 'manual', 't', null, new Date(i * 1000).toISOString(), undefined);
          store.insertRun({ ...run, status: 'ok', finishedAt: iso });
          most = Math.max(most, container === 'c1' ? count('entry_id', ids[0]!) : count('container', container));
        }
        const cap = container === 'c1' ? perEntry : perContainer;
        assert.ok(most <= cap * 1.05, `${most} runs on disk for a cap of ${cap} (${container})`);
        const listed = container === 'c1' ? store.runsOfEntry(ids[0]!, { limit: 1000 }) : store.runsOfContainer(container, { limit: 1000 });
        assert.ok(listed.length >= cap && listed.length <= cap * 1.05, `${container} lists ${listed.length} for a cap of ${cap}`);
      }
    } finally {
      db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('cron service against real containers', () => {
  let t: TestContext;
  let ctx: ContainerContext;
  let cron: CronService;
  let a: ContainerRow;
  let b: ContainerRow;
  // The restart case gets its own state (database, container): a restart cuts short runs in flight.
  let r: TestContext;
  let c: ContainerRow;
  const restarts: CronService[] = [];
  let agent: Commands;

  before(async () => {
    [t, r] = await Promise.all([testContext({}, [cronMigrations]), testContext({}, [cronMigrations])]);
    ctx = t.ctx;
    // This context's runs start through the agent, as in the daemon; the restart case's (r) through docker exec.
    agent = await buildCommands(t.config, ctx, log);
    assert.equal(agent.commands.kind, 'agent');
    commandsOf.set(t, agent.commands);
    ctx.specExtras = (name) => agent.extend(name, NO_EXTRAS());
    cron = service(t);
    ctx.hooks.push(cron);
    await cron.start();
    restarts.push(service(r));
    r.ctx.hooks.push(restarts[0]!);
    await restarts[0]!.start();
    [a, b, c] = await Promise.all([
      createContainer(ctx, { name: 'cron-a' }).then((x) => x.row),
      createContainer(ctx, { name: 'cron-b' }).then((x) => x.row),
      createContainer(r.ctx, { name: 'cron-r' }).then((x) => x.row),
    ]);
  });
  after(async () => {
    await cron?.stop();
    for (const s of restarts) await s.stop();
    await agent?.commands.close();
    await Promise.all([t?.cleanup(), r?.cleanup()]);
  });

  test('each invalid input is refused with its own code and nothing is stored', () => {
    const ok: NewEntry = { schedule: '* * * * *', command: 'true' };
    const cases: [string, Record<string, unknown>][] = [
      ['HOODY_CRON_SCHEDULE_INVALID', { ...ok, schedule: '61 * * * *' }],
      ['HOODY_CRON_FIELD_COUNT', { ...ok, schedule: '* * *' }],
      ['HOODY_CRON_MACRO_UNKNOWN', { ...ok, schedule: '@every_minute' }],
      ['HOODY_CRON_TIMEZONE_UNKNOWN', { ...ok, timezone: 'Mars/Olympus_Mons' }],
      ['HOODY_CRON_EXPIRES_PAST', { ...ok, expires_at: '2001-01-01T00:00:00Z' }],
      ['HOODY_CRON_EXPIRES_INVALID', { ...ok, expires_at: 'next tuesday' }],
      ['HOODY_CRON_COMMAND_TOO_LONG', { ...ok, command: 'x'.repeat(2 * 1024 * 1024) }],
      ['HOODY_CRON_COMMENT_TOO_LONG', { ...ok, comment: 'c'.repeat(1025) }],
      ['HOODY_CRON_PROPERTY_UNKNOWN', { ...ok, owner: 'someone' }],
      ['HOODY_BODY_INVALID', { ...ok, enabled: 'yes' }],
    ];
    for (const [code, input] of cases)
      assert.equal(codeOf(() => cron.add(a.name, 'root', input as unknown as NewEntry, 'tok')), code, JSON.stringify(input).slice(0, 80));
    assert.equal(new Set(cases.map(([c]) => c)).size, cases.length);
    assert.deepEqual(cron.list(a.name, 'root'), []);
    assert.equal((t.db.prepare('SELECT count(*) AS n FROM cron_entries').get() as { n: number }).n, 0);

    const e = cron.add(a.name, 'root', { schedule: '@daily', command: 'true', comment: 'kept' }, 'tok');
    assert.equal(codeOf(() => cron.patch(a.name, 'root', e.id, { schedule: '* * * * * *' })), 'HOODY_CRON_FIELD_COUNT');
    assert.equal(codeOf(() => cron.patch(a.name, 'root', e.id, { color: 'red' } as unknown as EntryPatch)), 'HOODY_CRON_PROPERTY_UNKNOWN');
    assert.deepEqual(cron.get(a.name, 'root', e.id), e);
    cron.remove(a.name, 'root', e.id);
    assert.equal(codeOf(() => cron.get(a.name, 'root', e.id)), 'HOODY_CRON_ENTRY_UNKNOWN');
  });

  test('an entry reads back in the API shape, with next_run from its schedule', () => {
    const e = cron.add(a.name, 'root', { schedule: '0 4 * * 0', command: 'echo renew', timezone: 'Europe/Berlin' }, 'tok');
    assert.deepEqual(Object.keys(e).sort(), [
      'command', 'comment', 'created_at', 'enabled', 'expired', 'expires_at', 'id', 'next_run', 'schedule', 'timezone', 'updated_at', 'user',
    ]);
    assert.equal(e.user, 'root');
    assert.equal(e.enabled, true);
    assert.equal(e.expired, false);
    assert.ok(e.next_run && Date.parse(e.next_run) > Date.now());
    const off = cron.patch(a.name, 'root', e.id, { enabled: false, comment: 'paused' });
    assert.equal(off.next_run, null);
    assert.equal(off.comment, 'paused');
    assert.equal(cron.add(a.name, 'root', { schedule: '@reboot', command: 'true' }, 'tok').next_run, null);
    // The two macros that are only aliases: next 1 January 00:00 and the next midnight, in the entry's zone.
    const now = new Date();
    const annually = cron.add(a.name, 'root', { schedule: '@annually', command: 'true' }, 'tok');
    assert.equal(annually.next_run, new Date(Date.UTC(now.getUTCFullYear() + 1, 0, 1)).toISOString());
    const midnight = cron.add(a.name, 'root', { schedule: '@midnight', command: 'true', timezone: 'Asia/Tokyo' }, 'tok');
    const tokyo = new Date(now.getTime() + 9 * 3600_000); // Tokyo has no DST: UTC+9 all year
    assert.equal(midnight.next_run, new Date(Date.UTC(tokyo.getUTCFullYear(), tokyo.getUTCMonth(), tokyo.getUTCDate() + 1) - 9 * 3600_000).toISOString());
    for (const x of cron.list(a.name, 'root')) cron.remove(a.name, 'root', x.id);
  });

  test('run now: runs inside the container, trigger manual, records who asked', async () => {
    const e = cron.add(a.name, 'root', { schedule: '@yearly', command: 'cat /etc/hostname; id -un; exit 3' }, 'tok');
    const run = await cron.runNow(a.name, 'root', e.id, 'token-123', { wait: true });
    assert.equal(run.trigger, 'manual');
    assert.equal(run.triggered_by, 'token-123');
    assert.equal(run.status, 'failed');
    assert.equal(run.exit_code, 3);
    assert.equal(run.output, 'cron-a\nroot\n');
    assert.equal((agent.commands as AgentCommands).connected, 1, 'it ran through the agent in cron-a');
    assert.ok(run.finished_at && run.finished_at >= run.started_at);
    assert.deepEqual(cron.runsOf(a.name, 'root', e.id), [run]);
    assert.deepEqual(cron.logs(a.name, { since: run.started_at }), [{ time: run.started_at, ...run }]);
    cron.remove(a.name, 'root', e.id);
  });

  test('output is capped at 64 KiB and marked truncated', async () => {
    const e = cron.add(a.name, 'root', { schedule: '@yearly', command: "head -c 200000 /dev/zero | tr '\\0' a" }, 'tok');
    const run = await cron.runNow(a.name, 'root', e.id, 'tok', { wait: true });
    assert.equal(run.status, 'ok');
    assert.equal(run.output.length, 64 * 1024);
    assert.equal(run.truncated, true);
    cron.remove(a.name, 'root', e.id);
  });

  test("entries belong to (container, user): another user's entries do not exist for them", async () => {
    const mine = cron.add(b.name, 'alice', { schedule: '@daily', command: 'id -un; echo $HOME' }, 'tok-alice');
    cron.add(b.name, 'bob', { schedule: '@daily', command: 'true' }, 'tok-bob');
    assert.deepEqual(cron.list(b.name, 'alice').map((e) => e.id), [mine.id]);
    assert.equal(cron.list(a.name, 'alice').length, 0);
    for (const call of [
      () => cron.get(b.name, 'bob', mine.id),
      () => cron.patch(b.name, 'bob', mine.id, { enabled: false }),
      () => cron.remove(b.name, 'bob', mine.id),
      () => cron.runsOf(b.name, 'bob', mine.id),
      () => cron.get(a.name, 'alice', mine.id),
    ])
      assert.equal(codeOf(call), 'HOODY_CRON_ENTRY_UNKNOWN');
    await assert.rejects(cron.runNow(b.name, 'bob', mine.id, 'tok-bob'), { code: 'HOODY_CRON_ENTRY_UNKNOWN' });
    // alice's command runs as alice, created in the container on first use
    const run = await cron.runNow(b.name, 'alice', mine.id, 'tok-alice', { wait: true });
    assert.equal(run.status, 'ok', run.output);
    assert.equal(run.output, 'alice\n/home/alice\n');
    assert.deepEqual(cron.runsOfUser(b.name, 'alice').map((r) => r.id), [run.id]);
    assert.deepEqual(cron.runsOfUser(b.name, 'bob'), []);
    for (const u of ['alice', 'bob']) for (const x of cron.list(b.name, u)) cron.remove(b.name, u, x.id);
  });

  test('a run past the run timeout is killed and logged timeout', async () => {
    const quick = service(t, { runTimeoutMs: 1500 });
    const e = quick.add(b.name, 'root', { schedule: '@yearly', command: 'echo started; sleep 30; echo never' }, 'tok');
    const began = Date.now();
    const run = await quick.runNow(b.name, 'root', e.id, 'tok', { wait: true });
    assert.ok(Date.now() - began < 10_000);
    assert.equal(run.status, 'timeout');
    assert.equal(run.exit_code, null);
    assert.match(run.output, /^started\n/);
    quick.remove(b.name, 'root', e.id);
  });

  test('a stopped container gives a failed run with a clear message; @reboot entries run on start', async () => {
    const e = cron.add(b.name, 'root', { schedule: '@yearly', command: 'true' }, 'tok');
    const boot = cron.add(b.name, 'root', { schedule: '@reboot', command: 'echo booted >> /files/boot' }, 'tok');
    await stopContainer(ctx, b.name);
    const run = await cron.runNow(b.name, 'root', e.id, 'tok', { wait: true });
    assert.equal(run.status, 'failed');
    assert.match(run.output, /container cron-b is not running/);
    assert.deepEqual(cron.runsOf(b.name, 'root', boot.id), []);

    await startContainer(ctx, b.name);
    await cron.started(ctx.store.get(b.name)!); // the daemon calls it on the engine's start event
    const booted = await until('the @reboot run', 20_000, () => cron.runsOf(b.name, 'root', boot.id).find((r) => r.status !== 'running' && r.status !== 'queued'));
    assert.equal(booted.trigger, 'reboot');
    assert.equal(booted.status, 'ok', booted.output);
    assert.equal(booted.triggered_by, 'scheduler');
    assert.equal(await readFile(join(b.volume, 'files', 'boot'), 'utf8'), 'booted\n');
    assert.equal(cron.runsOf(b.name, 'root', boot.id).length, 1);
  });

  test('a container with something scheduled gets its command agent before its first run', async () => {
    const w = (await createContainer(ctx, { name: 'cron-w' })).row;
    const agents = agent.commands as AgentCommands;
    const before = agents.connected;
    try {
      const e = cron.add(w.name, 'root', { schedule: '@yearly', command: 'true' }, 'tok');
      await until('the agent of cron-w', 10_000, () => agents.connected === before + 1);
      assert.deepEqual(cron.runsOf(w.name, 'root', e.id), [], 'no run was needed to start it');
      const run = await cron.runNow(w.name, 'root', e.id, 'tok', { wait: true });
      assert.equal(run.status, 'ok');
      assert.equal(agents.connected, before + 1);
    } finally {
      await removeContainer(ctx, w.name);
    }
    assert.equal(agents.connected, before, 'its agent went with it');
  });

  test('a claimed slot (last_slot) is never planned again, also by a new service on the same database', async () => {
    const e = cron.add(b.name, 'root', { schedule: '* * * * *', command: 'true', enabled: false }, 'tok');
    const ahead = new Date(Math.ceil(Date.now() / 60_000) * 60_000 + 60_000).toISOString();
    t.db.prepare('UPDATE cron_entries SET last_slot = ? WHERE id = ?').run(ahead, e.id);
    const on = cron.patch(b.name, 'root', e.id, { enabled: true });
    assert.equal(on.next_run, new Date(Date.parse(ahead) + 60_000).toISOString());
    assert.equal(service(t).get(b.name, 'root', e.id).next_run, on.next_run);
    cron.remove(b.name, 'root', e.id);
  });

  test('runs a killed daemon left running are closed as failed, queued ones as late, when the scheduler starts', async () => {
    const e = cron.add(b.name, 'root', { schedule: '@yearly', command: 'true' }, 'tok');
    const e2 = cron.add(b.name, 'root', { schedule: '@yearly', command: 'true' }, 'tok');
    const now = new Date().toISOString();
    const left = cron.entries.insertRun({ ...newRun({ ...e, container: b.name }, 'schedule', 'scheduler', null, now, undefined), status: 'running' });
    const waiting = cron.entries.insertRun(newRun({ ...e2, container: b.name }, 'schedule', 'scheduler', null, now, undefined));
    assert.equal(waiting.status, 'queued');
    const next = service(t);
    await next.start();
    await next.stop();
    const run = cron.runsOf(b.name, 'root', e.id).find((x) => x.id === left.id);
    assert.equal(run?.status, 'failed');
    assert.match(run?.output ?? '', /daemon stopped during this run/);
    const queued = cron.runsOf(b.name, 'root', e2.id).find((x) => x.id === waiting.id);
    assert.equal(queued?.status, 'late');
    assert.match(queued?.output ?? '', /stopped before this run started; it did not run/);
    cron.remove(b.name, 'root', e.id);
    cron.remove(b.name, 'root', e2.id);
  });

  test('runs wait for a free runner; one that waits too long is logged late, and never runs', async () => {
    const q = service(t, { queue: { concurrency: 1, perContainer: 1, maxWaitMs: 1000 } });
    await q.start();
    try {
      const slow = q.add(b.name, 'root', { schedule: '@yearly', command: 'sleep 3; echo slow' }, 'tok');
      const other = q.add(b.name, 'root', { schedule: '@yearly', command: 'echo other > /tmp/hoody-late' }, 'tok');
      const first = q.runNow(b.name, 'root', slow.id, 'tok', { wait: true });
      const second = await q.runNow(b.name, 'root', other.id, 'tok');
      assert.equal(second.status, 'queued', 'the one runner is taken');
      assert.equal(q.queueStats.waiting, 1);
      const ended = await until('the queued run to go late', 10_000, () => q.runsOf(b.name, 'root', other.id).find((x) => x.status === 'late'));
      assert.match(ended.output, /hoody: not run: waited \d+ s for a free runner/);
      assert.equal((await first).status, 'ok');
      const probe = await t.ctx.engine.exec(b.engineId!, { cmd: ['sh', '-c', 'cat /tmp/hoody-late 2>&1 || echo absent'] });
      assert.match(probe.output, /absent/, 'the late run never ran');
      q.remove(b.name, 'root', slow.id);
      q.remove(b.name, 'root', other.id);
    } finally {
      await q.stop();
    }
  });

  test('scheduled runs fire each minute, skip on overlap, stop at expiry, and survive a service restart', async () => {
    // Every case's entries are added at once, so they all share the same two minute boundaries.
    while (Date.now() % 60_000 > 58_000) await sleep(100); // not astride a boundary
    const created = Date.now();
    const expiresAt = new Date(created + 70_000).toISOString();
    const dated = cron.add(a.name, 'root', { schedule: '* * * * *', command: 'date >> /files/x' }, 'tok');
    const slow = cron.add(a.name, 'root', { schedule: '* * * * *', command: 'sleep 90' }, 'tok');
    const expiring = cron.add(a.name, 'root', { schedule: '* * * * *', command: 'echo once', expires_at: expiresAt }, 'tok');
    const tick = restarts[0]!.add(c.name, 'root', { schedule: '* * * * *', command: 'echo tick' }, 'tok');
    const done = (runs: CronRunView[]) => runs.filter((x) => x.status !== 'running' && x.status !== 'queued');

    const restartCase = (async () => {
      await until('the first tick', 65_000, () => done(restarts[0]!.runsOf(c.name, 'root', tick.id)).length === 1);
      // Right after the slot fired: stop, a new service on the same database, start.
      await restarts[0]!.stop();
      const next = service(r);
      restarts.push(next);
      r.ctx.hooks[0] = next;
      await next.start();
      assert.deepEqual(next.list(c.name, 'root').map((e) => e.id), [tick.id]);
      await until('the second tick', 65_000, () => done(next.runsOf(c.name, 'root', tick.id)).length >= 2);
      // Once the scheduler has planned past the second slot, any second firing of a slot would be logged.
      const second = done(next.runsOf(c.name, 'root', tick.id))[0]!.scheduled_for ?? '';
      await until('the scheduler to plan past the second slot', 65_000, () => (next.get(c.name, 'root', tick.id).next_run ?? '') > second);
      const runs = next.runsOf(c.name, 'root', tick.id);
      assert.equal(runs.length, 2, JSON.stringify(runs));
      assert.notEqual(runs[0]!.scheduled_for, runs[1]!.scheduled_for);
      assert.ok(runs.every((x) => x.status === 'ok' && x.output === 'tick\n' && x.trigger === 'schedule'), JSON.stringify(runs));
    })();

    const datedCase = (async () => {
      const runs = await until('two dated runs', 130_000, () => {
        const d = done(cron.runsOf(a.name, 'root', dated.id));
        return d.length >= 2 && d;
      });
      const lines = (await readFile(join(a.volume, 'files', 'x'), 'utf8')).trim().split('\n');
      assert.equal(runs.length, 2);
      assert.equal(lines.length, 2);
      for (const run of runs) {
        assert.equal(run.status, 'ok', run.output);
        assert.equal(run.exit_code, 0);
        assert.equal(run.trigger, 'schedule');
        assert.equal(run.triggered_by, 'scheduler');
        const slot = Date.parse(run.scheduled_for ?? '');
        assert.equal(slot % 60_000, 0);
        // Fired for its own slot: not before it, and before the next one (how late is a figure for bench/).
        const started = Date.parse(run.started_at);
        assert.ok(started >= slot && started < slot + 60_000, `not within its slot: ${JSON.stringify(run)}`);
      }
      // meanwhile the slow entry's second slot found its first run still going
      const slowRuns = cron.runsOf(a.name, 'root', slow.id);
      const skipped = slowRuns.find((x) => x.status === 'skipped');
      assert.ok(skipped, `no skipped run: ${JSON.stringify(slowRuns)}`);
      assert.match(skipped.output, /still going/);
      assert.equal(skipped.scheduled_for, runs[0]!.scheduled_for); // newest first
      assert.equal(slowRuns.filter((x) => x.status === 'running').length, 1);
    })();

    const expiryCase = (async () => {
      const e = await until('the entry to report expired', 120_000, () => {
        const x = cron.get(a.name, 'root', expiring.id);
        return x.expired && cron.runsOf(a.name, 'root', expiring.id).some((r) => r.status === 'expired') && x;
      });
      assert.equal(e.expired, true);
      assert.equal(e.next_run, null);
      const runs = cron.runsOf(a.name, 'root', expiring.id);
      const fired = runs.filter((x) => x.status === 'ok');
      assert.equal(fired.length, minuteBoundariesBetween(Date.parse(expiring.created_at), Date.parse(expiresAt)), JSON.stringify(runs));
      assert.ok(fired.every((x) => (x.scheduled_for ?? '') < expiresAt));
      assert.equal(runs.filter((x) => x.status === 'expired').length, 1);
      assert.ok(runs.every((x) => x.status === 'ok' || x.status === 'expired'), JSON.stringify(runs));
    })();

    await Promise.all([restartCase, datedCase, expiryCase]);
    assert.deepEqual(
      cron.logs(a.name, { since: new Date(created).toISOString() }).map((x) => x.entry_id).sort(),
      [...cron.runsOf(a.name, 'root', dated.id), ...cron.runsOf(a.name, 'root', slow.id), ...cron.runsOf(a.name, 'root', expiring.id)]
        .map((x) => x.entry_id)
        .sort(),
    );
  });
});
