/**
 * Cron benchmark: N entries due at the same second of every minute of a window (`m1,m2 * * * *`) spread over C busybox containers, a cheap command, measured over
 * whole minutes. For each firing: lateness against its scheduled second (the run row's `started_at`: when the
 * run left the queue for a runner, just before the command starts — before issue 13.2 there was no queue and it was
 * the claim — and `finished_at`, after the command ended), and the outcome counts (`late`: waited past
 * HOODY_CRON_MAX_WAIT and never ran); for the daemon: CPU (utime+stime from /proc/<pid>/stat over the window) and RSS over time.
 * A lighter point (fewer entries on the same containers) runs first for comparison. Both points run once per way
 * of starting commands (`--commands agent,engine`: hoody-agent in each container, or one `docker exec` per run),
 * each on a daemon and containers of its own, one after the other; CPU per started run is split into the daemon,
 * the engine (dockerd + containerd), the runc shims and the agents.
 *
 * `--heavy N` adds a third point with more entries on the same containers. The admin API is probed four times a
 * second through each window (is the daemon still responsive?).
 *
 *   node --no-node-snapshot dist/bench/cron.js --containers 200 --entries 2000 --light 1000 --minutes 2 [--commands agent,engine] [--heavy 10000]
 *
 * Entries carry `expires_at` just after their last measured slot, so nothing else touches the daemon during a
 * window (no PATCH storm to stop them). Everything made is removed at the end, on SIGINT/SIGTERM and on errors.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { table } from '../daemon/cli/format.js';
import { startBenchDaemon } from './daemon.js';
import { othersRunning, runBench } from './harness.js';
import { KeepAliveClient } from './keepalive.js';
import { chartSvg, type LineSeries } from './ns-chart.js';
import { choiceListOption, numberOption, textOption } from './options.js';
import { CLK_TCK, cpuTicks, enginePids, processTable } from './procs.js';
import { fmt, mdTable, notesSection, type ResultHeader, runLines } from './results.js';
import { ProcSampler, type Sample } from './sampler.js';
import type { Session } from './session.js';
import { type Dist, dist, quantiles, round, runPool } from './stats.js';

const OPTIONS = {
  containers: numberOption(100, 1, 500, 'busybox containers the entries are spread over'),
  entries: numberOption(10_000, 1, 100_000, 'entries of the full point'),
  minutes: numberOption(3, 1, 30, 'minutes measured per point'),
  light: numberOption(1000, 0, 100_000, 'entries of a lighter point run first (0: none)'),
  heavy: numberOption(0, 0, 100_000, 'entries of a heavier point run last (0: none)'),
  command: textOption('true', 'the command every entry runs'),
  commands: choiceListOption(['agent', 'engine'], ['agent', 'engine'] as const, 'ways of starting commands, one daemon each'),
  parallel: numberOption(4, 1, 16, 'containers provisioned at once'),
  drain: numberOption(300, 0, 3600, 'longest wait (s) for runs still going after a window'),
};

interface Container {
  name: string;
  token: string;
}

interface RunRow {
  id: number;
  entry_id: string;
  trigger: string;
  status: string;
  started_at: string;
  finished_at: string | null;
  exit_code: number | null;
  output: string;
  scheduled_for: string | null;
}

interface SlotFigures {
  slot: string;
  fired: number;
  ok: number;
  failed: number;
  skipped: number;
  late: number;
  running: number;
  claim_p50_s: number | null;
  claim_p99_s: number | null;
  claim_max_s: number | null;
  done_p50_s: number | null;
  done_p99_s: number | null;
  done_max_s: number | null;
}

interface PointResult {
  label: string;
  /** How runs started: through hoody-agent in each container, or one docker exec each (HOODY_COMMAND_AGENT=off). */
  commands: string;
  entries: number;
  containers: number;
  minutes: number;
  first_slot: string;
  last_slot: string;
  /** crossed_boundary: a minute boundary passed while creating, so entries fired before the window. */
  create: { seconds: number; per_second: number; ended_before_first_slot: boolean; crossed_boundary: boolean };
  expected_firings: number;
  counts: { rows: number; ok: number; failed: number; skipped: number; late: number; timeout: number; running: number; missing: number };
  /** GET /v1/containers/<first> on the admin socket, four times a second through the window. */
  admin_ms: Dist;
  /** started_at − scheduled_for of runs that started: when a runner took the run (docker exec starts). */
  lateness_claim_s: Dist;
  /** finished_at − scheduled_for (ok and failed runs): when the command had run; an upper bound of its start. */
  lateness_done_s: Dist;
  /** finished_at − started_at of ok runs: how long one docker exec of the command took end to end. */
  run_duration_s: Dist;
  /** Lateness quantiles 0, 1, …, 100 % (seconds), for the chart. */
  quantiles: { claim: number[]; done: number[] };
  per_slot: SlotFigures[];
  /** complete: no run of the window left going; stalled: none ended for 3 minutes. */
  drain: { seconds: number; complete: boolean; stalled: boolean };
  daemon: {
    cpu_seconds: number;
    cpu_percent_of_core: number;
    cpu_ms_per_firing: number | null;
    rss_mib_start: number | null;
    rss_mib_max: number | null;
    rss_mib_end: number | null;
  };
  engine_cpu_seconds: number;
  /** containerd's runc shims (one per container; docker exec's I/O goes through them). */
  shim_cpu_seconds: number;
  /** The hoody-agent processes in the containers (their own time, not the commands they started). */
  agent_cpu_seconds: number;
  /** The same processes' CPU over an idle stretch just before the window (% of one core) and how long it was. */
  idle_cpu_percent: { seconds: number; daemon: number; engine: number; shims: number; agents: number };
  /** CPU per run that started (ms), net of the idle rate over the window: daemon, engine, shims, agents, all four. */
  cpu_ms_per_run: { daemon: number | null; engine: number | null; shims: number | null; agents: number | null; total: number | null };
  host_busy_percent: number;
  failure_samples: string[];
  /** Other benchmarks or test runs seen on the box during the point (checked every 10 s). */
  others: string[];
  samples: Sample[];
}

