import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Authorization, Client, Order } from 'acme-client';
import { acmeLib, loadAcme } from './lib.js';
import type { Database } from 'better-sqlite3';
import type { Logger } from 'pino';
import { fail, type HoodyError, isHoodyError } from '../errors.js';
import { type AcmeObserver, NO_ACME_OBSERVER } from '../observe.js';
import type { Http01Challenges } from './challenges.js';
import { normalizeDomains } from './domains.js';
import { AcmeAgent, describeNetworkError, probeDirectory, type TransportScope, withTransport } from './transport.js';

export interface AcmeServiceDeps {
  db: Database;
  log: Logger;
  /** The production directory (HOODY_ACME_DIRECTORY). */
  directoryUrl: string;
  /** Where dry runs order from; without one a dry run only validates. */
  stagingDirectoryUrl?: string | null;
  /** An extra CA (PEM file) to trust when talking ACME (HOODY_ACME_CA_FILE), on top of the public roots. */
  caFile?: string | null;
  challenges: Http01Challenges;
  /** May this container order a certificate for this name (is it routed to it)? Absent: every name is allowed. */
  ownsHostname?: (container: string, hostname: string) => boolean | Promise<boolean>;
  /** Reserved names (403 HOODY_NAME_RESERVED) and the container's grants (403 HOODY_NAME_NOT_GRANTED). */
  claims?: { assertNotReserved(name: string): string; assertGranted(container: string, name: string): void };
  /** acme-client's retries of a request that got no answer, a 5xx or a 429: attempts, linear delay (default 5, 5 s). */
  retry?: { attempts: number; delaySeconds: number };
  /** Polling a pending challenge or order: attempts and the doubling delay (default 10, 1 s up to 30 s). */
  poll?: { attempts: number; minMs: number; maxMs: number };
  /** The directory probe before each order (default 10 s). */
  probeTimeoutMs?: number;
  /** The certificate key (default ECDSA P-256). Account keys are always ECDSA P-256. */
  keyType?: 'ecdsa' | 'rsa';
  /** Contact for new accounts (mailto:). */
  email?: string | null;
  /** Told of every order's outcome (metrics). */
  observer?: AcmeObserver;
}

export interface AcmeOrderOptions {
  dryRun?: boolean;
}

/** An issued certificate. `dryRun`: it came from the staging directory (not publicly trusted). */
export interface AcmeCertificate {
  issued: true;
  dryRun: boolean;
  directoryUrl: string;
  /** The leaf, PEM. */
  cert: string;
  /** Its private key, PEM (PKCS#8). */
  key: string;
  /** The issuer chain after the leaf, PEM (may be several certificates). */
  chain: string;
  /** The leaf's notAfter, ISO 8601. */
  expires: string;
  domains: string[];
}

/** A dry run with no staging directory configured: the names passed every check; nothing was ordered. */
export interface AcmeDryRun {
  issued: false;
  dryRun: true;
  domains: string[];
}

export type AcmeOrderResult = AcmeCertificate | AcmeDryRun;

interface AccountRow {
  account_key: string;
  account_url: string | null;
}

interface Account {
  key: string;
  url: string | null;
  /** Made by this call: never registered anywhere, so no lookup before registering. */
  fresh: boolean;
}

const ACCOUNT_GONE = 'urn:ietf:params:acme:error:accountDoesNotExist';
const PROBLEM_PREFIX = 'urn:ietf:params:acme:error:';

/** A step of an order, for error messages ("finalize: ..."). */
class StepError extends Error {
  constructor(
    readonly step: string,
    override readonly cause: unknown,
  ) {
    super(step);
  }
}

async function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw err instanceof StepError || isHoodyError(err) ? err : new StepError(name, err);
  }
}

/**
 * ACME for containers (`acme.order()` in scripts): one account per container and directory, kept in SQLite;
 * http-01 only, answered from the shared `Http01Challenges` by the public HTTP listener.
 */
export class AcmeService {
  readonly #deps: AcmeServiceDeps;
  readonly #log: Logger;
  #agent: Promise<AcmeAgent> | null = null;
  /** One order at a time per container and directory (account creation, then orders, never race). */
  readonly #queues = new Map<string, Promise<unknown>>();

