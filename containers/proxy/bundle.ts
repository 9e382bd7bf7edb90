import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import { fail } from '../errors.js';

export interface BundleInput {
  domain: string;
  cert: string;
  key: string;
  chain?: string;
}

export interface ValidBundle {
  domain: string;
  cert: string;
  key: string;
  chain: string;
  fingerprint: string;
  notAfter: string;
  context: SecureContext;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The seed's `{d, cert}` shape carries key and chain inside `cert` (one PEM blob); sort it out. */
export function normalizeBundle(body: { domain?: string; d?: string; cert?: string; key?: string; chain?: string }): BundleInput {
  const domain = (body.domain ?? body.d ?? '').trim().toLowerCase();
  const blob = body.cert ?? '';
  const certs = blob.match(PEM_CERT) ?? [];
  const embeddedKey = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----/.exec(blob)?.[0];
  return {
    domain,
    cert: certs[0] ?? blob,
    key: body.key ?? embeddedKey ?? '',
    chain: body.chain ?? certs.slice(1).join('\n'),
  };
}

/**
 * Validates a certificate bundle before anything changes: it parses, the key matches, it is valid now, and
 * its names cover the domain. Each failure has its own code; the secure context is built here too, so a
 * bundle that passes cannot fail later at swap time.
 */
export function validateBundle(input: BundleInput, now = new Date()): ValidBundle {
  if (!input.domain || !/^[a-z0-9*]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/.test(input.domain))
    throw fail('CERT_DOMAIN_INVALID', input.domain);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(input.cert);
  } catch (err) {
    throw fail('CERT_UNPARSABLE', `certificate: ${(err as Error).message}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(input.key);
  } catch (err) {
    throw fail('CERT_UNPARSABLE', `private key: ${(err as Error).message}`);
  }
  const chainCerts = (input.chain ?? '').match(PEM_CERT) ?? [];
  if ((input.chain ?? '').trim() && !chainCerts.length) throw fail('CERT_UNPARSABLE', 'chain: no PEM certificate found');
  for (const c of chainCerts) {
    try {
      new X509Certificate(c);
    } catch (err) {
      throw fail('CERT_UNPARSABLE', `chain: ${(err as Error).message}`);
    }
  }
  if (!x509.checkPrivateKey(key)) throw fail('CERT_KEY_MISMATCH', input.domain);
  const notAfter = new Date(x509.validTo);
  if (notAfter.getTime() <= now.getTime()) throw fail('CERT_EXPIRED', `${input.domain} expired ${notAfter.toISOString()}`);
  if (new Date(x509.validFrom).getTime() > now.getTime() + 5 * 60_000)
    throw fail('CERT_EXPIRED', `${input.domain} is not valid before ${new Date(x509.validFrom).toISOString()}`);
  if (!x509.checkHost(input.domain, { wildcards: true })) throw fail('CERT_NAME_MISMATCH', input.domain);
  const chain = chainCerts.join('\n');
  const certPem = `${input.cert.match(PEM_CERT)?.[0] ?? input.cert}\n`;
  let context: SecureContext;
  try {
    context = createSecureContext({ cert: `${certPem}${chain ? `${chain}\n` : ''}`, key: input.key });
  } catch (err) {
    throw fail('CERT_UNPARSABLE', (err as Error).message);
  }
  return { domain: input.domain, cert: certPem, key: input.key, chain, fingerprint: x509.fingerprint256, notAfter: notAfter.toISOString(), context };
}
