/**
 * The seam between the server and a model, shaped like Cog's BasePredictor.
 *
 * A predictor module default-exports a factory `(options: PredictorOptions) => Predictor`. The factory must be
 * cheap (no weights loaded): the server calls it at start-up and does the expensive work in `setup()`, while
 * the health check reports STARTING.
 *
 * - `inputSchema` is a zod object. Its field order is the order of the inputs (`x-order`), `.describe()` gives
 *   their descriptions, `.default()`/`.min()`/`.max()`/`.nullable()` their defaults, bounds and nullability.
 *   File inputs are declared with `fileInput()`: the schema shows them as `{type: string, format: uri}`, clients
 *   send `data:` or `http(s):` URLs, and `predict()` receives a local file path (the server downloads the file
 *   into the prediction's temp directory and deletes it afterwards).
 * - `setup(ctx)` loads the model. Lines logged through `ctx.log`/`ctx.logger` become the health check's
 *   `setup.logs`. Throwing puts the server in SETUP_FAILED.
 * - `predict(input, ctx)` returns the path of the output file. Write it inside `ctx.tmpDir`: the server
 *   removes that directory once the output has been sent. Lines logged through `ctx.log`/`ctx.logger` become
 *   the prediction's `logs`. `ctx.signal` aborts on cancel: stop promptly by throwing (any error thrown after
 *   the abort counts as a cancellation). Never block the event loop: heavy work belongs in worker threads.
 *   Throw an error with `fatal: true` when the model can never run again (its worker died): the server
 *   then reports DEFUNCT. Throw one with `device: 'lost'` when the device failed (a sticky CUDA error) or
 *   `device: 'out-of-memory'`: the server takes this instance out of rotation (an out-of-memory one only
 *   while another instance serves) and DEFUNCT comes only when none is left.
 * - `ctx.events` (optional, given by the server) takes live events for clients watching the prediction:
 *   progress, preview pictures and the video so far. Reporting must never slow the prediction: skip work done
 *   only for watchers (`events.watched` is false) and never wait for a watcher.
 * - `dispose()` (optional) releases what setup acquired; the process exits shortly after it either way.
 * - `devices(log)` (optional) lists the GPUs that can each run one prediction alongside the others. When
 *   the server may run several predictions at once (COG_MAX_CONCURRENCY > 1) it asks an instance that is
 *   never set up, then makes one instance per device (up to the limit) from the factory with
 *   `options.deviceId` and sets each up: one prediction per instance at a time, each on its own device.
 */
import { z } from 'zod';
import type { Logger } from 'pino';

export interface PredictorContext {
  /** Appends one line to the prediction's logs (and to the server log). */
  log(line: string): void;
  /** A logger whose lines also become the prediction's logs. */
  logger: Logger;
  /** Aborted when the prediction is canceled or the server stops. */
  signal: AbortSignal;
  /** A fresh directory for this prediction, removed after the output is sent. */
  tmpDir: string;
  /** Optional progress report (`done` of `total` units of `label`); the command line draws it as a bar. */
  progress?(done: number, total: number, label?: string): void;
  /**
   * Downloads `url` into `file` under the rules of file inputs (http(s) only, refused address ranges checked
   * on every connection and redirect, a read timeout, at most `maxBytes`); errors name the input `name`.
   * For files a model fetches itself, such as weights named in an input.
   */
  download?(url: string, file: string, opts: { name: string; maxBytes: number }): Promise<void>;
  /** Optional live events for watching clients (the server's `GET /predictions/{id}/events`). */
  events?: PredictionEvents;
}

/** Where a prediction stands, for watchers (sections and steps count from 1). */
export interface ProgressEvent {
  section: number;
  sections: number;
  step: number;
  steps: number;
  /** Of the whole prediction's steps. */
  percent: number;
  /** Seconds the remaining steps should take; null when unknown. */
  eta_seconds: number | null;
}

/** A small picture of the current state (the predictor draws it; the server sends it as a data URL). */
export interface PreviewEvent {
  section: number;
  step: number;
  width: number;
  height: number;
  mime: string;
  image: Uint8Array;
}

/** The output so far, as a file in `tmpDir` that the server takes over (moves) when `section` is called. */
export interface SectionEvent {
  section: number;
  sections: number;
  frames: number;
  path: string;
}

export interface PredictionEvents {
  /** Whether a client watches now: work done only for watchers (the video so far) can be skipped when not. */
  readonly watched: boolean;
  progress(event: ProgressEvent): void;
  preview(event: PreviewEvent): void;
  /** Resolves once the file was taken over. */
  section(event: SectionEvent): Promise<void>;
}

export type SetupContext = Omit<PredictorContext, 'signal' | 'tmpDir'> & { signal?: AbortSignal };

export interface Predictor<S extends z.ZodObject = z.ZodObject> {
  inputSchema: S;
  setup(ctx: SetupContext): Promise<void>;
  predict(input: z.infer<S>, ctx: PredictorContext): Promise<string>;
  /** Optional: releases sessions and workers; called once when the server or the command stops. */
  dispose?(): Promise<void>;
  /** Optional: the CUDA devices (numbered after CUDA_VISIBLE_DEVICES) that can each serve predictions. */
  devices?(log: (line: string) => void): Promise<number[]>;
}

/** Options from the command line (`--models`, `--noise`, `--dump` and any predictor-specific `--flag value`). */
export interface PredictorOptions {
  models?: string;
  noise?: string;
  dump?: string;
  /** The CUDA device this instance runs on, when the server runs one instance per device (see `devices`). */
  deviceId?: number;
  [k: string]: unknown;
}

export type PredictorFactory = (options: PredictorOptions) => Predictor;

/**
 * A file input: a URL string in requests (`data:` or `http(s):`), a local path in `predict()`.
 */
export function fileInput(): z.ZodString {
  return z.string().meta({ format: 'uri' });
}
