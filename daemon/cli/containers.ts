import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import type { AdminClient } from '../client.js';
import { mib, printJson, table } from './format.js';

interface View {
  name: string;
  state: string;
  image: string;
  memoryBytes: number;
  cpus: number;
  diskBytes: number | null;
  createdAt: string;
  snapshots: string[];
}
interface Created {
  name: string;
  id: string;
  state: string;
  token: string;
  host?: string;
}

type ClientOf = (cmd: Command) => AdminClient;

async function runPool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

interface FanOut<T> {
  hosts: { host: string; result: T }[];
  partial: boolean;
  failed: { host: string; code: string; message: string }[];
}

/** A partial fleet answer: which hosts are missing, on stderr, and exit 1 (what is there was printed). */
function reportPartial(all: FanOut<unknown>): void {
  if (!all.partial) return;
  for (const f of all.failed) process.stderr.write(`partial: host ${f.host} did not answer: ${f.code} ${f.message}\n`);
  process.exitCode = 1;
}

/** create, ls, inspect, start/stop/restart, rm, snapshot, clone, token, stats. */
export function containerCommands(program: Command, client: ClientOf): void {
  program
    .command('create')
    .description('create and start a container (or N of them with --count: NAME-1..NAME-N)')
    .argument('<name>', 'container name: a-z, 0-9, -, at most 63')
    .option('--image <image>', 'image (default: the daemon\'s HOODY_IMAGE)')
    .option('--memory <size>', 'memory limit, e.g. 256m')
    .option('--cpus <n>', 'CPU limit, e.g. 0.5')
    .option('--disk <size>', 'disk quota of the data volume, e.g. 2g')
    .option('--domain <domain>', 'a domain it may route and certify (repeatable; example.org or *.example.org)', (d: string, all: string[]) => [...all, d], [] as string[])
    .option('--host <host>', 'in a fleet: create it on this host (else placement picks one)')
    .option('--count <n>', 'create N containers named NAME-1..NAME-N, with a progress bar')
    .option('--parallel <n>', 'creates in flight with --count', '4')
    .option('--json', 'print JSON')
    .action(async (name: string, o: Record<string, string | boolean | string[] | undefined>, cmd: Command) => {
      const domains = (o.domain as string[] | undefined) ?? [];
      const body = (n: string) => ({
        name: n,
        ...(o.image ? { image: o.image } : {}),
        ...(o.memory ? { memory: o.memory } : {}),
        ...(o.cpus ? { cpus: Number(o.cpus) } : {}),
        ...(o.disk ? { disk: o.disk } : {}),
        ...(domains.length ? { domains } : {}),
        ...(o.host ? { host: o.host } : {}),
      });
      const api = client(cmd);
      if (o.count === undefined) {
        const c = await api.call<Created>('POST', '/v1/containers', body(name));
        if (o.json) return printJson(c);
        process.stdout.write(`created ${c.name} (${c.state})${c.host ? ` on host ${c.host}` : ''}\ntoken: ${c.token}  (shown once)\n`);
        return;
      }
      const count = Number(o.count);
      if (!Number.isInteger(count) || count < 1) throw Object.assign(new Error('--count must be a positive integer'), { usage: true });
      const names = Array.from({ length: count }, (_, i) => `${name}-${i + 1}`);
      const bar = new SingleBar({ format: 'creating [{bar}] {value}/{total} {rate}/s {last}', stream: process.stderr, hideCursor: true, noTTYOutput: true, notTTYSchedule: 1000 });
      const started = Date.now();
      bar.start(count, 0, { rate: '0.0', last: '' });
      const created: Created[] = [];
      const failed: { name: string; error: string }[] = [];
      await runPool(names, Number(o.parallel) || 4, async (n) => {
        try {
          created.push(await api.call<Created>('POST', '/v1/containers', body(n)));
        } catch (err) {
          failed.push({ name: n, error: (err as Error).message });
        }
        const done = created.length + failed.length;
        bar.update(done, { rate: (done / ((Date.now() - started) / 1000)).toFixed(1), last: n });
      });
      bar.stop();
      const seconds = (Date.now() - started) / 1000;
      const rate = created.length / seconds;
      if (o.json) printJson({ created, failed, seconds, ratePerSecond: rate });
      else {
        for (const c of created) process.stdout.write(`${c.name}\t${c.token}\n`);
        process.stdout.write(`created ${created.length} containers in ${seconds.toFixed(1)} s (${rate.toFixed(2)} containers/s)\n`);
      }
      for (const f of failed) process.stderr.write(`failed ${f.name}: ${f.error}\n`);
      if (failed.length) process.exitCode = 1;
    });

  program
    .command('ls')
    .description('list containers')
    .option('--fleet', 'every live host of the fleet (a host that does not answer in time is reported, the rest listed)')
    .option('--timeout <ms>', 'with --fleet: per host', '3000')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean; fleet?: boolean; timeout: string }, cmd: Command) => {
      if (o.fleet) {
        const all = await client(cmd).call<FanOut<View[]>>('GET', `/v1/fleet/containers?timeout_ms=${Number(o.timeout) || 3000}`);
        if (o.json) return printJson(all);
        const rows = all.hosts.flatMap((h) => h.result.map((c) => [h.host, c.name, c.state, c.image, mib(c.memoryBytes), c.cpus, mib(c.diskBytes), c.createdAt]));
        process.stdout.write(`${table(['HOST', 'NAME', 'STATE', 'IMAGE', 'MEMORY', 'CPUS', 'DISK', 'CREATED'], rows)}\n`);
        return reportPartial(all);
      }
      const list = await client(cmd).call<View[]>('GET', '/v1/containers');
      if (o.json) return printJson(list);
      process.stdout.write(
        `${table(
          ['NAME', 'STATE', 'IMAGE', 'MEMORY', 'CPUS', 'DISK', 'CREATED'],
          list.map((c) => [c.name, c.state, c.image, mib(c.memoryBytes), c.cpus, mib(c.diskBytes), c.createdAt]),
        )}\n`,
      );
    });

  program
    .command('inspect')
    .description('show one container as JSON')
    .argument('<name>')
    .action(async (name: string, _o: unknown, cmd: Command) => printJson(await client(cmd).call('GET', `/v1/containers/${encodeURIComponent(name)}`)));

  program
    .command('recover')
    .description("rebuild containers missing from the engine (removed behind hoody's back, or a wiped engine) from hoody's state and their volumes: same name, limits, tokens, cron entries, routes, files")
    .argument('[names...]')
    .option('--all', 'every container that is missing')
    .option('--json', 'print JSON')
    .action(async (names: string[], o: { all?: boolean; json?: boolean }, cmd: Command) => {
      const c = client(cmd);
      if (o.all && names.length) throw Object.assign(new Error('give names or --all, not both'), { usage: true });
      const list = o.all ? (await c.call<View[]>('GET', '/v1/containers')).filter((v) => v.state === 'missing').map((v) => v.name) : names;
      if (!o.all && list.length === 0) throw Object.assign(new Error('name a container, or --all'), { usage: true });
      const out: { container: View; recovered: boolean }[] = [];
      for (const name of list) {
        const r = await c.call<{ container: View; recovered: boolean }>('POST', `/v1/containers/${encodeURIComponent(name)}/recover`, {});
        out.push(r);
        if (!o.json) process.stdout.write(`${name}: ${r.recovered ? `rebuilt, ${r.container.state}` : `not missing (${r.container.state}); nothing to do`}\n`);
      }
      if (o.json) printJson(out);
      else if (list.length === 0) process.stdout.write('no container is missing\n');
    });

  for (const action of ['start', 'stop', 'restart'] as const) {
    program
      .command(action)
      .description(action === 'start' ? 'start a container (one missing from the engine is rebuilt first, as `recover` does)' : `${action} a container`)
      .argument('<name>')
      .option('--json', 'print JSON')
      .action(async (name: string, o: { json?: boolean }, cmd: Command) => {
        const v = await client(cmd).call<View>('POST', `/v1/containers/${encodeURIComponent(name)}/${action}`, {});
        if (o.json) printJson(v);
        else process.stdout.write(`${v.name}: ${v.state}\n`);
      });
  }

  program
    .command('rm')
    .description('delete a container: engine container, data volume, snapshots, quota group and rows')
    .argument('<names...>')
    .option('--json', 'print JSON')
    .action(async (names: string[], o: { json?: boolean }, cmd: Command) => {
      const out = [];
      for (const name of names) out.push(await client(cmd).call('DELETE', `/v1/containers/${encodeURIComponent(name)}`));
      if (o.json) printJson(out);
      else for (const n of names) process.stdout.write(`removed ${n}\n`);
    });

  const snapshot = program
    .command('snapshot')
    .description("snapshots of a container's data volume (/files, /scripts): take (the default), ls with sizes, rm, restore, schedule");
  snapshot
    .command('create', { isDefault: true })
    .description('take a read-only snapshot: `hoody snapshot NAME SNAP`')
    .argument('<name>')
    .argument('<snapshot>')
    .option('--json', 'print JSON')
    .action(async (name: string, snap: string, o: { json?: boolean }, cmd: Command) => {
      const s = await client(cmd).call<{ name: string; path: string }>('POST', `/v1/containers/${encodeURIComponent(name)}/snapshots`, { name: snap });
      if (o.json) printJson(s);
      else process.stdout.write(`snapshot ${name}@${s.name} at ${s.path}\n`);
    });
  snapshot
    .command('ls')
    .description("a container's snapshots, oldest first: exclusive size (freed by rm) and referenced size")
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { json?: boolean }, cmd: Command) => {
      type S = { name: string; createdAt: string; exclusiveBytes: number | null; referencedBytes: number | null; auto: boolean };
      const list = await client(cmd).call<S[]>('GET', `/v1/containers/${encodeURIComponent(name)}/snapshots`);
      if (o.json) return printJson(list);
      process.stdout.write(`${table(['SNAPSHOT', 'CREATED', 'EXCLUSIVE', 'REFERENCED', 'BY'], list.map((x) => [x.name, x.createdAt, mib(x.exclusiveBytes), mib(x.referencedBytes), x.auto ? 'schedule' : 'operator']))}\n`);
    });
  snapshot
    .command('rm')
    .description('delete a snapshot')
    .argument('<name>')
    .argument('<snapshot>')
    .action(async (name: string, snap: string, _o: unknown, cmd: Command) => {
      await client(cmd).call('DELETE', `/v1/containers/${encodeURIComponent(name)}/snapshots/${encodeURIComponent(snap)}`);
      process.stdout.write(`deleted ${name}@${snap}\n`);
    });
  snapshot
    .command('restore')
    .description('put the data volume back to a snapshot (the container stops and starts again; the current data is kept as snapshot pre-restore-<time>)')
    .argument('<name>')
    .argument('<snapshot>')
    .option('--json', 'print JSON')
    .action(async (name: string, snap: string, o: { json?: boolean }, cmd: Command) => {
      const r = await client(cmd).call<{ restored: string; kept: string }>('POST', `/v1/containers/${encodeURIComponent(name)}/snapshots/${encodeURIComponent(snap)}/restore`, {});
      if (o.json) printJson(r);
      else process.stdout.write(`${name}: restored to ${r.restored}; what it held before is snapshot ${r.kept}\n`);
    });
  snapshot
    .command('schedule')
    .description('snapshots on a schedule: `--every 1h --keep 24` (the oldest automatic ones beyond --keep are deleted), `--off`, or no option to show it')
    .argument('<name>')
    .option('--every <duration>', 'interval: 15m, 1h, 1d (at least a minute)')
    .option('--keep <n>', 'automatic snapshots kept', (v) => Number(v))
    .option('--off', 'remove the schedule (its snapshots stay)')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { every?: string; keep?: number; off?: boolean; json?: boolean }, cmd: Command) => {
      const c = client(cmd);
      const path = `/v1/containers/${encodeURIComponent(name)}/snapshot-schedule`;
      if (o.off && (o.every || o.keep)) throw Object.assign(new Error('--off takes no --every or --keep'), { usage: true });
      if ((o.every === undefined) !== (o.keep === undefined)) throw Object.assign(new Error('give both --every and --keep'), { usage: true });
      type Sch = { everyS: number; keep: number; nextAt: string } | null;
      const r = o.off ? await c.call('DELETE', path) : o.every ? await c.call<Sch>('PUT', path, { every: o.every, keep: o.keep }) : await c.call<Sch>('GET', path);
      if (o.json) return printJson(r);
      if (o.off) return void process.stdout.write(`${name}: no snapshot schedule\n`);
      const s = r as Sch;
      process.stdout.write(s ? `${name}: a snapshot every ${s.everyS}s, keeping ${s.keep}; next at ${s.nextAt}\n` : `${name}: no snapshot schedule\n`);
    });

  program
    .command('clone')
    .description('new container whose data volume is a snapshot of NAME\'s (files and scripts carried over)')
    .argument('<name>')
    .argument('<new>')
    .option('--json', 'print JSON')
    .action(async (name: string, next: string, o: { json?: boolean }, cmd: Command) => {
      const c = await client(cmd).call<Created>('POST', `/v1/containers/${encodeURIComponent(name)}/clone`, { name: next });
      if (o.json) printJson(c);
      else process.stdout.write(`cloned ${name} -> ${c.name} (${c.state})\ntoken: ${c.token}  (shown once)\n`);
    });

  program
    .command('token')
    .description('issue a token for a container (or --rotate: replace the user\'s tokens, old ones fail at once)')
    .argument('<name>')
    .option('--rotate', 'revoke the user\'s tokens and issue one new one')
    .option('--user <user>', 'token user (root is the owner)', 'root')
    .option('--scope <scopes>', 'comma list of cron,exec,proxy,files,admin')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { rotate?: boolean; user: string; scope?: string; json?: boolean }, cmd: Command) => {
      const body = { user: o.user, ...(o.scope ? { scopes: o.scope.split(',') } : {}) };
      const path = `/v1/containers/${encodeURIComponent(name)}/tokens${o.rotate ? '/rotate' : ''}`;
      const t = await client(cmd).call<{ token: string; user: string; scopes: string[] }>('POST', path, body);
      if (o.json) printJson(t);
      else process.stdout.write(`${t.token}\n`);
    });

  program
    .command('domains')
    .description('show or set the domains a container may route, certify and order (none: any name not reserved)')
    .argument('<name>')
    .argument('[domains...]', 'the new grants (example.org, *.example.org); routes and certificates outside them are dropped')
    .option('--clear', 'remove every grant (any name that is not reserved)')
    .option('--json', 'print JSON')
    .action(async (name: string, domains: string[], o: { clear?: boolean; json?: boolean }, cmd: Command) => {
      const path = `/v1/containers/${encodeURIComponent(name)}/domains`;
      if (o.clear && domains.length) throw Object.assign(new Error('give domains or --clear, not both'), { usage: true });
      type Grants = { name: string; domains: string[]; dropped?: { routes: string[]; certs: string[] } };
      const g = domains.length || o.clear ? await client(cmd).call<Grants>('PUT', path, { domains }) : await client(cmd).call<Grants>('GET', path);
      if (o.json) return printJson(g);
      process.stdout.write(`${g.name}: ${g.domains.length ? g.domains.join(' ') : '(no grants: any name that is not reserved)'}\n`);
      for (const h of g.dropped?.routes ?? []) process.stdout.write(`dropped route ${h}\n`);
      for (const d of g.dropped?.certs ?? []) process.stdout.write(`dropped certificate ${d}\n`);
    });

  program
    .command('stats')
    .description('per-container memory (RSS/PSS), KSM sharing and disk, with totals')
    .option('--fleet', 'every live host of the fleet (a host that does not answer in time is reported, the rest listed)')
    .option('--timeout <ms>', 'with --fleet: per host', '3000')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean; fleet?: boolean; timeout: string }, cmd: Command) => {
      type P = { script: string; user: string; state: string; pid: number | null; rssBytes: number | null; requests: number; restarts: number };
      type S = { name: string; state: string; rssBytes: number; pssBytes: number; shimPssBytes: number; ksmProfitBytes: number; diskExclusiveBytes: number; diskLimitBytes: number | null; mergeAny: boolean; persistent?: P[] };
      if (o.fleet) {
        const all = await client(cmd).call<FanOut<{ containers: S[]; totals: Record<string, number> }>>('GET', `/v1/fleet/stats?timeout_ms=${Number(o.timeout) || 3000}`);
        if (o.json) return printJson(all);
        const rows = all.hosts.flatMap((h) => h.result.containers.map((c) => [h.host, c.name, c.state, mib(c.rssBytes), mib(c.pssBytes), mib(c.ksmProfitBytes), mib(c.diskExclusiveBytes)]));
        process.stdout.write(`${table(['HOST', 'NAME', 'STATE', 'RSS', 'PSS', 'KSM SAVED', 'DISK EXCL'], rows)}\n`);
        for (const h of all.hosts) process.stdout.write(`${h.host}: RSS ${mib(h.result.totals.rssBytes)}, PSS ${mib(h.result.totals.pssBytes)}, disk ${mib(h.result.totals.diskExclusiveBytes)}\n`);
        return reportPartial(all);
      }
      const s = await client(cmd).call<{ containers: S[]; totals: Record<string, number>; ksm: { pagesSharing: number; generalProfitBytes: number; savedBytes: number } }>('GET', '/v1/stats');
      if (o.json) return printJson(s);
      process.stdout.write(
        `${table(
          ['NAME', 'STATE', 'RSS', 'PSS', 'SHIM PSS', 'KSM SAVED', 'MERGE', 'DISK EXCL', 'DISK LIMIT'],
          s.containers.map((c) => [c.name, c.state, mib(c.rssBytes), mib(c.pssBytes), mib(c.shimPssBytes), mib(c.ksmProfitBytes), c.mergeAny ? 'yes' : 'no', mib(c.diskExclusiveBytes), mib(c.diskLimitBytes)]),
        )}\n`,
      );
      process.stdout.write(
        `total: RSS ${mib(s.totals.rssBytes)}, PSS ${mib(s.totals.pssBytes)} (+ shims ${mib(s.totals.shimPssBytes)}), disk ${mib(s.totals.diskExclusiveBytes)}; KSM: ${s.ksm.pagesSharing} pages sharing (${mib(s.ksm.savedBytes)} saved), general_profit ${mib(s.ksm.generalProfitBytes)}\n`,
      );
      // Persistent Bun scripts run inside their container: their memory is already in its RSS above.
      const scripts = s.containers.flatMap((c) => (c.persistent ?? []).map((p) => ({ ...p, container: c.name })));
      if (scripts.length > 0)
        process.stdout.write(
          `\npersistent scripts:\n${table(
            ['CONTAINER', 'SCRIPT', 'USER', 'STATE', 'PID', 'RSS', 'REQUESTS', 'RESTARTS'],
            scripts.map((p) => [p.container, p.script, p.user, p.state, String(p.pid ?? '-'), mib(p.rssBytes), String(p.requests), String(p.restarts)]),
          )}\n`,
        );
    });
}
