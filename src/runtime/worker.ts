/**
 * A session worker: owns the ONNX Runtime sessions of one device, and the tensors runs kept on that device.
 * Creating and running sessions are blocking native calls, so they happen here and never on the main
 * thread's event loop. Requests arrive one at a time (see protocol.ts); each gets exactly one response.
 *
 * Sessions run on ONNX Runtime's C API (ort-api.ts) with one IO binding each: inputs stay bound until bound
 * again (`bind` copies them to the device once), outputs go to the host unless the run keeps them on the
 * device, where a later run of any session of this worker can take them as inputs without a copy. WebGPU
 * sessions, and CPU sessions where the C API cannot be loaded (or FRAMEPACK_ORT_RUNTIME=onnxruntime-node),
 * run on onnxruntime-node behind the same interface; their "kept" tensors live in host memory.
 *
 * Inputs with a default (CreatePayload.inputDefaults: the DiT's LoRA weights) are bound to it when the session
 * is created, so runs need not feed them; `unbind` binds the default again, which frees what was bound instead.
 */
import { statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { appError, AppError } from '../errors.js';
import type { HostDType, HostTensor } from '../onnx/safetensors.js';
import { releaseStreams, withStream } from './cuda-streams.js';
import { DIT_KERNELS_DOMAIN, ditKernels } from './dit-kernels.js';
import * as capi from './ort-api.js';
import { CustomOpDomain } from './ort-custom-ops.js';
import { lowerThisThread } from './priority.js';
import { prepareAll } from './quantize-threads.js';
import {
  buffersOf, isRef, nest, type CreatePayload, type CreateResult, type Feed, type KeptTensor, type Request, type Response,
  type RunRequest, type RunResult,
} from './protocol.js';

// Below the main thread, ONNX Runtime's thread pool included (started later by this thread): see priority.ts.
lowerThisThread();
const { runtime = 'auto' } = (workerData ?? {}) as { runtime?: 'auto' | 'c-api' | 'onnxruntime-node' };

/** A tensor a run kept: a native OrtValue on the session's device, or an onnxruntime-node tensor. */
type Kept = { native: capi.Tensor } | { node: ort.Tensor };

interface WorkerSession {
  readonly inputs: string[];
  readonly outputs: string[];
  /** inputs bound by `bind` (until a run's own feed or another bind replaces them) */
  readonly bound: Set<string>;
  /** inputs with a default, and that default */
  readonly defaults: Record<string, HostTensor>;
  bind(feeds: Record<string, Feed>): void;
  run(req: RunRequest): RunResult | Promise<RunResult>;
  release(): void;
}

const sessions = new Map<number, WorkerSession>();
const kept = new Map<number, Kept>();
let nextSession = 1;
let nextRef = 1;

function keep(k: Kept, dtype: HostDType, dims: number[]): KeptTensor {
  const ref = nextRef++;
  kept.set(ref, k);
  return { ref, dtype, dims };
}

function keptTensor(ref: number, name: string): Kept {
  const k = kept.get(ref);
  if (!k) throw appError('DEVICE_TENSOR_RELEASED', { ref, what: `input "${name}"` });
  return k;
}

function freeKept(ref: number): void {
  const k = kept.get(ref);
  kept.delete(ref);
  if (k && 'native' in k) k.native.release();
  else k?.node.dispose();
}

/** Custom operator domains by name and provider: made once, kept for the worker's life (sessions point into them). */
const domains = new Map<string, CustomOpDomain>();
function customDomain(name: string, provider: 'cpu' | 'cuda'): CustomOpDomain {
  if (name !== DIT_KERNELS_DOMAIN) throw appError('ORT_CALL_FAILED', { call: 'AddCustomOpDomain', code: 'NOT_FOUND', detail: `no kernels for the custom domain ${name}` });
  const key = `${name} ${provider}`;
  let d = domains.get(key);
  if (!d) domains.set(key, (d = CustomOpDomain.create(name, ditKernels(provider))));
  return d;
}

/** A session on ONNX Runtime's C API, with its IO binding. */
class NativeSession implements WorkerSession {
  private readonly options: capi.SessionOptions;
  private readonly session: capi.Session;
  private binding: capi.IoBinding;
  readonly bound = new Set<string>();
  private readonly host = capi.MemoryInfo.cpu();
  private readonly device: capi.MemoryInfo;
  /** host data a bound input may still read (CPU sessions, CPU-placed inputs): kept until bound again */
  private readonly held = new Map<string, HostTensor['data']>();
  /** the arena a run's `shrink` empties: the device's, or the CPU's when it has one (none without memoryArena) */
  private readonly arena: string | null;
  readonly providerOptions?: string;
  private readonly profiled: boolean;

  constructor(p: CreatePayload, config: Record<string, string>, readonly defaults: Record<string, HostTensor>) {
    const handles: { release(): void }[] = [this.host];
    let cuda: Record<string, string> | undefined;
    try {
      cuda = p.cuda && withStream(p.cuda, p.deviceId); // inside: a stream that cannot be made frees the handles too
      this.device = cuda ? capi.MemoryInfo.cuda(p.deviceId) : this.host;
      if (cuda) handles.push(this.device);
      this.options = capi.SessionOptions.create({ config, intraOpThreads: p.intraOpThreads, logSeverityLevel: p.logSeverityLevel, memoryArena: p.memoryArena, memoryPattern: p.memoryPattern, cuda, profile: p.profile });
      handles.push(this.options);
      for (const d of p.customDomains ?? []) customDomain(d, cuda ? 'cuda' : 'cpu').addTo(this.options);
      this.session = capi.Session.create(p.bytes, this.options);
      handles.push(this.session);
      this.binding = capi.IoBinding.create(this.session);
    } catch (e) {
      for (const h of handles.reverse()) h.release();
      throw e;
    }
    this.profiled = Boolean(p.profile);
    this.arena = cuda ? `gpu:${p.deviceId}` : p.memoryArena === false ? null : 'cpu:0';
    if (cuda) {
      const o = capi.CudaProviderOptions.create(cuda);
      try { this.providerOptions = o.describe(); } finally { o.release(); }
    }
  }

  get inputs() { return this.session.inputs; }
  get outputs() { return this.session.outputs; }

  bind(feeds: Record<string, Feed>): void {
    try {
      this.bindAll(feeds);
    } catch (e) {
      // ONNX Runtime leaves a binding whose BindInput failed inconsistent: start a fresh one, only defaults bound
      this.binding.release();
      this.binding = capi.IoBinding.create(this.session);
      this.held.clear();
      this.bound.clear();
      this.bindAll(this.defaults);
      for (const n of Object.keys(this.defaults)) this.bound.add(n);
      throw e;
    }
  }

  private bindAll(feeds: Record<string, Feed>): void {
    let copies = false;
    for (const [name, f] of Object.entries(feeds)) {
      if (isRef(f)) {
        const k = keptTensor(f.ref, name);
        if (!('native' in k)) throw appError('DEVICE_TENSOR_RELEASED', { ref: f.ref, what: `input "${name}"` });
        this.binding.bindInput(name, k.native);
        this.held.delete(name);
        continue;
      }
      const t = capi.Tensor.wrap(f, this.host, `input "${name}"`);
      try {
        this.binding.bindInput(name, t);
      } finally {
        t.release(); // the binding holds its own reference (or its device copy)
      }
      this.held.set(name, f.data);
      copies = true;
    }
    if (copies && this.device !== this.host) this.binding.synchronizeInputs();
  }

  run(req: RunRequest): RunResult {
    this.bind(req.feeds);
    const wanted = req.outputs ?? this.outputs;
    const onDevice = new Set(req.keep ?? []);
    this.binding.clearOutputs();
    for (const name of wanted) this.binding.bindOutput(name, onDevice.has(name) ? this.device : this.host);
    const ro = req.shrink && this.arena ? capi.RunOptions.create({ 'memory.enable_memory_arena_shrinkage': this.arena }) : null;
    let values: capi.Tensor[];
    try {
      values = this.binding.run(ro);
    } finally {
      ro?.release();
    }
    const out: RunResult = {};
    for (const [i, name] of wanted.entries()) {
      const v = values[i];
      if (onDevice.has(name)) out[name] = keep({ native: v }, v.dtype, v.dims);
      else {
        try { out[name] = v.toHost(req.into?.[name]); } finally { v.release(); }
      }
    }
    return out;
  }

  release(): void {
    this.held.clear();
    this.binding.release();
    if (this.profiled) {
      try { this.session.endProfiling(); } catch { /* the profile is lost, the session still goes */ }
    }
    this.session.release();
    this.options.release();
    if (this.device !== this.host) this.device.release();
    this.host.release();
  }
}

/** A session on onnxruntime-node (WebGPU, or the CPU where the C API is not used). */
class NodeSession implements WorkerSession {
  private readonly values = new Map<string, ort.Tensor>();
  readonly bound = new Set<string>();
  private constructor(private readonly s: ort.InferenceSession, readonly defaults: Record<string, HostTensor>) {}

  static async create(p: CreatePayload, config: Record<string, string>, defaults: Record<string, HostTensor>): Promise<NodeSession> {
    const session = await ort.InferenceSession.create(p.bytes, {
      executionProviders: p.ep === 'webgpu' ? ['webgpu'] : ['cpu'],
      graphOptimizationLevel: 'all',
      ...(p.intraOpThreads ? { intraOpNumThreads: p.intraOpThreads } : {}),
      ...(p.memoryArena === false ? { enableCpuMemArena: false, enableMemPattern: false } : {}),
      ...(p.memoryPattern === false ? { enableMemPattern: false } : {}),
      ...(p.logSeverityLevel !== undefined ? { logSeverityLevel: p.logSeverityLevel } : {}),
      extra: nest(config),
    });
    return new NodeSession(session, defaults);
  }

  get inputs() { return [...this.s.inputNames]; }
  get outputs() { return [...this.s.outputNames]; }

  private tensor(name: string, f: Feed): ort.Tensor {
    if (!isRef(f)) return toOrt(name, f);
    const k = keptTensor(f.ref, name);
    if (!('node' in k)) throw appError('DEVICE_TENSOR_RELEASED', { ref: f.ref, what: `input "${name}"` });
    return k.node;
  }

  bind(feeds: Record<string, Feed>): void {
    for (const [name, f] of Object.entries(feeds)) this.values.set(name, this.tensor(name, f));
  }

  async run(req: RunRequest): Promise<RunResult> {
    const feeds: Record<string, ort.Tensor> = Object.fromEntries([...this.values].filter(([n]) => this.bound.has(n)));
    for (const [name, f] of Object.entries(req.feeds)) feeds[name] = this.tensor(name, f);
    const res = req.outputs ? await this.s.run(feeds, req.outputs) : await this.s.run(feeds);
    const onDevice = new Set(req.keep ?? []);
    const out: RunResult = {};
    for (const [k, v] of Object.entries(res)) {
      if (onDevice.has(k)) { out[k] = keep({ node: v }, v.type as HostDType, [...v.dims]); continue; }
      out[k] = fromOrt(v);
      v.dispose();
    }
    return out;
  }

  release(): void {
    this.values.clear();
    void this.s.release();
  }
}

/**
 * ONNX Runtime's telemetry layer creates an empty `mat-debug-<pid>.log` in the temp directory when its
 * environment starts (the first session of the process) and writes to it only when tracing is on: one
 * stray file per process started. Removed once, if empty.
 */
let telemetryLogChecked = false;
function removeTelemetryLog(): void {
  if (telemetryLogChecked) return;
  telemetryLogChecked = true;
  const file = join(tmpdir(), `mat-debug-${process.pid}.log`);
  try {
    if (statSync(file).size === 0) unlinkSync(file);
  } catch {
    // not there (or already removed by another session worker)
  }
}

async function create(p: CreatePayload): Promise<CreateResult> {
  const prepared = await prepareAll(p.prepare);
  const config = { ...p.config };
  if (p.externalFolder) config['session.model_external_initializers_file_folder_path'] = p.externalFolder;
  const defaults = p.inputDefaults ?? {};
  let s: NativeSession | NodeSession;
  const custom = !!p.customDomains?.length; // custom operators need the C API
  if (p.ep === 'webgpu' || (p.ep === 'cpu' && runtime === 'onnxruntime-node' && !custom)) s = await NodeSession.create(p, config, defaults);
  else {
    const status = capi.bindingStatus();
    if (status.ok) s = new NativeSession(p, config, defaults);
    else if (p.ep === 'cpu' && runtime !== 'c-api' && !custom) s = await NodeSession.create(p, config, defaults);
    else throw appError('ORT_BINDING_UNAVAILABLE', { detail: status.reason });
  }
  removeTelemetryLog();
  try {
    bindDefaults(s, Object.keys(defaults));
  } catch (e) {
    s.release();
    throw e;
  }
  const id = nextSession++;
  sessions.set(id, s);
  return {
    session: id, inputs: s.inputs.filter((n) => !(n in defaults)), optionalInputs: Object.keys(defaults), outputs: s.outputs, prepared,
    runtime: s instanceof NativeSession ? 'c-api' : 'onnxruntime-node',
    ...(s instanceof NativeSession && s.providerOptions ? { providerOptions: s.providerOptions } : {}),
  };
}

function sessionOf(id: number): WorkerSession {
  const s = sessions.get(id);
  if (!s) throw new Error(`session ${id} was released`);
  return s;
}

/** Binds the inputs `names` to their defaults, replacing (and so freeing) what was bound to them. */
function bindDefaults(s: WorkerSession, names: string[]): void {
  const missing = names.filter((n) => !(n in s.defaults));
  if (missing.length) throw new Error(`inputs without a default: ${missing.join(', ')}`);
  if (!names.length) return;
  s.bind(Object.fromEntries(names.map((n) => [n, s.defaults[n]])));
  for (const n of names) s.bound.add(n);
}

/** Every input must come from this run's feeds or from an earlier bind; no feed may name an unknown input. */
function checkFeeds(s: WorkerSession, bound: Set<string>, feeds: Record<string, Feed>): void {
  const missing = s.inputs.filter((n) => !(n in feeds) && !bound.has(n));
  if (missing.length) throw new Error(`missing inputs: ${missing.join(', ')} (the model takes ${s.inputs.join(', ')})`);
  const extra = Object.keys(feeds).filter((n) => !s.inputs.includes(n));
  if (extra.length) throw new Error(`unknown inputs: ${extra.join(', ')} (the model takes ${s.inputs.join(', ')})`);
}

async function run(req: RunRequest): Promise<RunResult> {
  const s = sessionOf(req.session);
  checkFeeds(s, s.bound, req.feeds);
  const unknown = (req.outputs ?? []).filter((n) => !s.outputs.includes(n));
  if (unknown.length) throw new Error(`unknown outputs: ${unknown.join(', ')} (the model gives ${s.outputs.join(', ')})`);
  const wanted = req.outputs ?? s.outputs;
  const notComputed = (req.keep ?? []).filter((n) => !wanted.includes(n));
  if (notComputed.length) throw new Error(`cannot keep ${notComputed.join(', ')}: not among the computed outputs (${wanted.join(', ')})`);
  // a run's own feeds replace earlier bound values of the same name for good
  for (const n of Object.keys(req.feeds)) s.bound.delete(n);
  return s.run(req);
}

function toOrt(name: string, t: HostTensor): ort.Tensor {
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (t.data.length !== n) throw appError('ORT_TENSOR_INVALID', { name: `input "${name}"`, detail: `${t.data.length} values for dims [${t.dims.join(', ')}]` });
  return new ort.Tensor(t.dtype, t.data as any, t.dims);
}

function fromOrt(t: ort.Tensor): HostTensor {
  const dtype = t.type as string;
  const ok: HostDType[] = ['float32', 'float16', 'int64', 'int32', 'uint8', 'bool'];
  if (!ok.includes(dtype as HostDType)) throw new Error(`output of type ${dtype} cannot cross to JavaScript; cast it in the graph`);
  const data = t.data as HostTensor['data'];
  // Own the bytes (the binding may hand out views of memory it manages) so the buffer can be transferred.
  const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer ? data : data.slice();
  return { dtype: dtype as HostDType, dims: [...t.dims], data: own as HostTensor['data'] };
}

async function handle(req: Request): Promise<{ result: any; transfer: ArrayBuffer[] }> {
  switch (req.op) {
    case 'create': return { result: await create(req.payload), transfer: [] };
    case 'run': {
      const out = await run(req);
      return { result: out, transfer: buffersOf(out) };
    }
    case 'bind': {
      const targets = [req.session, ...(req.also ?? [])].map(sessionOf);
      // unknown names only: a bind may cover any subset
      for (const s of targets) checkFeeds(s, new Set(s.inputs), req.feeds);
      for (const s of targets) {
        s.bind(req.feeds);
        for (const n of Object.keys(req.feeds)) s.bound.add(n);
      }
      return { result: null, transfer: [] };
    }
    case 'unbind': {
      bindDefaults(sessionOf(req.session), req.names);
      return { result: null, transfer: [] };
    }
    case 'free': {
      for (const ref of req.refs) freeKept(ref);
      return { result: null, transfer: [] };
    }
    case 'release': {
      const s = sessions.get(req.session);
      sessions.delete(req.session);
      s?.release();
      if (!sessions.size) { // no session left to run on them
        releaseStreams();
        for (const d of domains.values()) d.release();
        domains.clear();
      }
      return { result: null, transfer: [] };
    }
  }
}

parentPort!.on('message', async (req: Request) => {
  let msg: Response;
  let transfer: ArrayBuffer[] = [];
  const t0 = performance.now();
  try {
    const r = await handle(req);
    msg = { id: req.id, ok: true, result: r.result, ms: performance.now() - t0 };
    transfer = r.transfer;
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    msg = { id: req.id, ok: false, error: { name: err.name, message: err.message, stack: err.stack, code: (err as AppError).code } };
  }
  parentPort!.postMessage(msg, transfer);
});
