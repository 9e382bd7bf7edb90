/**
 * What keeps idle Node processes' anonymous pages from being merged by KSM (issue 14.6): per lever (V8 flags, env,
 * no ASLR) it starts K idle copies of the node workload's server on the host with the binary the node image ships,
 * lets them settle, stops them, reads every present private anonymous page (/proc/<pid>/maps + pagemap + mem) and
 * hashes it. A page whose content is in all K processes is what KSM could merge; one only this process has is what
 * every extra container costs. Pages are split by region kind (V8 heap, V8 code range, malloc, stacks, static data),
 * and the words that differ between two processes at the same address are traced to what they point at.
 *
 *   node dist/bench/pages.js [--count 3] [--settle 5] [--levers default,seed,…]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NODE_SERVER_JS } from '../host/images.js';
import { ROOT } from './daemon.js';
import { classify, KINDS, type Kind, PAGE, type Snapshot, snapshot, targetOf, threadStackPointers } from './pagemap.js';
import { othersRunning, runBench } from './harness.js';
import { chartSvg } from './ns-chart.js';
import { choiceListOption, numberOption, textOption } from './options.js';
import { fmt, mdTable, notesSection, type ResultHeader, runLines } from './results.js';
import { children, type Session } from './session.js';
import { round, sleep } from './stats.js';

const MIB_PAGES = 256;

interface Lever {
  flags: string[];
  env?: Record<string, string>;
  /** Run under `setarch -R` (personality ADDR_NO_RANDOMIZE: no native ASLR); Docker's seccomp profile refuses it. */
  noAslr?: boolean;
  cost: string;
}

const SEED = ['--random-seed=1'];
const LEAN = ['--v8-pool-size=1', '--max-semi-space-size=1'];
// --short-builtin-calls (V8's default on hosts with >= 4 GiB) copies the embedded builtins into the code range, which
// mmap places at a random address: every Code object then points somewhere different.
const LEVERS = {
  default: { flags: [], cost: 'none (the baseline)' },
  seed: { flags: SEED, cost: 'security: every container of the image gets the same Math.random() sequence, V8 hash seed and JS heap addresses' },
  'seed-jitless': { flags: [...SEED, '--jitless'], cost: 'the seed’s, plus speed: interpreter only (no Sparkplug/Maglev/TurboFan, no WebAssembly)' },
  lean: { flags: LEAN, cost: 'none measurable for an idle server (1 V8 worker thread instead of 4, a 1 MiB semi-space: more scavenges under allocation load)' },
  'seed-lean': { flags: [...SEED, ...LEAN], cost: 'the seed’s' },
  jitless: { flags: ['--jitless'], cost: 'speed: interpreter only, no WebAssembly' },
  'no-opt-lazy': { flags: ['--no-opt', '--max-lazy'], cost: 'speed: no optimizing compilers' },
  'single-threaded': { flags: ['--single-threaded'], cost: 'no V8 worker threads: GC and compilation on the main thread' },
  arena1: { flags: [], env: { MALLOC_ARENA_MAX: '1' }, cost: 'malloc contention between threads (one arena)' },
  'seed-lean-arena1': { flags: [...SEED, ...LEAN], env: { MALLOC_ARENA_MAX: '1' }, cost: 'the seed’s' },
  'seed-lean-nosbc': { flags: [...SEED, ...LEAN, '--no-short-builtin-calls'], cost: 'the seed’s, plus builtins called by far jumps from the binary instead of a copy in the code range (small speed cost, not measured here)' },
  'seed-lean-nosbc-arena1': { flags: [...SEED, ...LEAN, '--no-short-builtin-calls'], env: { MALLOC_ARENA_MAX: '1' }, cost: 'the seed’s and the far builtin calls’' },
  'seed-lean-nosbc-arena1-noaslr': { flags: [...SEED, ...LEAN, '--no-short-builtin-calls'], env: { MALLOC_ARENA_MAX: '1' }, noAslr: true, cost: 'the seed’s, plus no native ASLR (libc, brk, stacks, mmap at fixed addresses); needs a seccomp profile that allows personality(ADDR_NO_RANDOMIZE)' },
} satisfies Record<string, Lever>;
type LeverName = keyof typeof LEVERS;
const LEVER_NAMES = Object.keys(LEVERS) as LeverName[];

