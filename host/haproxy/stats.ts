/** HAProxy's own figures for its servers, from the run-time API's `show stat` (CSV, first line the header). */

export interface ServerFigures {
  requests: number;
  /** Responses by status class: 1xx … 5xx, and `other` (no valid status). */
  responses: Record<'1xx' | '2xx' | '3xx' | '4xx' | '5xx' | 'other', number>;
  bytesIn: number;
  bytesOut: number;
  connectErrors: number;
  responseErrors: number;
  /** Averages over the server's last 1024 requests, in milliseconds (HAProxy keeps no histogram). */
  responseTimeAvgMs: number;
  totalTimeAvgMs: number;
}

/** The rows of one backend's servers, by server name. */
export function parseServerStats(csv: string, backend: string): Map<string, ServerFigures> {
  const lines = csv.split('\n');
  const header = (lines[0] ?? '').replace(/^#\s*/, '').split(',');
  const col = new Map(header.map((name, i) => [name, i]));
  const out = new Map<string, ServerFigures>();
  for (const line of lines.slice(1)) {
    const f = line.split(',');
    const get = (name: string) => {
      const v = Number(f[col.get(name) ?? -1] || 0);
      return Number.isFinite(v) ? v : 0;
    };
    if (f[col.get('pxname') ?? 0] !== backend || f[col.get('type') ?? -1] !== '2') continue;
    out.set(f[col.get('svname') ?? 1] ?? '', {
      requests: get('req_tot'),
      responses: { '1xx': get('hrsp_1xx'), '2xx': get('hrsp_2xx'), '3xx': get('hrsp_3xx'), '4xx': get('hrsp_4xx'), '5xx': get('hrsp_5xx'), other: get('hrsp_other') },
      bytesIn: get('bin'),
      bytesOut: get('bout'),
      connectErrors: get('econ'),
      responseErrors: get('eresp'),
      responseTimeAvgMs: get('rtime'),
      totalTimeAvgMs: get('ttime'),
    });
  }
  return out;
}
