import type { Command } from 'commander';
import type { AdminClient } from '../client.js';

type Row = Record<string, unknown> & { time: string };

function line(source: string, r: Row): string {
  if (source === 'cron') {
    const out = String(r.output ?? '').trimEnd();
    return `${r.time} cron ${r.entry_id} ${r.trigger} ${r.status} exit=${r.exit_code ?? '-'} by=${r.triggered_by}${out ? `\n  ${out.replace(/\n/g, '\n  ')}` : ''}`;
  }
  const con = String(r.console ?? '').trimEnd();
  // Isolate runs read as before; a Bun run says where it ran and the memory its process reported.
  const where = r.runtime === 'bun' ? ` bun/${r.mode}${typeof r.memoryBytes === 'number' ? ` mem=${(r.memoryBytes / 1048576).toFixed(1)}MiB` : ''}` : '';
  return `${r.time} exec ${r.method ?? ''} ${r.script} ${r.status} ${r.durationMs}ms cpu=${r.cpuMs ?? '-'}ms${where}${r.dryRun ? ' dry-run' : ''}${r.error ? ` error=${JSON.stringify(r.error)}` : ''}${con ? `\n  ${con.replace(/\n/g, '\n  ')}` : ''}`;
}

/** `hoody logs NAME --cron|--exec [--follow] [--since T] [--json]`. */
export function logCommands(program: Command, client: (cmd: Command) => AdminClient): void {
  program
    .command('logs')
    .description("a container's cron log (runs) or exec log (requests)")
    .argument('<name>')
    .option('--cron', 'the cron log (default)')
    .option('--exec', 'the exec log')
    .option('--since <time>', 'ISO 8601 time; only rows at or after it')
    .option('--limit <n>', 'at most N rows per read', '100')
    .option('-f, --follow', 'keep printing new rows')
    .option('--json', 'one JSON object per line')
    .action(async (name: string, o: { cron?: boolean; exec?: boolean; since?: string; limit: string; follow?: boolean; json?: boolean }, cmd: Command) => {
      const source = o.exec ? 'exec' : 'cron';
      const api = client(cmd);
      let since = o.since;
      const seen = new Set<string>();
      for (;;) {
        const q = new URLSearchParams({ source, limit: o.limit, ...(since ? { since } : {}) });
        const rows = await api.call<Row[]>('GET', `/v1/containers/${encodeURIComponent(name)}/logs?${q}`);
        for (const r of rows) {
          const key = `${r.time}/${String(r.id ?? '')}/${String(r.status ?? '')}`;
          if (seen.has(key)) continue;
          seen.add(key);
          process.stdout.write(`${o.json ? JSON.stringify(r) : line(source, r)}\n`);
          since = r.time;
        }
        if (!o.follow) return;
        await new Promise((res) => setTimeout(res, 1000));
      }
    });
}
