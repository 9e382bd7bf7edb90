import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { fail } from '../errors.js';

/** Let's Encrypt's limit of names per certificate. */
export const MAX_ACME_DOMAINS = 100;

const LABEL_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

function invalid(name: string, why: string): never {
  throw fail('ACME_DOMAIN_INVALID', `${JSON.stringify(name)}: ${why}`);
}

/** One name as an ACME dns identifier: lowercase ASCII (IDNs as punycode), no trailing dot. Throws otherwise. */
export function normalizeDomain(input: unknown): string {
  if (typeof input !== 'string') throw fail('ACME_DOMAIN_INVALID', `expected a string, got ${input === null ? 'null' : typeof input}`);
  const raw = input.trim();
  if (raw === '') invalid(input, 'empty name');
  if (raw.includes('*')) invalid(input, 'wildcards need dns-01; hoody answers http-01 only (order each name)');
  if (isIP(raw.replace(/^\[|\]$/g, ''))) invalid(input, 'IP addresses are not DNS names');
  let name = raw.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the range is the point: anything past ASCII is an IDN
  if (/[^\x00-\x7f]/.test(name)) {
    const ascii = domainToASCII(name);
    if (ascii === '') invalid(input, 'not a valid internationalized domain name');
    name = ascii;
  }
  if (name.length > 253) invalid(input, 'longer than 253 characters');
  const labels = name.split('.');
  if (labels.length < 2) invalid(input, 'a certificate name needs at least two labels (e.g. app.example.com)');
  for (const label of labels) {
    if (!LABEL_RE.test(label)) invalid(input, `bad label ${JSON.stringify(label)} (1-63 of a-z, 0-9, '-', not starting or ending with '-')`);
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) invalid(input, 'the last label is numeric (not a DNS name)');
  return name;
}

/** The names of one order: a name or a list, each normalized, duplicates dropped, 1 to 100 of them. */
export function normalizeDomains(input: unknown): string[] {
  const list = typeof input === 'string' ? [input] : input;
  if (!Array.isArray(list)) throw fail('ACME_DOMAIN_INVALID', 'expected a domain name or a list of them');
  if (list.length === 0) throw fail('ACME_DOMAIN_INVALID', 'no domain given');
  if (list.length > MAX_ACME_DOMAINS * 10) throw fail('ACME_DOMAIN_INVALID', `${list.length} names; at most ${MAX_ACME_DOMAINS} per certificate`);
  const out = [...new Set(list.map(normalizeDomain))];
  if (out.length > MAX_ACME_DOMAINS) throw fail('ACME_DOMAIN_INVALID', `${out.length} names; at most ${MAX_ACME_DOMAINS} per certificate`);
  return out;
}
