import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmod, copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { freePort } from '../host/free-port.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';
import { call, servedCertificate } from './support/http.js';
import { type Pebble, startPebble } from './support/pebble.js';

interface Ports {
  http: number;
  https: number;
}

// The seed's renewal script: loop over the domains, order each, PATCH the bundle to our own proxy.
const RENEW_TS = `// @timeout 60000
interface Issued { cert: string; key: string; chain: string }
const domains: string[] = ['app1.test', 'app2.test'];
let n = 0;
for (const d of domains) {
  if (request.dry_run) { await acme.order(d); console.log('dry run: would renew', d); continue; }
  const { cert, key, chain } = (await acme.order(d)) as Issued;
  const r = await fetch('/api/v1/proxy/cert/bundle', { method: 'PATCH', body: JSON.stringify({ domain: d, cert, key, chain }) });
  if (!r.ok) throw new Error('PATCH ' + d + ': ' + r.status + ' ' + (await r.text()));
  n++;
}
console.log('renewed', n);
return { renewed: n, dry_run: request.dry_run };
`;

describe('the weekly renewal pipeline, whole: cron -> exec -> ACME (pebble) -> live certificate swap', () => {
  let d: TestDaemon;
  let pebble: Pebble;
  let ports: Ports;
  let token = '';
  let engineId = '';
  const api = (method: string, path: string, body?: unknown) =>
    call({ port: ports.http, host: 'api.site.hoody.localhost', path: `${path}${path.includes('?') ? '&' : '?'}token=${token}`, method, body });

  before(async () => {
    const httpPort = await freePort();
    pebble = await startPebble({ httpPort });
    d = await startTestDaemon({ HOODY_HTTP_PORT: String(httpPort), HOODY_ACME_DIRECTORY: pebble.directoryUrl, HOODY_ACME_CA_FILE: pebble.caFile });
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    assert.equal(ports.http, httpPort);
    token = (await d.client.call<{ token: string }>('POST', '/v1/containers', { name: 'site', image: 'hoody/base' })).token;
    engineId = (await d.client.call<{ engineId: string }>('GET', '/v1/containers/site')).engineId;
    // The app: busybox httpd from the files area (the Debian base image has curl but no web server).
    const files = join(d.stateDir, 'pool', 'containers', 'site', 'files');
    await mkdir(join(files, 'www'), { recursive: true });
    await copyFile('/bin/busybox', join(files, 'busybox'));
    await chmod(join(files, 'busybox'), 0o755);
    await writeFile(join(files, 'www', 'index.html'), 'site app\n');
    const httpd = await dockerExec(engineId, ['/files/busybox', 'httpd', '-p', '8080', '-h', '/files/www']);
    assert.equal(httpd.exitCode, 0, httpd.output);
  });
  after(async () => {
    await d?.destroy();
    await pebble?.stop();
  });

  test('routes, script, cron entry; the cron run renews both names and the proxy serves pebble certificates', async () => {
    for (const host of ['app1.test', 'app2.test']) assert.equal((await api('PUT', `/api/v1/proxy/routes/${host}`, { port: 8080 })).status, 200);
    const put = await call({ port: ports.http, host: 'api.site.hoody.localhost', path: `/api/v1/scripts/certs/renew.ts?token=${token}`, method: 'PUT', body: RENEW_TS, headers: { 'content-type': 'text/plain' } });
    assert.equal(put.status, 201, put.text);
    const command = `curl -fsS "https://exec.site.hoody.localhost:${ports.https}/scripts/certs/renew?token=${token}"`;
    const entry = await api('POST', '/users/me/entries', { schedule: '0 4 * * 0', command, comment: 'weekly TLS renewal', enabled: true });
    assert.equal(entry.status, 201, entry.text);
    const e = entry.json<{ id: string; schedule: string; enabled: boolean; next_run: string }>();
    assert.equal(e.schedule, '0 4 * * 0');
    assert.equal(e.enabled, true);
    assert.equal(new Date(e.next_run).getUTCDay(), 0);

    const daemonPid = d.process.pid;
    const startedAt = (await execa('docker', ['inspect', '-f', '{{.State.StartedAt}}', engineId])).stdout;
    const intermediate = new X509Certificate(await pebble.intermediatePem());

    const t0 = performance.now();
    const run = await api('POST', `/users/me/entries/${e.id}/run?wait=true`);
    const cycleMs = performance.now() - t0;
    assert.equal(run.status, 200, run.text);
    const r = run.json<{ status: string; exit_code: number; output: string; trigger: string }>();
    assert.equal(r.status, 'ok', r.output);
    assert.equal(r.exit_code, 0);
    assert.equal(r.trigger, 'manual');
    assert.deepEqual(JSON.parse(r.output), { renewed: 2, dry_run: false });
    process.stdout.write(`# renewal cycle (cron run -> curl in container -> exec -> 2 ACME orders -> 2 live swaps): ${Math.round(cycleMs)} ms\n`);

    for (const host of ['app1.test', 'app2.test']) {
      const served = await servedCertificate(ports.https, host);
      const cert = new X509Certificate(served.raw);
      assert.ok(cert.checkIssued(intermediate), `${host} issued by pebble's intermediate`);
      assert.ok(cert.checkHost(host));
      const page = await call({ port: ports.https, host, path: '/index.html', tls: { ca: await pebble.rootsPem() } });
      assert.equal(page.text, 'site app\n');
    }

    const cronLog = (await api('GET', '/api/v1/logs?source=cron')).json<{ entry_id: string; status: string }[]>();
    assert.ok(cronLog.some((row) => row.entry_id === e.id && row.status === 'ok'));
    const execLog = (await api('GET', '/api/v1/logs?source=exec')).json<{ script: string; status: number; console: string; dryRun: boolean }[]>();
    const renew = execLog.find((row) => row.script === 'certs/renew.ts');
    assert.ok(renew, JSON.stringify(execLog));
    assert.equal(renew.status, 200);
    assert.match(renew.console, /renewed 2/);

    // Nothing restarted: the same daemon process, the same container start.
    assert.equal(d.process.pid, daemonPid);
    assert.equal(d.process.exitCode, null);
    assert.equal((await execa('docker', ['inspect', '-f', '{{.State.StartedAt}}', engineId])).stdout, startedAt);
    const hoodyLogs = await d.hoody(['logs', 'site', '--cron']);
    assert.match(hoodyLogs.stdout, new RegExp(`cron ${e.id} manual ok exit=0`));
    const execLogs = await d.hoody(['logs', 'site', '--exec']);
    assert.match(execLogs.stdout, /exec GET certs\/renew.ts 200/);
  });

  test('the same renew.ts under @runtime bun (a Bun process in the container) renews through pebble and answers as the isolate did', async () => {
    const put = await call({ port: ports.http, host: 'api.site.hoody.localhost', path: `/api/v1/scripts/certs/renew-bun.ts?token=${token}`, method: 'PUT', body: `// @runtime bun\n${RENEW_TS}`, headers: { 'content-type': 'text/plain' } });
    assert.equal(put.status, 201, put.text);
    const before = await servedCertificate(ports.https, 'app1.test');
    for (const [query, want] of [['dry_run=true', { renewed: 0, dry_run: true }], ['', { renewed: 2, dry_run: false }]] as const) {
      const r = await call({ port: ports.http, host: 'exec.site.hoody.localhost', path: `/scripts/certs/renew-bun?${query}&token=${token}` });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json(), want);
    }
    // A new certificate from pebble is served for the name the Bun script renewed.
    const deadline = Date.now() + 10_000;
    let now = await servedCertificate(ports.https, 'app1.test');
    while (now.fingerprint256 === before.fingerprint256 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      now = await servedCertificate(ports.https, 'app1.test');
    }
    assert.notEqual(now.fingerprint256, before.fingerprint256);
    const log = (await api('GET', '/api/v1/logs?source=exec')).json<{ script: string; runtime: string; console: string }[]>();
    const rows = log.filter((e) => e.script === 'certs/renew-bun.ts');
    assert.deepEqual(rows.map((e) => e.runtime), ['bun', 'bun']);
    assert.match(rows[0]!.console, /dry run: would renew app1\.test/);
    assert.match(rows[1]!.console, /renewed 2/);
  });

  test("a script's acme.order against pebble: issued for the name it asked; ?dry_run=true reaches acme.order and issues nothing", async () => {
    const src = '// @timeout 60000\nconst order = await acme.order(String(request.query.d));\nreturn { dry: request.dry_run, order };';
    const put = await call({ port: ports.http, host: 'api.site.hoody.localhost', path: `/api/v1/scripts/order.ts?token=${token}`, method: 'PUT', body: src, headers: { 'content-type': 'text/plain' } });
    assert.equal(put.status, 201, put.text);
    const order = (query: string) => call({ port: ports.http, host: 'exec.site.hoody.localhost', path: `/scripts/order?${query}&token=${token}` });
    // A name pebble has not validated yet (it reuses the authorizations of app1/app2 from the renewal).
    assert.equal((await api('PUT', '/api/v1/proxy/routes/app3.test', { port: 8080 })).status, 200);
    const queries = pebble.dnsQueries.length;
    const wet = await order('d=app3.test');
    assert.equal(wet.status, 200, wet.text);
    const w = wet.json<{ dry: boolean; order: { issued: boolean; dryRun: boolean; cert: string; key: string } }>();
    assert.deepEqual([w.dry, w.order.issued, w.order.dryRun], [false, true, false]);
    const cert = new X509Certificate(w.order.cert);
    assert.ok(cert.checkIssued(new X509Certificate(await pebble.intermediatePem())), "issued by pebble's intermediate");
    assert.ok(cert.checkHost('app3.test'));
    assert.ok(cert.checkPrivateKey(createPrivateKey(w.order.key)), 'the key matches');
    assert.ok(pebble.dnsQueries.slice(queries).includes('app3.test'), `pebble validated the name: ${pebble.dnsQueries.slice(queries)}`);
    const validated = pebble.dnsQueries.length;
    const dry = await order('d=app3.test&dry_run=true');
    assert.equal(dry.status, 200, dry.text);
    assert.deepEqual(dry.json(), { dry: true, order: { issued: false, dryRun: true, domains: ['app3.test'] } });
    assert.equal(pebble.dnsQueries.length, validated, 'a dry run without a staging directory sends nothing to the CA');
    const log = (await api('GET', '/api/v1/logs?source=exec')).json<{ script: string; dryRun: boolean; status: number }[]>().filter((l) => l.script === 'order.ts');
    assert.deepEqual(log.map((l) => [l.status, l.dryRun]), [[200, false], [200, true]]);
  });

  test('?dry_run=true on the renewal script touches no served certificate', async () => {
    const before = await Promise.all(['app1.test', 'app2.test'].map((h) => servedCertificate(ports.https, h)));
    const r = await call({ port: ports.https, host: 'exec.site.hoody.localhost', path: `/scripts/certs/renew?dry_run=true&token=${token}`, tls: { ca: await import('node:fs/promises').then((f) => f.readFile(join(d.stateDir, 'keys', 'ca.crt'), 'utf8')) } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { renewed: 0, dry_run: true });
    const afterDry = await Promise.all(['app1.test', 'app2.test'].map((h) => servedCertificate(ports.https, h)));
    assert.deepEqual(afterDry.map((c) => c.fingerprint256), before.map((c) => c.fingerprint256));
  });

  test('after a daemon restart the same certificates are served without any new ACME order', async () => {
    const before = await Promise.all(['app1.test', 'app2.test'].map((h) => servedCertificate(ports.https, h)));
    const queries = pebble.dnsQueries.length;
    await d.restart('SIGTERM');
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    const afterRestart = await Promise.all(['app1.test', 'app2.test'].map((h) => servedCertificate(ports.https, h)));
    assert.deepEqual(afterRestart.map((c) => c.fingerprint256), before.map((c) => c.fingerprint256));
    assert.equal(pebble.dnsQueries.length, queries, 'no validation happened, so no order');
  });
});
