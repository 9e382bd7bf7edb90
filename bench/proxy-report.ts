/** The proxy benchmark's tables, Markdown and chart. */
import { chartSvg } from './ns-chart.js';
import type { Mode, ProxyResult, TargetAgg } from './proxy.js';
import { fmt, mdTable } from './results.js';
import { wrkErrors } from './wrk.js';

export const SUMMARY_HEADER = ['app', 'mode', 'proxy', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'CPU µs/req', 'app listen overflows', 'errors'];

export function summaryRows(r: ProxyResult): (string | number)[][] {
  return r.summary.map((x) => [x.app, x.mode, x.label, fmt(x.rps, 0), fmt(x.p50_ms), fmt(x.p90_ms), fmt(x.p99_ms), fmt(x.cpu_us_per_request, 0), x.app_listen_overflows, x.errors]);
}

export function ratioRows(r: ProxyResult): (string | number)[][] {
  const groups = Object.keys(r.ratios);
  const row = (label: string, k: string) => [label, ...groups.map((g) => fmt(r.ratios[g]?.[k], 3))];
  return [
    row('req/s hoody (HAProxy) / nginx auto', 'rps_hoody_over_nginx_auto'),
    row('req/s hoody (HAProxy) / nginx 1 worker', 'rps_hoody_over_nginx_1'),
    row('p99 hoody (HAProxy) / nginx auto', 'p99_hoody_over_nginx_auto'),
    row('p99 hoody (HAProxy) / nginx 1 worker', 'p99_hoody_over_nginx_1'),
    row("req/s hoody (HAProxy) / hoodyd's own forwarder", 'rps_hoody_over_hoody_node'),
    row('CPU per request hoody (HAProxy) / nginx auto', 'cpu_per_request_hoody_over_nginx_auto'),
  ];
}

export const FAULT_HEADER = ['fault', 'data plane', 'requests', 'failed', 'events', 'event ms (each)'];

export function faultRows(r: ProxyResult): (string | number)[][] {
  return r.faults.map((f) => [f.fault, f.target, f.requests, f.failed, f.events, f.event_ms.join(', ')]);
}

export function markdown(r: ProxyResult, svgName: string | null, modes: Record<Mode, string>): string {
  const h = r.host;
  const o = r.options;
  const out: string[] = [];
  out.push(`# hoody proxy benchmark — ${r.started}`, '');
  out.push(`Run \`${r.run_id}\`, ${Math.round(r.duration_s)} s. Host: ${h.kernel}, ${h.cpus} cores (${h.cpu_model}), ${h.mem_total_mib} MiB; node ${h.node}; ${r.nginx_version}; ${r.wrk_version}; ${r.h2load_version}.`);
  out.push(`Options: ${Object.entries(o).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}.`, '');
  out.push('Apps (each in its own hoody container, reached on the Docker bridge):', '');
  for (const [k, a] of Object.entries(r.apps)) out.push(`- \`${k}\`: ${a.label} at ${a.upstream}, ${a.body_bytes}-byte body, hostname \`${a.hostname}\`, upstream answers \`Connection: ${a.upstream_connection_header ?? '(none)'}\``);
  out.push('');
  out.push(
    "Four proxies terminate TLS with the same ECDSA P-256 certificate and chain (SNI picks it), add X-Forwarded-*, and forward over HTTP/1.1 with keep-alive upstream connections: hoody with HAProxy as its data plane (the default; TLS for every name ends in one HAProxy frontend), hoody with hoodyd's own forwarder (`HOODY_DATA_PLANE=node`, a second daemon with its own containers), and nginx with 1 worker and with `worker_processes auto` (`keepalive 64` upstream, `access_log off`).",
  );
  out.push(`Modes: ${Object.entries(modes).filter(([m]) => (o.modes as string[]).includes(m)).map(([m, l]) => `\`${m}\` = ${l}`).join('; ')}. HTTP/1.1 with \`wrk -t${o.threads} -c${o.connections} -d${o.duration_s}s\`, HTTP/2 with \`h2load -c${o.connections} -m${o.h2_streams} -t${o.threads}\` (percentiles from its per-request log). The proxies alternate, order rotated every round; figures are medians over ${o.rounds} rounds. Everything runs on the same 2-core box.`, '');
  out.push(`TLS negotiated: ${[...new Set(Object.values(r.tls).map((f) => `${f.protocol} ${f.cipher}`))].join('; ')}.`, '');
  if (svgName) out.push(`![proxy benchmark](${svgName})`, '');
  out.push(mdTable(SUMMARY_HEADER, summaryRows(r)), '');
  out.push(mdTable(['ratio', ...Object.keys(r.ratios)], ratioRows(r)), '');
  out.push("CPU µs/req = utime+stime of the proxy's processes (HAProxy; hoodyd; nginx master and workers) during the run, divided by the requests answered.", '');
  if (r.faults.length) {
    out.push('## Faults under load', '');
    out.push(`A new connection per request (\`wrk -H 'Connection: close'\`, ${o.fault_duration_s} s) on the first app's hostname, while hoodyd is SIGKILLed a third of the way in and started again at once (event ms: until its admin API answered), or while its certificate is swapped ${o.swaps} times through the API (each PATCH answers only once a fresh handshake serves the new certificate; event ms per PATCH). Failed = socket errors + non-2xx + timeouts seen by wrk.`, '');
    out.push(mdTable(FAULT_HEADER, faultRows(r)), '');
  }
  out.push('All runs:', '');
  out.push(
    mdTable(
      ['app', 'mode', 'round', 'proxy', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'proxy CPU %', 'CPU µs/req', 'errors', 'other bench running'],
      r.runs.map((x) => [
        x.app,
        x.mode,
        x.round + 1,
        x.server,
        fmt(x.wrk.rps, 0),
        fmt(x.wrk.latency_ms.p50),
        fmt(x.wrk.latency_ms.p90),
        fmt(x.wrk.latency_ms.p99),
        fmt(x.wrk.latency_ms.max),
        fmt(x.cpu_percent_of_core, 1),
        fmt(x.cpu_us_per_request, 0),
        wrkErrors(x.wrk),
        x.others.length ? 'yes' : '',
      ]),
    ),
    '',
  );
  if (r.notes.length) out.push('## Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  return out.join('\n');
}

export function svg(r: ProxyResult): string {
  const groups = [...new Set(r.summary.map((x) => `${x.app}/${x.mode}`))];
  const by = (pick: (x: TargetAgg) => number | null) =>
    groups.map((g) => ({ label: g, values: r.summary.filter((x) => `${x.app}/${x.mode}` === g).map((x) => ({ name: x.label, value: pick(x) })) }));
  return chartSvg(
    [
      { kind: 'bar', title: 'requests per second', yLabel: 'req/s', groups: by((x) => x.rps) },
      { kind: 'bar', title: 'p99 latency (ms)', yLabel: 'ms', groups: by((x) => x.p99_ms) },
      { kind: 'bar', title: 'proxy CPU per request (µs)', yLabel: 'µs', groups: by((x) => x.cpu_us_per_request) },
    ],
    `TLS, ${r.options.connections} connections; medians over ${r.options.rounds} rounds; keepalive / close (new connection per request) / h2`,
  );
}
