/**
 * Error bodies in the shapes Cog clients know: FastAPI's `{"detail": ...}` for 4xx (a list of pydantic-style
 * entries for 422), coglet's `{"error", "status": "failed"}` for 503, and a plain 500 that never leaks
 * internals. Errors raised by Fastify itself are answered with the status's reason phrase: their messages
 * carry internal codes and echo the request. Also the body parser: JSON for `application/json`, `*+json` and
 * a missing or empty Content-Type (FastAPI parsed those too), an empty body meaning "no body", any other type
 * a 422 (as FastAPI answers), and JSON nested deeper than MAX_JSON_DEPTH a 422 (echoing it would overflow
 * the stack).
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, appError, catalogue } from '../errors.js';
import { MAX_ID_LENGTH, RequestValidationError } from './validation.js';

/** Deepest nesting of arrays and objects accepted in a request body (a prediction request needs 3). */
export const MAX_JSON_DEPTH = 64;

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

/** True when `value` nests arrays/objects more than `limit` levels deep (iterative: no stack to overflow). */
export function nestedDeeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth > limit) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
  return false;
}

export function installBodyParser(app: FastifyInstance): void {
  // `Content-Type:` with an empty value is no Content-Type (Fastify would answer 415).
  app.addHook('onRequest', async (req) => {
    if (typeof req.headers['content-type'] === 'string' && req.headers['content-type'].trim() === '') delete req.headers['content-type'];
  });
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
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      done(new RequestValidationError([{
        type: 'json_invalid', loc: ['body', jsonErrorOffset(err)], msg: 'JSON decode error',
        input: {}, ctx: { error: err instanceof Error ? err.message : String(err) },
      }]), undefined);
      return;
    }
    if (nestedDeeperThan(parsed, MAX_JSON_DEPTH)) {
      done(new RequestValidationError([{
        type: 'json_invalid', loc: ['body'], msg: 'JSON decode error',
        input: {}, ctx: { error: `nested deeper than ${MAX_JSON_DEPTH} levels` },
      }]), undefined);
      return;
    }
    done(null, parsed);
  });
}

/**
 * Errors Fastify's router answers before any route runs. An over-long path segment can only be a prediction
 * id (the only path parameter): a 422 like any other over-long id, without echoing it.
 */
function frameworkError(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    void reply.code(422).send({
      detail: [{
        type: 'string_too_long', loc: ['path', 'prediction_id'], msg: `String should have at most ${MAX_ID_LENGTH} characters`,
        ctx: { max_length: MAX_ID_LENGTH },
      }],
    });
    return;
  }
  const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
  void reply.code(status).send({ detail: STATUS_CODES[status] });
}

/** Fastify options that route its own errors through this module. */
export const frameworkErrorOptions = { frameworkErrors: frameworkError, routerOptions: { maxParamLength: MAX_ID_LENGTH } };

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
      return reply.code(fe.statusCode).send({ detail: STATUS_CODES[fe.statusCode] ?? 'Bad Request' });
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
