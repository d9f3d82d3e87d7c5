/**
 * A thin typed binding of ONNX Runtime's C API (onnxruntime_c_api.h, ORT_API_VERSION 29 = ONNX Runtime
 * 1.29.0) over koffi, driving the very libonnxruntime.so.1 that onnxruntime-node ships. It exists for what
 * onnxruntime-node's JavaScript API cannot reach: the CUDA provider's options, IO binding with tensors that
 * stay on the device between runs (and between sessions), and run options such as arena shrinkage.
 *
 * Only the entries the runtime uses are bound, each by its slot in the OrtApi table (the table only ever grows,
 * so slots never move; the numbers below were checked against the header of 1.29.0 and ONNX Runtime's own C#
 * table). `GetApi(29)` and the library's version string guard the match.
 *
 * Ownership: every native object is wrapped in a `Handle` and freed by `release()`, exactly once; a released
 * handle refuses further use with ORT_RELEASED instead of handing ONNX Runtime a dangling pointer. Every
 * OrtStatus becomes an ORT_CALL_FAILED AppError naming the call, ONNX Runtime's error code and its message
 * (the status itself is released first). Memory ONNX Runtime hands back (names, option strings, bound output
 * arrays) is freed with its allocator here.
 *
 * Host memory wrapped into a tensor (`Tensor.wrap`) is not copied: the caller keeps the TypedArray alive (and
 * does not transfer it) for as long as ONNX Runtime may read it.
 *
 * Everything here blocks the calling thread: it runs in session workers only (worker.ts).
 */
import koffi from 'koffi';
import { join } from 'node:path';
import { appError, AppError } from '../errors.js';
import type { HostDType, HostTensor } from '../onnx/safetensors.js';
import { ortLibDir } from './providers.js';

export const ORT_API_VERSION = 29;
export const ORT_VERSION = '1.29.0';

export type Ptr = unknown; // koffi's pointers (BigInt addresses in koffi 3)

