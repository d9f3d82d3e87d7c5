/**
 * ONNX Runtime sessions living in worker threads: one worker per device ("cpu", "cuda:0", ...), shared by
 * every session on that device, so the event loop never blocks on `create` or `run`; a session may ask for a
 * named worker of its own (`worker`), whose runs then overlap the shared worker's.
 *
 * Requests to a worker are queued here and sent one at a time. A run whose AbortSignal fires while queued is
 * dropped before it starts; one already running finishes in the worker (ONNX Runtime cannot be interrupted
 * from Node) but its promise rejects at once with an AbortError and the result is discarded.
 *
 * GPU sessions accept ONNX Runtime's CPU placements by default: the CUDA EP itself hands tiny int64 shape
 * subgraphs (Shape, Gather, Concat of dims) to the CPU, so `session.disable_cpu_ep_fallback` refuses nearly
 * every real graph. Pass `allowCpuFallback: false` to make any CPU node an error (scripts/gpu/placement.ts
 * lists which nodes land there).
 *
 * Workers run at a lower CPU priority than the main thread (FRAMEPACK_WORKER_NICE, default 10; Linux
 * applies it per thread), so CPU inference cannot starve the event loop.
 *
 * Debugging: FRAMEPACK_DUMP_ONNX=<dir> writes each created model (graph only; weights stay external) to
 * <dir>/<name>.onnx for Netron.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { BuiltModel } from '../onnx/graph.js';
import type { HostTensor } from '../onnx/safetensors.js';
import { appError } from '../errors.js';
import {
  buffersOf, type CreatePayload, type CreateResult, type ExecutionProvider, type Feed, type KeptTensor, type Request, type Response,
  type RunResult,
} from './protocol.js';

import { cudaProviderOptions } from './providers.js';

export type { ExecutionProvider } from './protocol.js';

export interface SessionOptions {
  ep: ExecutionProvider;
  deviceId?: number;
  /** GPU only: false makes a node placed on the CPU a load error (default true: shape subgraphs run there) */
  allowCpuFallback?: boolean;
  /** intra-op threads (default: ONNX Runtime's choice, the physical cores) */
  threads?: number;
  /** ONNX Runtime log level, 0 verbose .. 4 fatal (default 2, warnings) */
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
  /**
   * false turns off the CPU memory arena and memory patterns: each run frees its activations, so a network
   * fed several input shapes (the VAE's tiled windows) peaks at one run's size instead of keeping one arena
   * block per shape. Costs a little speed; default true.
   */
  memoryArena?: boolean;
  /**
   * CUDA only: the provider's options (ONNX Runtime's string keys; device_id is added). Default:
   * cudaProviderOptions('default') of providers.ts.
   */
  cuda?: Record<string, string>;
  /**
   * false keeps the arena but turns off memory patterns (one planned block per input shape, which the arena
   * then keeps side by side): the arena grows to the largest run's live tensors instead of one block per
   * shape seen, at no measurable cost in speed on the CPU. Default true.
   */
  memoryPattern?: boolean;
  /**
   * A worker of its own on the device, by name (default: the device's shared worker). Runs of sessions in
   * different workers overlap (on a GPU each session has its own stream); device tensors pass between sessions
   * of one worker only.
   */
  worker?: string;
}

export interface RunOptions {
  signal?: AbortSignal;
  /** hand the feeds' ArrayBuffers to the worker instead of copying them (they become unusable here) */
  transfer?: boolean;
  /** compute only these outputs */
  outputs?: string[];
  /**
   * Give the memory of the run's transient tensors back to the device after it (ONNX Runtime's arena
   * shrinkage): for the last run of a stage whose peak is not needed again soon.
   */
  shrink?: boolean;
  /**
   * Buffers (handed to the worker) that the named host outputs are copied into when large enough, the output's
   * data then a view of its first bytes: memory that was used before, whose pages a new buffer would first
   * have to fault in (milliseconds per output of tens of MB, between two runs of the device).
   */
  into?: Record<string, ArrayBuffer>;
}

/** Host tensors, or tensors an earlier run kept on the device of the same worker. */
export type Feeds = Record<string, HostTensor | DeviceTensor>;
export type Outputs<K extends string = never> = Record<string, HostTensor> & { [P in K]: DeviceTensor };

export class SessionError extends Error {
  override name = 'SessionError';
  /** the catalogue code of the worker's error (src/errors.ts), when it had one */
  code?: string;
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  const e = new Error(typeof reason === 'string' ? reason : 'The operation was aborted');
  e.name = 'AbortError';
  return e;
}

interface Pending {
  req: Request;
  transfer: ArrayBuffer[];
  resolve: (v: any) => void;
  reject: (e: Error) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
  settled: boolean;
}

