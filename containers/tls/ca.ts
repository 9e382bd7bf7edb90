// @peculiar/x509 uses tsyringe, which needs the reflect polyfill loaded first.
import 'reflect-metadata';
import { webcrypto, X509Certificate as NodeX509, createPrivateKey, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { writeAtomic } from '../../host/atomic-file.js';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

export interface Pem {
  cert: string;
  key: string;
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').trim()}\n-----END PRIVATE KEY-----\n`;
}

async function importKeyPem(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
  return (await webcrypto.subtle.importKey('pkcs8', der, ALG, true, ['sign'])) as CryptoKey;
}

/**
 * The host CA: made once per state dir and kept, it signs the certificates of the service hostnames
 * (`*.<ctr>.<domain>`); every container trusts it, so in-container curl verifies TLS without -k.
 */
export class HostCa {
  private constructor(
    readonly certPem: string,
    private readonly key: CryptoKey,
    private readonly cert: x509.X509Certificate,
  ) {}

  static async loadOrCreate(dir: string, commonName = 'hoody host CA'): Promise<HostCa> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const certPath = join(dir, 'ca.crt');
    const keyPath = join(dir, 'ca.key');
    if (existsSync(certPath) && existsSync(keyPath)) {
      const certPem = await readFile(certPath, 'utf8');
      return new HostCa(certPem, await importKeyPem(await readFile(keyPath, 'utf8')), new x509.X509Certificate(certPem));
    }
    const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomBytes(8).toString('hex'),
      name: `CN=${commonName} ${randomBytes(3).toString('hex')}`,
      notBefore: new Date(Date.now() - DAY),
      notAfter: new Date(Date.now() + 3650 * DAY),
      keys,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const certPem = `${cert.toString('pem').trimEnd()}\n`;
    await writeAtomic(keyPath, await exportKeyPem(keys.privateKey), 0o600);
    await writeAtomic(certPath, certPem, 0o644);
    return new HostCa(certPem, keys.privateKey, cert);
  }

  /** A leaf certificate for the given DNS names (the first is the subject), valid for a year. */
  async issue(names: readonly string[], days = 365): Promise<Pem> {
    const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: `01${randomBytes(8).toString('hex')}`,
      subject: `CN=${names[0]}`,
      issuer: this.cert.subject,
      notBefore: new Date(Date.now() - DAY),
      notAfter: new Date(Date.now() + days * DAY),
      signingKey: this.key,
      publicKey: keys.publicKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(names.map((n) => ({ type: 'dns' as const, value: n }))),
        await x509.AuthorityKeyIdentifierExtension.create(this.cert),
      ],
    });
    return { cert: `${cert.toString('pem').trimEnd()}\n`, key: await exportKeyPem(keys.privateKey) };
  }

  /** The CA's certificate then its key, one PEM (what HAProxy's `ca-sign-file` reads). */
  async signingPem(): Promise<string> {
    return `${this.certPem.trimEnd()}\n${await exportKeyPem(this.key)}`;
  }

  fingerprint(): string {
    return new NodeX509(this.certPem).fingerprint256;
  }
}
