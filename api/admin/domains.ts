import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { ContainerContext } from '../../containers/context.js';
import { fail } from '../../containers/errors.js';
import type { GrantChange } from '../../containers/proxy/service.js';
import { NameParam } from './schemas.js';

/** The operator's domain grants of a container (issue 10.4), served by the proxy namespace. */
export interface DomainGrants {
  get(container: string): string[];
  /** Replaces the grants; routes and certificates no longer covered are dropped. Throws HOODY_DOMAIN_GRANT_INVALID. */
  set(container: string, domains: unknown): Promise<GrantChange>;
}

export const DomainList = Type.Array(Type.String({ maxLength: 256 }), {
  maxItems: 100,
  description: 'example.org (that name) or *.example.org (every name under it); empty: any name that is not reserved',
});
const Grants = Type.Object({ name: Type.String(), domains: Type.Array(Type.String()) });
const GrantsChanged = Type.Object({
  name: Type.String(),
  domains: Type.Array(Type.String()),
  dropped: Type.Object({ routes: Type.Array(Type.String()), certs: Type.Array(Type.String()) }),
});

/** `GET|PUT /v1/containers/:name/domains`: which names a container may route, certify and order. */
export const domainRoutes: FastifyPluginAsync<{ ctx: ContainerContext; grants: DomainGrants }> = async (plain, { ctx, grants }) => {
  const app = plain.withTypeProvider<TypeBoxTypeProvider>();
  const tags = ['containers'];
  const known = (name: string) => {
    if (!ctx.store.get(name)) throw fail('CONTAINER_UNKNOWN', name);
  };
  app.get('/v1/containers/:name/domains', { schema: { tags, params: NameParam, response: { 200: Grants } } }, async (req) => {
    known(req.params.name);
    return { name: req.params.name, domains: grants.get(req.params.name) };
  });
  app.put(
    '/v1/containers/:name/domains',
    { schema: { tags, params: NameParam, body: Type.Object({ domains: DomainList }, { additionalProperties: false }), response: { 200: GrantsChanged } } },
    async (req) => {
      known(req.params.name);
      return grants.set(req.params.name, req.body.domains);
    },
  );
};