/** The worker of one device and its request queue. */
class DeviceWorker {
  private worker: Worker | null = null;
  private queue: Pending[] = [];
  private inflight: Pending | null = null;
  private idleWaiters: Array<() => void> = [];
  private nextId = 1;

  constructor(readonly key: string) {}

  async request<T>(make: (id: number) => Request, transfer: ArrayBuffer[] = [], signal?: AbortSignal): Promise<T> {
    return (await this.timedRequest<T>(make, transfer, signal)).result;
  }

  /** A request and the time the worker spent on it. */
  timedRequest<T>(make: (id: number) => Request, transfer: ArrayBuffer[] = [], signal?: AbortSignal): Promise<{ result: T; ms: number }> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal));
      const p: Pending = { req: make(this.nextId++), transfer, resolve, reject, signal, settled: false };
      if (signal) {
        p.onAbort = () => {
          if (p.settled) return;
          p.settled = true;
          const i = this.queue.indexOf(p);
          if (i >= 0) this.queue.splice(i, 1);
          reject(abortError(signal));
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.queue.push(p);
      this.pump();
    });
  }

  private start(): Worker {
    const w = new Worker(new URL('./worker.js', import.meta.url), { workerData: { runtime: ortRuntime() } });
    w.on('message', (msg: Response) => this.onMessage(msg));
    w.on('error', (err) => { if (this.worker === w) this.fail(err); });
    w.on('exit', (code) => { if (this.worker === w) this.fail(new SessionError(`session worker ${this.key} exited with code ${code}`)); });
    return w;
  }

  private pump(): void {
    if (this.inflight) return;
    const next = this.queue.shift();
    if (!next) {
      this.worker?.unref(); // idle sessions must not keep the process alive
      for (const resolve of this.idleWaiters.splice(0)) resolve();
      return;
    }
    this.worker ??= this.start();
    this.worker.ref();
    this.inflight = next;
    this.worker.postMessage(next.req, next.transfer);
  }

  private onMessage(msg: Response): void {
    const p = this.inflight;
    this.inflight = null;
    if (p && p.req.id === msg.id) this.settle(p, msg);
    this.pump();
  }

  private settle(p: Pending, msg: Response): void {
    if (p.signal && p.onAbort) p.signal.removeEventListener('abort', p.onAbort);
    if (p.settled) {
      // a cancelled run that finished anyway: nobody holds the tensors it kept on the device
      const refs = msg.ok && p.req.op === 'run' ? Object.values((msg.result ?? {}) as RunResult).flatMap((v) => ('ref' in v ? [v.ref] : [])) : [];
      if (refs.length) this.request((id) => ({ id, op: 'free', refs })).catch(() => {});
      return;
    }
    p.settled = true;
    if (msg.ok) p.resolve({ result: msg.result, ms: msg.ms });
    else {
      const e = new SessionError(msg.error.message);
      if (msg.error.code) e.code = msg.error.code;
      if (msg.error.stack) e.stack = `SessionError: ${msg.error.message}\n    (in session worker)\n${msg.error.stack.split('\n').slice(1).join('\n')}`;
      p.reject(e);
    }
  }

  /** The worker died: every pending request fails, sessions on it are gone, a new worker starts on demand. */
  private fail(err: Error): void {
    if (!this.worker) return;
    this.worker = null;
    const all = [...(this.inflight ? [this.inflight] : []), ...this.queue];
    this.inflight = null;
    this.queue = [];
    for (const resolve of this.idleWaiters.splice(0)) resolve();
    for (const p of all) {
      if (p.signal && p.onAbort) p.signal.removeEventListener('abort', p.onAbort);
      if (!p.settled) { p.settled = true; p.reject(err instanceof SessionError ? err : new SessionError(`session worker ${this.key} failed: ${err.message}`)); }
    }
    this.generation++;
  }

  /**
   * Resolves once nothing runs or waits here. A cancelled run still occupies the worker until ONNX Runtime
   * returns, and terminating a worker inside a native run aborts the whole process.
   */
  idle(): Promise<void> {
    if (!this.inflight && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** bumped when the worker dies, so sessions of an old worker know they are gone */
  generation = 0;

  async terminate(): Promise<void> {
    const w = this.worker;
    this.fail(new SessionError(`session worker ${this.key} was terminated`));
    if (w) await w.terminate();
  }
}

// CUDA numbers devices fastest first by default, nvidia-smi (and so vram.ts's sizing of each card) by PCI
// bus: on a host of unlike GPUs the two orders differ. Set before any session worker starts CUDA.
process.env.CUDA_DEVICE_ORDER ??= 'PCI_BUS_ID';

/**
 * Which runtime drives CPU sessions: FRAMEPACK_ORT_RUNTIME=auto (default: ONNX Runtime's C API, onnxruntime-node
 * where the C API cannot be loaded), c-api, or onnxruntime-node. CUDA sessions always need the C API.
 */
/**
 * FRAMEPACK_ORT_PROFILE=DIR: every session driven through the C API runs with ONNX Runtime's profiler, one
 * JSON file per session in DIR (`<graph name>_<date>.json`, complete once the session is released; read it
 * with scripts/ort-profile.ts). Node timings are host-side: on CUDA they measure kernels only when launches
 * are synchronous (CUDA_LAUNCH_BLOCKING=1).
 */
async function profilePrefix(dir: string, name: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  return join(resolve(dir), name.replace(/[^A-Za-z0-9._-]/g, '_'));
}

function ortRuntime(): 'auto' | 'c-api' | 'onnxruntime-node' {
  const v = (process.env.FRAMEPACK_ORT_RUNTIME ?? 'auto').trim().toLowerCase() || 'auto';
  if (v === 'auto' || v === 'c-api' || v === 'onnxruntime-node') return v;
  throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_ORT_RUNTIME', value: v, allowed: 'auto, c-api, onnxruntime-node' });
}

const workers = new Map<string, DeviceWorker>();

function workerFor(ep: ExecutionProvider, deviceId: number, name?: string): DeviceWorker {
  const key = (ep === 'cpu' ? 'cpu' : `${ep}:${deviceId}`) + (name ? `/${name}` : '');
  let w = workers.get(key);
  if (!w) workers.set(key, (w = new DeviceWorker(key)));
  return w;
}

/**
 * Stops every session worker (their sessions are lost). For tests and shutdown. `graceMs` first waits, up to
 * that long, for runs still inside ONNX Runtime (a cancelled prediction's last step) to return.
 */
export async function terminateWorkers({ graceMs = 0 }: { graceMs?: number } = {}): Promise<void> {
  if (graceMs > 0) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs); });
    await Promise.race([Promise.all([...workers.values()].map((w) => w.idle())), timeout]);
    clearTimeout(timer);
  }
  await Promise.all([...workers.values()].map((w) => w.terminate()));
  workers.clear();
}