export interface CronResult extends ResultHeader {
  provisioning: { commands: string; containers: number; seconds: number }[];
  points: PointResult[];
  notes: string[];
}

const iso = (ms: number) => new Date(ms).toISOString();

/** CPU ticks of every runc shim and every hoody-agent on the box, by pid (both live across a window). */
async function sideTicks(): Promise<{ shims: Map<number, number>; agents: Map<number, number> }> {
  const shims = new Map<number, number>();
  const agents = new Map<number, number>();
  for (const p of await processTable()) {
    if (p.comm.startsWith('containerd-shim')) shims.set(p.pid, await cpuTicks(p.pid));
    else if (p.comm === 'hoody-agent') agents.set(p.pid, await cpuTicks(p.pid));
  }
  return { shims, agents };
}

/**
 * Seconds of CPU between two readings: a process new since the first counts whole (an agent's start-up is runc
 * init in its pid), unless `steady` (an idle rate: processes that lived through it only); one gone is lost.
 */
function delta(before: Map<number, number>, after: Map<number, number>, steady = false): number {
  let ticks = 0;
  for (const [pid, t] of after) {
    const was = before.get(pid);
    if (was !== undefined || !steady) ticks += t - (was ?? 0);
  }
  return ticks / CLK_TCK;
}
const ceilMinute = (ms: number) => Math.ceil(ms / 60_000) * 60_000;

/** Waits until an instant (wakes every 0.5 s to notice a stop). */
async function until(s: Session, at: number): Promise<void> {
  const left = at - Date.now();
  if (left > 0) await s.nap(left);
}

/** Every run row of one container from `since` on, paging the logs API (oldest first); bounded in pages. */
async function runsOf(http: KeepAliveClient, c: Container, since: string): Promise<RunRow[]> {
  const seen = new Map<number, RunRow>();
  let from = since;
  for (let page = 0; page < 100; page++) {
    const r = await http.ok('GET', `api.${c.name}.hoody.localhost`, `/api/v1/logs?source=cron&limit=1000&since=${encodeURIComponent(from)}&token=${c.token}`);
    const rows = JSON.parse(r.text) as RunRow[];
    let fresh = 0;
    for (const row of rows) {
      if (!seen.has(row.id)) fresh++;
      seen.set(row.id, row);
    }
    const last = rows[rows.length - 1];
    if (rows.length < 1000 || !last || fresh === 0 || last.started_at === from) break;
    from = last.started_at;
  }
  return [...seen.values()];
}

