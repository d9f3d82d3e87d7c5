/**
 * Runs the predictor: setup once, then one prediction at a time per worker (pool.ts: one worker, or one per
 * GPU with COG_MAX_CONCURRENCY > 1). Owns the server's state (STARTING, READY, BUSY when every worker is
 * busy, SETUP_FAILED, DEFUNCT), each prediction's life (input files -> predict -> output -> webhooks), its
 * cancellation and its temp directory.
 *
 * Nothing here blocks the event loop: the predictor is awaited, files are streamed, base64 is encoded in
 * slices. A predictor that computes on the main thread would still stall the server, which is why models
 * run their heavy work in worker threads.
 */
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { appError, AppError, deviceFailure, errorMessage, isFatal } from '../errors.js';
import { teeLogger } from '../log.js';
import type { PredictionEvents, Predictor, PredictorContext, PredictorOptions } from '../predictor.js';
import { downloadUrl, fetchInputFiles } from './input-files.js';
import { inputComponent, openapiDocument, type JsonSchema } from './openapi.js';
import { WorkerPool, type PoolWorker } from './pool.js';
import type { UrlPolicy } from './ssrf.js';
import { predictionTempDir } from './temp-dirs.js';
import { isoMicros, secondsBetween } from './time.js';
import { toDataUrl, uploadFile } from './uploads.js';
import type { PredictionRequest } from './validation.js';
import { WebhookSender } from './webhooks.js';

export type ServerStatus = 'STARTING' | 'READY' | 'BUSY' | 'SETUP_FAILED' | 'DEFUNCT';
/** What the health check reports: the status, or STOPPING once the server is shutting down. */
export type HealthStatus = ServerStatus | 'STOPPING';
export type PredictionStatus = 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled';

/** Where the predictor comes from. `schema` is known up front when the module need not be loaded for it. */
export interface PredictorSource {
  name: string;
  schema?: z.ZodObject;
  /** A new predictor instance; `overrides` are added to the options (`deviceId` for one worker per GPU). */
  load(overrides?: PredictorOptions): Promise<Predictor>;
}

export interface RunnerOptions {
  source: PredictorSource;
  logger: Logger;
  uploadUrl?: string;
  policy: UrlPolicy;
  maxInputBytes: number;
  throttleMs: number;
  webhookAuthToken?: string;
  setupTimeoutMs?: number;
  /** Predictions at once (COG_MAX_CONCURRENCY), at most one per device the predictor lists; default 1. */
  maxConcurrency?: number;
  waitFile?: string;
  waitFileTimeoutMs?: number;
  /** Written (empty) the first time the server is READY; Kubernetes probes read it. */
  readyFile?: string;
  tmpRoot?: string;
  /** Idle time allowed between two chunks of an input download (Cog: 10 s). */
  inputReadTimeoutMs?: number;
  webhookRetries?: number;
  webhookBackoffMs?: number;
  uploadRetries?: number;
  uploadBackoffMs?: number;
}

export interface PredictionObject {
  id: string;
  version: null;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  status: PredictionStatus;
  input: Record<string, unknown>;
  output: unknown;
  logs: string;
  error: string | null;
  metrics: Record<string, unknown> | null;
}

export interface SetupInfo {
  started_at?: string;
  completed_at?: string;
  logs?: string;
  status?: 'starting' | 'succeeded' | 'failed';
}

export class Prediction {
  readonly controller = new AbortController();
  readonly state: PredictionObject;
  readonly done: Promise<PredictionObject>;
  resolve!: (p: PredictionObject) => void;
  webhooks?: WebhookSender;
  /** The worker running it. */
  worker?: PoolWorker;
  /** Live events for watching clients; set by a 'started' listener. */
  events?: PredictionEvents;

  constructor(id: string, createdAt: string, input: Record<string, unknown>) {
    this.state = {
      id, version: null, created_at: createdAt, started_at: isoMicros(), completed_at: null,
      status: 'processing', input, output: null, logs: '', error: null, metrics: null,
    };
    this.done = new Promise((r) => { this.resolve = r; });
  }

  snapshot(): PredictionObject {
    return copyJson(this.state);
  }

  appendLog(line: string): void {
    this.state.logs += /[\n\r]$/.test(line) ? line : `${line}\n`;
  }
}

/**
 * A copy of a JSON value that later changes of the original do not reach. Strings are immutable, so they are
 * shared, not copied: an output data URL is megabytes, and copying it (as structuredClone does) at the end
 * of every prediction held the event loop and fed the garbage collector.
 */
