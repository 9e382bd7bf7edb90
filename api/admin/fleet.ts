import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import type { Readable } from 'node:stream';
import type { FastifyPluginAsync } from 'fastify';
import type { Placer } from './containers.js';
import { NameParam } from './schemas.js';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

const HostRecordView = Type.Object(
  {
    host: Type.String(),
    addresses: Type.Array(Type.String()),
    ports: Type.Object({ http: Type.Integer(), https: Type.Integer() }),
    capacity: Type.Object({
      poolFreeBytes: Nullable(Type.Number()),
      memoryAvailableBytes: Type.Number(),
      ksmSavedBytes: Nullable(Type.Number()),
      containers: Type.Integer(),
      draining: Type.Boolean(),
    }),
    version: Type.String(),
    startedAt: Type.String(),
    updatedAt: Type.String(),
  },
  { additionalProperties: true },
);
const FleetHostView = Type.Object({
  host: Type.String(),
  healthy: Type.Boolean({ description: "its lease is alive: it refreshed its record within the lease's TTL" }),
  record: Nullable(HostRecordView),
  names: Type.Integer({ description: 'container names the directory places on it' }),
});
const Placement = Type.Object({
  name: Type.String(),
  host: Type.String(),
  id: Type.String(),
  state: Type.Union([Type.Literal('reserving'), Type.Literal('ready')]),
  hostHealthy: Type.Boolean(),
});
const TokenPlacement = Type.Intersect([Placement, Type.Object({ user: Type.String() })]);
const FleetStatusView = Type.Object(
  {
    joined: Type.Boolean(),
    fleet: Type.Optional(Type.String()),
    host: Type.Optional(Type.String()),
    endpoints: Type.Optional(Type.Array(Type.String())),
  },
  { additionalProperties: true, description: 'membership (lease, last refresh, last error) and directory cache (synced, watching, sizes)' },
);
export const JoinBody = Type.Object(
  {
    endpoints: Type.Union([Type.String({ maxLength: 4096 }), Type.Array(Type.String({ maxLength: 512 }), { maxItems: 32 })], {
      description: 'etcd endpoints, host:port[,host:port…]',
    }),
    host: Type.Optional(Type.String({ maxLength: 63, description: "this host's name in the fleet (default: HOODY_FLEET_HOST, else the hostname)" })),
    address: Type.Optional(Type.String({ maxLength: 1024, description: 'address(es) other hosts reach this one at' })),
    fleet: Type.Optional(Type.String({ maxLength: 63, description: 'fleet name: its keys live under hoody/<fleet>/ (default `default`)' })),
  },
  { additionalProperties: false },
);

const FanOutView = Type.Object({
  hosts: Type.Array(Type.Object({ host: Type.String(), result: Type.Unknown() })),
  partial: Type.Boolean({ description: 'true when some live host did not answer in time (see failed)' }),
  failed: Type.Array(Type.Object({ host: Type.String(), code: Type.String(), message: Type.String() })),
});
const FanOutQuery = Type.Object(
  { timeout_ms: Type.Optional(Type.Integer({ minimum: 100, maximum: 60_000, description: 'per host (default 3000)' })) },
  { additionalProperties: false },
);

/** The daemon's fleet (daemon/fleet/), as the admin API needs it: answers from the directory cache only. */
export interface FleetApi extends Placer {
  /** The same admin GET on every live host (this one by `local`), each bounded by `timeoutMs`. */
  fanOut<T>(path: string, local: () => Promise<T>, timeoutMs: number): Promise<Static<typeof FanOutView>>;
  status(): { joined: boolean };
  hosts(): Static<typeof FleetHostView>[];
  placement(name: string): Static<typeof Placement>;
  resolveToken(token: string): Static<typeof TokenPlacement>;
  join(input: Static<typeof JoinBody>): Promise<{ joined: boolean }>;
  leave(): Promise<{ left: string; withdrawn: number }>;
  drain(on: boolean): Promise<{ host: string; draining: boolean }>;
  move(name: string, host: string): Promise<Static<typeof MovedView>>;
  receiveMove(q: { name: string; id: string; from: string; bundleBytes: number }, input: Readable): Promise<{ name: string; volume: string }>;
  commitMove(name: string, id: string, revision: number): Promise<{ name: string; committed: boolean }>;
  abortMove(name: string, id: string): Promise<{ name: string; aborted: boolean }>;
  certBundle(domain: string): { domain: string; container: string; pem: string; fingerprint: string };
}

const MovedView = Type.Object({
  name: Type.String(),
  from: Type.String(),
  to: Type.String(),
  bytes: Type.Integer({ description: "bytes of the volume's stream (btrfs send)" }),
  ms: Type.Integer(),
});
const MoveId = Type.String({ pattern: '^[0-9a-f-]{36}$' });