async function runPoint(
  s: Session,
  http: KeepAliveClient,
  sampler: ProcSampler,
  containers: Container[],
  label: string,
  entries: number,
  minutes: number,
  command: string,
  drainS: number,
  dbPath: string,
  commands: string,
  admin: () => Promise<unknown>,
): Promise<PointResult> {
  // Entries per container, as even as possible.
  const per = containers.map((_, i) => Math.floor(entries / containers.length) + (i < entries % containers.length ? 1 : 0));
  // Plan the window before creating. Entries fire only at the window's minutes (`m1,m2 * * * *`: every entry due at
  // the same second, like `* * * * *` inside the window), so creation may take as long as it takes: the first
  // slot is the first minute boundary at least 20 s after creation should have ended (at ~120 entries/s, the
  // rate of acknowledged writes here), and an entry created after it (noted) misses it, counted as missing.
  const firstSlot = ceilMinute(Date.now() + (entries / 120) * 1000 + 25_000);
  const lastSlot = firstSlot + (minutes - 1) * 60_000;
  const windowEnd = firstSlot + minutes * 60_000;
  const expiresAt = iso(lastSlot + 30_000);
  const schedule = `${[...new Set(Array.from({ length: minutes }, (_, i) => new Date(firstSlot + i * 60_000).getUTCMinutes()))].join(',')} * * * *`;
  s.log(`${label}: creating ${entries} entries (\`${schedule}\`) on ${containers.length} containers; window ${iso(firstSlot)} .. ${iso(windowEnd)}`);
  const t0 = Date.now();
  const others = new Set<string>();
  const watch = async () => {
    for (const o of await othersRunning()) others.add(o);
  };
  await watch();
  const watcher = setInterval(() => void watch(), 10_000);
  try {
    const ids = new Set<string>();
    const jobs = containers.flatMap((c, i) => Array.from({ length: per[i]! }, (_, k) => ({ c, k })));
    await runPool(
      jobs,
      8,
      async ({ c, k }) => {
        const r = await http.ok('POST', `cron.${c.name}.hoody.localhost`, `/users/me/entries?token=${c.token}`, {
          schedule,
          command,
          comment: `bench ${label} ${k}`,
          expires_at: expiresAt,
        });
        ids.add((JSON.parse(r.text) as { id: string }).id);
        if (ids.size % 2000 === 0) s.log(`${label}:   ${ids.size} entries (${(ids.size / ((Date.now() - t0) / 1000)).toFixed(0)}/s)`);
      },
      () => s.stopped(),
    );
    s.check();
    const createdAt = Date.now();
    const createS = (createdAt - t0) / 1000;
    s.log(`${label}: ${ids.size} entries in ${createS.toFixed(1)} s (${(ids.size / createS).toFixed(0)}/s); waiting for ${iso(firstSlot)}`);

    // An idle stretch before the window (nothing due, the same containers and agents): what the processes cost
    // doing nothing (200 idle runc shims alone burn CPU), taken off the window's figures per run. It is the last
    // 20 s before the first slot: agents started ahead of time (a docker exec each) are up by then.
    await until(s, firstSlot - 21_000);
    const i0 = await sampler.counters();
    const idleSide0 = await sideTicks();
    await until(s, firstSlot - 1000);
    const i1 = await sampler.counters();
    const idleSide1 = await sideTicks();
    const idleS = (i1.at - i0.at) / 1000;
    const idleRate = {
      daemon: (i1.daemon - i0.daemon) / CLK_TCK / idleS,
      engine: (i1.engine - i0.engine) / CLK_TCK / idleS,
      shims: delta(idleSide0.shims, idleSide1.shims, true) / idleS,
      agents: delta(idleSide0.agents, idleSide1.agents, true) / idleS,
    };
    await until(s, firstSlot - 300);
    const c0 = await sampler.counters();
    const side0 = await sideTicks();
    // The admin API's latency through the window, four calls a second (is the daemon still responsive?).
    const adminMs: number[] = [];
    let probing = true;
    const prober = (async () => {
      while (probing) {
        const t = performance.now();
        await admin().catch(() => undefined);
        adminMs.push(performance.now() - t);
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    await until(s, windowEnd);
    probing = false;
    await prober;
    const c1 = await sampler.counters();
    const side1 = await sideTicks();
    s.log(`${label}: window over; waiting for runs still going (at most ${drainS} s)`);

    const since = iso(firstSlot - 60_000);
    const slots = new Set(Array.from({ length: minutes }, (_, i) => iso(firstSlot + i * 60_000)));
    // While waiting for runs to end, a read-only look at the daemon's database (cheap: one COUNT) rather than
    // pulling every container's log through the API every few seconds, which would load the daemon it measures.
    const db = new Database(dbPath, { readonly: true, fileMustExist: true });
    const runningCount = () =>
      (db.prepare(`SELECT count(*) AS n FROM cron_runs WHERE status IN ('running', 'queued') AND trigger = 'schedule' AND scheduled_for >= ? AND scheduled_for <= ?`).get(iso(firstSlot), iso(lastSlot)) as { n: number }).n;
    const drainStart = Date.now();
    let running = runningCount();
    let stalled = false;
    try {
      // Until all ended, the limit, or nothing ended for 3 minutes (a stuck run would otherwise hold the limit).
      let lastChange = Date.now();
      while (running > 0 && Date.now() - drainStart < drainS * 1000 && Date.now() - lastChange < 180_000 && !s.stopped()) {
        s.log(`${label}: ${running} run(s) of the window still going`);
        await s.nap(5000);
        const now = runningCount();
        if (now !== running) lastChange = Date.now();
        running = now;
      }
      if (running > 0 && Date.now() - lastChange >= 180_000) stalled = true;
    } finally {
      db.close();
    }
    const drainSeconds = (Date.now() - drainStart) / 1000;
    s.check();
    s.log(`${label}: collecting the run rows through the logs API`);
    const rows: RunRow[] = [];
    await runPool(containers, 8, async (c) => {
      for (let attempt = 1; ; attempt++) {
        try {
          for (const r of await runsOf(http, c, since)) if (r.trigger === 'schedule' && r.scheduled_for && slots.has(r.scheduled_for) && ids.has(r.entry_id)) rows.push(r);
          return;
        } catch (err) {
          if (attempt >= 3) throw err;
          await s.nap(5000);
        }
      }
    });
    const open = (r: RunRow) => r.status === 'running' || r.status === 'queued';
    const complete = !rows.some(open);

    const ms = (a: string | null) => (a ? Date.parse(a) : Number.NaN);
    // A late run never started: its started_at is when it was claimed, not a start.
    const started = rows.filter((r) => r.status !== 'late');
    const claim = started.map((r) => (ms(r.started_at) - ms(r.scheduled_for)) / 1000);
    const done = rows.filter((r) => r.finished_at && (r.status === 'ok' || r.status === 'failed')).map((r) => (ms(r.finished_at) - ms(r.scheduled_for)) / 1000);
    const durations = rows.filter((r) => r.status === 'ok' && r.finished_at).map((r) => (ms(r.finished_at) - ms(r.started_at)) / 1000);
    const count = (st: string) => rows.filter((r) => r.status === st).length;
    const perSlot: SlotFigures[] = [...slots].map((slot) => {
      const rs = rows.filter((r) => r.scheduled_for === slot);
      const cl = dist(rs.filter((r) => r.status !== 'late').map((r) => (ms(r.started_at) - ms(slot)) / 1000));
      const dn = dist(rs.filter((r) => r.finished_at && (r.status === 'ok' || r.status === 'failed')).map((r) => (ms(r.finished_at) - ms(slot)) / 1000));
      return {
        slot,
        fired: rs.length,
        ok: rs.filter((r) => r.status === 'ok').length,
        failed: rs.filter((r) => r.status === 'failed').length,
        skipped: rs.filter((r) => r.status === 'skipped').length,
        late: rs.filter((r) => r.status === 'late').length,
        running: rs.filter(open).length,
        claim_p50_s: cl.p50,
        claim_p99_s: cl.p99,
        claim_max_s: cl.max,
        done_p50_s: dn.p50,
        done_p99_s: dn.p99,
        done_max_s: dn.max,
      };
    });
    const failures = [...new Set(rows.filter((r) => r.status === 'failed' || r.status === 'timeout').map((r) => `${r.status} exit=${r.exit_code}: ${r.output.trim().slice(0, 200)}`))].slice(0, 5);
    const windowS = (c1.at - c0.at) / 1000;
    const cpuS = (c1.daemon - c0.daemon) / CLK_TCK;
    const fired = rows.length;
    const tFirst = sampler.at(firstSlot);
    const mine = sampler.samples.filter((x) => x.t >= sampler.at(t0) - 1).map((x) => ({ ...x, t: round(x.t - tFirst, 1) ?? 0 }));
    const inWindow = mine.filter((x) => x.t >= 0 && x.t <= minutes * 60);
    const expected = ids.size * minutes;
    const startedRuns = rows.filter((r) => r.status !== 'late' && r.status !== 'skipped').length;
    const engineS = (c1.engine - c0.engine) / CLK_TCK;
    const shimS = delta(side0.shims, side1.shims);
    const agentS = delta(side0.agents, side1.agents);
    // Per started run, net of what the same processes burnt idle over as long (never below 0).
    const perRun = (sec: number, idlePerS = 0) => (startedRuns ? round((Math.max(0, sec - idlePerS * windowS) * 1000) / startedRuns, 3) : null);
    return {
      label,
      commands,
      entries: ids.size,
      containers: containers.length,
      minutes,
      first_slot: iso(firstSlot),
      last_slot: iso(lastSlot),
      create: { seconds: round(createS, 1) ?? 0, per_second: round(ids.size / createS, 0) ?? 0, ended_before_first_slot: createdAt < firstSlot, crossed_boundary: Math.floor(t0 / 60_000) !== Math.floor(createdAt / 60_000) },
      expected_firings: expected,
      counts: {
        rows: fired,
        ok: count('ok'),
        failed: count('failed'),
        skipped: count('skipped'),
        late: count('late'),
        timeout: count('timeout'),
        running: count('running') + count('queued'),
        missing: Math.max(0, expected - fired),
      },
      admin_ms: dist(adminMs),
      lateness_claim_s: dist(claim),
      lateness_done_s: dist(done),
      run_duration_s: dist(durations),
      quantiles: { claim: quantiles(claim), done: quantiles(done) },
      per_slot: perSlot,
      drain: { seconds: round(drainSeconds, 1) ?? 0, complete, stalled },
      daemon: {
        cpu_seconds: round(cpuS, 2) ?? 0,
        cpu_percent_of_core: round((cpuS / windowS) * 100, 1) ?? 0,
        cpu_ms_per_firing: fired ? round((cpuS * 1000) / fired, 3) : null,
        rss_mib_start: inWindow[0]?.daemon_rss_mib ?? null,
        rss_mib_max: inWindow.length ? Math.max(...inWindow.map((x) => x.daemon_rss_mib)) : null,
        rss_mib_end: inWindow[inWindow.length - 1]?.daemon_rss_mib ?? null,
      },
      engine_cpu_seconds: round(engineS, 1) ?? 0,
      shim_cpu_seconds: round(shimS, 2) ?? 0,
      agent_cpu_seconds: round(agentS, 2) ?? 0,
      idle_cpu_percent: {
        seconds: round(idleS, 1) ?? 0,
        daemon: round(idleRate.daemon * 100, 2) ?? 0,
        engine: round(idleRate.engine * 100, 2) ?? 0,
        shims: round(idleRate.shims * 100, 2) ?? 0,
        agents: round(idleRate.agents * 100, 2) ?? 0,
      },
      cpu_ms_per_run: {
        daemon: perRun(cpuS, idleRate.daemon),
        engine: perRun(engineS, idleRate.engine),
        shims: perRun(shimS, idleRate.shims),
        agents: perRun(agentS, idleRate.agents),
        total: perRun(cpuS + engineS + shimS + agentS, idleRate.daemon + idleRate.engine + idleRate.shims + idleRate.agents),
      },
      host_busy_percent: round(((c1.host.busy - c0.host.busy) / (c1.host.total - c0.host.total || 1)) * 100, 1) ?? 0,
      failure_samples: failures,
      others: [...others],
      samples: mine,
    };
  } finally {
    clearInterval(watcher);
  }
}

function summaryRows(p: PointResult): (string | number)[][] {
  const l = p.lateness_claim_s;
  const dn = p.lateness_done_s;
  return [
    ['entries × minutes (expected firings)', `${p.entries} × ${p.minutes} = ${p.expected_firings}`],
    ['runs ok / failed / skipped / late / timeout / still running or queued / missing', `${p.counts.ok} / ${p.counts.failed} / ${p.counts.skipped} / ${p.counts.late ?? 0} / ${p.counts.timeout} / ${p.counts.running} / ${p.counts.missing}`],
    ['lateness, started (started_at − scheduled) p50 / p99 / max s', `${fmt(l.p50, 3)} / ${fmt(l.p99, 3)} / ${fmt(l.max, 3)}`],
    ['lateness, done (finished_at − scheduled) p50 / p99 / max s', `${fmt(dn.p50, 3)} / ${fmt(dn.p99, 3)} / ${fmt(dn.max, 3)}`],
    ['one run end to end (ok) p50 / p99 s', `${fmt(p.run_duration_s.p50, 3)} / ${fmt(p.run_duration_s.p99, 3)}`],
    ['daemon CPU s over the window (% of one core)', `${fmt(p.daemon.cpu_seconds)} (${fmt(p.daemon.cpu_percent_of_core, 1)} %)`],
    ['daemon CPU ms per firing', fmt(p.daemon.cpu_ms_per_firing, 3)],
    ['daemon RSS MiB start / max / end of window', `${fmt(p.daemon.rss_mib_start, 1)} / ${fmt(p.daemon.rss_mib_max, 1)} / ${fmt(p.daemon.rss_mib_end, 1)}`],
    ['engine (dockerd+containerd) CPU s over the window', fmt(p.engine_cpu_seconds, 1)],
    ['runc shims / hoody-agents CPU s over the window', `${fmt(p.shim_cpu_seconds, 2)} / ${fmt(p.agent_cpu_seconds, 2)}`],
    ['idle before the window, % of a core: daemon / engine / shims / agents (over s)', `${fmt(p.idle_cpu_percent.daemon, 2)} / ${fmt(p.idle_cpu_percent.engine, 2)} / ${fmt(p.idle_cpu_percent.shims, 2)} / ${fmt(p.idle_cpu_percent.agents, 2)} (${fmt(p.idle_cpu_percent.seconds, 1)})`],
    ['CPU ms per started run, net of idle: daemon + engine + shims + agents = total', `${fmt(p.cpu_ms_per_run.daemon, 2)} + ${fmt(p.cpu_ms_per_run.engine, 2)} + ${fmt(p.cpu_ms_per_run.shims, 2)} + ${fmt(p.cpu_ms_per_run.agents, 2)} = ${fmt(p.cpu_ms_per_run.total, 2)}`],
    ['host CPU busy over the window %', fmt(p.host_busy_percent, 1)],
    ['admin API (GET /v1/containers/cb1, 4/s) p50 / p99 / max ms', `${fmt(p.admin_ms.p50, 1)} / ${fmt(p.admin_ms.p99, 1)} / ${fmt(p.admin_ms.max, 1)}`],
    ['entries created in s (per s)', `${fmt(p.create.seconds, 1)} (${p.create.per_second})`],
    ['drain after the window s', `${fmt(p.drain.seconds, 1)}${p.drain.complete ? '' : p.drain.stalled ? ' (stopped: runs stuck)' : ' (runs still going at the limit)'}`],
  ];
}

function slotRows(p: PointResult): (string | number)[][] {
  return p.per_slot.map((x) => [
    x.slot.slice(11, 19),
    x.fired,
    x.ok,
    x.failed,
    x.skipped,
    x.late ?? 0,
    x.running,
    `${fmt(x.claim_p50_s, 3)} / ${fmt(x.claim_p99_s, 3)} / ${fmt(x.claim_max_s, 3)}`,
    `${fmt(x.done_p50_s, 2)} / ${fmt(x.done_p99_s, 2)} / ${fmt(x.done_max_s, 2)}`,
  ]);
}

const SLOT_HEADER = ['slot (UTC)', 'fired', 'ok', 'failed', 'skipped', 'late', 'running/queued', 'started p50/p99/max s', 'done p50/p99/max s'];

function markdown(r: CronResult, svgName: string | null): string {
  const out: string[] = [];
  out.push(`# hoody cron benchmark — ${r.started}`, '');
  const [run, options] = runLines(r);
  out.push(run);
  out.push(`${options} ${r.provisioning.map((x) => `${x.commands}: ${x.containers} busybox containers provisioned in ${x.seconds} s`).join('; ')}.`, '');
  out.push('Each entry: due at every minute of the window (`m1,m2 * * * *`: all at the same second, the top-of-the-hour shape), the command below, run inside its container (`sh -c`): points named *agent* start it through hoody-agent in the container (one `docker exec` per container, then a fork per run), points named *engine* with one `docker exec` per run (`HOODY_COMMAND_AGENT=off`), each on its own daemon and containers, one after the other in this run. Lateness is measured per firing from the run rows (`GET /api/v1/logs?source=cron`):');
  out.push('*started* = `started_at − scheduled_for` of the runs that started (a runner took the run from the queue just before starting it; without the queue, before issue 13.2, the claim of its slot); *done* = `finished_at − scheduled_for` (the command has run: an upper bound of when it started). Daemon CPU = utime+stime of the hoodyd process from `/proc/<pid>/stat` between the first slot and the end of the window.', '');
  if (svgName) out.push(`![cron benchmark](${svgName})`, '');
  for (const p of r.points) {
    out.push(`## ${p.label}: ${p.entries} entries on ${p.containers} containers, ${p.minutes} min (${p.first_slot} .. ${p.last_slot})`, '');
    out.push(mdTable(['figure', 'value'], summaryRows(p)), '');
    out.push(mdTable(SLOT_HEADER, slotRows(p)), '');
    if (p.failure_samples.length) out.push('Failure samples:', '', ...p.failure_samples.map((f) => `- \`${f.replace(/`/g, "'").replace(/\n/g, ' ')}\``), '');
  }
  out.push(...notesSection(r.notes));
  return out.join('\n');
}

function svg(r: CronResult): string {
  const line = (pick: (x: Sample) => number): LineSeries[] => r.points.map((p) => ({ name: `${p.label} (${p.entries})`, points: p.samples.map((x) => [x.t, pick(x)] as const) }));
  const cdf = (p: PointResult, kind: 'claim' | 'done'): LineSeries => ({
    name: `${p.label} (${p.entries})`,
    points: p.quantiles[kind].map((v, q) => [v, q] as const),
    dashed: kind === 'claim',
  });
  return chartSvg(
    [
      { kind: 'line', title: 'hoodyd CPU (% of one core)', xLabel: 's from the first slot', yLabel: '%', series: line((x) => x.daemon_cpu_percent) },
      { kind: 'line', title: 'hoodyd RSS (MiB)', xLabel: 's from the first slot', yLabel: 'MiB', series: line((x) => x.daemon_rss_mib) },
      { kind: 'line', title: 'dockerd + containerd CPU (% of one core)', xLabel: 's from the first slot', yLabel: '%', series: line((x) => x.engine_cpu_percent) },
      { kind: 'line', title: 'lateness CDF (dashed: started, solid: done)', xLabel: 'seconds after the scheduled second', yLabel: '% of firings', series: r.points.flatMap((p) => [cdf(p, 'claim'), cdf(p, 'done')]) },
    ],
    'one line per point; minutes start at 0, 60, 120 … on the time axis',
    2,
  );
}

runBench({ name: 'cron', description: 'cron at scale: lateness, outcomes and CPU of entries due at the same second', options: OPTIONS, budget: { default: 5400, min: 60, max: 6 * 3600 } }, async ({ o, s, prepareHost, header, write, notes }) => {
  const host = await prepareHost();
  const drivers = o.commands;
  const points: PointResult[] = [];
  const provisioning: { commands: string; containers: number; seconds: number }[] = [];
  // One daemon and one set of containers per way of starting commands, one after the other, same run.
  for (const driver of drivers) {
    s.log(`${driver}: starting hoodyd (state under ${host.benchDir}), HOODY_COMMAND_AGENT=${driver === 'agent' ? 'on' : 'off'}`);
    const d = await startBenchDaemon({
      parentDir: host.benchDir,
      image: host.image,
      dockerSocket: host.dockerSocket,
      env: { HOODY_LOG_LEVEL: o['log-level'], HOODY_COMMAND_AGENT: driver === 'agent' ? 'on' : 'off' },
    });
    const offDaemon = s.cleanup.push(`hoodyd ${d.pid} and its containers`, () => d.destroy());
    const http = new KeepAliveClient(d.ports.http, 16);
    const offHttp = s.cleanup.push('HTTP client', async () => http.close());

    s.log(`${driver}: provisioning ${o.containers} containers (${o.parallel} at a time)`);
    const tProv = Date.now();
    const containers: Container[] = [];
    const names = Array.from({ length: o.containers }, (_, i) => `cb${i + 1}`);
    await runPool(
      names,
      o.parallel,
      async (name) => {
        const r = await d.client.call<{ token: string }>('POST', '/v1/containers', { name });
        containers.push({ name, token: r.token });
        if (containers.length % 20 === 0) s.log(`  ${containers.length}/${o.containers}`);
      },
      () => s.stopped(),
    );
    s.check();
    provisioning.push({ commands: driver, containers: containers.length, seconds: round((Date.now() - tProv) / 1000, 1) ?? 0 });
    containers.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));

    const sampler = new ProcSampler(d.pid, await enginePids());
    sampler.start();
    const offSampler = s.cleanup.push('sampler', async () => sampler.stop());
    const plan: [string, number][] = [
      ...(o.light > 0 && o.light < o.entries ? [['light', o.light] as [string, number]] : []),
      ['full', o.entries],
      ...(o.heavy > o.entries ? [['heavy', o.heavy] as [string, number]] : []),
    ];
    for (const [size, n] of plan) {
      const label = `${driver} ${size}`;
      const p = await runPoint(s, http, sampler, containers, label, n, o.minutes, o.command, o.drain, join(d.stateDir, 'hoody.db'), driver, () => d.client.call('GET', `/v1/containers/${containers[0]!.name}`));
      points.push(p);
      process.stdout.write(`\n${label}: ${p.entries} entries on ${p.containers} containers, ${p.minutes} min\n${table(['figure', 'value'], summaryRows(p))}\n${table(SLOT_HEADER, slotRows(p))}\n`);
      if (!p.create.ended_before_first_slot) notes.push(`${label}: creating the entries ran past the first slot; entries created after it missed that slot (counted as missing).`);
      if (p.others.length) notes.push(`${label}: another benchmark or test run was on the box during this point (${p.others.slice(0, 3).join(' | ')}): the figures are skewed by its load.`);
      if (!p.drain.complete)
        notes.push(
          `${label}: ${p.counts.running} run(s) were still going ${p.drain.seconds} s after the window (counted as "still running")${p.drain.stalled ? '; none had ended for 3 minutes' : ''}.`,
        );
    }
    sampler.stop();
    offSampler();
    http.close();
    offHttp();
    s.log(`${driver}: removing the containers and the daemon`);
    await d.destroy();
    offDaemon();
  }
  const result: CronResult = {
    ...(await header({ containers: o.containers, entries: o.entries, minutes: o.minutes, light: o.light, heavy: o.heavy, command: o.command, commands: o.commands.join(','), drain_s: o.drain, log_level: o['log-level'] })),
    provisioning,
    points,
    notes,
  };
  await write(result, (svgName) => markdown(result, svgName), svg(result));
});
