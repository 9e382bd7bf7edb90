import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { ProxyService } from '../../containers/proxy/service.js';
import { authorize } from './context.js';

const HostParam = Type.Object({ hostname: Type.String({ maxLength: 253 }) });
const RouteBody = Type.Object({ port: Type.Integer(), https_redirect: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
const Route = Type.Object({ hostname: Type.String(), port: Type.Integer(), https_redirect: Type.Boolean(), created_at: Type.String() });
// `{domain, cert, key, chain?}`, or the seed's `{d, cert}` with the key (and chain) inside `cert`.
const Bundle = Type.Object(
  {
    domain: Type.Optional(Type.String({ maxLength: 253 })),
    d: Type.Optional(Type.String({ maxLength: 253 })),
    cert: Type.String({ maxLength: 256 * 1024 }),
    key: Type.Optional(Type.String({ maxLength: 64 * 1024 })),
    chain: Type.Optional(Type.String({ maxLength: 256 * 1024 })),
  },
  { additionalProperties: false },
);
const CertView = Type.Object({ domain: Type.String(), fingerprint: Type.String(), expires: Type.String(), updated_at: Type.String() });
const RouteDeleted = Type.Object({ hostname: Type.String(), deleted: Type.Boolean() });
const tags = ['proxy'];

/** The proxy namespace's routes: thin, each one call into ProxyService. */
export const proxyRoutes: FastifyPluginAsync<{ proxy: ProxyService }> = async (plain, { proxy }) => {
  const app = plain.withTypeProvider<TypeBoxTypeProvider>();
  app.get('/api/v1/proxy/routes', { schema: { tags, response: { 200: Type.Array(Route) } } }, async (req) => {
    authorize(req, 'proxy');
    return proxy.listRoutes(req.hoody.container.name);
  });
  app.put('/api/v1/proxy/routes/:hostname', { schema: { tags, params: HostParam, body: RouteBody, response: { 200: Route } } }, async (req) => {
    authorize(req, 'proxy');
    return proxy.putRoute(req.hoody.container.name, req.params.hostname, req.body);
  });
  app.delete('/api/v1/proxy/routes/:hostname', { schema: { tags, params: HostParam, response: { 200: RouteDeleted } } }, async (req) => {
    authorize(req, 'proxy');
    await proxy.deleteRoute(req.hoody.container.name, req.params.hostname);
    return { hostname: req.params.hostname.toLowerCase(), deleted: true };
  });
  app.get('/api/v1/proxy/cert/bundle', { schema: { tags, response: { 200: Type.Array(CertView) } } }, async (req) => {
    authorize(req, 'proxy');
    return proxy.listCerts(req.hoody.container.name);
  });
  app.patch('/api/v1/proxy/cert/bundle', { schema: { tags, body: Bundle, response: { 200: CertView } } }, async (req) => {
    authorize(req, 'proxy');
    return proxy.putCert(req.hoody.container.name, req.body);
  });
};