/** OrtApi slots used here, with their C signatures (OrtStatus* is `void*`: null means success). */
const ENTRIES = {
  CreateStatus: [0, 'void* f(int code, const char* msg)'],
  GetErrorCode: [1, 'int f(void* status)'],
  GetErrorMessage: [2, 'const char* f(void* status)'],
  CreateEnv: [3, 'void* f(int level, const char* logid, _Out_ void** out)'],
  CreateSessionFromArray: [8, 'void* f(void* env, const void* data, size_t len, void* options, _Out_ void** out)'],
  CreateSessionOptions: [10, 'void* f(_Out_ void** out)'],
  EnableProfiling: [14, 'void* f(void* options, const char* prefix)'],
  DisableMemPattern: [17, 'void* f(void* options)'],
  DisableCpuMemArena: [19, 'void* f(void* options)'],
  SetSessionLogSeverityLevel: [22, 'void* f(void* options, int level)'],
  SetSessionGraphOptimizationLevel: [23, 'void* f(void* options, int level)'],
  SetIntraOpNumThreads: [24, 'void* f(void* options, int threads)'],
  CreateCustomOpDomain: [26, 'void* f(const char* domain, _Out_ void** out)'],
  CustomOpDomain_Add: [27, 'void* f(void* domain, void* op)'],
  AddCustomOpDomain: [28, 'void* f(void* options, void* domain)'],
  SessionGetInputCount: [30, 'void* f(void* session, _Out_ size_t* out)'],
  SessionGetOutputCount: [31, 'void* f(void* session, _Out_ size_t* out)'],
  SessionGetInputName: [36, 'void* f(void* session, size_t index, void* allocator, _Out_ void** out)'],
  SessionGetOutputName: [37, 'void* f(void* session, size_t index, void* allocator, _Out_ void** out)'],
  CreateRunOptions: [39, 'void* f(_Out_ void** out)'],
  CreateTensorWithDataAsOrtValue: [49, 'void* f(void* info, void* data, size_t len, const int64_t* shape, size_t rank, int type, _Out_ void** out)'],
  GetTensorMutableData: [51, 'void* f(void* value, _Out_ void** out)'],
  GetTensorElementType: [60, 'void* f(void* info, _Out_ int* out)'],
  GetDimensionsCount: [61, 'void* f(void* info, _Out_ size_t* out)'],
  GetDimensions: [62, 'void* f(void* info, int64_t* dims, size_t rank)'],
  GetTensorTypeAndShape: [65, 'void* f(void* value, _Out_ void** out)'],
  CreateMemoryInfo: [68, 'void* f(const char* name, int type, int id, int memType, _Out_ void** out)'],
  CreateCpuMemoryInfo: [69, 'void* f(int type, int memType, _Out_ void** out)'],
  MemoryInfoGetName: [71, 'void* f(void* info, _Out_ const char** out)'],
  AllocatorFree: [76, 'void* f(void* allocator, void* p)'],
  GetAllocatorWithDefaultOptions: [78, 'void* f(_Out_ void** out)'],
  KernelInfoGetAttribute_float: [85, 'void* f(void* info, const char* name, _Out_ float* out)'],
  KernelContext_GetInput: [90, 'void* f(void* context, size_t index, _Out_ void** out)'],
  KernelContext_GetOutput: [91, 'void* f(void* context, size_t index, const int64_t* dims, size_t rank, _Out_ void** out)'],
  ReleaseEnv: [92, 'void f(void* p)'],
  ReleaseStatus: [93, 'void f(void* p)'],
  ReleaseMemoryInfo: [94, 'void f(void* p)'],
  ReleaseSession: [95, 'void f(void* p)'],
  ReleaseValue: [96, 'void f(void* p)'],
  ReleaseRunOptions: [97, 'void f(void* p)'],
  ReleaseTensorTypeAndShapeInfo: [99, 'void f(void* p)'],
  ReleaseSessionOptions: [100, 'void f(void* p)'],
  ReleaseCustomOpDomain: [101, 'void f(void* p)'],
  SessionEndProfiling: [110, 'void* f(void* session, void* allocator, _Out_ void** out)'],
  AddSessionConfigEntry: [130, 'void* f(void* options, const char* key, const char* value)'],
  RunWithBinding: [133, 'void* f(void* session, void* runOptions, void* binding)'],
  CreateIoBinding: [134, 'void* f(void* session, _Out_ void** out)'],
  ReleaseIoBinding: [135, 'void f(void* p)'],
  BindInput: [136, 'void* f(void* binding, const char* name, void* value)'],
  BindOutputToDevice: [138, 'void* f(void* binding, const char* name, void* info)'],
  GetBoundOutputValues: [140, 'void* f(void* binding, void* allocator, _Out_ void** values, _Out_ size_t* count)'],
  ClearBoundOutputs: [142, 'void f(void* binding)'],
  AddRunConfigEntry: [165, 'void* f(void* runOptions, const char* key, const char* value)'],
  KernelContext_GetGPUComputeStream: [193, 'void* f(void* context, _Out_ void** out)'],
  GetTensorMemoryInfo: [194, 'void* f(void* value, _Out_ void** out)'],
  SynchronizeBoundInputs: [202, 'void* f(void* binding)'],
  SessionOptionsAppendExecutionProvider_CUDA_V2: [204, 'void* f(void* options, void* cudaOptions)'],
  CreateCUDAProviderOptions: [205, 'void* f(_Out_ void** out)'],
  UpdateCUDAProviderOptions: [206, 'void* f(void* cudaOptions, const char** keys, const char** values, size_t n)'],
  GetCUDAProviderOptionsAsString: [207, 'void* f(void* cudaOptions, void* allocator, _Out_ void** out)'],
  ReleaseCUDAProviderOptions: [208, 'void f(void* p)'],
} as const;

export type Entry = keyof typeof ENTRIES;
type Api = Record<Entry, (...args: any[]) => any>;

/** ONNX Runtime's OrtErrorCode names, for messages. */
const ERROR_CODES = ['OK', 'FAIL', 'INVALID_ARGUMENT', 'NO_SUCHFILE', 'NO_MODEL', 'ENGINE_ERROR', 'RUNTIME_EXCEPTION',
  'INVALID_PROTOBUF', 'MODEL_LOADED', 'NOT_IMPLEMENTED', 'INVALID_GRAPH', 'EP_FAIL', 'MODEL_LOAD_CANCELED',
  'MODEL_REQUIRES_COMPILATION', 'NOT_FOUND'];

/** ONNXTensorElementDataType of each dtype that crosses to JavaScript. */
const ELEMENT: Record<HostDType, number> = { float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9, float16: 10 };
const DTYPE = new Map(Object.entries(ELEMENT).map(([k, v]) => [v, k as HostDType]));
const ARRAY: Record<HostDType, { new (b: ArrayBuffer, offset?: number, length?: number): HostTensor['data'] }> = {
  float32: Float32Array, uint8: Uint8Array, int32: Int32Array, int64: BigInt64Array, bool: Uint8Array, float16: Uint16Array,
};

