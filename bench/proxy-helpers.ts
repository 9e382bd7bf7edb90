/** The proxy benchmark's helpers: nginx beside hoody, single verified requests, TLS facts, TIME_WAIT settling. */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { freePort } from '../host/free-port.js';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { timeWaitCount } from './procs.js';
import { children, type Session } from './session.js';
import { round, sleep } from './stats.js';


export function nginxConf(dir: string, port: number, workers: string, apps: readonly { hostname: string; upstream: string }[]): string {
  const upstreams = apps.map((a, i) => `  upstream app${i} {\n    server ${a.upstream};\n    keepalive 64;\n  }`).join('\n');
  const servers = apps
    .map(
      (a, i) => `  server {
    listen 127.0.0.1:${port} ssl http2;
    server_name ${a.hostname};
    ssl_certificate ${dir}/fullchain.pem;
    ssl_certificate_key ${dir}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://app${i};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }
  }`,
    )
    .join('\n');
  return `daemon off;
master_process on;
user root;
worker_processes ${workers};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
${upstreams}
${servers}
}
`;
}

/** Starts nginx in the foreground (our child) with a generated config; resolves once its port answers. */
export async function startNginx(
  s: Session,
  dir: string,
  workers: string,
  apps: readonly { hostname: string; upstream: string }[],
  pem: { fullchain: string; key: string },
): Promise<{ port: number; child: ChildProcess }> {
  await mkdir(join(dir, 'tmp'), { recursive: true });
  await writeFile(join(dir, 'fullchain.pem'), pem.fullchain);
  await writeFile(join(dir, 'key.pem'), pem.key, { mode: 0o600 });
  const port = await freePort();
  await writeFile(join(dir, 'nginx.conf'), nginxConf(dir, port, workers, apps));
  const child = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  child.on('exit', () => children.delete(child));
  s.cleanup.push(`nginx (${workers} workers, pid ${child.pid})`, async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  });
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: ${stderr}`);
    if (await tlsFacts(port, apps[0]!.hostname).then(
      () => true,
      () => false,
    ))
      return { port, child };
    await sleep(100);
  }
  throw new Error(`nginx did not answer on ${port}: ${stderr}`);
}

/** One verified HTTPS GET through a target (certificate checked against the bench CA, SNI = the hostname). */
export function httpsGet(port: number, hostname: string, ca: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path: '/index.html', servername: hostname, headers: { host: hostname }, ca, agent: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => {
        text += c.toString('utf8');
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
    req.on('error', reject);
    req.end();
  });
}

/** Plain HTTP GET straight to the app (no proxy). */
export function directGet(ip: string, port: number): Promise<{ status: number; connection: string | null; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: ip, port, path: '/index.html', agent: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => {
        text += c.toString('utf8');
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: (res.headers.connection as string | undefined) ?? null, text }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
    req.on('error', reject);
    req.end();
  });
}

export function tlsFacts(port: number, hostname: string): Promise<{ protocol: string | null; cipher: string; fingerprint256: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port, servername: hostname, rejectUnauthorized: false }, () => {
      const facts = { protocol: sock.getProtocol(), cipher: sock.getCipher().name, fingerprint256: sock.getPeerCertificate().fingerprint256 };
      sock.end();
      resolve(facts);
    });
    sock.setTimeout(5000, () => sock.destroy(new Error('TLS handshake timed out')));
    sock.on('error', reject);
  });
}

/** Waits (bounded) until few sockets are left in TIME_WAIT in the app's namespace, so one run's closed upstream connections do not tax the next. */
export async function settle(s: Session, appPid: number, maxS: number): Promise<{ waited: number; host: number; app: number }> {
  const t0 = Date.now();
  for (;;) {
    const host = await timeWaitCount('self');
    const app = await timeWaitCount(appPid);
    const waited = (Date.now() - t0) / 1000;
    // The app's namespace holds the TIME_WAIT of connections it closed (busybox httpd closes every one); the
    // host's count (other users' traffic too) is only recorded.
    if (app < 1000 || waited >= maxS) return { waited: round(waited, 1) ?? 0, host, app };
    await s.nap(2000);
  }
}