const OPTIONS = {
  count: numberOption(3, 2, 20, 'K: idle node processes per lever'),
  rounds: numberOption(3, 1, 20, 'rounds over all levers (the levers interleave; tables show each lever’s median round)'),
  settle: numberOption(5, 0, 120, 'seconds to wait after each process answered its first request (then one more request each)'),
  levers: choiceListOption(LEVER_NAMES, LEVER_NAMES, 'levers to measure, one after the other'),
  node: textOption(join(ROOT, 'node_modules/.bin/node'), 'the node binary (the one the node image copies)', 'path'),
};

/** A free TCP port (the server takes its port from PORT; 0 would mean 8080 there). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

async function get(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) });
    await res.text();
    return res.ok;
  } catch {
    return false;
  }
}

interface Started {
  child: ChildProcess;
  port: number;
}

/** Starts K servers (distinct 5-digit ports), waits for each to answer, settles, asks once more, and stops them all. */
async function startIdle(s: Session, node: string, script: string, lever: Lever, count: number, settleS: number): Promise<Started[]> {
  const started: Started[] = [];
  for (let i = 0; i < count; i++) {
    let port = await freePort();
    while (port < 10000) port = await freePort();
    const argv = [...lever.flags, script];
    const [cmd, args] = lever.noAslr ? ['setarch', ['-R', node, ...argv]] : [node, argv];
    const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', PORT: String(port), ...lever.env };
    const child = spawn(cmd, args, { env, stdio: 'ignore' });
    children.add(child);
    started.push({ child, port });
  }
  for (const p of started) {
    const deadline = Date.now() + 15_000;
    while (!(await get(p.port))) {
      if (Date.now() > deadline || p.child.exitCode !== null) throw new Error(`node on port ${p.port} did not answer (exit ${p.child.exitCode})`);
      await sleep(100);
    }
  }
  await s.nap(settleS * 1000);
  for (const p of started) await get(p.port);
  await sleep(500);
  return started;
}

async function stopAll(started: readonly Started[]): Promise<void> {
  for (const p of started) {
    const exited = new Promise((r) => p.child.once('exit', r));
    p.child.kill('SIGKILL');
    await Promise.race([exited, sleep(5000)]);
    children.delete(p.child);
  }
}

interface LeverResult {
  lever: LeverName;
  flags: string[];
  env: Record<string, string>;
  no_aslr: boolean;
  cost: string;
  processes: number;
  /** MiB per process (mean over the K): resident private anonymous, zero-filled, in all K, in 2..K-1, only in this one. */
  per_process_mib: { resident: number; zero: number; in_all: number; in_some: number; unique: number };
  by_kind_mib: Record<Kind, { resident: number; zero: number; in_all: number; unique: number }>;
  /**
   * What KSM would leave: distinct non-zero contents of all K processes (zero pages merge into the zero page) and
   * the cost of each process beyond the first, (distinct(K) - distinct(one)) / (K - 1).
   */
  ksm: { distinct_mib: number; first_process_mib: number; extra_process_mib: number; saved_per_extra_mib: number };
  /** Processes 1 and 2, same address, different content: the differing 8-byte words by what the word points into. */
  diff: { pages_same_addr: number; pages_differ: number; words_differ: number; targets: Record<string, number>; by_kind: Record<string, number> };
}

const mib = (pages: number) => round(pages / MIB_PAGES, 2) ?? 0;

