/**
 * Error bodies in the shapes Cog clients know: FastAPI's `{"detail": ...}` for 4xx (a list of pydantic-style
 * entries for 422), coglet's `{"error", "status": "failed"}` for 503, and a plain 500 that never leaks
 * internals. Also the body parser: JSON for `application/json`, `*+json` and a missing Content-Type (FastAPI
 * parsed those too), an empty body meaning "no body", any other type a 422 (as FastAPI answers).
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, appError, catalogue } from '../errors.js';
import { RequestValidationError } from './validation.js';

function isJsonType(contentType: string | undefined): boolean {
  if (contentType === undefined || contentType.trim() === '') return true;
  const type = contentType.split(';')[0]!.trim().toLowerCase();
  return type === 'application/json' || type.endsWith('+json');
}

/** `JSON.parse` errors say "... at position N" (Node 20); FastAPI reports that offset in `loc`. */
function jsonErrorOffset(err: unknown): number {
  const m = /position (\d+)/.exec(err instanceof Error ? err.message : '');
  return m ? Number(m[1]) : 0;
}

export function installBodyParser(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (req: FastifyRequest, body: string | Buffer, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    // FastAPI validates a non-JSON body as raw text, which is never a valid request object: 422.
    if (!isJsonType(req.headers['content-type'])) {
      done(new RequestValidationError([{
        type: 'model_attributes_type', loc: ['body'], msg: 'Input should be a valid dictionary or object to extract fields from',
        input: text.length > 200 ? `${text.slice(0, 200)}...` : text,
      }]), undefined);
      return;
    }
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      done(new RequestValidationError([{
        type: 'json_invalid', loc: ['body', jsonErrorOffset(err)], msg: 'JSON decode error',
        input: {}, ctx: { error: err instanceof Error ? err.message : String(err) },
      }]), undefined);
    }
  });
}

export function sendError(reply: FastifyReply, err: AppError): FastifyReply {
  const status = err.status ?? 500;
  if (status === 503) return reply.code(503).send({ error: err.message, status: 'failed' });
  return reply.code(status).send({ detail: err.message });
}

export function installErrorHandlers(app: FastifyInstance, bodyLimit: number): void {
  app.setErrorHandler((err: FastifyError | AppError | RequestValidationError, req, reply) => {
    if (err instanceof RequestValidationError) return reply.code(422).send({ detail: err.issues });
    if (err instanceof AppError && err.status !== undefined) return sendError(reply, err);
    const fe = err as FastifyError;
    if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return sendError(reply, appError('BODY_TOO_LARGE', { limit: bodyLimit }));
    if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply.code(fe.statusCode).send({ detail: fe.message });
    }
    req.log.error({ err }, 'request failed');
    return reply.code(500).send({ detail: catalogue.INTERNAL.message });
  });
  app.setNotFoundHandler((_req, reply) => reply.code(404).send({ detail: catalogue.NOT_FOUND.message }));
}

const ALL_METHODS = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS'] as const;

/** Answers 405 (FastAPI's body) for the methods a known path does not serve. */
export function methodNotAllowed(app: FastifyInstance, url: string, served: string[]): void {
  const allowed = new Set(served.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m])));
  const others = ALL_METHODS.filter((m) => !allowed.has(m));
  app.route({
    method: others, url,
    handler: async (_req, reply) => reply.code(405).header('allow', [...allowed].join(', ')).send({ detail: catalogue.METHOD_NOT_ALLOWED.message }),
  });
}
