import { pathToFileURL } from 'node:url';
import Docker from 'dockerode';
import { DockerEngine } from '../host/engine.js';
import { BUSYBOX_IMAGE, buildBusyboxImage, IDLE_CMD } from '../host/images.js';
import { meminfo } from '../host/metrics.js';
import { containerPids, processMemory, shimPids } from '../containers/stats.js';
import { percentile, round, sleep } from './stats.js';

/**
 * What user namespaces cost (issue 10.9): the same busybox workload on two engines in one run, one rootful and one
 * started with `--userns-remap`, alternating so both see the same box. Per engine: `docker run` wall time (create +
 * start of a detached container, then its removal, one at a time) and memory per idle container: the PSS of its
 * processes and its shim, and the host's MemTotal - MemAvailable slope from 0 to N containers (noisy on a box
 * other work shares). KSM knobs are left as they are (no host-wide change).
 *
 *   node dist/bench/userns.js --rootful /path/rootful.sock --remapped /path/remapped.sock [--count 20] [--runs 15] [--rounds 2]
 */
const LABEL = 'io.hoody.bench.userns';

async function used(): Promise<number> {
  const m = await meminfo();
  return (m.MemTotal ?? 0) - (m.MemAvailable ?? 0);
}

async function runOnce(docker: Docker): Promise<number> {
  const t0 = performance.now();
  const c = await docker.createContainer({ Image: BUSYBOX_IMAGE, Cmd: IDLE_CMD, Labels: { [LABEL]: 'run' }, HostConfig: { NetworkMode: 'none' } });
  await c.start();
  const ms = performance.now() - t0;
  await c.remove({ force: true });
  return ms;
}

/** Per idle container: host MemAvailable slope (noisy on a shared box), and PSS of its processes + its shim (not). */
async function memoryPerContainer(docker: Docker, count: number, settleS: number): Promise<{ slope: number; pss: number }> {
  await sleep(settleS * 1000);
  const before = await used();
  const ids: string[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const c = await docker.createContainer({ Image: BUSYBOX_IMAGE, Cmd: IDLE_CMD, Labels: { [LABEL]: 'mem' }, HostConfig: { NetworkMode: 'none' } });
      ids.push(c.id);
      await c.start();
    }
    await sleep(settleS * 1000);
    const slope = ((await used()) - before) / count;
    const shims = await shimPids();
    let pss = 0;
    for (const id of ids) {
      const pid = Number((await docker.getContainer(id).inspect()).State?.Pid ?? 0);
      for (const p of await containerPids(id, pid)) pss += (await processMemory(p)).pssBytes;
      const shim = shims.get(id);
      if (shim) pss += (await processMemory(shim)).pssBytes;
    }
    return { slope, pss: pss / count };
  } finally {
    for (const id of ids) await docker.getContainer(id).remove({ force: true }).catch(() => undefined);
  }
}

export async function main(argv: string[]): Promise<void> {
  const arg = (name: string, def?: string): string => {
    const i = argv.indexOf(`--${name}`);
    const v = i >= 0 ? argv[i + 1] : def;
    if (v === undefined) throw new Error(`--${name} is required`);
    return v;
  };
  const engines = { rootful: arg('rootful'), remapped: arg('remapped') };
  const count = Number(arg('count', '20'));
  const runs = Number(arg('runs', '15'));
  const rounds = Number(arg('rounds', '2'));
  const settle = Number(arg('settle', '10'));
  const out: Record<string, { userns: unknown; runMs: number[]; slopeMiB: number[]; pssMiB: number[] }> = {};
  for (const [name, socket] of Object.entries(engines)) {
    const engine = new DockerEngine(socket);
    if (!(await engine.imageExists(BUSYBOX_IMAGE))) await buildBusyboxImage(engine.docker);
    out[name] = { userns: (await engine.info()).userns, runMs: [], slopeMiB: [], pssMiB: [] };
    await runOnce(engine.docker); // warm the image's files into the page cache
  }
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < runs; i++) {
      for (const [name, socket] of Object.entries(engines)) out[name]!.runMs.push(await runOnce(new Docker({ socketPath: socket })));
    }
    for (const [name, socket] of Object.entries(engines)) {
      const m = await memoryPerContainer(new Docker({ socketPath: socket }), count, settle);
      out[name]!.slopeMiB.push(round(m.slope / 1024 / 1024, 2) ?? 0);
      out[name]!.pssMiB.push(round(m.pss / 1024 / 1024, 2) ?? 0);
    }
  }
  for (const [name, o] of Object.entries(out)) {
    const sorted = [...o.runMs].sort((a, b) => a - b);
    const s = (p: number) => round((percentile(sorted, p) ?? 0) / 1000, 3);
    process.stdout.write(
      `${name.padEnd(9)} userns=${JSON.stringify(o.userns)} docker run (create+start) p50 ${s(50)} s, p90 ${s(90)} s (n=${sorted.length}); per idle container (N=${count}, per round): PSS of its processes + shim ${o.pssMiB.join(', ')} MiB, host MemAvailable slope ${o.slopeMiB.join(', ')} MiB\n`,
    );
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  });
}
