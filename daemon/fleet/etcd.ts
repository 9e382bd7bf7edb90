import { type Interceptor, InterceptingCall } from '@grpc/grpc-js';
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import { Etcd3, type IOptions, isRecoverableError } from 'etcd3';
import { fail, type HoodyError, isHoodyError } from '../../containers/errors.js';

/**
 * Every call of the strict client carries `hasleader: true`: with quorum lost etcd then answers "no leader" at once
 * instead of holding a put 7-21 s (measured, ENVIRONMENT.md). etcd3 has no per-call metadata: a gRPC interceptor.
 */
const hasLeader: Interceptor = (options, next) =>
  new InterceptingCall(next(options), {
    start(metadata, listener, nextStart) {
      metadata.set('hasleader', 'true');
      nextStart(metadata, listener);
    },
  });

type WatchBackoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>;

export interface EtcdClients {
  /** Watches, leases and re-lists: waits out short outages (tuned to recover in ~1 s once etcd is back). */
  relaxed: Etcd3;
  /** Reservations and directory writes: hasleader and a deadline per call; callers bound the whole with within(). */
  strict: Etcd3;
  close(): void;
}

function options(endpoints: string[], callMs: number, strict: boolean): IOptions {
  return {
    hosts: endpoints,
    dialTimeout: callMs,
    // The measured tuning: the default breaker (open 5 s) and watch backoff (up to 30 s) kept watches down 15 s.
    faultHandling: {
      host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 500, breaker: new ConsecutiveBreaker(3) }),
      // A failed call is not moved to another member by the pool (only an open breaker is skipped): the strict
      // client retries once per member so a live one is reached; the caller's bound (within()) caps the total.
      global: retry(handleWhen(isRecoverableError), { maxAttempts: strict ? endpoints.length * 2 : 3 }),
      // etcd3 types this as a backoff but calls .next() on it first: a factory, as its own default is.
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }) as unknown as WatchBackoff,
    },
    // Keepalive at or below 5 s makes etcd reject the pings; 10 s is the measured setting.
    grpcOptions: {
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      ...(strict ? { interceptors: [hasLeader] } : {}),
    } as IOptions['grpcOptions'],
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callMs }),
  };
}

export function etcdClients(endpoints: string[], callMs = 2_000): EtcdClients {
  const relaxed = new Etcd3(options(endpoints, callMs * 2, false));
  const strict = new Etcd3(options(endpoints, callMs, true));
  return {
    relaxed,
    strict,
    close() {
      relaxed.close();
      strict.close();
    },
  };
}

/** An etcd failure as the catalogue's 503: no leader (quorum lost) or unreachable/timed out. */
export function fleetFailure(err: unknown): HoodyError {
  if (isHoodyError(err)) return err;
  const text = err instanceof Error ? err.message : String(err);
  if (/no leader|leader changed/i.test(text)) return fail('FLEET_NO_LEADER', text);
  return fail('FLEET_UNAVAILABLE', text);
}

/** Bounds any etcd call: whatever the client's retries do, the caller has an answer within `ms`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(fail('FLEET_UNAVAILABLE', `${what}: no answer from etcd within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } catch (err) {
    throw fleetFailure(err);
  } finally {
    clearTimeout(timer);
  }
}
