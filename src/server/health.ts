/**
 * `GET /health-check`: always 200, readiness in the body (STARTING, READY, BUSY, SETUP_FAILED, DEFUNCT) with the
 * setup object (started_at, completed_at, logs, status). Clients poll it every 100 ms, so it is not logged.
 */
import type { FastifyInstance } from 'fastify';
import { methodNotAllowed } from './error-handler.js';
import type { Runner } from './runner.js';

export function healthRoutes(app: FastifyInstance, runner: Runner): void {
  app.get('/health-check', async () => runner.health());
  methodNotAllowed(app, '/health-check', ['GET']);
}
