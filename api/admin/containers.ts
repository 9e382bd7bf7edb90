import { recoverContainer, startOrRecover } from '../../containers/recover.js';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ContainerContext } from '../../containers/context.js';
import { fail } from '../../containers/errors.js';
import {
  getContainer,
  listContainers,
  restartContainer,
  stopContainer,
} from '../../containers/lifecycle.js';
import { normalizeGrants } from '../../containers/grants.js';
import { cloneContainer, createContainer, removeContainer } from '../../containers/provision.js';
import { snapshotContainer } from '../../containers/snapshots.js';
import { issueToken, OWNER_USER, rotateTokens } from '../../containers/token-service.js';
import { parseScopes } from '../../containers/tokens.js';
import { parseBytes } from '../../host/pool.js';
import {
  CloneBody,
  Container,
  Recovered,
  CreatedContainer,
  Deleted,
  NameParam,
  NewContainer,
  NewSnapshot,
  NewToken,
  Snapshot,
  Token,
} from './schemas.js';
import type { DomainGrants } from './domains.js';

function bytes(value: string | number | undefined | null): number | undefined | null {
  if (value === undefined || value === null) return value;
  if (typeof value === 'number') return value;
  try {
    return parseBytes(value);
  } catch {
    throw fail('SIZE_INVALID', value);
  }
}

function nanoCpus(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw fail('LIMIT_INVALID', `cpus must be a positive number, got ${value}`);
  return Math.round(n * 1e9);
}

/** Admin routes for containers: thin, each one call into containers/. */
/** Placement in a fleet (daemon/fleet/): picks the host, creates there over the hop, or calls `local` here. */
export interface Placer {
  readonly joined: boolean;
  create<T extends object>(body: NewContainer, needs: { memoryBytes: number; diskBytes: number }, local: () => Promise<T>): Promise<T & { host: string }>;
}

export const containerRoutes: FastifyPluginAsync<{ ctx: ContainerContext; grants?: DomainGrants; placer?: Placer }> = async (plain, { ctx, grants, placer }) => {
  // A new container gets its grants before its token leaves the daemon; if they cannot be stored it goes again.
  const grantOrUndo = async (name: string, domains: string[] | undefined) => {
    if (!domains?.length || !grants) return;
    try {
      grants.set(name, domains);
    } catch (err) {
      await removeContainer(ctx, name).catch(() => undefined);
      throw err;
    }
  };

  const app = plain.withTypeProvider<TypeBoxTypeProvider>();
  const tags = ['containers'];

  app.get('/v1/containers', { schema: { tags, response: { 200: { type: 'array', items: Container } } } }, async () =>
    listContainers(ctx),
  );

  app.post(
    '/v1/containers',
    { schema: { tags, body: NewContainer, response: { 201: CreatedContainer } } },
    async (req, reply) => {
      const b = req.body;
      const domains = b.domains === undefined ? undefined : normalizeGrants(b.domains);
      if (domains?.length && !grants) throw fail('BAD_REQUEST', 'domain grants are not available on this daemon');
      const memoryBytes = bytes(b.memory) ?? undefined;
      const diskBytes = b.disk === undefined ? undefined : bytes(b.disk);
      const local = async () => {
        const { row, token } = await createContainer(ctx, { name: b.name, image: b.image, memoryBytes, nanoCpus: nanoCpus(b.cpus), diskBytes, pidsLimit: b.pids });
        await grantOrUndo(row.name, domains);
        return { name: row.name, id: row.id, state: 'running', token };
      };
      if (placer?.joined) return reply.code(201).send(await placer.create(b, { memoryBytes: memoryBytes ?? 0, diskBytes: diskBytes ?? 0 }, local));
      if (b.host !== undefined) throw fail('FLEET_NOT_JOINED');
      return reply.code(201).send(await local());
    },
  );

  app.get('/v1/containers/:name', { schema: { tags, params: NameParam, response: { 200: Container } } }, async (req) =>
    getContainer(ctx, req.params.name),
  );

  app.delete('/v1/containers/:name', { schema: { tags, params: NameParam, response: { 200: Deleted } } }, async (req) => {
    await removeContainer(ctx, req.params.name);
    return { name: req.params.name, deleted: true };
  });

  // start of a container missing from the engine rebuilds it from its volume (recover.ts), then it runs.
  const actions = { start: startOrRecover, stop: stopContainer, restart: restartContainer } as const;
  for (const [action, fn] of Object.entries(actions)) {
    app.post(
      `/v1/containers/:name/${action}`,
      { schema: { tags, params: NameParam, response: { 200: Container } } },
      async (req) => fn(ctx, req.params.name),
    );
  }

  app.post(
    '/v1/containers/:name/recover',
    {
      schema: {
        tags,
        params: NameParam,
        description: "rebuild the engine container of a container missing from the engine, from hoody's state and its data volume",
        response: { 200: Recovered },
      },
    },
    async (req) => recoverContainer(ctx, req.params.name),
  );

  app.post(
    '/v1/containers/:name/snapshots',
    { schema: { tags, params: NameParam, body: NewSnapshot, response: { 201: Snapshot } } },
    async (req, reply) => reply.code(201).send(await snapshotContainer(ctx, req.params.name, req.body.name)),
  );

  app.post(
    '/v1/containers/:name/clone',
    { schema: { tags, params: NameParam, body: CloneBody, response: { 201: CreatedContainer } } },
    async (req, reply) => {
      const inherited = grants?.get(req.params.name);
      const { row, token } = await cloneContainer(ctx, req.params.name, req.body.name);
      // A clone may use no more names than its source was granted.
      await grantOrUndo(row.name, inherited);
      return reply.code(201).send({ name: row.name, id: row.id, state: 'running', token });
    },
  );

  app.post(
    '/v1/containers/:name/tokens',
    { schema: { tags, params: NameParam, body: NewToken, response: { 201: Token } } },
    async (req, reply) => {
      const scopes = parseScopes(req.body?.scopes ?? ['cron', 'exec', 'proxy', 'files']);
      return reply.code(201).send(issueToken(ctx.store, req.params.name, req.body?.user ?? OWNER_USER, scopes));
    },
  );

  app.post(
    '/v1/containers/:name/tokens/rotate',
    { schema: { tags, params: NameParam, body: NewToken, response: { 200: Token } } },
    async (req) =>
      rotateTokens(
        ctx.store,
        req.params.name,
        req.body?.user ?? OWNER_USER,
        req.body?.scopes ? parseScopes(req.body.scopes) : undefined,
      ),
  );
};