const ORT_ARENA_ALLOCATOR = 1;
const ORT_MEM_TYPE_DEFAULT = 0;
const ORT_ENABLE_ALL = 99;

// `lib` is kept: koffi unloads a library whose handle is garbage-collected, and every entry with it
let loaded: { api: Api; version: string; lib: unknown } | null = null;
let loadError: AppError | null = null;

/**
 * Loads the library and the API table once per thread; throws ORT_BINDING_UNAVAILABLE with the reason.
 * (api, check, out and Handle are exported for the custom operators of ort-custom-ops.ts only.)
 */
export function api(): Api {
  if (loaded) return loaded.api;
  if (loadError) throw loadError;
  const file = join(ortLibDir(), process.platform === 'win32' ? 'onnxruntime.dll' : process.platform === 'darwin' ? 'libonnxruntime.1.dylib' : 'libonnxruntime.so.1');
  try {
    const lib = koffi.load(file);
    const base = lib.func('void* OrtGetApiBase()')();
    const [getApi, getVersion] = koffi.decode(base, 'void*', 2) as Ptr[];
    const version = koffi.decode(getVersion, koffi.proto('const char* OrtGetVersionString()'))() as string;
    if (version !== ORT_VERSION) throw new Error(`${file} is ONNX Runtime ${version}; this binding is written for ${ORT_VERSION}`);
    const table = koffi.decode(getApi, koffi.proto('void* OrtGetApi(uint32_t version)'))(ORT_API_VERSION);
    if (!table) throw new Error(`${file} does not provide OrtApi version ${ORT_API_VERSION}`);
    const slots = koffi.decode(table, 'void*', Math.max(...Object.values(ENTRIES).map(([i]) => i)) + 1) as Ptr[];
    const bound = {} as Api;
    for (const [name, [slot, signature]] of Object.entries(ENTRIES) as [Entry, readonly [number, string]][]) {
      bound[name] = koffi.decode(slots[slot], koffi.proto(signature.replace(' f(', ` Ort${name}(`)));
    }
    loaded = { api: bound, version, lib };
    return bound;
  } catch (e) {
    loadError = e instanceof AppError ? e : appError('ORT_BINDING_UNAVAILABLE', { detail: (e as Error).message }, e);
    throw loadError;
  }
}

