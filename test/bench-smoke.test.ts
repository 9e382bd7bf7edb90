import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import Docker from 'dockerode';
import { execa } from 'execa';
import { pidAlive } from '../host/pid-alive.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DENSITY = join(ROOT, 'dist/bench/density.js');
const WORKLOADS = (process.env.HOODY_BENCH_SMOKE_WORKLOADS ?? 'busybox').split(',');
const MODES = ['docker', 'hoody-ksm-off', 'hoody-ksm-on', 'hoody-grouped'];
// A smoke: two points past zero are enough to produce every figure (the committed runs go to 200).
const COUNTS = [0, 3, 6];

interface Result {
  run_id: string;
  runs: { workload: string; mode: string; daemon: { pid: number; state_dir: string; instance: string } | null }[];
  workloads: Record<string, Record<string, unknown> & { points: { mode: string; count: number; pss: { shim_processes: number } }[] }>;
}


describe('density benchmark (smoke: a short run produces its figures and leaves nothing behind)', () => {
  let out = '';
  after(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  test(`--counts ${COUNTS.join(',')} for ${WORKLOADS.join(', ')} writes JSON, Markdown and SVG with the figures`, async () => {
    out = await mkdtemp(join(tmpdir(), 'hoody-bench-smoke-'));
    const r = await execa(
      process.execPath,
      [DENSITY, '--counts', COUNTS.join(','), '--workloads', WORKLOADS.join(','), '--modes', MODES.join(','), '--settle', '3', '--ksm-timeout', '20', '--out', out, '--quiet'],
      { reject: false, all: true, timeout: 15 * 60_000 },
    );
    assert.equal(r.exitCode, 0, String(r.all));
    assert.match(String(r.stdout), /marginal MiB\/container/);

    const files = await readdir(out);
    const json = files.find((f) => /^density-.*\.json$/.test(f));
    assert.ok(json, `no JSON in ${files.join(', ')}`);
    const base = json.replace(/\.json$/, '');
    assert.ok(files.includes(`${base}.md`) && files.includes(`${base}.svg`), files.join(', '));

    const result = JSON.parse(await readFile(join(out, json), 'utf8')) as Result;
    for (const w of WORKLOADS) {
      const s = result.workloads[w];
      assert.ok(s, `workload ${w} in the JSON`);
      for (const key of ['marginal_mib_per_container', 'page_cache_mib_per_container']) {
        const by = s[key] as Record<string, unknown>;
        for (const mode of ['docker_baseline', 'hoody_ksm_off', 'hoody_ksm_on', 'hoody_grouped']) assert.equal(typeof by[mode], 'number', `${w}.${key}.${mode}`);
      }
      for (const key of ['disk_marginal_mib_per_container', 'ksmd_cpu_percent', 'provision_s_p50', 'provision_s_p95', 'daemon_kib_per_container'])
        assert.equal(typeof s[key], 'number', `${w}.${key}`);
      assert.equal(s.points.length, MODES.length * COUNTS.length);
      // One shim per container, except in the grouped mode (groups of 8): a provision opens a new group only when
      // no group with a running member is free of a start in flight, so 4 in flight open at most 4.
      const shims = (mode: string) => s.points.find((p) => p.mode === mode && p.count === COUNTS.at(-1))!.pss.shim_processes;
      assert.equal(shims('hoody-ksm-on'), COUNTS.at(-1));
      assert.ok(shims('hoody-grouped') <= 4, `the grouped mode shared its shims: ${shims('hoody-grouped')} for ${COUNTS.at(-1)}`);
      // The kernel's share: slab by cache from /proc/slabinfo, tasks, and one container looked at closely.
      const kernel = s.kernel_per_container as Record<string, { slab_top: { cache: string; kib: number }[]; processes: number | null; sample: { mounts: number; namespaces: string[] } | null }>;
      for (const mode of ['docker_baseline', 'hoody_ksm_off', 'hoody_ksm_on', 'hoody_grouped']) {
        assert.equal(kernel[mode]?.slab_top.length, 12, `${w}.kernel_per_container.${mode}.slab_top`);
        assert.equal(typeof kernel[mode]?.processes, 'number');
        assert.ok((kernel[mode]?.sample?.mounts ?? 0) > 0, `${w} ${mode}: a container's mounts`);
        assert.ok(kernel[mode]?.sample?.namespaces.includes('net'), JSON.stringify(kernel[mode]?.sample));
      }
      assert.deepEqual([...new Set(s.points.map((p) => p.count))].sort((a, b) => a - b), COUNTS);
    }
    const md = await readFile(join(out, `${base}.md`), 'utf8');
    assert.match(md, /marginal MiB\/container/);
    assert.match(md, /Raw points/);
    assert.match(md, /Slab caches that grow most/);
    const svg = await readFile(join(out, `${base}.svg`), 'utf8');
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    for (const m of MODES) assert.ok(svg.includes(`>${m}</text>`), `legend entry ${m}`);
    assert.ok((svg.match(/<path /g) ?? []).length >= WORKLOADS.length * MODES.length);

    // Nothing left behind: containers (by the run's label and by each daemon's instance label), daemons, state dirs.
    const docker = new Docker({ socketPath: process.env.HOODY_DOCKER_SOCKET ?? '/var/run/docker.sock' });
    const byRun = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`io.hoody.bench=${result.run_id}`] }) });
    assert.equal(byRun.length, 0, 'docker-mode containers left');
    const daemons = result.runs.flatMap((run) => (run.daemon ? [run.daemon] : []));
    assert.equal(daemons.length, WORKLOADS.length * 3);
    for (const d of daemons) {
      const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`io.hoody.instance=${d.instance}`] }) });
      assert.equal(left.length, 0, `containers of daemon ${d.instance} left`);
      assert.equal(pidAlive(d.pid), false, `hoodyd ${d.pid} still running`);
      assert.equal(existsSync(d.state_dir), false, `state dir ${d.state_dir} left`);
    }
    assert.equal(existsSync(dirname(daemons[0]!.state_dir)), false, 'bench dir left');
  });

  test('--active: every container runs the pipeline each minute; the run reports active − idle, cron lateness and exec latency', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hoody-bench-smoke-active-'));
    try {
      // 65 s: one cron minute per container is enough for a smoke (the committed runs wait 130 s, two minutes).
      const r = await execa(
        process.execPath,
        [DENSITY, '--counts', '0,2', '--workloads', 'busybox', '--modes', 'hoody-ksm-off', '--active', '--active-settle', '65', '--settle', '3', '--out', dir, '--quiet'],
        { reject: false, all: true, timeout: 10 * 60_000 },
      );
      assert.equal(r.exitCode, 0, String(r.all));
      assert.match(String(r.stdout), /hoody_ksm_off_active: -?[\d.]+ MiB\/container more than hoody_ksm_off/);
      const json = (await readdir(dir)).find((f) => /^density-.*\.json$/.test(f));
      assert.ok(json);
      const result = JSON.parse(await readFile(join(dir, json), 'utf8')) as Result;
      const s = result.workloads.busybox!;
      assert.deepEqual([...new Set(s.points.map((p) => p.mode))], ['hoody-ksm-off', 'hoody-ksm-off-active']);
      type Active = { extra_mib: number | null; cron_runs: number; cron_failed: number; exec_failed: number; cron_lateness_ms: { p50: number | null }; exec_ms: { p50: number | null }; extra_parts_kib: Record<string, number | null> };
      const a = (s.active as Record<string, Active>).hoody_ksm_off_active;
      assert.ok(a, JSON.stringify(s.active));
      assert.equal(typeof a.extra_mib, 'number');
      // Both containers ran the pipeline at least once, and every run worked (wget -> exec -> file + bundle PATCH).
      assert.ok(a.cron_runs >= 2, `cron runs ${a.cron_runs}`);
      assert.equal(a.cron_failed, 0, JSON.stringify(s.points.at(-1)));
      assert.equal(a.exec_failed, 0);
      assert.equal(typeof a.cron_lateness_ms.p50, 'number');
      assert.ok((a.exec_ms.p50 ?? 0) > 0, 'exec durations from the exec log');
      assert.equal(typeof a.extra_parts_kib.exec_workers_anon_kib, 'number');
      const md = await readFile(join(dir, json.replace(/\.json$/, '.md')), 'utf8');
      assert.match(md, /Active containers/);
      assert.match(md, /active ≤ 1 MiB\/container more than idle/);
      // --render recomputes the same figures from the raw points.
      const again = await execa(process.execPath, [DENSITY, '--render', join(dir, json)], { reject: false, all: true });
      assert.equal(again.exitCode, 0, String(again.all));
      const rendered = JSON.parse(await readFile(join(dir, json), 'utf8')) as Result;
      assert.deepEqual(rendered.workloads.busybox!.active, s.active);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
