/**
 * Request validation for both APIs: query strings, path parameters and headers are text, so they are coerced
 * to the schema's types ("?limit=5" is 5); a JSON body already has types, so it is not (`{"port": true}` is a
 * 400 naming the field, never port 1). One Ajv per mode, from fastify's own compiler (its defaults, formats).
 */
import AjvCompiler, { type Options } from '@fastify/ajv-compiler';

type BuildValidator = AjvCompiler.BuildCompilerFromPool;

/** fastify's `schemaController` option; `customOptions` are shared by both modes (coercion aside). */
export function schemaController(customOptions: Options): { compilersFactory: { buildValidator: BuildValidator } } {
  const pool = AjvCompiler();
  const buildValidator: BuildValidator = (externalSchemas, options) => {
    const base = options?.mode === 'JTD' ? {} : (options?.customOptions ?? {});
    const mode = (coerceTypes: 'array' | false) =>
      pool(externalSchemas, { ...options, mode: undefined, customOptions: { ...base, ...customOptions, coerceTypes } });
    const text = mode('array');
    const body = mode(false);
    return (route) => (route.httpPart === 'body' ? body : text)(route);
  };
  return { compilersFactory: { buildValidator } };
}
