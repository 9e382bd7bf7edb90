import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type Database from 'better-sqlite3';
import Fastify from 'fastify';
import { pino } from 'pino';
import { Http01Challenges } from '../containers/acme/challenges.js';
import { normalizeDomains } from '../containers/acme/domains.js';
import { acmeChallengeRoute, answerAcmeChallenge } from '../containers/acme/route.js';
import { acmeMigrations } from '../containers/acme/schema.js';
import { type AcmeCertificate, AcmeService, type AcmeServiceDeps } from '../containers/acme/service.js';
import { isHoodyError } from '../containers/errors.js';
import { openDatabase } from '../daemon/db.js';
import { type Pebble, startPebble } from './support/pebble.js';

const log = pino({ level: process.env.HOODY_TEST_LOG ?? 'warn' });
/** A directory nothing listens on: a service pointed at it must never get that far. */
const NOWHERE = 'https://127.0.0.1:9/dir';

async function codeOf(p: Promise<unknown>): Promise<{ code: string; status: number; message: string }> {
  try {
    await p;
  } catch (err) {
    if (isHoodyError(err)) return { code: err.code, status: err.status, message: err.message };
    throw err;
  }
  return { code: 'no error', status: 0, message: '' };
}

function addContainer(db: Database.Database, name: string): void {
  db.prepare(
    `INSERT INTO containers (name, id, image, memory_bytes, nano_cpus, pids_limit, volume, phase, created_at)
     VALUES (?, ?, 'busybox', 0, 0, 0, '/nonexistent', 'ready', ?)`,
  ).run(name, `id-${name}`, new Date().toISOString());
}

function accounts(db: Database.Database, container: string): { directory_url: string; account_url: string | null }[] {
  return db.prepare('SELECT directory_url, account_url FROM acme_accounts WHERE container = ? ORDER BY directory_url').all(container) as {
    directory_url: string;
    account_url: string | null;
  }[];
}

