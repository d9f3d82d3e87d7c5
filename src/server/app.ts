/**
 * The server: a Fastify instance with the Cog routes around one Runner, and the process lifecycle Cog
 * defines: bind first (health says STARTING), then set up; exit non-zero when setup fails or the model
 * dies, unless --await-explicit-shutdown (then only POST /shutdown or SIGINT end it).
 *
 * `exited` resolves with the exit code once the server has decided to stop and has drained; the command
 * line turns that into process.exit, tests just await it.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { installBodyParser, installErrorHandlers } from './error-handler.js';
import { EventHubs, eventRoutes } from './events.js';
import { healthRoutes } from './health.js';
import { playgroundRoutes } from './playground.js';
import { predictionRoutes } from './routes.js';
import { Runner, type Prediction, type RunnerOptions } from './runner.js';

export interface ServerOptions extends Omit<RunnerOptions, 'logger'> {
  logger: Logger;
  host: string;
  port: number;
  awaitExplicitShutdown: boolean;
  /** Largest request body (data-URL images travel inside the JSON). */
  bodyLimit: number;
  /** How long a SIGTERM waits for a canceled prediction and its webhooks. */
  stopGraceMs?: number;
  /** Serve `GET /playground` (default true). */
  playground?: boolean;
}

export const DEFAULT_BODY_LIMIT = 100 * 1024 * 1024;
export const DEFAULT_MAX_INPUT_BYTES = 100 * 1024 * 1024;

export class CogServer {
  readonly app: FastifyInstance;
  readonly runner: Runner;
  /** Live events of predictions (`GET /predictions/{id}/events`). */
  readonly events: EventHubs;
  readonly exited: Promise<number>;
  private resolveExit!: (code: number) => void;
  private stopping = false;

  constructor(readonly opts: ServerOptions) {
    this.exited = new Promise((r) => { this.resolveExit = r; });
    this.runner = new Runner({ ...opts, logger: opts.logger });
    this.events = new EventHubs({ logger: opts.logger, tmpRoot: opts.tmpRoot });
    this.runner.on('started', (p: Prediction) => { p.events = this.events.open(p.state.id); });
    this.runner.on('finished', (p: Prediction) => this.events.finish(p.state.id, p.state));
    this.app = Fastify({
      loggerInstance: opts.logger as FastifyBaseLogger,
      logController: new LogController({ disableRequestLogging: true }),
      routerOptions: { maxParamLength: 1000 },
      bodyLimit: opts.bodyLimit,
      // Sync predictions may take many minutes: no request or connection timeout may cut them.
      requestTimeout: 0,
      connectionTimeout: 0,
      keepAliveTimeout: 72_000,
      return503OnClosing: true,
      forceCloseConnections: 'idle',
    });
    this.app.addHook('onResponse', async (req, reply) => {
      if (req.url !== '/health-check') req.log.debug({ method: req.method, url: req.url, status: reply.statusCode, ms: reply.elapsedTime }, 'request');
    });
    installBodyParser(this.app);
    installErrorHandlers(this.app, opts.bodyLimit);
    healthRoutes(this.app, this.runner);
    predictionRoutes(this.app, this.runner, {
      inputOptions: opts.policy,
      onShutdown: () => void this.stop(0, { cancel: false, graceMs: 2 ** 31 - 1 }),
    });
    eventRoutes(this.app, this.events);
    if (opts.playground ?? true) playgroundRoutes(this.app);
    this.runner.on('defunct', () => {
      if (!opts.awaitExplicitShutdown) void this.stop(1, { cancel: true, graceMs: opts.stopGraceMs ?? 8000 });
    });
  }

  /** Binds the port, then runs setup in the background. Returns the base URL. */
  async start(): Promise<string> {
    const address = await this.app.listen({ host: this.opts.host, port: this.opts.port });
    this.opts.logger.info({ address }, 'listening');
    void this.runner.setup().then(() => {
      if (this.runner.status === 'SETUP_FAILED' && !this.opts.awaitExplicitShutdown) void this.stop(1, { cancel: true, graceMs: 0 });
    });
    const port = (this.app.server.address() as { port: number }).port;
    const host = this.opts.host === '0.0.0.0' || this.opts.host === '::' ? '127.0.0.1' : this.opts.host;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  /** Stops taking predictions, lets the running one end (canceled or not), closes, resolves `exited`. */
  async stop(code: number, opts: { cancel: boolean; graceMs: number }): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.opts.logger.info({ code }, 'shutting down');
    await this.runner.drain(opts);
    await this.events.close(); // open event streams would keep the server from closing
    await this.app.close().catch((err) => this.opts.logger.warn({ err }, 'close failed'));
    await this.runner.pool.dispose();
    this.resolveExit(code);
  }
}