/**
 * A tensor a run kept on its session's device (`run(..., { keep })`). It can be fed to any session of the same
 * device without crossing to the host; `release()` frees it (a binding that took it keeps its own reference
 * until bound again).
 */
export class DeviceTensor {
  private released = false;
  constructor(
    private readonly worker: DeviceWorker,
    private readonly generation: number,
    readonly ref: number,
    readonly dtype: HostTensor['dtype'],
    readonly dims: number[],
    readonly name: string,
  ) {}

  /** The reference the worker knows it by; refuses a released tensor or one from another worker. */
  feed(worker: DeviceWorker): Feed {
    if (this.released || worker !== this.worker || this.worker.generation !== this.generation) {
      throw appError('DEVICE_TENSOR_RELEASED', { ref: this.ref, what: this.name });
    }
    return { ref: this.ref };
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.worker.generation !== this.generation) return;
    await this.worker.request((id) => ({ id, op: 'free', refs: [this.ref] }));
  }
}

export class Session {
  private released = false;
  /** milliseconds the worker spent on this session's runs (ONNX Runtime and the copies in and out) */
  busyMs = 0;

  /** Use Session.create; the constructor only wraps a session that already exists in a worker. */
  constructor(
    private readonly worker: DeviceWorker,
    private readonly id: number,
    private readonly generation: number,
    readonly name: string,
    /** inputs a run must feed unless they are bound */
    readonly inputs: string[],
    /** inputs with a default in the model (BuiltModel.inputDefaults), bound to it unless bound otherwise */
    readonly optionalInputs: string[],
    readonly outputs: string[],
    /** quantized weight files this session uses, and whether creating it wrote them */
    readonly prepared: CreateResult['prepared'],
    /** the runtime driving it and, on CUDA, the provider's effective options */
    readonly runtime: CreateResult['runtime'],
    readonly providerOptions?: string,
  ) {}