/** Whether the binding loads here (with the reason when not): the worker falls back to onnxruntime-node. */
export function bindingStatus(): { ok: true; version: string } | { ok: false; reason: string } {
  try {
    api();
    return { ok: true, version: loaded!.version };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

/** Turns an OrtStatus into an ORT_CALL_FAILED error (releasing the status); null status = success. */
export function check(call: string, status: Ptr): void {
  if (!status) return;
  const a = api();
  const code = a.GetErrorCode(status) as number;
  const message = a.GetErrorMessage(status) as string;
  a.ReleaseStatus(status);
  throw appError('ORT_CALL_FAILED', { call, code: ERROR_CODES[code] ?? `code ${code}`, detail: message });
}

/** Calls `name` with an out-pointer appended and returns what it wrote. */
export function out<T = Ptr>(name: Entry, ...args: unknown[]): T {
  const cell: unknown[] = [null];
  check(name, api()[name](...args, cell));
  return cell[0] as T;
}

/** Reads a string ONNX Runtime allocated with `allocator`, then frees it. */
function takeString(p: Ptr): string {
  try {
    return koffi.decode(p, 'char', -1) as string;
  } finally {
    check('AllocatorFree', api().AllocatorFree(defaultAllocator(), p));
  }
}

let allocator: Ptr = null;
/** ONNX Runtime's default CPU allocator (owned by the library: never released). */
function defaultAllocator(): Ptr {
  return (allocator ??= out('GetAllocatorWithDefaultOptions'));
}

/**
 * One owned native object. `ptr` throws once `release()` has run, so a released handle can never reach ONNX
 * Runtime again; `release()` is idempotent.
 */
export abstract class Handle {
  #ptr: Ptr;
  constructor(ptr: Ptr, readonly kind: string, private readonly releaser: Entry) {
    if (!ptr) throw appError('ORT_CALL_FAILED', { call: `create ${kind}`, code: 'FAIL', detail: 'ONNX Runtime returned no object' });
    this.#ptr = ptr;
    live.add(this);
  }
  get ptr(): Ptr {
    if (this.#ptr === null) throw appError('ORT_RELEASED', { what: this.kind });
    return this.#ptr;
  }
  get released(): boolean { return this.#ptr === null; }
  release(): void {
    if (this.#ptr === null) return;
    const p = this.#ptr;
    this.#ptr = null;
    live.delete(this);
    api()[this.releaser](p);
  }
}

/** Handles alive in this thread, by kind: lets tests and the worker prove nothing leaks. */
const live = new Set<Handle>();
export function liveHandles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const h of live) counts[h.kind] = (counts[h.kind] ?? 0) + 1;
  return counts;
}

let env: Env | null = null;

/** The process's OrtEnv (ONNX Runtime shares one per process; every thread takes a reference). */
export class Env extends Handle {
  private constructor(ptr: Ptr) { super(ptr, 'Env', 'ReleaseEnv'); }
  static get(): Env {
    // The env must exist before any provider call, so every other constructor starts here.
    return (env ??= new Env(out('CreateEnv', 2, 'framepack')));
  }
}

export class MemoryInfo extends Handle {
  private constructor(ptr: Ptr) { super(ptr, 'MemoryInfo', 'ReleaseMemoryInfo'); }
  static cpu(): MemoryInfo {
    Env.get();
    return new MemoryInfo(out('CreateCpuMemoryInfo', ORT_ARENA_ALLOCATOR, ORT_MEM_TYPE_DEFAULT));
  }
  /** Device memory of the CUDA provider ("Cuda") on `deviceId`. */
  static cuda(deviceId: number): MemoryInfo {
    Env.get();
    return new MemoryInfo(out('CreateMemoryInfo', 'Cuda', ORT_ARENA_ALLOCATOR, deviceId, ORT_MEM_TYPE_DEFAULT));
  }
}

/** An OrtValue holding a tensor, on the host or on a device. */
export class Tensor extends Handle {
  private constructor(ptr: Ptr, readonly dtype: HostDType, readonly dims: number[]) { super(ptr, 'Value', 'ReleaseValue'); }

  /**
   * Wraps host memory without copying. `t.data` must stay alive and in place until the tensor (and every
   * binding it was bound to) is released.
   */
  static wrap(t: HostTensor, where: MemoryInfo, name = 'tensor'): Tensor {
    const n = t.dims.reduce((a, b) => a * b, 1);
    if (t.data.length !== n) throw appError('ORT_TENSOR_INVALID', { name, detail: `${t.data.length} values for dims [${t.dims.join(', ')}]` });
    const element = ELEMENT[t.dtype];
    if (element === undefined) throw appError('ORT_TENSOR_INVALID', { name, detail: `dtype ${t.dtype} cannot cross to ONNX Runtime` });
    const shape = BigInt64Array.from(t.dims, (d) => BigInt(d));
    return new Tensor(out('CreateTensorWithDataAsOrtValue', where.ptr, t.data, t.data.byteLength, shape, shape.length, element),
      t.dtype, [...t.dims]);
  }

  /** Takes ownership of an OrtValue ONNX Runtime returned, reading its dtype and dims. */
  static adopt(ptr: Ptr): Tensor {
    const a = api();
    let info: Ptr = null;
    try {
      info = out('GetTensorTypeAndShape', ptr);
      const element = out<number>('GetTensorElementType', info);
      const rank = Number(out<number>('GetDimensionsCount', info));
      const dims = new BigInt64Array(rank);
      check('GetDimensions', a.GetDimensions(info, dims, rank));
      const dtype = DTYPE.get(element);
      if (!dtype) throw appError('ORT_TENSOR_INVALID', { name: 'output', detail: `an output of element type ${element} cannot cross to JavaScript; cast it in the graph` });
      return new Tensor(ptr, dtype, Array.from(dims, Number));
    } catch (e) {
      a.ReleaseValue(ptr);
      throw e;
    } finally {
      if (info) a.ReleaseTensorTypeAndShapeInfo(info);
    }
  }

  /** The allocator name of the memory holding the data ("Cpu", "Cuda", "CudaPinned"...). */
  get location(): string {
    return out<string>('MemoryInfoGetName', out('GetTensorMemoryInfo', this.ptr));
  }

  /**
   * A JavaScript-owned copy of host data (the tensor may be released afterwards): into the first bytes of
   * `into` when it is large enough (the data a view of them), else into a new buffer.
   */
  toHost(into?: ArrayBuffer): HostTensor {
    const n = this.dims.reduce((a, b) => a * b, 1);
    const bytes = n * bytesPer(this.dtype);
    const copy = into && into.byteLength >= bytes ? into : new ArrayBuffer(bytes);
    if (bytes > 0) new Uint8Array(copy, 0, bytes).set(new Uint8Array(koffi.view(out('GetTensorMutableData', this.ptr), bytes)));
    return { dtype: this.dtype, dims: [...this.dims], data: new ARRAY[this.dtype](copy, 0, n) };
  }
}

function bytesPer(dtype: HostDType): number {
  return dtype === 'float32' || dtype === 'int32' ? 4 : dtype === 'int64' ? 8 : dtype === 'float16' ? 2 : 1;
}

export class CudaProviderOptions extends Handle {
  private constructor(ptr: Ptr) { super(ptr, 'CUDAProviderOptions', 'ReleaseCUDAProviderOptions'); }
  /** ONNX Runtime validates every key and value here: an unknown key is an ORT_CALL_FAILED error. */
  static create(options: Record<string, string>): CudaProviderOptions {
    Env.get();
    const o = new CudaProviderOptions(out('CreateCUDAProviderOptions'));
    try {
      const keys = Object.keys(options);
      if (keys.length) check('UpdateCUDAProviderOptions', api().UpdateCUDAProviderOptions(o.ptr, keys, keys.map((k) => options[k]), keys.length));
      return o;
    } catch (e) {
      o.release();
      throw e;
    }
  }
  /** The effective options as ONNX Runtime reports them ("key=value;..."). */
  describe(): string {
    return takeString(out('GetCUDAProviderOptionsAsString', this.ptr, defaultAllocator()));
  }
}

export interface SessionSettings {
  /** session config entries ("session.use_device_allocator_for_initializers" -> "1") */
  config?: Record<string, string>;
  intraOpThreads?: number;
  logSeverityLevel?: number;
  /** false: no CPU arena and no memory patterns */
  memoryArena?: boolean;
  /** false: no memory patterns (the arena stays) */
  memoryPattern?: boolean;
  /** present: the CUDA provider with these options (device_id among them) */
  cuda?: Record<string, string>;
  /** present: ONNX Runtime's profiler on, its JSON file named `${profile}_<date>.json` (Session.endProfiling) */
  profile?: string;
}

export class SessionOptions extends Handle {
  private constructor(ptr: Ptr) { super(ptr, 'SessionOptions', 'ReleaseSessionOptions'); }
  static create(s: SessionSettings): SessionOptions {
    Env.get();
    const a = api();
    const o = new SessionOptions(out('CreateSessionOptions'));
    try {
      check('SetSessionGraphOptimizationLevel', a.SetSessionGraphOptimizationLevel(o.ptr, ORT_ENABLE_ALL));
      if (s.intraOpThreads) check('SetIntraOpNumThreads', a.SetIntraOpNumThreads(o.ptr, s.intraOpThreads));
      if (s.logSeverityLevel !== undefined) check('SetSessionLogSeverityLevel', a.SetSessionLogSeverityLevel(o.ptr, s.logSeverityLevel));
      if (s.memoryArena === false) check('DisableCpuMemArena', a.DisableCpuMemArena(o.ptr));
      if (s.memoryArena === false || s.memoryPattern === false) check('DisableMemPattern', a.DisableMemPattern(o.ptr));
      if (s.profile) check('EnableProfiling', a.EnableProfiling(o.ptr, s.profile));
      for (const [k, v] of Object.entries(s.config ?? {})) check('AddSessionConfigEntry', a.AddSessionConfigEntry(o.ptr, k, v));
      if (s.cuda) {
        const cuda = CudaProviderOptions.create(s.cuda);
        try {
          check('SessionOptionsAppendExecutionProvider_CUDA_V2', a.SessionOptionsAppendExecutionProvider_CUDA_V2(o.ptr, cuda.ptr));
        } finally {
          cuda.release(); // the session options keep their own copy
        }
      }
      return o;
    } catch (e) {
      o.release();
      throw e;
    }
  }
}

export class RunOptions extends Handle {
  private constructor(ptr: Ptr) { super(ptr, 'RunOptions', 'ReleaseRunOptions'); }
  /** `config`: run config entries, e.g. memory.enable_memory_arena_shrinkage = "gpu:0". */
  static create(config: Record<string, string> = {}): RunOptions {
    Env.get();
    const r = new RunOptions(out('CreateRunOptions'));
    try {
      for (const [k, v] of Object.entries(config)) check('AddRunConfigEntry', api().AddRunConfigEntry(r.ptr, k, v));
      return r;
    } catch (e) {
      r.release();
      throw e;
    }
  }
}

export class Session extends Handle {
  readonly inputs: string[];
  readonly outputs: string[];
  private constructor(ptr: Ptr) {
    super(ptr, 'Session', 'ReleaseSession');
    this.inputs = this.names('SessionGetInputCount', 'SessionGetInputName');
    this.outputs = this.names('SessionGetOutputCount', 'SessionGetOutputName');
  }

  /** A session from model bytes; external initializers are found through the config entry of `options`. */
  static create(model: Uint8Array, options: SessionOptions): Session {
    const env = Env.get();
    const ptr = out('CreateSessionFromArray', env.ptr, model, model.byteLength, options.ptr);
    try {
      return new Session(ptr);
    } catch (e) {
      api().ReleaseSession(ptr);
      throw e;
    }
  }

  /** Stops the profiler of a session created with `profile` and returns the file it wrote. */
  endProfiling(): string {
    return takeString(out('SessionEndProfiling', this.ptr, defaultAllocator()));
  }

  private names(count: 'SessionGetInputCount' | 'SessionGetOutputCount', name: 'SessionGetInputName' | 'SessionGetOutputName'): string[] {
    const n = Number(out<number>(count, this.ptr));
    return Array.from({ length: n }, (_, i) => takeString(out(name, this.ptr, i, defaultAllocator())));
  }
}

/**
 * An IO binding of one session: inputs stay bound (and, for a device session, copied to the device once, when
 * bound) until bound again; outputs are bound to a memory location before each run.
 */
export class IoBinding extends Handle {
  private constructor(ptr: Ptr, readonly session: Session) { super(ptr, 'IoBinding', 'ReleaseIoBinding'); }
  static create(session: Session): IoBinding {
    return new IoBinding(out('CreateIoBinding', session.ptr), session);
  }
  /** Binds `value` to input `name`; a host value bound to a device input is copied to the device now. */
  bindInput(name: string, value: Tensor): void {
    check('BindInput', api().BindInput(this.ptr, name, value.ptr));
  }
  /** Waits for the copies bindInput started. */
  synchronizeInputs(): void {
    check('SynchronizeBoundInputs', api().SynchronizeBoundInputs(this.ptr));
  }
  /** Output `name` of the next runs goes to memory of `where` (allocated by ONNX Runtime per run). */
  bindOutput(name: string, where: MemoryInfo): void {
    check('BindOutputToDevice', api().BindOutputToDevice(this.ptr, name, where.ptr));
  }
  clearOutputs(): void {
    api().ClearBoundOutputs(this.ptr);
  }
  /** Runs the session on what is bound; returns the outputs in the order they were bound (owned by the caller). */
  run(options: RunOptions | null): Tensor[] {
    const a = api();
    check('RunWithBinding', a.RunWithBinding(this.session.ptr, options ? options.ptr : null, this.ptr));
    const values: unknown[] = [null];
    const count: unknown[] = [0];
    check('GetBoundOutputValues', a.GetBoundOutputValues(this.ptr, defaultAllocator(), values, count));
    const n = Number(count[0]);
    if (n === 0) return [];
    const ptrs = koffi.decode(values[0], 'void*', n) as Ptr[];
    check('AllocatorFree', a.AllocatorFree(defaultAllocator(), values[0]));
    const tensors: Tensor[] = [];
    try {
      for (const p of ptrs) tensors.push(Tensor.adopt(p));
    } catch (e) {
      for (const t of tensors) t.release();
      for (const p of ptrs.slice(tensors.length + 1)) a.ReleaseValue(p);
      throw e;
    }
    return tensors;
  }
}

/** Builds an OrtStatus and turns it back into an error: proves the status path without a failing call (tests). */
export function statusRoundTrip(code: number, message: string): void {
  check('CreateStatus', api().CreateStatus(code, message));
}
