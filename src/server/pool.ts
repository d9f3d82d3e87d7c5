/**
 * The workers that run predictions: one predictor instance each, one prediction at a time each.
 *
 * With the concurrency limit at 1 (COG_MAX_CONCURRENCY unset, Cog's default) there is one worker: the
 * predictor made and set up as it always was. With a higher limit the predictor is asked which devices can
 * each serve (`Predictor.devices`) and one worker is made per device, up to the limit: on a host with N
 * GPUs, N predictions run at once, each with its own sessions and placement on its own card.
 *
 * Setup runs the first worker alone (it fills what the others share: downloads, the quantized-weight
 * cache), then the others together. A worker whose setup fails is left out, its error in the setup logs;
 * setup fails only when no worker is ready.
 *
 * A worker whose device failed during a prediction is taken out of rotation with a log line naming it and
 * why: always when the device is lost, on running out of memory only while another worker serves (a lone
 * GPU keeps serving, as it always did: the next request may fit).
 */
import type { Logger } from 'pino';
import { errorMessage, type DeviceFailure } from '../errors.js';
import { teeLogger } from '../log.js';
import type { Predictor, PredictorOptions } from '../predictor.js';

export type WorkerState = 'new' | 'ready' | 'failed' | 'retired';

export interface PoolWorker {
  /** `cuda:<n>`; undefined for the single worker of a predictor that runs without a device list */
  readonly name?: string;
  readonly predictor: Predictor;
  state: WorkerState;
  busy: boolean;
}

export interface PoolSetupContext {
  /** The server's logger: each worker logs through a logger naming it. */
  logger: Logger;
  /** Receives the text of every setup line (prefixed with the worker's name when there are several). */
  append(line: string): void;
  signal: AbortSignal;
}

/**
 * COG_MAX_CONCURRENCY (Cog's name; cog.yaml's `concurrency.max` is baked into the image as this variable):
 * a positive integer. Unset means 1; anything else is 1 with a warning, as Cog treats it.
 */
export function concurrencyFromEnv(value: string | undefined, logger?: Logger): number {
  if (value === undefined || value.trim() === '') return 1;
  const n = Number(value);
  if (Number.isInteger(n) && n >= 1) return n;
  logger?.warn({ value }, 'COG_MAX_CONCURRENCY is not a positive integer: one prediction at a time');
  return 1;
}

export class WorkerPool {
  readonly workers: PoolWorker[] = [];

  constructor(readonly limit: number, private readonly logger: Logger) {}

  /**
   * Makes the workers from `load` (the predictor's factory with option overrides) and returns the first
   * instance made, whose schema is the server's. `log` receives the line saying how many workers there are.
   */
  async create(load: (overrides?: PredictorOptions) => Promise<Predictor>, log: (line: string) => void): Promise<Predictor> {
    const first = await load();
    const devices = this.limit > 1 ? await this.devicesOf(first, log) : [];
    if (devices.length === 0) {
      this.workers.push({ predictor: first, state: 'new', busy: false });
      return first;
    }
    for (const deviceId of devices) {
      this.workers.push({ name: `cuda:${deviceId}`, predictor: await load({ deviceId }), state: 'new', busy: false });
    }
    return first;
  }

  private async devicesOf(predictor: Predictor, log: (line: string) => void): Promise<number[]> {
    const limit = `concurrency limit ${this.limit} (COG_MAX_CONCURRENCY)`;
    if (!predictor.devices) {
      log(`${limit}, but this predictor serves one prediction at a time`);
      return [];
    }
    const devices = [...new Set(await predictor.devices(log))].slice(0, this.limit);
    const names = devices.map((d) => `cuda:${d}`).join(', ');
    if (devices.length === 0) log(`${limit}, but no GPU can serve on its own: one prediction at a time`);
    else if (devices.length < this.limit) log(`${limit}, but only ${devices.length} GPU(s) can serve: one worker on each of ${names}`);
    else log(`${limit}: one worker on each of ${names}`);
    return devices;
  }

  /** Sets every worker up (the first alone, then the others together). Throws when none is ready. */
  async setup(ctx: PoolSetupContext): Promise<void> {
    const [first, ...rest] = this.workers as [PoolWorker, ...PoolWorker[]]; // create() makes one at least
    const errors = new Map<PoolWorker, unknown>();
    const setupOne = async (w: PoolWorker) => {
      const prefix = w.name ? `[${w.name}] ` : '';
      const logger = teeLogger(ctx.logger, w.name ? { phase: 'setup', worker: w.name } : { phase: 'setup' }, (line) => ctx.append(prefix + line));
      try {
        await w.predictor.setup({ log: (line) => logger.info(line), logger, signal: ctx.signal });
        w.state = 'ready';
      } catch (err) {
        w.state = 'failed';
        errors.set(w, err);
        if (this.workers.length > 1) logger.error({ err }, `setup failed, this worker is left out: ${errorMessage(err)}`);
      }
    };
    await setupOne(first);
    await Promise.all(rest.map(setupOne));
    const ready = this.serving.length;
    if (ready === 0) throw errors.get(first);
    if (errors.size > 0) teeLogger(ctx.logger, { phase: 'setup' }, ctx.append).warn(`${ready} of ${this.workers.length} workers ready`);
  }

  /** The workers in rotation. */
  get serving(): PoolWorker[] {
    return this.workers.filter((w) => w.state === 'ready');
  }

  /** Workers in rotation that run nothing now. */
  get free(): number {
    return this.serving.filter((w) => !w.busy).length;
  }

  /** True when every worker in rotation runs a prediction (and at least one is in rotation). */
  get allBusy(): boolean {
    return this.serving.length > 0 && this.free === 0;
  }

  /** A free worker in rotation, now busy; undefined when there is none. */
  acquire(): PoolWorker | undefined {
    const w = this.workers.find((x) => x.state === 'ready' && !x.busy);
    if (w) w.busy = true;
    return w;
  }

  release(w: PoolWorker): void {
    w.busy = false;
  }

  /**
   * A prediction on `w` failed because of its device: takes the worker out of rotation when the device is
   * lost, or out of memory while another worker serves. True when it was taken out.
   */
  deviceFailed(w: PoolWorker, failure: DeviceFailure, err: unknown): boolean {
    const others = this.serving.filter((o) => o !== w).length;
    if (failure === 'out-of-memory' && others === 0) return false;
    w.state = 'retired';
    const what = w.name ? `GPU ${w.name}` : 'the device';
    this.logger.error({ worker: w.name, failure, err },
      `${what} taken out of rotation (${failure}: ${errorMessage(err)}); ${others} of ${this.workers.length} workers still serve`);
    return true;
  }

  /** Calls dispose() of every worker that was set up; failures are logged. */
  async dispose(): Promise<void> {
    await Promise.all(this.workers.filter((w) => w.state === 'ready' || w.state === 'retired').map(async (w) => {
      try {
        await w.predictor.dispose?.();
      } catch (err) {
        this.logger.warn({ err, worker: w.name }, 'predictor dispose failed');
      }
    }));
  }
}
