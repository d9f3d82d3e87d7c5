/**
 * Runs the predictor: setup once, then one prediction at a time. Owns the server's state (STARTING, READY,
 * BUSY, SETUP_FAILED, DEFUNCT), each prediction's life (input files -> predict -> output -> webhooks), its
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
import { appError, AppError, errorMessage, isFatal } from '../errors.js';
import { teeLogger } from '../log.js';
import type { Predictor, PredictorContext } from '../predictor.js';
import { fetchInputFiles } from './input-files.js';
import { inputComponent, openapiDocument, type JsonSchema } from './openapi.js';
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
  load(): Promise<Predictor>;
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

  constructor(id: string, createdAt: string, input: Record<string, unknown>) {
    this.state = {
      id, version: null, created_at: createdAt, started_at: isoMicros(), completed_at: null,
      status: 'processing', input, output: null, logs: '', error: null, metrics: null,
    };
    this.done = new Promise((r) => { this.resolve = r; });
  }

  snapshot(): PredictionObject {
    return structuredClone(this.state);
  }

  appendLog(line: string): void {
    this.state.logs += /[\n\r]$/.test(line) ? line : `${line}\n`;
  }
}

/** A 26-character lowercase base32 id, the form Replicate uses. */
export function newPredictionId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  return Array.from(randomBytes(26), (b) => alphabet[b & 31]).join('');
}

export class Runner extends EventEmitter {
  status: ServerStatus = 'STARTING';
  readonly setupInfo: SetupInfo = {};
  predictor?: Predictor;
  /** The Input component and the whole document, once the schema is known. */
  component?: JsonSchema;
  openapi?: JsonSchema;
  current: Prediction | null = null;
  shuttingDown = false;
  private becameReady = false;
  /** Set by markDefunct: the running prediction fails with it instead of being canceled. */
  private fatalError: unknown;
  /** Terminal webhooks still being delivered (retries can take minutes). */
  private readonly deliveries = new Set<Promise<void>>();
  /** Aborted when stopping gives up on webhooks still being retried. */
  private readonly webhooksGiveUp = new AbortController();
  /** Ends drain()'s waiting at once (set while draining). */
  private cutShort?: () => void;

  constructor(readonly opts: RunnerOptions) {
    super();
    if (opts.source.schema) this.useSchema(opts.source.schema);
  }

  private useSchema(schema: z.ZodObject): void {
    this.component = inputComponent(schema);
    this.openapi = openapiDocument(schema);
  }

