import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
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
      // fastify closes the connection on a body it will not read; the unread bytes then reset it, and a proxy in
      // front (HAProxy) may drop the 413 with it. Node reads and drops the rest of a well-framed body instead.
      if (known.code === 'HOODY_BODY_TOO_LARGE') reply.removeHeader('connection');
      return sendError(reply, known);
    }
    req.log.error({ err }, 'unhandled error');
    return sendError(reply, new HoodyError('HOODY_INTERNAL', errors.INTERNAL.status, errors.INTERNAL.message()));
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, fail('NOT_FOUND', `${req.method} ${req.url.split('?')[0]}`)));
}

/**
 * Errors fastify's router raises before any route or error handler runs (a URL that does not decode, a path
 * parameter past maxParamLength): the `frameworkErrors` option, so they get the catalogue's shape too.
 */
export function frameworkErrors(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  const known =
    err.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? fail('URI_TOO_LONG', 'a path segment is too long')
      : err.code === 'FST_ERR_BAD_URL'
        ? fail('BAD_REQUEST', 'the URL does not decode (invalid percent-encoding)')
        : (fromFastify(err) ?? new HoodyError('HOODY_INTERNAL', errors.INTERNAL.status, errors.INTERNAL.message()));
  void sendError(reply, known);
}

/** Malformed requests the HTTP parser refuses (the `clientError` event) still get the catalogue's JSON shape. */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // A TLS failure (no handshake in time, not TLS at all) has no channel to answer on: an HTTP answer written into
  // a handshake that never finishes is never flushed, and the socket would stay open for good.
  const tls = err.code?.startsWith('ERR_TLS_') || err.code?.startsWith('ERR_SSL_');
  if (!socket.writable || err.code === 'ECONNRESET' || tls) {
    socket.destroy();
    return;
  }
  const [status, code, text] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'HOODY_HEADERS_TOO_LARGE', 'Request Header Fields Too Large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'HOODY_REQUEST_TIMEOUT', 'Request Timeout']
        : [400, 'HOODY_BAD_REQUEST', 'Bad Request'];
  const body = JSON.stringify({ error: { code, message: text.toLowerCase() } });
  socket.end(`HTTP/1.1 ${status} ${text}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}