function copyJson<T>(v: T): T {
  if (Array.isArray(v)) return v.map(copyJson) as T;
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, copyJson(x)])) as T;
}

/** A 26-character lowercase base32 id, the form Replicate uses. */
export function newPredictionId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  return Array.from(randomBytes(26), (b) => alphabet[b & 31]).join('');
}

export class Runner extends EventEmitter {
  status: ServerStatus = 'STARTING';
  readonly setupInfo: SetupInfo = {};
  readonly pool: WorkerPool;
  /** The input schema (its refinements are the cross-input rules), its Input component and the whole document, once known. */
  schema?: z.ZodObject;
  component?: JsonSchema;
  openapi?: JsonSchema;
  /** Predictions in flight, by id. */
  private readonly inflight = new Map<string, Prediction>();
  shuttingDown = false;
  private becameReady = false;
  /** Set by markDefunct: the running predictions fail with it instead of being canceled. */
  private fatalError: unknown;
  /** Terminal webhooks still being delivered (retries can take minutes). */
  private readonly deliveries = new Set<Promise<void>>();
  /** Aborted when stopping gives up on webhooks still being retried. */
  private readonly webhooksGiveUp = new AbortController();
  /** Ends drain()'s waiting at once (set while draining). */
  private cutShort?: () => void;

  constructor(readonly opts: RunnerOptions) {
    super();
    this.pool = new WorkerPool(opts.maxConcurrency ?? 1, opts.logger);
    if (opts.source.schema) this.useSchema(opts.source.schema);
  }

  /** The predictor once set up (the first ready worker's). */
  get predictor(): Predictor | undefined {
    return this.pool.serving[0]?.predictor;
  }

  /** The prediction in flight (the earliest, when several are). */
  get current(): Prediction | null {
    return this.inflight.values().next().value ?? null;
  }

  private useSchema(schema: z.ZodObject): void {
    this.schema = schema;
    this.component = inputComponent(schema);
    this.openapi = openapiDocument(schema);
  }