  /** Loads the predictor and runs its setup; never throws (failures become SETUP_FAILED). */
  async setup(): Promise<void> {
    const log = this.opts.logger;
    this.setupInfo.started_at = isoMicros();
    this.setupInfo.status = 'starting';
    const setupLogger = teeLogger(log, { phase: 'setup' }, (line) => {
      this.setupInfo.logs = (this.setupInfo.logs ?? '') + (/[\n\r]$/.test(line) ? line : `${line}\n`);
    });
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    try {
      const work = (async () => {
        if (this.opts.waitFile) await waitForFile(this.opts.waitFile, this.opts.waitFileTimeoutMs ?? 60_000);
        let predictor: Predictor;
        try {
          predictor = await this.opts.source.load();
        } catch (err) {
          throw appError('PREDICTOR_LOAD_FAILED', { detail: err instanceof Error ? (err.stack ?? err.message) : String(err) }, err);
        }
        if (!this.component) this.useSchema(predictor.inputSchema);
        await predictor.setup({ log: (line) => setupLogger.info(line), logger: setupLogger, signal: controller.signal });
        return predictor;
      })();
      const timeoutMs = this.opts.setupTimeoutMs;
      const predictor = timeoutMs && timeoutMs > 0
        ? await Promise.race([work, new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            controller.abort();
            reject(appError('SETUP_TIMEOUT', { seconds: timeoutMs / 1000 }));
          }, timeoutMs);
        })])
        : await work;
      this.predictor = predictor;
      this.setupInfo.status = 'succeeded';
      this.setupInfo.completed_at = isoMicros();
      this.setStatus('READY');
      log.info({ predictor: this.opts.source.name }, 'setup succeeded');
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
    const status: HealthStatus = this.shuttingDown ? 'STOPPING' : this.status;
    return { status, setup };
  }

  /** Throws the HTTP error that keeps a new prediction from starting now, if any. */
  assertCanStart(): void {
    if (this.shuttingDown) throw appError('SHUTTING_DOWN');
    switch (this.status) {
      case 'STARTING': throw appError('NOT_READY');
      case 'SETUP_FAILED': throw appError('SETUP_HAS_FAILED');
      case 'DEFUNCT': throw appError('DEFUNCT');
      case 'BUSY': throw appError('BUSY');
      case 'READY': if (this.current) throw appError('BUSY');
    }
  }

  find(id: string): Prediction | undefined {
    return this.current?.state.id === id ? this.current : undefined;
  }

  /** Accepts a validated request and starts it; the returned prediction is already `processing`. */
  start(req: PredictionRequest, traceHeaders: Record<string, string>): Prediction {
    this.assertCanStart();
    const p = new Prediction(req.id ?? newPredictionId(), req.created_at ?? isoMicros(), req.input);
    this.current = p;
    this.setStatus('BUSY');
    if (req.webhook) {
      p.webhooks = new WebhookSender({
        url: req.webhook, filter: req.webhook_events_filter, throttleMs: this.opts.throttleMs, traceHeaders,
        authToken: this.opts.webhookAuthToken, logger: this.opts.logger.child({ prediction_id: p.state.id }),
        retries: this.opts.webhookRetries, backoffMs: this.opts.webhookBackoffMs, signal: this.webhooksGiveUp.signal,
      });
      p.webhooks.send('start', () => p.state);
    }
    this.opts.logger.info({ prediction_id: p.state.id }, 'prediction started');
    void this.run(p, traceHeaders);
    return p;
  }

  /**
   * The process hit an error nobody caught (a model callback threw outside any promise): its state can no
   * longer be trusted. Fails the running prediction (if any) and reports DEFUNCT.
   */
  markDefunct(err: unknown): void {
    this.opts.logger.fatal({ err }, 'uncaught error: the model can no longer run');
    const p = this.current;
    if (p) {
      this.fatalError = err;
      p.controller.abort();
    }
    this.setStatus('DEFUNCT');
    if (!p) this.emit('defunct');
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
    let tmpDir: string | undefined;
    try {
      tmpDir = await predictionTempDir(this.opts.tmpRoot ?? tmpdir());
      const local = await fetchInputFiles(this.component!, p.state.input, tmpDir, {
        ...this.opts.policy, maxBytes: this.opts.maxInputBytes, signal, readTimeoutMs: this.opts.inputReadTimeoutMs,
      });
      signal.throwIfAborted();
      const predictor = this.predictor!;
      const parsed = predictor.inputSchema.safeParse(local);
      if (!parsed.success) throw appError('INPUT_REJECTED', { detail: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') });
      const ctx: PredictorContext = { log: (line) => logger.info(line), logger, signal, tmpDir };
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
        this.opts.logger.warn({ prediction_id: p.state.id, err }, 'prediction failed');
        if (isFatal(err) || this.fatalError !== undefined) this.setStatus('DEFUNCT');
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
    this.current = null;
    if (this.status === 'BUSY') this.setStatus('READY');
    p.resolve(p.snapshot());
    this.emit('finished', p);
    if (this.status === 'DEFUNCT') this.emit('defunct');
  }

  /**
   * Stops taking predictions. With `cancel`, cancels the running one and waits at most `graceMs` for it
   * and its webhooks; without, waits for it to finish, then at most `graceMs` for its webhooks. Webhooks
   * still being retried after that are given up. stopWaiting() ends the waiting at once.
   */
  async drain(opts: { cancel: boolean; graceMs: number }): Promise<void> {
    this.shuttingDown = true;
    const cut = new Promise<void>((r) => { this.cutShort = r; });
    const p = this.current;
    if (p && opts.cancel) p.controller.abort();
    if (p && !opts.cancel) await Promise.race([p.done, cut]);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((r) => { timer = setTimeout(r, opts.graceMs); });
    const finished = (async () => {
      if (p) await p.done;
      await Promise.all([...this.deliveries]);
    })();
    await Promise.race([finished, deadline, cut]);
    clearTimeout(timer);
    this.webhooksGiveUp.abort();
  }

  /** Cancels the running prediction (if any) and ends drain()'s waiting now. */
  stopWaiting(): void {
    this.shuttingDown = true;
    this.current?.controller.abort();
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