  constructor(deps: AcmeServiceDeps) {
    this.#deps = deps;
    this.#log = deps.log.child({ ns: 'acme' });
  }

  /** Validates, checks the names are routed to the container, then orders (or, on a dry run, see AcmeDryRun). */
  order(container: string, domains: string | readonly string[], opts?: { dryRun?: false }): Promise<AcmeCertificate>;
  order(container: string, domains: string | readonly string[], opts: AcmeOrderOptions): Promise<AcmeOrderResult>;
  async order(container: string, domains: string | readonly string[], opts: AcmeOrderOptions = {}): Promise<AcmeOrderResult> {
    const observer = this.#deps.observer ?? NO_ACME_OBSERVER;
    const directory = opts.dryRun === true ? 'staging' : 'production';
    const at = { ordering: false };
    try {
      const result = await this.#validateAndOrder(container, domains, opts, at);
      observer.orderEnded(container, result.issued ? 'issued' : 'validated', directory);
      return result;
    } catch (err) {
      observer.orderEnded(container, at.ordering ? 'failed' : 'refused', directory);
      throw err;
    }
  }

  async #validateAndOrder(container: string, domains: string | readonly string[], opts: AcmeOrderOptions, at: { ordering: boolean }): Promise<AcmeOrderResult> {
    // Reserved before syntax: an IP literal or a service hostname is refused as such, not as a bad DNS name.
    const claims = this.#deps.claims;
    for (const raw of typeof domains === 'string' ? [domains] : Array.isArray(domains) ? domains : []) {
      if (claims && typeof raw === 'string') claims.assertNotReserved(raw);
    }
    const names = normalizeDomains(domains);
    for (const name of names) claims?.assertGranted(container, name);
    if (this.#deps.ownsHostname) {
      for (const name of names) {
        if (!(await this.#deps.ownsHostname(container, name))) throw fail('ACME_DOMAIN_NOT_ROUTED', name);
      }
    }
    const dryRun = opts.dryRun === true;
    await loadAcme();
    let directoryUrl = this.#deps.directoryUrl;
    if (dryRun) {
      if (!this.#deps.stagingDirectoryUrl) return { issued: false, dryRun: true, domains: names };
      directoryUrl = this.#deps.stagingDirectoryUrl;
    }
    at.ordering = true;
    const key = `${container}\n${directoryUrl}`;
    const prev = this.#queues.get(key) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(() => this.#order(container, names, directoryUrl, dryRun));
    this.#queues.set(key, run);
    try {
      return await run;
    } finally {
      if (this.#queues.get(key) === run) this.#queues.delete(key);
    }
  }

  /** The account URL a container has at a directory (default: production), or null. */
  accountUrl(container: string, directoryUrl = this.#deps.directoryUrl): string | null {
    return this.#account(container, directoryUrl)?.account_url ?? null;
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.#agent?.then((a) => a.destroy()).catch(() => undefined);
    this.#agent = null;
  }

  #agentFor(): Promise<AcmeAgent> {
    if (this.#agent) return this.#agent;
    const made = (async () => {
      const file = this.#deps.caFile;
      if (!file) return new AcmeAgent(null);
      const pem = await readFile(file, 'utf8').catch((err: Error) => {
        throw fail('ACME_FAILED', `cannot read the ACME CA file ${file}: ${err.message}`);
      });
      if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw fail('ACME_FAILED', `the ACME CA file ${file} holds no PEM certificate`);
      return new AcmeAgent(pem);
    })();
    this.#agent = made;
    // A CA file that could not be read is read again next time.
    made.catch(() => {
      if (this.#agent === made) this.#agent = null;
    });
    return made;
  }

  #account(container: string, directoryUrl: string): AccountRow | undefined {
    return this.#deps.db
      .prepare('SELECT account_key, account_url FROM acme_accounts WHERE container = ? AND directory_url = ?')
      .get(container, directoryUrl) as AccountRow | undefined;
  }

  /** The container's account key at this directory, made and stored on first use. */
  async #accountKey(container: string, directoryUrl: string): Promise<Account> {
    const have = this.#account(container, directoryUrl);
    if (have) return { key: have.account_key, url: have.account_url, fresh: false };
    const pem = (await acmeLib().crypto.createPrivateEcdsaKey('P-256')).toString();
    const now = new Date().toISOString();
    try {
      this.#deps.db
        .prepare(
          `INSERT INTO acme_accounts (container, directory_url, account_key, account_url, created_at, updated_at)
           VALUES (?, ?, ?, NULL, ?, ?) ON CONFLICT (container, directory_url) DO NOTHING`,
        )
        .run(container, directoryUrl, pem, now, now);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw fail('CONTAINER_UNKNOWN', container);
      throw err;
    }
    const row = this.#account(container, directoryUrl)!;
    return { key: row.account_key, url: row.account_url, fresh: row.account_key === pem };
  }

  #saveAccountUrl(container: string, directoryUrl: string, url: string): void {
    this.#deps.db
      .prepare('UPDATE acme_accounts SET account_url = ?, updated_at = ? WHERE container = ? AND directory_url = ?')
      .run(url, new Date().toISOString(), container, directoryUrl);
  }

  #client(directoryUrl: string, account: { key: string; url: string | null }): Client {
    const poll = this.#deps.poll ?? { attempts: 10, minMs: 1000, maxMs: 30_000 };
    return new (acmeLib().Client)({
      directoryUrl,
      accountKey: account.key,
      ...(account.url ? { accountUrl: account.url } : {}),
      backoffAttempts: poll.attempts,
      backoffMin: poll.minMs,
      backoffMax: poll.maxMs,
    });
  }