function analyse(name: LeverName, snaps: readonly Snapshot[], sps: readonly number[][]): LeverResult {
  const lever: Lever = LEVERS[name];
  const K = snaps.length;
  const hashes = snaps.map((s) => s.pages.map((p) => createHash('sha1').update(p.data).digest('base64')));
  const zero = Buffer.alloc(PAGE);
  const isZero = snaps.map((s) => s.pages.map((p) => p.data.equals(zero)));
  const owners = new Map<string, Set<number>>();
  hashes.forEach((hs, i) => {
    hs.forEach((h, j) => {
      if (isZero[i]![j]) return;
      const set = owners.get(h) ?? new Set<number>();
      owners.set(h, set.add(i));
    });
  });
  const tot = { resident: 0, zero: 0, in_all: 0, in_some: 0, unique: 0 };
  const byKind = Object.fromEntries(KINDS.map((k) => [k, { resident: 0, zero: 0, in_all: 0, unique: 0 }])) as LeverResult['by_kind_mib'];
  snaps.forEach((s, i) => {
    s.pages.forEach((p, j) => {
      const bk = byKind[p.kind];
      tot.resident++;
      bk.resident++;
      if (isZero[i]![j]) {
        tot.zero++;
        bk.zero++;
        return;
      }
      const n = owners.get(hashes[i]![j]!)!.size;
      if (n === K) {
        tot.in_all++;
        bk.in_all++;
      } else if (n === 1) {
        tot.unique++;
        bk.unique++;
      } else tot.in_some++;
    });
  });
  const perProc = (x: number) => mib(x / K);
  const distinctOne = snaps.map((_, i) => new Set(hashes[i]!.filter((_, j) => !isZero[i]![j])).size);
  const distinctOneMean = distinctOne.reduce((a, b) => a + b, 0) / K;
  const extra = (owners.size - distinctOneMean) / (K - 1);
  // The same-address comparison of the first two processes: which words differ, and what they point at.
  const diff: LeverResult['diff'] = { pages_same_addr: 0, pages_differ: 0, words_differ: 0, targets: {}, by_kind: {} };
  const [a, b] = snaps;
  if (a && b) {
    const kindsA = classify(a.maps, sps[0]!);
    const second = new Map(b.pages.map((p) => [p.addr, p]));
    for (const pa of a.pages) {
      const pb = second.get(pa.addr);
      if (!pb) continue;
      diff.pages_same_addr++;
      if (pa.data.equals(pb.data)) continue;
      diff.pages_differ++;
      diff.by_kind[pa.kind] = (diff.by_kind[pa.kind] ?? 0) + 1;
      for (let o = 0; o < PAGE; o += 8) {
        const va = pa.data.readBigUInt64LE(o);
        if (va === pb.data.readBigUInt64LE(o)) continue;
        diff.words_differ++;
        const t = `${pa.kind} → ${targetOf(a, kindsA, va)}`;
        diff.targets[t] = (diff.targets[t] ?? 0) + 1;
      }
    }
    diff.targets = Object.fromEntries(Object.entries(diff.targets).sort((x, y) => y[1] - x[1]));
  }
  return {
    lever: name,
    flags: lever.flags,
    env: lever.env ?? {},
    no_aslr: lever.noAslr ?? false,
    cost: lever.cost,
    processes: K,
    per_process_mib: { resident: perProc(tot.resident), zero: perProc(tot.zero), in_all: perProc(tot.in_all), in_some: perProc(tot.in_some), unique: perProc(tot.unique) },
    by_kind_mib: Object.fromEntries(KINDS.map((k) => [k, { resident: perProc(byKind[k].resident), zero: perProc(byKind[k].zero), in_all: perProc(byKind[k].in_all), unique: perProc(byKind[k].unique) }])) as LeverResult['by_kind_mib'],
    ksm: { distinct_mib: mib(owners.size), first_process_mib: mib(distinctOneMean), extra_process_mib: mib(extra), saved_per_extra_mib: mib(tot.resident / K - extra) },
    diff,
  };
}

/**
 * The classification's check: a probe process (the same server, lever flags, plus a SIGUSR2 handler that prints
 * v8.getHeapSpaceStatistics()) — V8's own committed sizes against the pages the heuristic called V8 heap / code.
 */
