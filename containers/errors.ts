/**
 * The one error catalogue: every code hoody can answer with, its HTTP status and message.
 * Codes are stable (scripts match on them); add new ones, never rename.
 */
export const errors = {
  NAME_INVALID: {
    status: 400,
    message: (n: string) =>
      `invalid container name ${JSON.stringify(n)}: use 1-63 of a-z, 0-9 and '-', starting with a letter or digit`,
  },
  NAME_TAKEN: { status: 409, message: (n: string) => `container ${n} already exists` },
  CONTAINER_UNKNOWN: { status: 404, message: (n: string) => `no container ${n}` },
  CONTAINER_BUSY: { status: 409, message: (n: string) => `container ${n} is being created, moved or deleted; try again` },
  CONTAINER_MISSING: {
    status: 409,
    message: (n: string) => `container ${n} is missing from the engine (removed behind hoody's back): \`hoody recover ${n}\` rebuilds it from its volume, \`hoody rm ${n}\` deletes it`,
  },
  CONTAINER_UNRECOVERABLE: { status: 409, message: (n: string, why: string) => `container ${n} cannot be rebuilt: ${why}` },
  IMAGE_UNKNOWN: { status: 400, message: (i: string) => `no image ${i} in the engine (build or import it first)` },
  SIZE_INVALID: { status: 400, message: (s: string) => `invalid size ${JSON.stringify(s)}` },
  LIMIT_INVALID: { status: 400, message: (s: string) => s },
  SNAPSHOT_NAME_INVALID: { status: 400, message: (n: string) => `invalid snapshot name ${JSON.stringify(n)}` },
  SNAPSHOT_TAKEN: { status: 409, message: (n: string) => `snapshot ${n} already exists` },
  SNAPSHOT_UNKNOWN: { status: 404, message: (c: string, n: string) => `container ${c} has no snapshot ${n}` },
  SNAPSHOT_SCHEDULE_INVALID: { status: 400, message: (d: string) => `invalid snapshot schedule: ${d}` },
  SCOPE_INVALID: { status: 400, message: (s: string) => `invalid scope ${s}: give one or more of cron, exec, proxy, files, admin` },
  USER_INVALID: { status: 400, message: (u: string) => `invalid user ${JSON.stringify(u)}` },
  POOL_FULL: { status: 507, message: (d: string) => `the storage pool is full: ${d}` },
  ENGINE_UNAVAILABLE: { status: 503, message: (d: string) => `the container engine does not answer: ${d}` },
  ENGINE_FAILED: { status: 502, message: (d: string) => `the container engine refused: ${d}` },
  STORAGE_FAILED: { status: 500, message: (d: string) => `storage operation failed: ${d}` },
  BAD_REQUEST: { status: 400, message: (d: string) => d },
  BODY_INVALID: { status: 400, message: (d: string) => `invalid request body: ${d}` },
  BODY_TOO_LARGE: { status: 413, message: () => 'request body too large' },
  NOT_FOUND: { status: 404, message: (p: string) => `no route ${p}` },
  UNAUTHORIZED: { status: 401, message: () => 'missing or invalid token' },
  FORBIDDEN: { status: 403, message: (d: string) => d },
  CERT_DOMAIN_INVALID: { status: 400, message: (d: string) => `invalid certificate domain ${JSON.stringify(d)}` },
  CERT_UNPARSABLE: { status: 400, message: (d: string) => `bundle does not parse: ${d}` },
  CERT_KEY_MISMATCH: { status: 400, message: (d: string) => `the private key does not match the certificate for ${d}` },
  CERT_EXPIRED: { status: 400, message: (d: string) => `certificate not valid now: ${d}` },
  CERT_NAME_MISMATCH: { status: 400, message: (d: string) => `the certificate's names do not cover ${d}` },
  CERT_NOT_SERVED: { status: 500, message: (d: string) => `the new certificate for ${d} was not served by a fresh handshake` },
  CERT_UNKNOWN: { status: 404, message: (d: string) => `no certificate for ${d}` },
  PROXY_HOSTNAME_INVALID: { status: 400, message: (h: string) => `invalid hostname ${JSON.stringify(h)}` },
  PROXY_HOSTNAME_TAKEN: { status: 409, message: (h: string) => `hostname ${h} is routed by another container` },
  PROXY_ROUTE_UNKNOWN: { status: 404, message: (h: string) => `no route for ${h}` },
  PROXY_PORT_INVALID: { status: 400, message: (p: string) => `invalid port ${p}` },
  PROXY_UPSTREAM_FAILED: { status: 502, message: (d: string) => `the container did not answer: ${d}` },
  RATE_LIMITED: { status: 429, message: (d: string) => d },
  HEADERS_TOO_LARGE: { status: 431, message: () => 'request header fields too large' },
  REQUEST_TIMEOUT: { status: 408, message: () => 'request timeout' },
  INTERNAL: { status: 500, message: () => 'internal error (see the daemon log)' },
  // files and exec
  PATH_INVALID: { status: 400, message: (d: string) => `invalid path: ${d}` },
  PATH_CONFLICT: { status: 409, message: (d: string) => d },
  FILE_UNKNOWN: { status: 404, message: (p: string) => `no file ${p}` },
  SCRIPT_UNKNOWN: { status: 404, message: (p: string) => `no script ${p} (.ts or .js)` },
  SCRIPT_DIRECTIVE_INVALID: { status: 400, message: (d: string) => `invalid magic comment: ${d}` },
  SCRIPT_RUNTIME_INVALID: { status: 400, message: (d: string) => `invalid runtime or mode: ${d}` },
  RUNTIME_UNAVAILABLE: { status: 503, message: (d: string) => `the Bun runtime cannot run here: ${d}` },
  SCRIPT_SYNTAX: { status: 400, message: (d: string) => `script does not compile: ${d}` },
  SCRIPT_ERROR: { status: 500, message: (d: string) => `script failed: ${d}` },
  SCRIPT_TIMEOUT: { status: 504, message: (ms: number) => `script ran longer than its ${ms} ms limit` },
  SCRIPT_MEMORY: { status: 503, message: (mb: number) => `script exceeded its ${mb} MB memory limit` },
  SCRIPT_ABORTED: {
    status: 503,
    message: () => 'the isolate running this request was disposed (its container is being deleted); retry',
  },
  SCRIPT_RESPONSE_INVALID: { status: 502, message: (d: string) => `script answered with an invalid response: ${d}` },
  SCRIPT_LOOP: { status: 508, message: (n: number) => `scripts called scripts ${n} levels deep; refusing` },
  EXEC_WORKER_FAILED: { status: 502, message: (d: string) => `the exec worker failed (${d}); it restarts on the next request` },
  CRON_SCHEDULE_INVALID: { status: 400, message: (d: string) => `invalid cron schedule: ${d}` },
  CRON_FIELD_COUNT: {
    status: 400,
    message: (s: string) => `cron schedule ${JSON.stringify(s)} must have exactly 5 fields (minute hour day month weekday)`,
  },
  CRON_MACRO_UNKNOWN: {
    status: 400,
    message: (m: string) =>
      `unknown cron macro ${JSON.stringify(m)} (use @hourly @daily @weekly @monthly @yearly @annually @midnight @reboot)`,
  },
  CRON_TIMEZONE_UNKNOWN: { status: 400, message: (tz: string) => `unknown time zone ${JSON.stringify(tz)} (use an IANA name)` },
  CRON_EXPIRES_INVALID: { status: 400, message: (v: string) => `expires_at ${JSON.stringify(v)} is not an ISO 8601 date-time` },
  CRON_EXPIRES_PAST: { status: 400, message: (v: string) => `expires_at ${v} is in the past` },
  CRON_COMMAND_TOO_LONG: { status: 400, message: (max: number) => `command longer than ${max} bytes` },
  CRON_COMMENT_TOO_LONG: { status: 400, message: (max: number) => `comment longer than ${max} bytes` },
  CRON_PROPERTY_UNKNOWN: { status: 400, message: (p: string) => `unknown property ${JSON.stringify(p)} in a cron entry` },
  CRON_ENTRY_UNKNOWN: { status: 404, message: (id: string) => `no cron entry ${id}` },
  // acme
  ACME_DOMAIN_INVALID: { status: 400, message: (d: string) => `invalid ACME domains: ${d}` },
  ACME_DOMAIN_NOT_ROUTED: {
    status: 403,
    message: (d: string) => `${d} is not routed to this container (add a proxy route for it before ordering)`,
  },
  ACME_FAILED: { status: 502, message: (d: string) => `ACME order failed: ${d}` },
  ACME_CHALLENGE_UNKNOWN: { status: 404, message: (t: string) => `no pending ACME http-01 challenge ${t}` },
  // reliability and hostile input
  IMAGE_INVALID: { status: 400, message: (i: string) => `invalid image reference ${JSON.stringify(i)}` },
  URI_TOO_LONG: { status: 414, message: (d: string) => `request URI too long: ${d}` },
  // boundary: tenant file trees (issue 10.1)
  PATH_TOO_DEEP: { status: 400, message: (d: string) => `tree too deep: ${d}; remove or list it from inside the container` },

  // boundary: daemon survival (issue 10.2)
  PROXY_UPSTREAM_TIMEOUT: { status: 504, message: (d: string) => `the container did not answer in time: ${d}` },
  PROXY_UPSTREAM_HEADERS_TOO_LARGE: { status: 502, message: (max: number) => `the container's response header block is larger than ${max} bytes` },
  PROXY_UPSTREAM_BODY_TOO_LARGE: { status: 502, message: (max: number) => `the container's answer to an upgrade is larger than ${max} bytes` },
  SCRIPT_RESPONSE_TOO_LARGE: { status: 502, message: (max: number) => `script answered with a body larger than ${max} bytes` },

  // boundary: internal authority and in-container scopes (issue 10.3, 10.8)
  FETCH_HEADER_INVALID: { status: 400, message: (d: string) => `invalid fetch header: ${d}` },
  FETCH_HEADER_TOO_LONG: { status: 431, message: (name: string, max: number) => `fetch header ${name} longer than ${max} bytes` },
  FETCH_HEADERS_TOO_MANY: { status: 431, message: (max: number) => `more than ${max} fetch headers` },
  FETCH_HEADERS_TOO_LARGE: { status: 431, message: (max: number) => `fetch headers larger than ${max} bytes in all` },
  FETCH_REFUSED: { status: 403, message: (why: string) => `fetch refused: ${why}` },

  // boundary: names granted, not grabbed (issue 10.4)
  NAME_RESERVED: { status: 403, message: (n: string, why: string) => `${JSON.stringify(n)} is not a tenant's name: ${why}` },
  NAME_NOT_GRANTED: {
    status: 403,
    message: (n: string, granted: string) => `${n} is not among the domains granted to this container (${granted})`,
  },
  CERT_WILDCARD_CONFLICT: {
    status: 409,
    message: (w: string, h: string) => `wildcard ${w} would cover ${h}, which another container routes`,
  },
  DOMAIN_GRANT_INVALID: {
    status: 400,
    message: (d: string) => `invalid domain grant ${JSON.stringify(d)} (use example.org or *.example.org)`,
  },

  // boundary: disk quota (issue 10.5)
  DISK_QUOTA_EXCEEDED: { status: 507, message: (d: string) => `the container's disk limit is reached: ${d}` },
  ROOT_QUOTA_UNSUPPORTED: {
    status: 500,
    message: (driver: string) => `cannot bound the root filesystem on engine storage driver ${driver} (use overlay2 or btrfs)`,
  },

  // boundary: exec budgets (issue 10.6)
  SCRIPT_MEMORY_CEILING: {
    status: 400,
    message: (mb: number, max: number) => `@memory ${mb} MB is above this host's ceiling of ${max} MB per isolate`,
  },
  EXEC_BUSY: {
    status: 429,
    message: (d: string) => `this container already runs its budget of scripts at once (${d}); retry later`,
  },
  EXEC_OVERLOADED: { status: 503, message: (d: string) => `the host's exec capacity is taken (${d}); retry later` },
  EXEC_WORKER_OOM: {
    status: 503,
    message: (mb: number) => `the exec worker hit its ${mb} MB memory limit and was restarted; retry`,
  },

  // boundary: egress and user namespaces (issue 10.7, 10.9)

  // boundary: data at rest and per-container caps (issue 10.8, 10.10)
  CRON_ENTRY_LIMIT: { status: 409, message: (max: number) => `this container has ${max} cron entries, its limit; delete one first` },
  PROXY_ROUTE_LIMIT: { status: 409, message: (max: number) => `this container has ${max} proxy routes, its limit; delete one first` },
  CERT_LIMIT: { status: 409, message: (max: number) => `this container has ${max} certificates, its limit` },
  SCRIPT_LIMIT: { status: 409, message: (max: number) => `this container has ${max} files in /scripts, its limit; delete one first` },
  SCRIPT_TOO_LARGE: { status: 413, message: (max: number) => `a script may be at most ${max} bytes` },

  // tests (issue 16)

  // the data plane (issue 13.1)
  DAEMON_UNAVAILABLE: { status: 503, message: () => 'hoodyd is restarting; retry shortly' },
  DATA_PLANE_UNAVAILABLE: { status: 503, message: (d: string) => `the data plane (HAProxy) did not take the change: ${d}` },

  // the fleet (issue 12)
  FLEET_UNAVAILABLE: { status: 503, message: (d: string) => `the fleet directory (etcd) is unreachable: ${d}; containers already running are not affected` },
  FLEET_NO_LEADER: { status: 503, message: (d: string) => `the fleet directory (etcd) has no leader (quorum lost): ${d}; containers already running are not affected` },
  FLEET_NOT_JOINED: { status: 409, message: () => 'this host is not in a fleet (hoody fleet join <etcd endpoints>)' },
  FLEET_CONFIG_INVALID: { status: 400, message: (d: string) => `invalid fleet setting: ${d}` },
  FLEET_NAME_UNKNOWN: { status: 404, message: (n: string) => `no container ${n} in the fleet directory` },
  FLEET_HOST_DOWN: { status: 503, message: (host: string, why: string) => `the container lives on host ${host}, which is down (${why}); nothing is rescheduled: it answers again when ${host} is back` },
  FLEET_NO_CAPACITY: { status: 507, message: (d: string) => `no host of the fleet can take it: ${d}` },
  FLEET_HOP_UNAUTHORIZED: { status: 401, message: () => 'this listener takes requests from hosts of the fleet only' },
  CONTAINER_RUNNING: { status: 409, message: (n: string) => `container ${n} is running; only a stopped container moves (\`hoody stop ${n}\` first)` },
  MOVE_REFUSED: { status: 409, message: (d: string) => `the move was refused: ${d}` },

} as const;

export type ErrorName = keyof typeof errors;
export type ErrorCode = `HOODY_${ErrorName}`;

export class HoodyError extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HoodyError';
  }
}

/** Builds the catalogued error: fail('NAME_TAKEN', name). */
export function fail<K extends ErrorName>(name: K, ...args: Parameters<(typeof errors)[K]['message']>): HoodyError {
  const e = errors[name];
  const msg = (e.message as (...a: unknown[]) => string)(...args);
  return new HoodyError(`HOODY_${name}`, e.status, msg);
}

export function isHoodyError(err: unknown): err is HoodyError {
  return err instanceof HoodyError;
}
