/**
 * The few entries of the CUDA driver API (libcuda.so.1) and NVRTC (libnvrtc) that custom kernels need: CUDA C
 * compiled at run time for the device in use, loaded as a module, launched on a stream ONNX Runtime hands over
 * (ort-custom-ops.ts, KernelContext.stream). Bound with koffi, like ort-api.ts; compiling and launching block, so
 * they run in session workers; `cudaDriverProblem` (loading the libraries) also runs at setup, to choose.
 *
 * The module is loaded into the context current on the calling thread, which ONNX Runtime's CUDA provider makes
 * its device's primary context (the runtime API); where none is current, the context of the stream the kernel will
 * run on is made current, so that module and provider share one context on any device.
 */
import koffi from 'koffi';

type Fn = (...args: any[]) => any;
interface Libs { cu: Record<string, Fn>; nvrtc: Record<string, Fn>; keep: unknown[] }
let libs: Libs | null = null;

const NVRTC_NAMES = ['libnvrtc.so.13', 'libnvrtc.so.12', 'libnvrtc.so'];
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;

/** The first of `names` that loads (a library's versioned names, newest first); an error naming every try. */
export function loadFirst(names: readonly string[], what: string): ReturnType<typeof koffi.load> {
  const tried: string[] = [];
  for (const name of names) {
    try {
      return koffi.load(name);
    } catch (e) {
      tried.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new Error(`${what} cannot be loaded (${tried.join('; ')})`);
}

/** Null when `load` succeeds; otherwise why not (the first line of its error). */
export function loadProblem(load: () => unknown): string | null {
  try {
    load();
    return null;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

function load(): Libs {
  if (libs) return libs;
  const cuda = koffi.load('libcuda.so.1');
  const nv = loadFirst(NVRTC_NAMES, 'NVRTC');
  const cu = {
    cuInit: cuda.func('int cuInit(unsigned int flags)'),
    cuGetErrorString: cuda.func('int cuGetErrorString(int error, _Out_ const char** out)'),
    cuCtxGetCurrent: cuda.func('int cuCtxGetCurrent(_Out_ void** ctx)'),
    cuCtxSetCurrent: cuda.func('int cuCtxSetCurrent(void* ctx)'),
    cuCtxGetDevice: cuda.func('int cuCtxGetDevice(_Out_ int* device)'),
    cuDeviceGetAttribute: cuda.func('int cuDeviceGetAttribute(_Out_ int* value, int attribute, int device)'),
    cuStreamGetCtx: cuda.func('int cuStreamGetCtx(void* stream, _Out_ void** ctx)'),
    cuModuleLoadData: cuda.func('int cuModuleLoadData(_Out_ void** module, const void* image)'),
    cuModuleGetFunction: cuda.func('int cuModuleGetFunction(_Out_ void** fn, void* module, const char* name)'),
    cuMemAlloc: cuda.func('int cuMemAlloc_v2(_Out_ uint64_t* ptr, size_t bytes)'),
    cuMemFree: cuda.func('int cuMemFree_v2(uint64_t ptr)'),
    cuLaunchKernel: cuda.func('int cuLaunchKernel(void* f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, void* stream, void* params, void* extra)'),
  };
  const nvrtc = {
    nvrtcGetErrorString: nv.func('const char* nvrtcGetErrorString(int result)'),
    nvrtcCreateProgram: nv.func('int nvrtcCreateProgram(_Out_ void** prog, const char* src, const char* name, int headers, void* sources, void* names)'),
    nvrtcCompileProgram: nv.func('int nvrtcCompileProgram(void* prog, int n, const char** options)'),
    nvrtcGetProgramLogSize: nv.func('int nvrtcGetProgramLogSize(void* prog, _Out_ size_t* size)'),
    nvrtcGetProgramLog: nv.func('int nvrtcGetProgramLog(void* prog, void* log)'),
    nvrtcGetCUBINSize: nv.func('int nvrtcGetCUBINSize(void* prog, _Out_ size_t* size)'),
    nvrtcGetCUBIN: nv.func('int nvrtcGetCUBIN(void* prog, void* cubin)'),
    nvrtcDestroyProgram: nv.func('int nvrtcDestroyProgram(_Inout_ void** prog)'),
  };
  libs = { cu, nvrtc, keep: [cuda, nv] }; // koffi unloads a library whose handle is collected
  return libs;
}

/** Null when libcuda and NVRTC load in this process; otherwise why not (one line). */
export const cudaDriverProblem = (): string | null => loadProblem(load);

function cuCheck(call: string, result: number): void {
  if (result === 0) return;
  const text: unknown[] = [null];
  load().cu.cuGetErrorString(result, text);
  throw new Error(`${call} failed: CUDA error ${result}${text[0] ? ` (${text[0]})` : ''}`);
}

function cuOut<T>(call: string, ...args: unknown[]): T {
  const cell: unknown[] = [null];
  cuCheck(call, load().cu[call](cell, ...args));
  return cell[0] as T;
}

function nvCheck(call: string, result: number, log = ''): void {
  if (result !== 0) throw new Error(`${call} failed: ${load().nvrtc.nvrtcGetErrorString(result)}${log ? `\n${log}` : ''}`);
}

/** The device of the context current on this thread (`stream`'s context, made current when none is). */
function currentDevice(stream: unknown): number {
  const { cu } = load();
  cuCheck('cuInit', cu.cuInit(0));
  if (!cuOut<unknown>('cuCtxGetCurrent')) {
    const ctx: unknown[] = [null];
    cuCheck('cuStreamGetCtx', cu.cuStreamGetCtx(stream, ctx));
    cuCheck('cuCtxSetCurrent', cu.cuCtxSetCurrent(ctx[0]));
  }
  return cuOut<number>('cuCtxGetDevice');
}

/** Compiles CUDA C for the current device (machine code for its architecture): the cubin bytes. */
function compile(source: string, name: string, device: number): Uint8Array {
  const { nvrtc } = load();
  const major = cuOut<number>('cuDeviceGetAttribute', CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device);
  const minor = cuOut<number>('cuDeviceGetAttribute', CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device);
  const prog: unknown[] = [null];
  nvCheck('nvrtcCreateProgram', nvrtc.nvrtcCreateProgram(prog, source, name, 0, null, null));
  try {
    const options = [`--gpu-architecture=sm_${major}${minor}`, '--std=c++17'];
    const result = nvrtc.nvrtcCompileProgram(prog[0], options.length, options);
    if (result !== 0) {
      const size: unknown[] = [0];
      nvrtc.nvrtcGetProgramLogSize(prog[0], size);
      const log = new Uint8Array(Number(size[0]));
      nvrtc.nvrtcGetProgramLog(prog[0], log);
      nvCheck('nvrtcCompileProgram', result, Buffer.from(log).toString('utf8').replace(/\0+$/, ''));
    }
    const size: unknown[] = [0];
    nvCheck('nvrtcGetCUBINSize', nvrtc.nvrtcGetCUBINSize(prog[0], size));
    const cubin = new Uint8Array(Number(size[0]));
    nvCheck('nvrtcGetCUBIN', nvrtc.nvrtcGetCUBIN(prog[0], cubin));
    return cubin;
  } finally {
    nvrtc.nvrtcDestroyProgram(prog);
  }
}

/** Kernel arguments: 8-byte slots, each a pointer (bigint), an int or a float. */
export type KernelArg = { ptr: bigint } | { i32: number } | { i64: number } | { f32: number };

/**
 * A module compiled from CUDA C, loaded into the current context. It lives as long as the thread (modules are few
 * and small: a session worker compiles each source once).
 */
export class CudaModule {
  private constructor(private readonly module: unknown) {}

  /** Compiles `source` for the device `stream` (the stream its kernels will be launched on) belongs to. */
  static compile(source: string, name: string, stream: unknown): CudaModule {
    const image = compile(source, `${name}.cu`, currentDevice(stream));
    return new CudaModule(cuOut('cuModuleLoadData', image));
  }

  /** The `extern "C"` kernel `entry`, taking `slots` arguments. */
  kernel(entry: string, slots: number): CudaKernel {
    return new CudaKernel(cuOut('cuModuleGetFunction', this.module, entry), slots);
  }
}

/** A kernel of a CudaModule, with the argument block its launches fill. */
export class CudaKernel {
  private readonly args: bigint;
  private readonly params: bigint;

  constructor(private readonly fn: unknown, private readonly slots: number) {
    // the argument block and the array of pointers into it, written before each launch (the launch copies them)
    this.args = BigInt(koffi.alloc('uint8', 8 * slots) as bigint);
    this.params = BigInt(koffi.alloc('void*', slots) as bigint);
    for (let i = 0; i < slots; i++) koffi.encode(this.params, 8 * i, 'void*', this.args + BigInt(8 * i));
  }

  launch(grid: number, block: number, stream: unknown, args: KernelArg[]): void {
    if (args.length !== this.slots) throw new Error(`kernel takes ${this.slots} arguments, got ${args.length}`);
    args.forEach((a, i) => {
      const off = 8 * i;
      if ('ptr' in a) koffi.encode(this.args, off, 'uint64_t', a.ptr);
      else if ('i32' in a) koffi.encode(this.args, off, 'int32_t', a.i32);
      else if ('i64' in a) koffi.encode(this.args, off, 'int64_t', BigInt(a.i64));
      else koffi.encode(this.args, off, 'float', a.f32);
    });
    cuCheck('cuLaunchKernel', load().cu.cuLaunchKernel(this.fn, grid, 1, 1, block, 1, 1, 0, stream, this.params, null));
  }
}

/**
 * Device memory of the current context, owned here and released once (cuBLASLt's workspace; buffers of the
 * benchmarks).
 */
export class DeviceMemory {
  private live = true;
  private constructor(readonly ptr: bigint, readonly bytes: number) {}

  static alloc(bytes: number): DeviceMemory {
    const { cu } = load();
    cuCheck('cuInit', cu.cuInit(0));
    return new DeviceMemory(BigInt(cuOut<bigint | number>('cuMemAlloc', bytes)), bytes);
  }

  release(): void {
    if (!this.live) return;
    this.live = false;
    cuCheck('cuMemFree', load().cu.cuMemFree(this.ptr));
  }
}