describe('acme: orders against pebble, http-01 from a real HTTP server', () => {
  let pebble: Pebble;
  let server: Server;
  let dir: string;
  let db: Database.Database;
  const challenges = new Http01Challenges();
  /** Every http-01 probe the server answered: host, token, status. */
  const probes: { host: string; url: string; status: number }[] = [];
  const services: AcmeService[] = [];

  const service = (extra: Partial<AcmeServiceDeps> = {}) => {
    const s = new AcmeService({
      db,
      log,
      directoryUrl: pebble.directoryUrl,
      caFile: pebble.caFile,
      challenges,
      poll: { attempts: 30, minMs: 50, maxMs: 500 },
      retry: { attempts: 2, delaySeconds: 1 },
      ...extra,
    });
    services.push(s);
    return s;
  };

  async function checkIssued(c: AcmeCertificate, names: string[]): Promise<void> {
    const leaf = new X509Certificate(c.cert);
    const intermediate = new X509Certificate(await pebble.intermediatePem());
    assert.ok(leaf.checkIssued(intermediate), `leaf issuer ${leaf.issuer} vs pebble's intermediate ${intermediate.subject}`);
    assert.ok(leaf.verify(intermediate.publicKey), 'the leaf is signed by pebble intermediate key');
    assert.ok(leaf.checkPrivateKey(createPrivateKey(c.key)), 'the key matches the leaf');
    const sans = (leaf.subjectAltName ?? '').split(', ').sort();
    assert.deepEqual(sans, names.map((n) => `DNS:${n}`).sort());
    assert.equal(c.expires, new Date(leaf.validTo).toISOString());
    assert.ok(Date.parse(c.expires) > Date.now());
    const chain = c.chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    assert.ok(chain.length >= 1, 'the chain holds the issuer');
    assert.equal(new X509Certificate(chain[0]!).fingerprint256, intermediate.fingerprint256);
    assert.equal((c.cert.match(/BEGIN CERTIFICATE/g) ?? []).length, 1, 'cert is the leaf only');
    assert.equal(challenges.size, 0, 'tokens are withdrawn once the order is valid');
  }

  before(async () => {
    server = createServer((req, res) => {
      const answer = answerAcmeChallenge(challenges, req.method ?? 'GET', req.url ?? '/', req.headers.host);
      if (!answer) {
        res.writeHead(404).end();
        return;
      }
      probes.push({ host: req.headers.host ?? '', url: req.url ?? '', status: answer.status });
      res.writeHead(answer.status, { 'content-type': answer.contentType }).end(answer.body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    pebble = await startPebble({ httpPort: (server.address() as AddressInfo).port });
    dir = await mkdtemp(join(tmpdir(), 'hoody-acme-'));
    db = openDatabase(join(dir, 'state.db'), [acmeMigrations]);
    for (const name of ['c1', 'c2', 'c3', 'c4', 'c5', 'c6']) addContainer(db, name);
  });

  after(async () => {
    for (const s of services) s.close();
    db?.close();
    await pebble?.stop();
    await new Promise((r) => server?.close(r));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('orders a certificate for two names: issued by pebble, both names, the key matches', async () => {
    const acme = service();
    const t0 = performance.now();
    const c = await acme.order('c1', ['a.test', 'B.test.']);
    const ms = performance.now() - t0;
    console.log(`# one full ACME order (new account, 2 names, http-01, finalize, download): ${ms.toFixed(0)} ms`);
    assert.equal(c.issued, true);
    assert.equal(c.dryRun, false);
    assert.deepEqual(c.domains, ['a.test', 'b.test']);
    await checkIssued(c, ['a.test', 'b.test']);
    const hosts = new Set(probes.filter((p) => p.status === 200).map((p) => p.host.split(':')[0]));
    assert.deepEqual([...hosts].sort(), ['a.test', 'b.test'], 'pebble fetched the tokens from our server, by name');
    assert.ok(pebble.dnsQueries.includes('a.test'));
  });

  test('repeated orders reuse the container account; another container gets its own', async () => {
    const acme = service();
    const first = accounts(db, 'c1');
    assert.equal(first.length, 1);
    assert.match(first[0]!.account_url ?? '', /^https:\/\/127\.0\.0\.1:\d+\//);
    const t0 = performance.now();
    await checkIssued(await acme.order('c1', ['a.test', 'b.test']), ['a.test', 'b.test']);
    await checkIssued(await acme.order('c1', 'a.test'), ['a.test']);
    console.log(`# two more orders on the kept account (authorizations may be reused): ${(performance.now() - t0).toFixed(0)} ms`);
    assert.deepEqual(accounts(db, 'c1'), first, 'one account row, same account URL');
    assert.equal(acme.accountUrl('c1'), first[0]!.account_url);

    await checkIssued(await acme.order('c2', 'a.test'), ['a.test']);
    const other = accounts(db, 'c2');
    assert.equal(other.length, 1);
    assert.notEqual(other[0]!.account_url, first[0]!.account_url);
  });

  test('concurrent orders of one container share one account', async () => {
    const acme = service();
    const results = await Promise.all([acme.order('c5', 'p.test'), acme.order('c5', 'q.test'), acme.order('c5', ['p.test', 'q.test'])]);
    await checkIssued(results[0], ['p.test']);
    await checkIssued(results[2], ['p.test', 'q.test']);
    assert.equal(accounts(db, 'c5').length, 1);
  });

  test('an account URL the CA does not know: found again by key, or registered again if the CA forgot the key', async () => {
    const acme = service();
    await acme.order('c6', 'r.test');
    const [orig] = accounts(db, 'c6');
    const base = new URL(pebble.directoryUrl).origin;
    const bogus = `${base}/my-account/0000000000000000`;
    db.prepare('UPDATE acme_accounts SET account_url = ? WHERE container = ?').run(bogus, 'c6');
    await checkIssued(await acme.order('c6', 'r.test'), ['r.test']);
    assert.deepEqual(accounts(db, 'c6'), [orig], 'the same key found its account again');

    // A second pebble has never seen the key (as after a CA reset): the same key is registered anew.
    const fresh = await startPebble({ httpPort: pebble.httpPort });
    try {
      const { account_key } = db.prepare('SELECT account_key FROM acme_accounts WHERE container = ?').get('c6') as { account_key: string };
      const now = new Date().toISOString();
      db.prepare('INSERT INTO acme_accounts VALUES (?, ?, ?, ?, ?, ?)').run('c6', fresh.directoryUrl, account_key, `${new URL(fresh.directoryUrl).origin}/my-account/1`, now, now);
      const other = service({ directoryUrl: fresh.directoryUrl, caFile: fresh.caFile });
      const c = await other.order('c6', 's.test');
      assert.ok(new X509Certificate(c.cert).checkIssued(new X509Certificate(await fresh.intermediatePem())));
      const row = db.prepare('SELECT account_key, account_url FROM acme_accounts WHERE container = ? AND directory_url = ?').get('c6', fresh.directoryUrl) as {
        account_key: string;
        account_url: string;
      };
      assert.equal(row.account_key, account_key, 'the key is kept');
      assert.notEqual(row.account_url, `${new URL(fresh.directoryUrl).origin}/my-account/1`);
    } finally {
      await fresh.stop();
    }
  });

  test('invalid domains are refused before any ACME traffic', async () => {
    const acme = service({ directoryUrl: NOWHERE });
    const bad: unknown[] = [
      '*.a.test',
      ['a.test', '*.b.test'],
      'a..test',
      '-a.test',
      'a_b.test',
      '1.2.3.4',
      '::1',
      'localhost',
      'a.test/x',
      '',
      [],
      [42],
      null,
      'x'.repeat(64) + '.test',
      Array.from({ length: 101 }, (_, i) => `n${i}.test`),
    ];
    for (const d of bad) {
      const r = await codeOf(acme.order('c1', d as string[]));
      assert.equal(r.code, 'HOODY_ACME_DOMAIN_INVALID', `${JSON.stringify(d)?.slice(0, 60)}: ${r.message}`);
      assert.equal(r.status, 400);
    }
    assert.match((await codeOf(acme.order('c1', '*.a.test'))).message, /wildcard/);
    assert.deepEqual(normalizeDomains(['Ä.test', 'a.test', 'A.TEST.']), ['xn--4ca.test', 'a.test']);
    assert.equal(normalizeDomains(Array.from({ length: 100 }, (_, i) => `n${i}.test`)).length, 100);
  });

  test('names not routed to the container are refused (ownsHostname)', async () => {
    const acme = service({ directoryUrl: NOWHERE, ownsHostname: (ctr, host) => ctr === 'c1' && host.endsWith('.c1.test') });
    const r = await codeOf(acme.order('c1', ['x.c1.test', 'y.other.test']));
    assert.equal(r.code, 'HOODY_ACME_DOMAIN_NOT_ROUTED');
    assert.match(r.message, /y\.other\.test/);
    assert.equal((await codeOf(acme.order('c2', 'x.c1.test'))).code, 'HOODY_ACME_DOMAIN_NOT_ROUTED');
  });

  test('dry runs never issue from production: staging when configured, else validation only', async () => {
    const noStaging = service({ directoryUrl: NOWHERE });
    assert.deepEqual(await noStaging.order('c3', ['d.test', 'D.test'], { dryRun: true }), { issued: false, dryRun: true, domains: ['d.test'] });
    assert.equal((await codeOf(noStaging.order('c3', '*.d.test', { dryRun: true }))).code, 'HOODY_ACME_DOMAIN_INVALID');
    assert.equal(accounts(db, 'c3').length, 0);

    const staged = service({ directoryUrl: NOWHERE, stagingDirectoryUrl: pebble.directoryUrl });
    const c = await staged.order('c3', 'd.test', { dryRun: true });
    assert.equal(c.issued, true);
    assert.ok(c.issued && c.dryRun && c.directoryUrl === pebble.directoryUrl);
    if (c.issued) await checkIssued(c, ['d.test']);
    assert.deepEqual(
      accounts(db, 'c3').map((a) => a.directory_url),
      [pebble.directoryUrl],
      'only a staging account',
    );
    // Not a dry run: production, which is unreachable here.
    const prod = await codeOf(staged.order('c3', 'd.test'));
    assert.equal(prod.code, 'HOODY_ACME_FAILED');
    assert.match(prod.message, /cannot reach the ACME server https:\/\/127\.0\.0\.1:9\/dir \(ECONNREFUSED/);
  });

  test('an untrusted ACME server fails fast with a clear HOODY_ACME_FAILED', async () => {
    const acme = service({ caFile: null, retry: { attempts: 5, delaySeconds: 5 } });
    const t0 = performance.now();
    const r = await codeOf(acme.order('c4', 'e.test'));
    const ms = performance.now() - t0;
    assert.equal(r.code, 'HOODY_ACME_FAILED', r.message);
    assert.equal(r.status, 502);
    assert.match(r.message, /does not trust .*HOODY_ACME_CA_FILE/);
    assert.ok(ms < 5000, `failed in ${ms.toFixed(0)} ms`);
    console.log(`# untrusted CA refused in ${ms.toFixed(0)} ms: ${r.message}`);

    const missing = await codeOf(service({ caFile: join(dir, 'no-such-ca.pem') }).order('c4', 'e.test'));
    assert.equal(missing.code, 'HOODY_ACME_FAILED');
    assert.match(missing.message, /cannot read the ACME CA file/);
  });

  test('a failed http-01 validation is a 502 HOODY_ACME_FAILED carrying the ACME problem', async () => {
    // Its own (empty) store: our HTTP server never learns the token and answers 404.
    const acme = service({ challenges: new Http01Challenges() });
    const r = await codeOf(acme.order('c4', 'f.test'));
    assert.equal(r.code, 'HOODY_ACME_FAILED');
    assert.equal(r.status, 502);
    assert.match(r.message, /http-01 for f\.test: .*404.*\(unauthorized\)$/);
    assert.ok(probes.some((p) => p.host.startsWith('f.test') && p.status === 404));
  });

  test('accounts go with their container', async () => {
    assert.ok(accounts(db, 'c2').length > 0);
    db.prepare('DELETE FROM containers WHERE name = ?').run('c2');
    assert.equal(accounts(db, 'c2').length, 0);
    assert.equal((await codeOf(service().order('c2', 'a.test'))).code, 'HOODY_CONTAINER_UNKNOWN');
  });
});

describe('acme: the http-01 store and route', () => {
  const token = 'tok_0123456789abcdefXYZ';

  test('answers a token only for its hostnames, until deleted (reference counted)', () => {
    const ch = new Http01Challenges();
    ch.set(token, `${token}.thumb`, ['A.test']);
    assert.equal(ch.get(token), `${token}.thumb`);
    assert.equal(ch.get(token, 'a.test:8080'), `${token}.thumb`);
    assert.equal(ch.get(token, 'a.test.'), `${token}.thumb`);
    assert.equal(ch.get(token, 'b.test'), null);
    ch.set(token, `${token}.thumb`, ['a.test']);
    ch.delete(token);
    assert.equal(ch.get(token), `${token}.thumb`, 'still referenced by a second order');
    ch.delete(token);
    assert.equal(ch.get(token), null);
    assert.throws(() => ch.set('../etc', 'x', ['a.test']));
  });

  test('the fastify route: text/plain key authorization, else 404 HOODY_ACME_CHALLENGE_UNKNOWN', async () => {
    const ch = new Http01Challenges();
    ch.set(token, `${token}.thumb`, ['a.test']);
    const app = Fastify();
    app.route(acmeChallengeRoute(ch));
    try {
      const ok = await app.inject({ url: `/.well-known/acme-challenge/${token}`, headers: { host: 'a.test' } });
      assert.equal(ok.statusCode, 200);
      assert.match(String(ok.headers['content-type']), /^text\/plain/);
      assert.equal(ok.body, `${token}.thumb`);
      for (const [url, host] of [
        [`/.well-known/acme-challenge/${token}`, 'b.test'],
        ['/.well-known/acme-challenge/unknown-token-0123456789', 'a.test'],
      ] as const) {
        const r = await app.inject({ url, headers: { host } });
        assert.equal(r.statusCode, 404);
        assert.match(String(r.headers['content-type']), /^application\/json/);
        assert.equal(r.json().error.code, 'HOODY_ACME_CHALLENGE_UNKNOWN');
      }
    } finally {
      await app.close();
    }
    assert.equal(answerAcmeChallenge(ch, 'GET', '/other', 'a.test'), null);
    assert.equal(answerAcmeChallenge(ch, 'POST', `/.well-known/acme-challenge/${token}`, 'a.test'), null);
  });
});
