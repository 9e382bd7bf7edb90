import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import { fail } from '../../containers/errors.js';
import type { ContainerStore } from '../../containers/store.js';
import { rotateOne } from '../../containers/token-service.js';

const Rotated = Type.Object({
  token: Type.String({ description: 'the new token, shown once; the old one fails everywhere from now on' }),
  id: Type.String(),
  container: Type.String(),
  user: Type.String(),
  scopes: Type.Array(Type.String()),
});

/** `POST /api/v1/tokens/rotate`: the caller's own token is replaced; the old one fails at once everywhere. */
export const tokenRoutes: FastifyPluginAsync<{ store: ContainerStore }> = async (app, { store }) => {
  app.post('/api/v1/tokens/rotate', { schema: { tags: ['tokens'], response: { 200: Rotated } } }, async (req) => {
    const token = req.hoody.token;
    if (!token) throw fail('UNAUTHORIZED');
    return rotateOne(store, token);
  });
};
