import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { errors, fail, HoodyError, isHoodyError } from '../containers/errors.js';

export function sendError(reply: FastifyReply, err: HoodyError): FastifyReply {
  return reply.code(err.status).type('application/json').send({ error: { code: err.code, message: err.message } });
}

/** fastify's own errors (bad JSON, validation, size limits) mapped onto the catalogue. */
function fromFastify(err: FastifyError): HoodyError | null {
  if (err.validation) {
    // Only the body is "the body": a bad query string or path parameter is a plain bad request.
    const where = (err as FastifyError & { validationContext?: string }).validationContext;
    return where && where !== 'body' ? fail('BAD_REQUEST', err.message) : fail('BODY_INVALID', err.message);
  }
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return fail('BODY_INVALID', err.message);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return fail('BODY_TOO_LARGE');
  }
  if (err instanceof SyntaxError) return fail('BODY_INVALID', err.message);
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500)
    return new HoodyError('HOODY_BAD_REQUEST', err.statusCode, err.message);
  return null;
}

/** The one place errors become HTTP: catalogued ones as they are, the rest a logged 500 with no internals. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const known = isHoodyError(err) ? err : fromFastify(err);
    if (known) {
      if (known.status >= 500) req.log.error({ err, code: known.code }, known.message);
      return sendError(reply, known);
    }
    req.log.error({ err }, 'unhandled error');
    return sendError(reply, new HoodyError('HOODY_INTERNAL', errors.INTERNAL.status, errors.INTERNAL.message()));
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, fail('NOT_FOUND', `${req.method} ${req.url.split('?')[0]}`)));
}
