/**
 * The Cog HTTP surface: discovery, openapi, predictions (sync, `Prefer: respond-async`, idempotent PUT),
 * cancel and shutdown. Request bodies are validated here (validation.ts) before a prediction takes the slot;
 * everything after acceptance belongs to the runner.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { appError } from '../errors.js';
import { methodNotAllowed } from './error-handler.js';
import { sendJson } from './json-body.js';
import type { Runner } from './runner.js';
import { RequestValidationError, validateRequest, type InputOptions, type PredictionRequest } from './validation.js';

export const COG_VERSION = '0.16.12';

export interface RouteOptions {
  inputOptions: InputOptions;
  /** Called after `POST /shutdown` has been answered. */
  onShutdown(): void;
}

function wantsAsync(req: FastifyRequest): boolean {
  const prefer = req.headers.prefer;
  const values = Array.isArray(prefer) ? prefer : [prefer ?? ''];
  return values.some((v) => v.split(',').some((t) => t.trim().toLowerCase() === 'respond-async'));
}

/** Only a client that accepts nothing but an event stream gets 406: our model returns one file. */
function wantsOnlyEventStream(req: FastifyRequest): boolean {
  const accept = (req.headers.accept ?? '').toLowerCase();
  return accept.includes('text/event-stream') && !accept.includes('json') && !accept.includes('*/*');
}

function traceHeaders(req: FastifyRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ['traceparent', 'tracestate']) {
    const v = req.headers[name];
    if (typeof v === 'string' && v !== '') out[name] = v;
  }
  return out;
}

export function predictionRoutes(app: FastifyInstance, runner: Runner, opts: RouteOptions): void {
  app.get('/', async () => ({
    cog_version: COG_VERSION,
    docs_url: '/docs',
    openapi_url: '/openapi.json',
    shutdown_url: '/shutdown',
    healthcheck_url: '/health-check',
    predictions_url: '/predictions',
    predictions_idempotent_url: '/predictions/{prediction_id}',
    predictions_cancel_url: '/predictions/{prediction_id}/cancel',
  }));
  methodNotAllowed(app, '/', ['GET']);

  app.get('/openapi.json', async (_req, reply) => {
    if (!runner.openapi) throw appError('SCHEMA_NOT_AVAILABLE');
    return reply.send(runner.openapi);
  });
  methodNotAllowed(app, '/openapi.json', ['GET']);

  /** The request's body as a prediction request, or the 422 (503 while no schema is known) that refuses it. */
  const validated = (req: FastifyRequest, pathId?: string): PredictionRequest => {
    if (!runner.component) runner.assertCanStart();
    const checked = validateRequest(req.body, runner.component!, opts.inputOptions, pathId, runner.schema);
    if (!checked.request) throw new RequestValidationError(checked.issues);
    return checked.request;
  };

  const create = async (req: FastifyRequest, reply: FastifyReply, request: PredictionRequest) => {
    if (wantsOnlyEventStream(req)) throw appError('STREAMING_NOT_SUPPORTED');
    const prediction = runner.start(request, traceHeaders(req));
    if (wantsAsync(req)) return sendJson(reply, 202, prediction.snapshot());
    return sendJson(reply, 200, await prediction.done);
  };

  app.post('/predictions', async (req, reply) => create(req, reply, validated(req)));
  methodNotAllowed(app, '/predictions', ['POST']);

  app.put<{ Params: { prediction_id: string } }>('/predictions/:prediction_id', async (req, reply) => {
    const id = req.params.prediction_id;
    // Validated first: a malformed retry is a 422 even while that id runs.
    const request = validated(req, id);
    // A retry of a prediction in flight gets its current state, whatever the Prefer header says.
    const running = runner.find(id);
    if (running) return sendJson(reply, 202, running.snapshot());
    return create(req, reply, request);
  });
  methodNotAllowed(app, '/predictions/:prediction_id', ['PUT']);

  app.post<{ Params: { prediction_id: string } }>('/predictions/:prediction_id/cancel', async (req, reply) => {
    return reply.code(runner.cancel(req.params.prediction_id) ? 200 : 404).send({});
  });
  methodNotAllowed(app, '/predictions/:prediction_id/cancel', ['POST']);

  app.post('/shutdown', async (_req, reply) => {
    reply.raw.once('finish', () => opts.onShutdown());
    return reply.code(200).send({});
  });
  methodNotAllowed(app, '/shutdown', ['POST']);
}
