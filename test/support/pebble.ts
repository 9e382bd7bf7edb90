import { createSocket, type Socket } from 'node:dgram';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { get } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../host/free-port.js';
import { execa, type ResultPromise } from 'execa';

export interface PebbleOptions {
  /** The port pebble's VA connects to for http-01 (on 127.0.0.1, as the stub DNS answers every name so). */
  httpPort?: number;
  /** Extra environment for pebble (e.g. PEBBLE_WFE_NONCEREJECT, PEBBLE_AUTHZREUSE); PEBBLE_VA_NOSLEEP=1 is set. */
  env?: Record<string, string>;
}

export interface Pebble {
  /** `https://127.0.0.1:<port>/dir` */
  directoryUrl: string;
  /** The CA (PEM file) that signed pebble's own TLS certificate: what an ACME client must trust. */
  caFile: string;
  httpPort: number;
  /** Every name the stub DNS server was asked about (lowercase, no trailing dot). */
  dnsQueries: string[];
  /** Pebble's issuing root (`/roots/0` on the management port). */
  rootsPem(): Promise<string>;
  /** Pebble's issuing intermediate (`/intermediates/0`). */
  intermediatePem(): Promise<string>;
  /** pebble's output so far (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A CA and a certificate for localhost/127.0.0.1 signed by it, made with openssl in `dir`. */
async function makeTlsFiles(dir: string): Promise<{ caFile: string; certFile: string; keyFile: string }> {
  const caFile = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca.key');
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  const csr = join(dir, 'cert.csr');
  const ext = join(dir, 'ext.cnf');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await execa('openssl', [
    'req', '-x509', ...ec, '-keyout', caKey, '-out', caFile, '-days', '2', '-subj', '/CN=hoody test pebble TLS CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await execa('openssl', ['req', ...ec, '-keyout', keyFile, '-out', csr, '-subj', '/CN=localhost']);
  await writeFile(
    ext,
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n',
  );
  await execa('openssl', [
    'x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-CAcreateserial', '-out', certFile, '-days', '2', '-extfile', ext,
  ]);
  return { caFile, certFile, keyFile };
}

/**
 * A stub DNS server on 127.0.0.1 (UDP): A = 127.0.0.1 for every name, an empty NOERROR answer for any other type
 * (AAAA, CAA, ...). Just enough DNS for pebble's VA.
 */
async function startStubDns(queries: string[]): Promise<{ socket: Socket; port: number }> {
  const socket = createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    if (msg.length < 12) return;
    const qdcount = msg.readUInt16BE(4);
    if (qdcount !== 1) return;
    let off = 12;
    const labels: string[] = [];
    while (off < msg.length && msg[off] !== 0) {
      const len = msg[off]!;
      if (len > 63 || off + 1 + len > msg.length) return;
      labels.push(msg.subarray(off + 1, off + 1 + len).toString('latin1'));
      off += 1 + len;
    }
    off += 1;
    if (off + 4 > msg.length) return;
    const qtype = msg.readUInt16BE(off);
    const qclass = msg.readUInt16BE(off + 2);
    const question = msg.subarray(12, off + 4);
    queries.push(labels.join('.').toLowerCase());

    const flags = msg.readUInt16BE(2);
    const opcode = (flags >> 11) & 0xf;
    const rd = (flags >> 8) & 1;
    const answerA = qtype === 1 && qclass === 1;
    const header = Buffer.alloc(12);
    header.writeUInt16BE(msg.readUInt16BE(0), 0);
    header.writeUInt16BE(0x8000 | (opcode << 11) | 0x0400 | (rd << 8) | 0x0080, 2); // QR, AA, RA, NOERROR
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answerA ? 1 : 0, 6);
    const parts = [header, question];
    if (answerA) {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
      rr.writeUInt16BE(1, 2); // A
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(0, 6); // TTL
      rr.writeUInt16BE(4, 10);
      Buffer.from([127, 0, 0, 1]).copy(rr, 12);
      parts.push(rr);
    }
    socket.send(Buffer.concat(parts), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => resolve());
  });
  return { socket, port: socket.address().port };
}

function fetchPem(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get(url, { ca, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout fetching ${url}`)));
    req.on('error', reject);
  });
}

/**
 * Debian's pebble on loopback only: its own TLS CA (openssl), a config on free ports, a stub DNS server so every
 * name resolves to 127.0.0.1, and PEBBLE_VA_NOSLEEP=1. Resolves once the directory answers.
 */
export async function startPebble(opts: PebbleOptions = {}): Promise<Pebble> {
  const dir = await mkdtemp(join(tmpdir(), 'hoody-pebble-'));
  const queries: string[] = [];
  let dns: { socket: Socket; port: number } | undefined;
  let proc: ResultPromise | undefined;
  let out = '';
  const stop = async () => {
    if (proc && proc.exitCode === null) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc?.kill('SIGKILL'), 3000);
      await proc.catch(() => undefined);
      clearTimeout(timer);
    }
    if (dns) await new Promise<void>((r) => dns!.socket.close(() => r()));
    dns = undefined;
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const tls = await makeTlsFiles(dir);
    const ca = await readFile(tls.caFile, 'utf8');
    dns = await startStubDns(queries);
    const acmePort = await freePort();
    const mgmtPort = await freePort();
    const httpPort = opts.httpPort ?? (await freePort());
    const tlsPort = await freePort();
    const config = join(dir, 'pebble-config.json');
    await writeFile(
      config,
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${acmePort}`,
          managementListenAddress: `127.0.0.1:${mgmtPort}`,
          certificate: tls.certFile,
          privateKey: tls.keyFile,
          httpPort,
          tlsPort,
          ocspResponderURL: '',
          externalAccountBindingRequired: false,
        },
      }),
    );
    const p = execa('pebble', ['-config', config, '-dnsserver', `127.0.0.1:${dns.port}`], {
      env: { PEBBLE_VA_NOSLEEP: '1', ...opts.env },
      extendEnv: true,
      reject: false,
      all: true,
      buffer: false,
      stdin: 'ignore',
    });
    proc = p;
    p.all?.setEncoding('utf8');
    p.all?.on('data', (c: string) => {
      out = (out + c).slice(-64 * 1024);
    });

    const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (p.exitCode !== null) throw new Error(`pebble exited (${p.exitCode}):\n${out}`);
      const r = await fetchPem(directoryUrl, ca).catch(() => null);
      if (r?.status === 200 && r.body.includes('newNonce')) break;
      if (Date.now() > deadline) throw new Error(`pebble's directory did not answer in 15 s:\n${out}`);
      await sleep(50);
    }
    const mgmt = async (path: string) => {
      const r = await fetchPem(`https://127.0.0.1:${mgmtPort}${path}`, ca);
      if (r.status !== 200) throw new Error(`pebble ${path}: ${r.status} ${r.body}`);
      return r.body;
    };
    return {
      directoryUrl,
      caFile: tls.caFile,
      httpPort,
      dnsQueries: queries,
      rootsPem: () => mgmt('/roots/0'),
      intermediatePem: () => mgmt('/intermediates/0'),
      output: () => out,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