async function probe(s: Session, node: string, dir: string, lever: Lever, settleS: number): Promise<{ v8_heap_committed_mib: number; v8_code_committed_mib: number; classified_heap_mib: number; classified_code_mib: number }> {
  const script = join(dir, 'probe.js');
  await writeFile(script, `${NODE_SERVER_JS}process.on('SIGUSR2', () => process.stdout.write(JSON.stringify(require('v8').getHeapSpaceStatistics()) + '\\n'));\n`);
  const port = await freePort();
  const argv = [...lever.flags, script];
  const child = lever.noAslr ? spawn('setarch', ['-R', node, ...argv], { env: { PORT: String(port), ...lever.env }, stdio: ['ignore', 'pipe', 'ignore'] }) : spawn(node, argv, { env: { PORT: String(port), ...lever.env }, stdio: ['ignore', 'pipe', 'ignore'] });
  children.add(child);
  try {
    const deadline = Date.now() + 15_000;
    while (!(await get(port))) {
      if (Date.now() > deadline) throw new Error('probe did not answer');
      await sleep(100);
    }
    await s.nap(settleS * 1000);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.kill('SIGUSR2');
    while (!out.includes('\n') && Date.now() < deadline + 10_000) await sleep(50);
    const spaces = JSON.parse(out) as { space_name: string; physical_space_size: number }[];
    const pid = child.pid!;
    process.kill(pid, 'SIGSTOP');
    const snap = await snapshot(pid);
    process.kill(pid, 'SIGCONT');
    const code = spaces.filter((x) => x.space_name.startsWith('code')).reduce((t, x) => t + x.physical_space_size, 0);
    const heap = spaces.filter((x) => !x.space_name.startsWith('code')).reduce((t, x) => t + x.physical_space_size, 0);
    const count = (k: Kind) => snap.pages.filter((p) => p.kind === k).length;
    return { v8_heap_committed_mib: round(heap / 1048576, 2) ?? 0, v8_code_committed_mib: round(code / 1048576, 2) ?? 0, classified_heap_mib: mib(count('v8-heap')), classified_code_mib: mib(count('v8-code')) };
  } finally {
    child.kill('SIGKILL');
    children.delete(child);
  }
}

interface PagesResult extends ResultHeader {
  options: { count: number; rounds: number; settle: number; levers: LeverName[]; node: string; node_version: string };
  /** Each lever's median round (by KSM extra-process MiB), its probe, and the spread over all rounds. */
  levers: (LeverResult & { probe: Awaited<ReturnType<typeof probe>> | null; rounds: { extra_process_mib: number[]; in_all_mib: number[]; unique_mib: number[] } })[];
  notes: string[];
}

