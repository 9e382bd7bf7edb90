import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { HostCa } from '../containers/tls/ca.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { type Answer, call } from './support/http.js';
import { until } from './support/wait.js';

interface Ports {
  http: number;
  https: number;
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (label values here never hold quotes or commas). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[pair[1]!] = pair[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample with this name and (at least) these labels; undefined when there is none. */
function value(samples: Sample[], name: string, labels: Record<string, string>): number | undefined {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(hits.length <= 1, `${name} ${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0]?.value;
}

describe('metrics: per-container and per-namespace series an operator alerts on', () => {
  let d: TestDaemon;
  let ports: Ports;
  let caDir = '';
  let ca: HostCa;
  const tokens = new Map<string, string>();
  const api = (ctr: string, method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Answer> =>
    call({ port: ports.http, host: `api.${ctr}.hoody.localhost`, path: `${path}${path.includes('?') ? '&' : '?'}token=${tokens.get(ctr)}`, method, body, headers });
  const cron = (ctr: string, method: string, path: string, body?: unknown) =>
    call({ port: ports.http, host: `cron.${ctr}.hoody.localhost`, path: `${path}${path.includes('?') ? '&' : '?'}token=${tokens.get(ctr)}`, method, body });
  const exec = (ctr: string, script: string, query = '') =>
    call({ port: ports.http, host: `exec.${ctr}.hoody.localhost`, path: `/scripts/${script}?${query}${query ? '&' : ''}token=${tokens.get(ctr)}` });
  const scrape = async () => d.client.call<string>('GET', '/metrics');

  /** Routes `app.<ctr>.test` to busybox httpd in the container, installs a certificate for it, and uses it all. */
  async function activity(ctr: string): Promise<{ expires: string; execError: string }> {
    const info = await d.client.call<{ engineId: string }>('GET', `/v1/containers/${ctr}`);
    await dockerExec(info.engineId, ['sh', '-c', 'mkdir -p /files/www && echo hi > /files/www/index.html']);
    await dockerExec(info.engineId, ['busybox', 'httpd', '-p', '8080', '-h', '/files/www']);
    const host = `app.${ctr}.test`;
    assert.equal((await api(ctr, 'PUT', `/api/v1/proxy/routes/${host}`, { port: 8080 })).status, 200);
    for (let i = 0; i < 3; i++) assert.equal((await call({ port: ports.http, host, path: '/index.html' })).status, 200);
    assert.equal((await call({ port: ports.http, host, path: '/missing' })).status, 404);
    const pem = await ca.issue([host]);
    const bundle = await api(ctr, 'PATCH', '/api/v1/proxy/cert/bundle', { domain: host, cert: pem.cert, key: pem.key, chain: ca.certPem });
    assert.equal(bundle.status, 200, bundle.text);
    // Cron: one run ok, one failed (both manual, waited for).
    for (const command of ['true', 'exit 3']) {
      const e = await cron(ctr, 'POST', '/users/me/entries', { schedule: '@yearly', command });
      assert.equal(e.status, 201, e.text);
      assert.equal((await cron(ctr, 'POST', `/users/me/entries/${e.json<{ id: string }>().id}/run?wait=true`)).status, 200);
    }
    // Exec: one run ok, one that throws.
    const put = (path: string, source: string) => api(ctr, 'PUT', `/api/v1/scripts/${path}`, source, { 'content-type': 'text/plain' });
    assert.equal((await put('ok.ts', 'return { ok: 1 };')).status, 201);
    assert.equal((await put('boom.ts', "throw new Error('boom');")).status, 201);
    assert.equal((await exec(ctr, 'ok')).status, 200);
    const boom = await exec(ctr, 'boom');
    assert.ok(boom.status >= 500, boom.text);
    // ACME: a name routed here and one that is not, as a dry run (validated only) and for real (the CA is down).
    const order = `// @timeout 20000
const out: string[] = [];
for (const d of ['${host}', 'nope.${ctr}.test']) {
  try { await acme.order(d); out.push('ok'); } catch (e) { out.push(String(e)); }
}
return out;`;
    assert.equal((await put('order.ts', order)).status, 201);
    assert.equal((await exec(ctr, 'order', 'dry_run=true')).status, 200);
    assert.equal((await exec(ctr, 'order')).status, 200);
    return { expires: bundle.json<{ expires: string }>().expires, execError: boom.json<{ error: { code: string } }>().error.code };
  }

  before(async () => {
    // A CA nobody answers at: no staging directory, so a dry run only validates; a real order fails at once.
    d = await startTestDaemon({ HOODY_ACME_DIRECTORY: 'https://127.0.0.1:9/directory' });
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    for (const name of ['m', 'gone']) tokens.set(name, (await d.client.call<{ token: string }>('POST', '/v1/containers', { name, disk: '1g' })).token);
    caDir = await mkdtemp(join(tmpdir(), 'hoody-metrics-ca-'));
    ca = await HostCa.loadOrCreate(caDir, 'metrics test issuer');
  });
  after(async () => {
    await d.destroy();
    await rm(caDir, { recursive: true, force: true });
  });

  test('cron, exec, ACME, proxy, certificates, memory and disk per container; promtool accepts the scrape', async () => {
    // Scheduled every minute: its lateness is measured when it starts (the rest of the test runs meanwhile).
    assert.equal((await cron('m', 'POST', '/users/me/entries', { schedule: '* * * * *', command: 'true' })).status, 201);
    const m = await activity('m');
    await activity('gone');

    let s = parse(await scrape());
    const c = { container: 'm' };
    assert.equal(value(s, 'hoody_cron_runs_total', { ...c, status: 'ok', trigger: 'manual' }), 1);
    assert.equal(value(s, 'hoody_cron_runs_total', { ...c, status: 'failed', trigger: 'manual' }), 1);
    assert.equal(value(s, 'hoody_exec_duration_seconds_count', { ...c, runtime: 'isolate' }), 4, 'ok, boom and two orders');
    assert.equal(value(s, 'hoody_exec_errors_total', { ...c, code: m.execError }), 1);
    assert.equal(value(s, 'hoody_acme_orders_total', { ...c, outcome: 'validated', directory: 'staging' }), 1);
    assert.equal(value(s, 'hoody_acme_orders_total', { ...c, outcome: 'refused', directory: 'staging' }), 1);
    assert.equal(value(s, 'hoody_acme_orders_total', { ...c, outcome: 'failed', directory: 'production' }), 1);
    assert.equal(value(s, 'hoody_acme_orders_total', { ...c, outcome: 'refused', directory: 'production' }), 1);
    assert.equal(value(s, 'hoody_tls_certificate_expiry_timestamp_seconds', { ...c, domain: 'app.m.test' }), Date.parse(m.expires) / 1000);
    // HAProxy's own counters for the container's server: three 200s and one 404.
    assert.equal(value(s, 'hoody_proxy_requests_total', c), 4);
    assert.equal(value(s, 'hoody_proxy_error_responses_total', { ...c, class: '4xx' }), 1);
    assert.equal(value(s, 'hoody_proxy_error_responses_total', { ...c, class: '5xx' }), 0);
    assert.ok((value(s, 'hoody_proxy_total_time_average_seconds', {}) ?? -1) >= 0, 'the tenant backend average time');
    assert.ok((value(s, 'hoody_proxy_response_bytes_total', c) ?? 0) > 0);
    assert.ok((value(s, 'hoody_proxy_request_bytes_total', c) ?? 0) > 0);
    assert.ok((value(s, 'hoody_container_memory_usage_bytes', c) ?? 0) > 0, 'memory from the cgroup');
    assert.ok(value(s, 'hoody_container_memory_limit_bytes', c)! > 0);
    assert.ok((value(s, 'hoody_container_disk_referenced_bytes', c) ?? 0) > 0, 'disk from the qgroup');
    assert.equal(value(s, 'hoody_container_disk_limit_bytes', c), 1024 ** 3);
    // Labels are bounded: only these names ever label a series.
    const allowed = new Set(['container', 'domain', 'status', 'trigger', 'runtime', 'code', 'outcome', 'directory', 'class', 'le', 'state', 'type', 'space', 'version', 'major', 'minor', 'patch', 'kind']);
    for (const x of s) for (const k of Object.keys(x.labels)) assert.ok(allowed.has(k), `${x.name} has label ${k}`);
    assert.ok(s.some((x) => x.labels.container === 'gone'));

    // Deleting a container takes its series along, counters and gauges alike.
    await d.client.call('DELETE', '/v1/containers/gone');
    s = parse(await scrape());
    assert.deepEqual(s.filter((x) => x.labels.container === 'gone').map((x) => x.name), []);

    // A route dropped and put back: the container's traffic is still counted as its own, from where it was.
    assert.equal((await api('m', 'DELETE', '/api/v1/proxy/routes/app.m.test')).status, 200);
    assert.equal((await api('m', 'PUT', '/api/v1/proxy/routes/app.m.test', { port: 8080 })).status, 200);
    assert.equal((await call({ port: ports.http, host: 'app.m.test', path: '/index.html' })).status, 200);
    assert.equal(value(parse(await scrape()), 'hoody_proxy_requests_total', c), 5);

    // The scheduled run comes at the next minute.
    s = await until('the scheduled cron run', async () => {
      const now = parse(await scrape());
      return value(now, 'hoody_cron_runs_total', { ...c, status: 'ok', trigger: 'schedule' }) ? now : null;
    }, { timeoutMs: 90_000, everyMs: 1000 });
    assert.equal(value(s, 'hoody_cron_run_lateness_seconds_count', c), 1);
    assert.ok(value(s, 'hoody_cron_run_lateness_seconds_sum', c)! < 60);

    const text = await scrape();
    const lint = await execa('promtool', ['check', 'metrics'], { input: text, reject: false, all: true });
    assert.equal(lint.all, '', 'promtool has nothing to say');
    assert.equal(lint.exitCode, 0);
  });
});