  static async create(model: BuiltModel, opts: SessionOptions): Promise<Session> {
    const dump = process.env.FRAMEPACK_DUMP_ONNX;
    if (dump) {
      await mkdir(dump, { recursive: true });
      await writeFile(join(dump, `${model.name.replace(/[^A-Za-z0-9._-]/g, '_')}.onnx`), model.bytes);
    }
    const deviceId = opts.deviceId ?? 0;
    const config: Record<string, string> = { ...(model.sessionConfig ?? {}) };
    if (opts.ep !== 'cpu' && opts.allowCpuFallback === false) config['session.disable_cpu_ep_fallback'] = '1';
    // CUDA: weights go straight to device memory instead of the BFC arena, which would round them up
    if (opts.ep === 'cuda') config['session.use_device_allocator_for_initializers'] ??= '1';
    const payload: CreatePayload = {
      bytes: model.bytes, externalFolder: model.externalFolder, name: model.name, config,
      prepare: model.prepare ?? [], ep: opts.ep, deviceId,
      intraOpThreads: opts.threads, logSeverityLevel: opts.logSeverityLevel, memoryArena: opts.memoryArena, memoryPattern: opts.memoryPattern,
      ...(opts.ep === 'cuda' ? { cuda: { ...(opts.cuda ?? cudaProviderOptions('default')), device_id: String(deviceId) } } : {}),
      ...(model.inputDefaults ? { inputDefaults: model.inputDefaults } : {}),
      ...(model.customDomains ? { customDomains: model.customDomains } : {}),
      ...(process.env.FRAMEPACK_ORT_PROFILE ? { profile: await profilePrefix(process.env.FRAMEPACK_ORT_PROFILE, model.name) } : {}),
    };
    const w = workerFor(opts.ep, deviceId, opts.worker);
    try {
      const r = await w.request<CreateResult>((id) => ({ id, op: 'create', payload }));
      return new Session(w, r.session, w.generation, model.name, r.inputs, r.optionalInputs, r.outputs, r.prepared, r.runtime,
        r.providerOptions);
    } catch (e) {
      const err = new SessionError(`cannot create session "${model.name}" on ${opts.ep}: ${(e as Error).message}`);
      err.code = (e as SessionError).code;
      throw err;
    }
  }

  /**
   * Binds inputs for every later run until they are bound again: a device session copies host tensors to the
   * device here, once, instead of on every run. A run's own feeds take precedence. With `transfer` the host
   * tensors' buffers go to the worker (detached here): the caller must not read them afterwards. `also`
   * binds the same tensors to more sessions of the same worker in the same request.
   */
  async bind(feeds: Feeds, opts: { signal?: AbortSignal; transfer?: boolean; also?: Session[] } = {}): Promise<void> {
    this.check();
    const also = opts.also ?? [];
    for (const s of also) {
      s.check();
      if (s.worker !== this.worker) throw new SessionError(`sessions "${this.name}" and "${s.name}" live in different workers: bind them apart`);
    }
    const wire = this.wire(feeds);
    await this.worker.request((id) => ({ id, op: 'bind', session: this.id, ...(also.length ? { also: also.map((s) => s.id) } : {}), feeds: wire }),
      opts.transfer ? buffersOf(wire) : [], opts.signal);
  }

  /**
   * Binds optional inputs (default: all of them) to their defaults again; what was bound to them is freed (on
   * a device session, its device copy).
   */
  async unbind(names: string[] = this.optionalInputs, opts: { signal?: AbortSignal } = {}): Promise<void> {
    this.check();
    if (!names.length) return;
    await this.worker.request((id) => ({ id, op: 'unbind', session: this.id, names }), [], opts.signal);
  }

  /** Runs on `feeds` plus the bound inputs; outputs named in `keep` stay on the device as DeviceTensors. */
  run(feeds: Feeds, opts?: RunOptions): Promise<Outputs>;
  run<K extends string>(feeds: Feeds, opts: RunOptions & { keep: readonly K[] }): Promise<Outputs<K>>;
  async run(feeds: Feeds, opts: RunOptions & { keep?: readonly string[] } = {}): Promise<Outputs<string>> {
    this.check();
    const wire = this.wire(feeds);
    const transfer = [...(opts.transfer ? buffersOf(wire) : []), ...Object.values(opts.into ?? {})];
    const { result, ms } = await this.worker.timedRequest<RunResult>(
      (id) => ({
        id, op: 'run', session: this.id, feeds: wire, ...(opts.outputs ? { outputs: opts.outputs } : {}),
        ...(opts.keep?.length ? { keep: [...opts.keep] } : {}), ...(opts.shrink ? { shrink: true } : {}),
        ...(opts.into ? { into: opts.into } : {}),
      }),
      transfer, opts.signal,
    );
    this.busyMs += ms;
    const out: Record<string, HostTensor | DeviceTensor> = {};
    for (const [name, v] of Object.entries(result)) {
      out[name] = 'ref' in v ? new DeviceTensor(this.worker, this.generation, (v as KeptTensor).ref, v.dtype, v.dims, `${this.name}:${name}`) : v;
    }
    return out as Outputs<string>;
  }

  /** Frees the session (weights, arena, mapped files). Idempotent. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.worker.generation !== this.generation) return;
    await this.worker.request((id) => ({ id, op: 'release', session: this.id }));
  }

  private wire(feeds: Feeds): Record<string, Feed> {
    const out: Record<string, Feed> = {};
    for (const [name, f] of Object.entries(feeds)) out[name] = f instanceof DeviceTensor ? f.feed(this.worker) : f;
    return out;
  }

  private check(): void {
    if (this.released) throw new SessionError(`session "${this.name}" was released`);
    if (this.worker.generation !== this.generation) throw new SessionError(`session "${this.name}" was lost: its worker exited`);
  }
}
