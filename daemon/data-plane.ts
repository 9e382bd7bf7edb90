/** Wires HAProxy in as the data plane: its ports, its process, hoodyd's listeners behind it, the first table. */
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { PublicServer } from '../api/public/server.js';
import { HaproxyPlane } from '../containers/proxy/haproxy-plane.js';
import type { ProxyNamespace } from '../containers/proxy/namespace.js';
import type { HostCa } from '../containers/tls/ca.js';
import { haproxyLayout } from '../host/haproxy/config.js';
import { choosePorts, type PublicPorts } from '../host/haproxy/ports.js';
import { Haproxy, runningPid } from '../host/haproxy/process.js';
import { writeAtomic } from '../host/atomic-file.js';
import type { Config } from './config.js';

export interface StartedDataPlane {
  ports: PublicPorts;
  plane: HaproxyPlane;
  haproxy: Haproxy;
}

/** The ports HAProxy will bind (before anything that needs them, e.g. the containers' redirects). */
export async function dataPlanePorts(config: Config): Promise<PublicPorts> {
  const layout = haproxyLayout(config.stateDir);
  await mkdir(layout.dir, { recursive: true, mode: 0o700 });
  return choosePorts(layout.dir, { http: config.httpPort, https: config.httpsPort }, (await runningPid(layout.pidFile)) !== null);
}

export function makeHaproxy(config: Config, ports: PublicPorts): Haproxy {
  const layout = haproxyLayout(config.stateDir);
  return new Haproxy({
    layout,
    domain: config.domain,
    bindHost: '0.0.0.0',
    httpPort: ports.http,
    httpsPort: ports.https,
    headersTimeoutMs: config.headersTimeoutMs,
    upstreamTimeoutMs: config.proxyUpstreamTimeoutMs,
  });
}

/** The host's certificate for unknown names: kept while it has 30 days left (an adopted HAProxy holds it). */
async function defaultCertificate(file: string, ca: HostCa, domain: string): Promise<string> {
  const kept = await readFile(file, 'utf8').catch(() => '');
  try {
    const cert = new X509Certificate(kept);
    if (Date.parse(cert.validTo) - Date.now() > 30 * 86_400_000 && cert.checkIssued(new X509Certificate(ca.certPem))) return kept;
  } catch {
    // none yet, or unreadable: issue one
  }
  const issued = await ca.issue([`*.${domain}`, domain]);
  return `${issued.cert.trim()}\n${ca.certPem.trim()}\n${issued.key.trim()}\n`;
}

/**
 * hoodyd listens behind HAProxy first (so nothing waits on a socket that is not there), then HAProxy is
 * adopted or started and handed the whole table.
 */
export async function startDataPlane(config: Config, ports: PublicPorts, ca: HostCa, pub: PublicServer, proxy: ProxyNamespace, log: Logger): Promise<StartedDataPlane> {
  const haproxy = makeHaproxy(config, ports);
  const defaultPem = await defaultCertificate(haproxy.layout.defaultCert, ca, config.domain);
  // Read by HAProxy at start (it signs the certificates of names no crt-list line covers); root only, like ca.key.
  await writeAtomic(haproxy.layout.caSignFile, await ca.signingPem(), 0o600);
  await pub.listenBehind({ http: haproxy.layout.daemonHttpSocket });
  const plane = new HaproxyPlane(haproxy, defaultPem, (container) => proxy.address(container), log.child({ ns: 'dataplane' }), () => proxy.service.table());
  await plane.start();
  return { ports, plane, haproxy };
}
