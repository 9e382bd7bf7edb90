/**
 * What the namespaces report as they work (for metrics): small interfaces, so containers/ knows nothing of
 * Prometheus. Every label a caller passes is a container name or a value of a fixed enumeration.
 */
import type { RunStatus, RunTrigger } from './cron/store.js';

export interface CronObserver {
  /** A run reached a final status (ok, failed, timeout, late, skipped, expired). */
  runEnded(container: string, status: RunStatus, trigger: RunTrigger): void;
  /** A scheduled run started this long after its slot. */
  runStarted(container: string, latenessSeconds: number): void;
}

export interface ExecObserver {
  /** A script ran (to a result or to an error) in this many seconds. */
  ran(container: string, runtime: 'isolate' | 'bun', seconds: number): void;
  /** A request to exec ended in an error of the catalogue (refused, unknown script, or the script failed). */
  failed(container: string, code: string): void;
}

export type AcmeOutcome = 'issued' | 'failed' | 'refused' | 'validated';

export interface AcmeObserver {
  /** An order ended: issued, failed at the CA, refused before ordering, or only validated (a dry run). */
  orderEnded(container: string, outcome: AcmeOutcome, directory: 'production' | 'staging'): void;
}

export const NO_CRON_OBSERVER: CronObserver = { runEnded: () => undefined, runStarted: () => undefined };
export const NO_EXEC_OBSERVER: ExecObserver = { ran: () => undefined, failed: () => undefined };
export const NO_ACME_OBSERVER: AcmeObserver = { orderEnded: () => undefined };