/** `/v1/fleet/…`: membership and the directory (issue 12, phase 1). */
export const fleetRoutes: FastifyPluginAsync<{ fleet: FleetApi; local: { containers(): Promise<unknown>; stats(): Promise<unknown> } }> = async (plain, { fleet, local }) => {
  const app = plain.withTypeProvider<TypeBoxTypeProvider>();
  const tags = ['fleet'];
  app.get('/v1/fleet', { schema: { tags, response: { 200: FleetStatusView } } }, async () => fleet.status());
  app.get('/v1/fleet/hosts', { schema: { tags, response: { 200: Type.Array(FleetHostView) } } }, async () => fleet.hosts());
  app.get('/v1/fleet/directory/:name', { schema: { tags, params: NameParam, response: { 200: Placement } } }, async (req) =>
    fleet.placement(req.params.name),
  );
  // POST, not GET: a token in a URL ends up in logs.
  app.post(
    '/v1/fleet/resolve',
    { schema: { tags, body: Type.Object({ token: Type.String({ maxLength: 512 }) }, { additionalProperties: false }), response: { 200: TokenPlacement } } },
    async (req) => fleet.resolveToken(req.body.token),
  );
  // `hoody ls --fleet` / `stats --fleet`: gathered from live hosts; a host that does not answer in time is listed.
  app.get('/v1/fleet/containers', { schema: { tags, querystring: FanOutQuery, response: { 200: FanOutView } } }, async (req) =>
    fleet.fanOut('/v1/containers', local.containers, req.query.timeout_ms ?? 3000),
  );
  app.get('/v1/fleet/stats', { schema: { tags, querystring: FanOutQuery, response: { 200: FanOutView } } }, async (req) =>
    fleet.fanOut('/v1/stats', local.stats, req.query.timeout_ms ?? 3000),
  );
  app.post('/v1/fleet/join', { schema: { tags, body: JoinBody, response: { 200: FleetStatusView } } }, async (req) => fleet.join(req.body));
  // Placement skips a draining host; `--host` pins still land on it (an operator's explicit choice).
  app.post(
    '/v1/fleet/drain',
    {
      schema: {
        tags,
        body: Type.Object({ on: Type.Boolean({ description: 'true: drain (placement skips this host); false: open it again' }) }, { additionalProperties: false }),
        response: { 200: Type.Object({ host: Type.String(), draining: Type.Boolean() }) },
      },
    },
    async (req) => fleet.drain(req.body.on),
  );
  // `hoody move NAME HOST`: asked of any host, done by the container's own (a stopped container only).
  app.post(
    '/v1/containers/:name/move',
    {
      schema: {
        tags,
        params: NameParam,
        body: Type.Object({ host: Type.String({ minLength: 1, maxLength: 63, description: 'the host of the fleet it goes to' }) }, { additionalProperties: false }),
        response: { 200: MovedView },
      },
    },
    async (req) => fleet.move(req.params.name, req.body.host),
  );
  // The new host's side of a move (from the old host, over the signed hop): the rows, then the volume's stream.
  await app.register(async (moves) => {
    moves.addContentTypeParser('application/x-hoody-move', (_req, payload, done) => done(null, payload));
    const typed = moves.withTypeProvider<TypeBoxTypeProvider>();
    typed.post(
      '/v1/fleet/moves',
      {
        schema: {
          tags,
          hide: true,
          querystring: Type.Object(
            { name: Type.String({ maxLength: 63 }), id: MoveId, from: Type.String({ maxLength: 63 }), bundle_bytes: Type.Integer({ minimum: 1 }) },
            { additionalProperties: false },
          ),
        },
      },
      async (req, reply) => {
        const q = req.query;
        const out = await fleet.receiveMove({ name: q.name, id: q.id, from: q.from, bundleBytes: q.bundle_bytes }, req.body as Readable);
        return reply.code(201).send(out);
      },
    );
  });
  app.post(
    '/v1/fleet/moves/:name/commit',
    { schema: { tags, hide: true, params: NameParam, body: Type.Object({ id: MoveId, revision: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }) } },
    async (req) => fleet.commitMove(req.params.name, req.body.id, req.body.revision),
  );
  app.delete(
    '/v1/fleet/moves/:name',
    { schema: { tags, hide: true, params: NameParam, querystring: Type.Object({ id: MoveId }, { additionalProperties: false }) } },
    async (req) => fleet.abortMove(req.params.name, req.query.id),
  );
  // Another host fetches a tenant's certificate (with its key) to serve that tenant's routed name over HTTPS too.
  app.get('/v1/fleet/certs/:domain', { schema: { tags, hide: true, params: Type.Object({ domain: Type.String({ maxLength: 253 }) }) } }, async (req) =>
    fleet.certBundle(req.params.domain),
  );
  app.post(
    '/v1/fleet/leave',
    { schema: { tags, response: { 200: Type.Object({ left: Type.String(), withdrawn: Type.Integer() }) } } },
    async () => fleet.leave(),
  );
};
