/**
 * The server: a Fastify instance with the Cog routes around one Runner, and the process lifecycle Cog
 * defines: bind first (health says STARTING), then set up; exit non-zero when setup fails or the model
 * dies, unless --await-explicit-shutdown (then only POST /shutdown or SIGINT end it).
 *
 * `exited` resolves with the exit code once the server has decided to stop and has drained; the command
 * line turns that into process.exit, tests just await it.
 *
 * Stopping is bounded: POST /shutdown lets the running prediction finish, then gives its webhooks the grace
 * period; SIGTERM/SIGINT cancel it and give it and its webhooks the grace period; a stop signal while
 * stopping ends the waiting at once. The health check says STOPPING throughout.
 */
import { tmpdir } from 'node:os';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { EventHubs, eventRoutes } from './events.js';
import { frameworkErrorOptions, installBodyParser, installErrorHandlers } from './error-handler.js';
import { healthRoutes } from './health.js';
import { playgroundRoutes } from './playground.js';
import { predictionRoutes } from './routes.js';
import { Runner, type Prediction, type RunnerOptions } from './runner.js';
import { sweepStaleTempDirs } from './temp-dirs.js';

export interface ServerOptions extends Omit<RunnerOptions, 'logger'> {
  logger: Logger;
  host: string;
  port: number;
  awaitExplicitShutdown: boolean;
  /** Largest request body (data-URL images travel inside the JSON). */
  bodyLimit: number;
  /** How long stopping waits for webhooks (and, on a signal, for the canceled prediction). */
  stopGraceMs?: number;
  /** Serve `GET /playground` (default true). */
  playground?: boolean;
  /** Time a client has to send a whole request (0: none), and its headers. */
  requestTimeoutMs?: number;
  headersTimeoutMs?: number;
}

export const DEFAULT_BODY_LIMIT = 100 * 1024 * 1024;
export const DEFAULT_MAX_INPUT_BYTES = 100 * 1024 * 1024;
export const DEFAULT_STOP_GRACE_MS = 8000;
/** Fastify's advice for a server facing the internet without a proxy in front. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;
/** Node's default. */
export const DEFAULT_HEADERS_TIMEOUT_MS = 60_000;

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
    this.runner.on('finished', (p: Prediction) => this.events.finish(p.state.id, p.snapshot()));
    const requestTimeout = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    const headersTimeout = Math.min(opts.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS, requestTimeout || Infinity);
    this.app = Fastify({
      loggerInstance: opts.logger as FastifyBaseLogger,
      logController: new LogController({ disableRequestLogging: true }),
      ...frameworkErrorOptions,
      bodyLimit: opts.bodyLimit,
      // A client gets headersTimeout for its headers and requestTimeout for the whole request (slow or
      // stalled senders are answered 408 and dropped). Neither bounds the response: a sync prediction may
      // compute for many minutes once its request has arrived, which is also why there is no idle-socket
      // timeout (connectionTimeout).
      requestTimeout,
      http: { headersTimeout, requestTimeout, connectionsCheckingInterval: Math.max(50, Math.min(5000, headersTimeout / 4)) },
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
      onShutdown: () => void this.stop(0, { cancel: false }),
    });
    eventRoutes(this.app, this.events);
    if (opts.playground ?? true) playgroundRoutes(this.app);
    this.runner.on('defunct', () => {
      if (!opts.awaitExplicitShutdown) void this.stop(1, { cancel: true });
    });
  }

  /**
   * SIGTERM or SIGINT. While stopping: stop waiting (always honoured). Otherwise SIGINT stops, and SIGTERM
   * too unless --await-explicit-shutdown (where only POST /shutdown and SIGINT end the server).
   */
  signal(name: 'SIGTERM' | 'SIGINT'): void {
    if (this.stopping) {
      this.opts.logger.warn({ signal: name }, 'stopping now: no more waiting for the prediction or its webhooks');
      this.runner.stopWaiting();
    } else if (name === 'SIGTERM' && this.opts.awaitExplicitShutdown) {
      this.opts.logger.info('SIGTERM ignored (--await-explicit-shutdown): POST /shutdown to stop');
    } else {
      void this.stop(0, { cancel: true });
    }
  }

  /** Binds the port, then runs setup in the background. Returns the base URL. */
  async start(): Promise<string> {
    const swept = await sweepStaleTempDirs(this.opts.tmpRoot ?? tmpdir());
    if (swept.length > 0) this.opts.logger.info({ dirs: swept }, 'removed temp directories a stopped server left behind');
    const address = await this.app.listen({ host: this.opts.host, port: this.opts.port });
    this.opts.logger.info({ address }, 'listening');
    void this.runner.setup().then(() => {
      if (this.runner.status === 'SETUP_FAILED' && !this.opts.awaitExplicitShutdown) void this.stop(1, { cancel: true });
    });
    const port = (this.app.server.address() as { port: number }).port;
    const host = this.opts.host === '0.0.0.0' || this.opts.host === '::' ? '127.0.0.1' : this.opts.host;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  /** Stops taking predictions, lets the running one end (canceled or not), closes, resolves `exited`. */
  async stop(code: number, opts: { cancel: boolean; graceMs?: number }): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const graceMs = opts.graceMs ?? this.opts.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
    this.opts.logger.info({ code, grace_s: graceMs / 1000 }, 'shutting down');
    await this.runner.drain({ cancel: opts.cancel, graceMs });
    await this.events.close(); // open event streams would keep the server from closing
    await this.app.close().catch((err) => this.opts.logger.warn({ err }, 'close failed'));
    await this.runner.pool.dispose();
    this.resolveExit(code);
  }
}