  /**
   * Registers the account key and stores its URL. A key the CA may already know (the URL was lost, or the CA said
   * the account does not exist) is looked up first: a plain newAccount for a known key makes acme-client send an
   * account update, which some CAs (pebble) refuse.
   */
  async #register(container: string, directoryUrl: string, account: Account, scope: TransportScope): Promise<Client> {
    const client = this.#client(directoryUrl, { key: account.key, url: null });
    let known = false;
    if (!account.fresh) {
      try {
        await client.createAccount({ onlyReturnExisting: true });
        known = true;
      } catch (err) {
        if (scope.lastProblem?.type !== ACCOUNT_GONE) throw new StepError('account lookup', err);
        scope.lastProblem = null;
      }
    }
    if (!known) {
      const email = this.#deps.email;
      await step('account registration', () => client.createAccount({ termsOfServiceAgreed: true, ...(email ? { contact: [`mailto:${email}`] } : {}) }));
    }
    const url = client.getAccountUrl();
    this.#saveAccountUrl(container, directoryUrl, url);
    this.#log.info({ container, directoryUrl, account: url, known }, known ? 'acme account found again' : 'acme account registered');
    return client;
  }

  async #order(container: string, domains: string[], directoryUrl: string, dryRun: boolean): Promise<AcmeCertificate> {
    const started = Date.now();
    const agent = await this.#agentFor();
    const retry = this.#deps.retry ?? { attempts: 5, delaySeconds: 5 };
    const scope: TransportScope = { agent, retryAttempts: retry.attempts, retryDelaySeconds: retry.delaySeconds, requests: 0, badNonces: 0, lastProblem: null };
    const problem = await probeDirectory(directoryUrl, agent, this.#deps.probeTimeoutMs ?? 10_000);
    if (problem) throw fail('ACME_FAILED', problem);

    const account = await this.#accountKey(container, directoryUrl);
    try {
      const result = await withTransport(scope, async () => {
        let client = account.url ? this.#client(directoryUrl, account) : await this.#register(container, directoryUrl, account, scope);
        let order: Order;
        try {
          order = await step('new order', () => client.createOrder({ identifiers: domains.map((value) => ({ type: 'dns', value })) }));
        } catch (err) {
          // The CA forgot the account (a test CA restarted, or it was deactivated): register the same key again.
          if (!(err instanceof StepError) || scope.lastProblem?.type !== ACCOUNT_GONE) throw err;
          this.#log.warn({ container, directoryUrl }, 'acme account unknown to the CA; registering it again');
          scope.lastProblem = null;
          client = await this.#register(container, directoryUrl, { ...account, fresh: false }, scope);
          order = await step('new order', () => client.createOrder({ identifiers: domains.map((value) => ({ type: 'dns', value })) }));
        }
        return this.#complete(client, order, domains);
      });
      this.#log.info(
        { container, domains, directoryUrl, dryRun, ms: Date.now() - started, requests: scope.requests, badNonces: scope.badNonces },
        'acme certificate issued',
      );
      return { issued: true, dryRun, directoryUrl, ...result, domains };
    } catch (err) {
      const e = this.#explain(err, scope, directoryUrl, started);
      this.#log.warn({ container, domains, directoryUrl, code: e.code, err: e.message, ms: Date.now() - started }, 'acme order failed');
      throw e;
    }
  }

  /** Challenges, finalization, download. Tokens stay answerable until the order is valid (CAs validate repeatedly). */
  async #complete(client: Client, order: Order, domains: string[]): Promise<{ cert: string; key: string; chain: string; expires: string }> {
    const authzs = await step('authorizations', () => client.getAuthorizations(order));
    const published: string[] = [];
    const keyType = this.#deps.keyType ?? 'ecdsa';
    const keyPem = keyType === 'rsa' ? await acmeLib().crypto.createPrivateRsaKey(2048) : await acmeLib().crypto.createPrivateEcdsaKey('P-256');
    const [, csr] = await acmeLib().crypto.createCsr(
      // A CN is limited to 64 characters; the SANs carry every name anyway.
      { ...(domains[0]!.length <= 64 ? { commonName: domains[0] } : {}), altNames: [...domains] },
      keyPem,
    );
    let valid: Order;
    try {
      await Promise.all(authzs.map((authz) => this.#authorize(client, authz, published)));
      const finalized = await step('finalize', () => client.finalizeOrder(order, csr));
      valid = finalized.status === 'valid' ? finalized : await step('finalize', () => client.waitForValidStatus(finalized));
    } finally {
      for (const token of published) this.#deps.challenges.delete(token);
    }
    const pem = await step('certificate download', () => client.getCertificate(valid));
    const [leaf, ...chain] = acmeLib().crypto.splitPemChain(pem);
    if (!leaf) throw new StepError('certificate download', new Error('the CA returned no certificate'));
    const x509 = new X509Certificate(leaf);
    return {
      cert: `${leaf.trim()}\n`,
      key: keyPem.toString(),
      chain: chain.map((c) => `${c.trim()}\n`).join(''),
      expires: new Date(x509.validTo).toISOString(),
    };
  }

  async #authorize(client: Client, authz: Authorization, published: string[]): Promise<void> {
    const name = authz.identifier.value;
    const where = `http-01 for ${name}`;
    if (authz.status === 'valid') return; // reused authorization
    if (authz.status !== 'pending') throw new StepError(where, new Error(`authorization is ${authz.status}`));
    const challenge = authz.challenges.find((c) => c.type === 'http-01');
    if (!challenge) throw new StepError(where, new Error(`the CA offers no http-01 challenge (${authz.challenges.map((c) => c.type).join(', ')})`));
    if (challenge.status === 'valid') return;
    const keyAuthorization = await step(where, () => client.getChallengeKeyAuthorization(challenge));
    this.#deps.challenges.set(challenge.token, keyAuthorization, [name]);
    published.push(challenge.token);
    // No client.verifyChallenge(): it resolves the name itself, which says nothing about what the CA sees.
    if (challenge.status === 'pending') await step(where, () => client.completeChallenge(challenge));
    await step(where, () => client.waitForValidStatus(challenge));
  }

  #explain(err: unknown, scope: TransportScope, directoryUrl: string, started: number): HoodyError {
    if (isHoodyError(err)) return err;
    const where = err instanceof StepError ? err.step : 'order';
    const cause = err instanceof StepError ? err.cause : err;
    const msg = cause instanceof Error ? cause.message : String(cause);
    const net = scope.agent.lastError;
    // acme-client's retry interceptor ends a request that never got an answer with a TypeError about `status`.
    if (net && net.at >= started && cause instanceof TypeError) {
      return fail('ACME_FAILED', `${where}: ${describeNetworkError(directoryUrl, net.err)}`);
    }
    const p = scope.lastProblem;
    const type = p && (p.detail === '' || msg.includes(p.detail)) ? ` (${p.type.replace(PROBLEM_PREFIX, '')})` : '';
    return fail('ACME_FAILED', `${where}: ${msg}${type}`);
  }
}
