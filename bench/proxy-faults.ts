/**
 * The proxy benchmark's fault phases: load on a routed hostname while hoodyd is SIGKILLed and restarted, and
 * while its certificate is swapped again and again. Counted: requests answered, requests failed.
 */
import { X509Certificate } from 'node:crypto';
import { request } from 'node:http';
import type { HostCa } from '../containers/tls/ca.js';
import type { BenchDaemon } from './daemon.js';
import { sleep } from './stats.js';
import { type WrkResult, wrkErrors } from './wrk.js';

export interface FaultRun {
  fault: 'hoodyd SIGKILL + restart' | 'certificate swaps';
  target: string;
  requests: number;
  failed: number;
  errors: WrkResult['errors'];
  /** Kills: ms from the kill until hoodyd's admin API answered again. Swaps: ms per PATCH (answered once served). */
  event_ms: number[];
  events: number;
}

/** Kills hoodyd a third of the way into the load and restarts it at once. */
export async function killUnderLoad(o: { daemon: BenchDaemon; target: string; durationS: number; load: () => Promise<WrkResult> }): Promise<FaultRun> {
  const running = o.load();
  await sleep((o.durationS * 1000) / 3);
  const back = await o.daemon.killAndRestart();
  const w = await running;
  return { fault: 'hoodyd SIGKILL + restart', target: o.target, requests: w.requests, failed: wrkErrors(w), errors: w.errors, event_ms: [back], events: 1 };
}

function patchBundle(port: number, hostname: string, token: string, body: unknown): Promise<{ status: number; text: string }> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method: 'PATCH', path: `/api/v1/proxy/cert/bundle?token=${token}`, headers: { host: `api.${hostname}`, 'content-type': 'application/json', 'content-length': payload.length } },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString('utf8')));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Swaps the hostname's certificate `swaps` times, evenly through the load (each PATCH returns once served). */
export async function swapsUnderLoad(o: {
  daemon: BenchDaemon;
  target: string;
  swaps: number;
  ca: HostCa;
  hostname: string;
  /** The container's API host label (`<container>.hoody.localhost`) is taken from the token's container. */
  container: string;
  token: string;
  durationS: number;
  load: () => Promise<WrkResult>;
}): Promise<FaultRun> {
  const bundles = await Promise.all([0, 1].map(() => o.ca.issue([o.hostname])));
  const running = o.load();
  const gap = (o.durationS * 1000) / (o.swaps + 1);
  const times: number[] = [];
  for (let i = 0; i < o.swaps; i++) {
    await sleep(gap);
    const pem = bundles[i % 2]!;
    const t0 = Date.now();
    const r = await patchBundle(o.daemon.ports.http, `${o.container}.hoody.localhost`, o.token, { domain: o.hostname, cert: pem.cert, key: pem.key, chain: o.ca.certPem });
    if (r.status !== 200) throw new Error(`certificate swap ${i + 1}: ${r.status} ${r.text.slice(0, 200)}`);
    const served = (JSON.parse(r.text) as { fingerprint: string }).fingerprint;
    if (served !== new X509Certificate(pem.cert).fingerprint256) throw new Error(`swap ${i + 1} answered another fingerprint`);
    times.push(Date.now() - t0);
  }
  const w = await running;
  return { fault: 'certificate swaps', target: o.target, requests: w.requests, failed: wrkErrors(w), errors: w.errors, event_ms: times, events: o.swaps };
}
