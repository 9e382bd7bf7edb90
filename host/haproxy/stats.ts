/** HAProxy's own figures: per container from the tenant backend's stick table, times from its `show stat` row. */

export interface ContainerProxyFigures {
  requests: number;
  /** 4xx and 5xx responses (HAProxy's http_err_cnt and http_fail_cnt: 5xx other than 501 and 505). */
  clientErrors: number;
  serverErrors: number;
  bytesIn: number;
  bytesOut: number;
}

/** `show table tenant`: one line per key, `0x…: key=web use=0 exp=0 http_req_cnt=3 … bytes_out_cnt=512`. */
export function parseContainerTable(text: string): Map<string, ContainerProxyFigures> {
  const out = new Map<string, ContainerProxyFigures>();
  for (const line of text.split('\n')) {
    const key = /\bkey=(\S+)/.exec(line)?.[1];
    if (!key) continue;
    const n = (name: string) => Number(new RegExp(`\\b${name}=(\\d+)`).exec(line)?.[1] ?? 0);
    out.set(key, {
      requests: n('http_req_cnt'),
      clientErrors: n('http_err_cnt'),
      serverErrors: n('http_fail_cnt'),
      bytesIn: n('bytes_in_cnt'),
      bytesOut: n('bytes_out_cnt'),
    });
  }
  return out;
}

/** Averages over the backend's last 1024 requests, in milliseconds (HAProxy keeps no histogram). */
export interface BackendTimes {
  responseTimeAvgMs: number;
  totalTimeAvgMs: number;
}

/** The BACKEND row of `show stat <backend> 2 -1` (CSV, first line the header); null if absent. */
export function parseBackendTimes(csv: string, backend: string): BackendTimes | null {
  const lines = csv.split('\n');
  const header = (lines[0] ?? '').replace(/^#\s*/, '').split(',');
  const col = new Map(header.map((name, i) => [name, i]));
  for (const line of lines.slice(1)) {
    const f = line.split(',');
    if (f[col.get('pxname') ?? 0] !== backend || f[col.get('type') ?? -1] !== '1') continue;
    const get = (name: string) => {
      const v = Number(f[col.get(name) ?? -1] || 0);
      return Number.isFinite(v) ? v : 0;
    };
    return { responseTimeAvgMs: get('rtime'), totalTimeAvgMs: get('ttime') };
  }
  return null;
}