runBench({ name: 'pages', description: 'which anonymous pages of idle Node processes KSM could merge, per V8 flag / env lever', options: OPTIONS, budget: { default: 1200, min: 30, max: 7200 } }, async ({ o, s, header, write, notes }) => {
  const others = await othersRunning();
  if (others.length) notes.push(`Other runs were on the box (${others[0]}); page contents do not depend on load, timings are not measured.`);
  const dir = await mkdtemp(join(tmpdir(), 'hoody-pages-'));
  s.cleanup.push(`temp dir ${dir}`, () => rm(dir, { recursive: true, force: true }));
  const script = join(dir, 'server.js');
  await writeFile(script, NODE_SERVER_JS);
  const nodeVersion = await new Promise<string>((resolve) => {
    const c = spawn(o.node, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let v = '';
    c.stdout.on('data', (d: Buffer) => (v += d.toString()));
    c.on('exit', () => resolve(v.trim()));
  });
  const rounds = new Map<LeverName, LeverResult[]>(o.levers.map((n) => [n, []]));
  const probes = new Map<LeverName, Awaited<ReturnType<typeof probe>> | null>();
  for (let round = 1; round <= o.rounds; round++) {
    for (const name of o.levers) {
      s.check();
      const lever: Lever = LEVERS[name];
      s.log(`round ${round}, ${name}: ${o.count} × node ${lever.flags.join(' ')}${lever.env ? ` (${JSON.stringify(lever.env)})` : ''}${lever.noAslr ? ' under setarch -R' : ''}`);
      const started = await startIdle(s, o.node, script, lever, o.count, o.settle);
      const snaps: Snapshot[] = [];
      const sps: number[][] = [];
      try {
        for (const p of started) process.kill(p.child.pid!, 'SIGSTOP');
        for (const p of started) {
          sps.push(await threadStackPointers(p.child.pid!));
          snaps.push(await snapshot(p.child.pid!));
        }
      } finally {
        await stopAll(started);
      }
      const r = analyse(name, snaps, sps);
      rounds.get(name)!.push(r);
      if (round === 1)
        probes.set(
          name,
          await probe(s, o.node, dir, lever, o.settle).catch((err: Error) => {
            s.log(`  probe failed: ${err.message}`);
            return null;
          }),
        );
      const pp = r.per_process_mib;
      s.log(`  resident ${pp.resident} MiB/process: zero ${pp.zero}, in all ${pp.in_all}, unique ${pp.unique}; KSM: extra process ${r.ksm.extra_process_mib} MiB`);
    }
  }
  const results: PagesResult['levers'] = o.levers.map((name) => {
    const rs = rounds.get(name)!;
    const sorted = [...rs].sort((a, b) => a.ksm.extra_process_mib - b.ksm.extra_process_mib);
    const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
    return { ...median, probe: probes.get(name) ?? null, rounds: { extra_process_mib: rs.map((r) => r.ksm.extra_process_mib), in_all_mib: rs.map((r) => r.per_process_mib.in_all), unique_mib: rs.map((r) => r.per_process_mib.unique) } };
  });
  notes.push(
    'Pages: present (pagemap bit 63) and anonymous (bit 61 clear) pages of every readable private mapping: anonymous mappings, and the copy-on-write pages of private file mappings (.data, GOT, relro). The processes are stopped (SIGSTOP) while read.',
    'Kinds (heuristic): stack = the mapping holding a thread’s stack pointer (/proc/<pid>/task/<tid>/syscall) or [stack]; malloc = [heap] and glibc arena heaps (64 MiB-aligned rw mapping + its PROT_NONE rest); v8-code = the gap-free run of anonymous mappings around an executable anonymous one (V8’s code range); v8-heap = any other anonymous mapping that starts on a 256 KiB boundary (V8 allocates every heap page 256 KiB-aligned; a malloc’d mmap chunk is only page-aligned); static = COW’d pages of private file mappings and anonymous .bss right after a file mapping; other = the rest (large malloc chunks, TLS, libuv/io_uring rings, …). The probe row checks the heuristic against V8’s own committed sizes.',
    'Processes run on the host, each on its own 5-digit PORT and with its own pid (in containers all would be pid 1 on :8080): a few bytes of difference in otherwise identical pages.',
  );
  const result: PagesResult = { ...(await header({ count: o.count, rounds: o.rounds, settle: o.settle, levers: o.levers, node: o.node, node_version: nodeVersion })), levers: results, notes };
  process.stdout.write(`\n${mdTable(MAIN_HEADER, mainRows(result))}\n`);
  await write(result, (svgName) => markdown(result, svgName), svg(result));
});

const MAIN_HEADER = ['lever', 'flags / env', 'resident MiB', 'zero', 'in all K', 'in some', 'unique', 'KSM: extra process MiB', 'saved per extra MiB', 'extra process, each round', 'cost'];

function flagsOf(r: LeverResult): string {
  return [...r.flags, ...Object.entries(r.env).map(([k, v]) => `${k}=${v}`), ...(r.no_aslr ? ['setarch -R'] : [])].join(' ') || '–';
}

function mainRows(r: Pick<PagesResult, 'levers'>): string[][] {
  return r.levers.map((l) => {
    const p = l.per_process_mib;
    return [l.lever, `\`${flagsOf(l)}\``, fmt(p.resident), fmt(p.zero), fmt(p.in_all), fmt(p.in_some), fmt(p.unique), fmt(l.ksm.extra_process_mib), fmt(l.ksm.saved_per_extra_mib), l.rounds.extra_process_mib.map((x) => fmt(x)).join(' · '), l.cost];
  });
}

function markdown(r: PagesResult, svgName: string | null): string {
  const [run, opts] = runLines(r);
  const kindRows = r.levers.map((l) => [l.lever, ...KINDS.map((k) => `${fmt(l.by_kind_mib[k].resident)} / ${fmt(l.by_kind_mib[k].in_all + l.by_kind_mib[k].zero)} / ${fmt(l.by_kind_mib[k].unique)}`)]);
  const probeRows = r.levers.filter((l) => l.probe).map((l) => [l.lever, fmt(l.probe!.v8_heap_committed_mib), fmt(l.probe!.classified_heap_mib), fmt(l.probe!.v8_code_committed_mib), fmt(l.probe!.classified_code_mib)]);
  const diffRows = r.levers.map((l) => [l.lever, String(l.diff.pages_same_addr), String(l.diff.pages_differ), String(l.diff.words_differ), Object.entries(l.diff.targets).slice(0, 6).map(([t, n]) => `${t} ${n}`).join('; ')]);
  return [
    `# Idle Node pages KSM could merge (${r.options.count} processes per lever, ${r.options.node_version})`,
    '',
    run,
    `${opts} Command: \`node dist/bench/pages.js --count ${r.options.count} --rounds ${r.options.rounds} --settle ${r.options.settle} --levers ${r.options.levers.join(',')}\`.`,
    '',
    ...(svgName ? [`![pages per lever](${svgName})`, ''] : []),
    '## Per lever (MiB per process, mean of K; the lever’s median round)',
    '',
    'resident = present private anonymous pages; zero = zero-filled; in all K = non-zero content every process has (KSM merges it); in some = in 2..K-1; unique = only this process. KSM: extra process = (distinct non-zero contents of K processes − those of one) / (K − 1), what each further container costs after merging; saved = resident − that.',
    '',
    mdTable(MAIN_HEADER, mainRows(r)),
    '',
    '## By region kind (MiB per process: resident / mergeable (in all K + zero) / unique)',
    '',
    mdTable(['lever', ...KINDS], kindRows),
    '',
    '## What differs: processes 1 and 2, same address, different content',
    '',
    'Differing 8-byte words, by the page’s kind → what process 1’s value points into (Smi: a V8 small integer, value in the upper 32 bits — hashes, ids, counters; “not a pointer”: doubles, timestamps, random state, sizes).',
    '',
    mdTable(['lever', 'pages at the same address', 'of them differ', 'words differ', 'top: kind → target words'], diffRows),
    '',
    '## Classification check (one probe process per lever, v8.getHeapSpaceStatistics() physical sizes)',
    '',
    mdTable(['lever', 'V8 non-code spaces MiB', 'classified v8-heap MiB', 'V8 code spaces MiB', 'classified v8-code MiB'], probeRows),
    '',
    ...notesSection(r.notes),
  ].join('\n');
}

function svg(r: PagesResult): string {
  const bar = (name: string, pick: (l: LeverResult) => number) => ({ label: name, values: r.levers.map((l) => ({ name: l.lever, value: pick(l) })) });
  return chartSvg(
    [
      {
        kind: 'bar',
        title: 'MiB per process',
        yLabel: 'MiB',
        groups: [bar('resident', (l) => l.per_process_mib.resident), bar('in all K', (l) => l.per_process_mib.in_all), bar('unique', (l) => l.per_process_mib.unique), bar('KSM extra', (l) => l.ksm.extra_process_mib)],
      },
      { kind: 'bar', title: 'unique MiB per process, by region', yLabel: 'MiB', groups: KINDS.map((k) => bar(k, (l) => l.by_kind_mib[k].unique)) },
    ],
    'idle node HTTP server on the host, K processes per lever: pages identical in all K are what KSM can merge',
    2,
  );
}