  /** Loads the predictor and runs its setup; never throws (failures become SETUP_FAILED). */
  async setup(): Promise<void> {
    const log = this.opts.logger;
    this.setupInfo.started_at = isoMicros();
    this.setupInfo.status = 'starting';
    const append = (line: string) => {
      this.setupInfo.logs = (this.setupInfo.logs ?? '') + (/[\n\r]$/.test(line) ? line : `${line}\n`);
    };
    const setupLogger = teeLogger(log, { phase: 'setup' }, append);
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    try {
      const work = (async () => {
        if (this.opts.waitFile) await waitForFile(this.opts.waitFile, this.opts.waitFileTimeoutMs ?? 60_000);
        const load = async (overrides?: PredictorOptions) => {
          try {
            return await this.opts.source.load(overrides);
          } catch (err) {
            throw appError('PREDICTOR_LOAD_FAILED', { detail: err instanceof Error ? (err.stack ?? err.message) : String(err) }, err);
          }
        };
        const predictor = await this.pool.create(load, (line) => setupLogger.info(line));
        if (!this.component) this.useSchema(predictor.inputSchema);
        await this.pool.setup({ logger: log, append, signal: controller.signal });
      })();
      const timeoutMs = this.opts.setupTimeoutMs;
      await (timeoutMs && timeoutMs > 0
        ? Promise.race([work, new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            controller.abort();
            reject(appError('SETUP_TIMEOUT', { seconds: timeoutMs / 1000 }));
          }, timeoutMs);
        })])
        : work);
      this.setupInfo.status = 'succeeded';
      this.setupInfo.completed_at = isoMicros();
      this.setStatus('READY');
      log.info({ predictor: this.opts.source.name, workers: this.pool.serving.length }, 'setup succeeded');
    } catch (err) {
      const ownMessage = err instanceof AppError && ['PREDICTOR_LOAD_FAILED', 'SETUP_TIMEOUT', 'WAIT_FILE_TIMEOUT'].includes(err.code);
      const message = ownMessage ? errorMessage(err)
        : appError('SETUP_FAILED', { detail: err instanceof Error ? (err.stack ?? err.message) : String(err) }).message;
      this.setupInfo.logs = (this.setupInfo.logs ?? '') + `${message}\n`;
      this.setupInfo.status = 'failed';
      this.setupInfo.completed_at = isoMicros();
      this.setStatus('SETUP_FAILED');
      log.error({ err }, 'setup failed');
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  private setStatus(status: ServerStatus): void {
    this.status = status;
    if (status === 'READY' && !this.becameReady) {
      this.becameReady = true;
      if (this.opts.readyFile) {
        const file = this.opts.readyFile;
        mkdir(dirname(file), { recursive: true }).then(() => writeFile(file, ''))
          .catch((err) => this.opts.logger.warn({ err, file }, 'could not write the ready file'));
      }
    }
    this.emit('status', status);
  }

  health(): Record<string, unknown> {
    const setup: SetupInfo = {};
    if (this.setupInfo.started_at) setup.started_at = this.setupInfo.started_at;
    if (this.setupInfo.completed_at) setup.completed_at = this.setupInfo.completed_at;
    if (this.setupInfo.logs) setup.logs = this.setupInfo.logs;
    if (this.setupInfo.status) setup.status = this.setupInfo.status;
    // cog-runtime's form: predictions the workers in rotation can run at once, and how many run now
    const status: HealthStatus = this.shuttingDown ? 'STOPPING' : this.status;
    return { status, setup, concurrency: { max: this.pool.serving.length, current: this.inflight.size } };
  }

  /** Throws the HTTP error that keeps a new prediction from starting now, if any. */
  assertCanStart(): void {
    if (this.shuttingDown) throw appError('SHUTTING_DOWN');
    switch (this.status) {
      case 'STARTING': throw appError('NOT_READY');
      case 'SETUP_FAILED': throw appError('SETUP_HAS_FAILED');
      case 'DEFUNCT': throw appError('DEFUNCT');
      case 'BUSY': throw this.busyError();
      case 'READY': if (this.pool.free === 0) throw this.busyError();
    }
  }

  /** One worker in rotation: Cog's "Already running a prediction"; several: all of them are busy. */
  private busyError(): AppError {
    return this.pool.serving.length > 1 ? appError('WORKERS_BUSY', { count: this.inflight.size }) : appError('BUSY');
  }

  find(id: string): Prediction | undefined {
    return this.inflight.get(id);
  }

  /** Accepts a validated request and starts it; the returned prediction is already `processing`. */
  start(req: PredictionRequest, traceHeaders: Record<string, string>): Prediction {
    this.assertCanStart();
    if (req.id !== undefined && this.inflight.has(req.id)) throw appError('PREDICTION_RUNNING', { id: req.id });
    const p = new Prediction(req.id ?? newPredictionId(), req.created_at ?? isoMicros(), req.input);
    p.worker = this.pool.acquire()!;
    this.inflight.set(p.state.id, p);
    if (this.pool.allBusy) this.setStatus('BUSY');
    if (req.webhook) {
      p.webhooks = new WebhookSender({
        url: req.webhook, filter: req.webhook_events_filter, throttleMs: this.opts.throttleMs, traceHeaders,
        authToken: this.opts.webhookAuthToken, logger: this.opts.logger.child({ prediction_id: p.state.id }),
        retries: this.opts.webhookRetries, backoffMs: this.opts.webhookBackoffMs, signal: this.webhooksGiveUp.signal,
      });
      p.webhooks.send('start', () => p.state);
    }
    this.opts.logger.info({ prediction_id: p.state.id, worker: p.worker.name }, 'prediction started');
    this.emit('started', p);
    void this.run(p, traceHeaders);
    return p;
  }

  /**
   * The process hit an error nobody caught (a model callback threw outside any promise): its state can no
   * longer be trusted. Fails the running predictions (if any) and reports DEFUNCT.
   */
  markDefunct(err: unknown): void {
    this.opts.logger.fatal({ err }, 'uncaught error: the model can no longer run');
    const running = [...this.inflight.values()];
    if (running.length) this.fatalError = err;
    for (const p of running) p.controller.abort();
    this.setStatus('DEFUNCT');
    if (!running.length) this.emit('defunct');
  }

  /** Cancels an in-flight prediction; false when `id` is not in flight. */
  cancel(id: string): boolean {
    const p = this.find(id);
    if (!p) return false;
    if (!p.controller.signal.aborted) {
      this.opts.logger.info({ prediction_id: id }, 'cancel requested');
      p.controller.abort();
    }
    return true;
  }

  private async run(p: Prediction, traceHeaders: Record<string, string>): Promise<void> {
    const signal = p.controller.signal;
    const logger = teeLogger(this.opts.logger, { prediction_id: p.state.id }, (line) => {
      p.appendLog(line);
      p.webhooks?.send('logs', () => p.state);
    });
    const worker = p.worker!;
    let tmpDir: string | undefined;
    try {
      tmpDir = await predictionTempDir(this.opts.tmpRoot ?? tmpdir());
      const local = await fetchInputFiles(this.component!, p.state.input, tmpDir, {
        ...this.opts.policy, maxBytes: this.opts.maxInputBytes, signal, readTimeoutMs: this.opts.inputReadTimeoutMs,
      });
      signal.throwIfAborted();
      const predictor = worker.predictor;
      const parsed = predictor.inputSchema.safeParse(local);
      if (!parsed.success) throw appError('INPUT_REJECTED', { detail: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') });
      const ctx: PredictorContext = {
        log: (line) => logger.info(line), logger, signal, tmpDir, events: p.events,
        download: (url, file, o) => downloadUrl(o.name, url, file, {
          ...this.opts.policy, maxBytes: o.maxBytes, signal, readTimeoutMs: this.opts.inputReadTimeoutMs,
        }),
      };
      const outputPath = await predictor.predict(parsed.data, ctx);
      signal.throwIfAborted();
      const info = await stat(outputPath).catch(() => null);
      if (!info?.isFile()) throw appError('OUTPUT_MISSING', { path: outputPath });
      p.state.output = this.opts.uploadUrl
        ? await uploadFile(outputPath, this.opts.uploadUrl, {
          predictionId: p.state.id, traceHeaders, signal, retries: this.opts.uploadRetries, backoffMs: this.opts.uploadBackoffMs,
        })
        : await toDataUrl(outputPath);
      signal.throwIfAborted();
      p.state.status = 'succeeded';
    } catch (caught) {
      const err = this.fatalError ?? caught;
      if (signal.aborted && this.fatalError === undefined) {
        p.state.status = 'canceled';
        p.state.output = null;
      } else {
        p.state.status = 'failed';
        p.state.output = null;
        p.state.error = errorMessage(err);
        // The message only: prediction logs reach the client; the stack goes to the server's own log.
        p.appendLog(errorMessage(err));
        this.opts.logger.warn({ prediction_id: p.state.id, worker: worker.name, err }, 'prediction failed');
        const failure = deviceFailure(err);
        if (failure) this.pool.deviceFailed(worker, failure, err);
        if (isFatal(err) || this.fatalError !== undefined || this.pool.serving.length === 0) this.setStatus('DEFUNCT');
      }
    } finally {
      if (tmpDir) await rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
    }
    p.state.completed_at = isoMicros();
    p.state.metrics = { ...(p.state.metrics ?? {}), predict_time: secondsBetween(p.state.started_at!, p.state.completed_at) };
    this.opts.logger.info({ prediction_id: p.state.id, status: p.state.status, predict_time: p.state.metrics.predict_time }, 'prediction finished');
    if (p.webhooks) {
      p.webhooks.send('completed', () => p.state);
      const delivery = p.webhooks.flush();
      this.deliveries.add(delivery);
      void delivery.finally(() => this.deliveries.delete(delivery));
    }
    this.pool.release(worker);
    this.inflight.delete(p.state.id);
    if (this.status === 'BUSY' && !this.pool.allBusy) this.setStatus('READY');
    p.resolve(p.snapshot());
    this.emit('finished', p);
    if (this.status === 'DEFUNCT') this.emit('defunct');
  }

  /**
   * Stops taking predictions. With `cancel`, cancels the running ones and waits at most `graceMs` for them
   * and their webhooks; without, waits for them to finish, then at most `graceMs` for their webhooks. Webhooks
   * still being retried after that are given up. stopWaiting() ends the waiting at once.
   */
  async drain(opts: { cancel: boolean; graceMs: number }): Promise<void> {
    this.shuttingDown = true;
    const cut = new Promise<void>((r) => { this.cutShort = r; });
    const running = [...this.inflight.values()];
    if (opts.cancel) for (const p of running) p.controller.abort();
    else await Promise.race([Promise.all(running.map((p) => p.done)), cut]);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((r) => { timer = setTimeout(r, opts.graceMs); });
    const finished = (async () => {
      await Promise.all(running.map((p) => p.done));
      await Promise.all([...this.deliveries]);
    })();
    await Promise.race([finished, deadline, cut]);
    clearTimeout(timer);
    this.webhooksGiveUp.abort();
  }

  /** Cancels the running predictions (if any) and ends drain()'s waiting now. */
  stopWaiting(): void {
    this.shuttingDown = true;
    for (const p of this.inflight.values()) p.controller.abort();
    this.cutShort?.();
  }
}

async function waitForFile(file: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > until) throw appError('WAIT_FILE_TIMEOUT', { file, seconds: timeoutMs / 1000 });
    await new Promise((r) => setTimeout(r, 100));
  }
}
