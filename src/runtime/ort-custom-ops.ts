/**
 * Custom operators whose kernels are JavaScript functions, registered with ONNX Runtime through its C API
 * (struct OrtCustomOp and the OrtCustomOpDomain entries of onnxruntime_c_api.h, 1.29.0). They carry what ONNX
 * Runtime has no kernel for: the DiT's fused elementwise passes, launched on the CUDA provider's stream
 * (dit-kernels.ts), and the same operators on the CPU, which the tests run on the host.
 *
 * ONNX Runtime reads an OrtCustomOp as a version number and a table of function pointers. One set of koffi
 * trampolines per thread serves every operator: each call names its OrtCustomOp (or the kernel made from it), and
 * the trampoline dispatches on that address. The structs are written at version 16, the first that reports a
 * kernel's failure as an OrtStatus (CreateKernelV2, KernelComputeV2): a kernel that throws becomes an
 * ORT_CALL_FAILED error of the Run that called it, never a silent success.
 *
 * Threading: with sequential execution ONNX Runtime calls a kernel on the thread that called Run, inside that
 * synchronous koffi call, where koffi runs the JavaScript callback directly. Register a domain and run its
 * sessions in the same thread (a session worker). A kernel's inputs and outputs are the provider's memory: host
 * memory on the CPU, device memory on CUDA.
 *
 * Ownership: a CustomOpDomain owns its OrtCustomOpDomain and the native memory of its structs and names; it must
 * outlive every session created with it (ONNX Runtime keeps the pointers) and is released once, like any Handle.
 */
import koffi from 'koffi';
import { api, check, Handle, out, type Ptr, type SessionOptions } from './ort-api.js';

export type KernelElement = 'any' | 'float32' | 'int64' | 'float16' | 'bfloat16';
/** ONNXTensorElementDataType; 0 (UNDEFINED) lets a kernel take any type */
const ELEMENT_TYPE: Record<KernelElement, number> = { any: 0, float32: 1, int64: 7, float16: 10, bfloat16: 16 };
export const ELEMENT = { float32: 1, float16: 10, bfloat16: 16 } as const;

const OP_VERSION = 16;
const OP_BYTES = 208; // sizeof(OrtCustomOp) at 1.29 on 64-bit; a version-16 op is read up to KernelComputeV2
const ORT_FAIL = 1;

/** A tensor a kernel reads or writes: its data address (host or device), dims and ONNXTensorElementDataType. */
export interface KernelTensor {
  data: bigint;
  dims: number[];
  element: number;
}

export interface CustomKernel {
  /** the op type in the graph (its domain is the CustomOpDomain's) */
  name: string;
  provider: 'cpu' | 'cuda';
  inputs: KernelElement[];
  outputs: KernelElement[];
  /** float attributes read when ONNX Runtime creates the kernel, with their defaults */
  attributes?: Record<string, number>;
  /** Writes every output; `ctx` is valid during the call only. */
  compute(ctx: KernelContext, attributes: Record<string, number>): void;
}

/** The OrtKernelContext of one kernel call (borrowed: valid during the call). */
export class KernelContext {
  constructor(private readonly ptr: Ptr) {}

  input(index: number): KernelTensor {
    return describe(out('KernelContext_GetInput', this.ptr, index));
  }

  /** Output `index` with `dims`, allocated by ONNX Runtime in the provider's memory. */
  output(index: number, dims: readonly number[]): KernelTensor {
    const shape = BigInt64Array.from(dims, (d) => BigInt(d));
    return describe(out('KernelContext_GetOutput', this.ptr, index, shape, shape.length));
  }

  /** The CUDA stream ONNX Runtime runs this node on (cudaStream_t, null on the CPU). */
  get stream(): Ptr {
    return out('KernelContext_GetGPUComputeStream', this.ptr);
  }
}

function describe(value: Ptr): KernelTensor {
  const a = api();
  const info = out('GetTensorTypeAndShape', value);
  try {
    const element = out<number>('GetTensorElementType', info);
    const rank = Number(out<number>('GetDimensionsCount', info));
    const dims = new BigInt64Array(rank);
    check('GetDimensions', a.GetDimensions(info, dims, rank));
    const data = out('GetTensorMutableData', value) as bigint | null; // null for an empty tensor
    return { data: data === null ? 0n : BigInt(data), dims: Array.from(dims, Number), element };
  } finally {
    a.ReleaseTensorTypeAndShapeInfo(info);
  }
}

/** Host memory of a CPU kernel's tensor as a typed array (no copy; valid during the call). */
export function hostArray<T extends Float32Array | Uint16Array>(t: KernelTensor, type: { new (b: ArrayBuffer): T; BYTES_PER_ELEMENT: number }): T {
  const n = t.dims.reduce((a, b) => a * b, 1);
  return new type(n === 0 ? new ArrayBuffer(0) : koffi.view(t.data, n * type.BYTES_PER_ELEMENT));
}

// ---- the trampolines: one set per thread, dispatching on the OrtCustomOp's address

interface OpEntry { kernel: CustomKernel; name: bigint; provider: bigint | null }
const opsByAddress = new Map<bigint, OpEntry>();
const kernels = new Map<bigint, { op: OpEntry; attributes: Record<string, number> }>();
let nextKernel = 1n;
let trampolines: Map<number, unknown> | null = null; // field offset -> registered function pointer

const addr = (p: Ptr): bigint => BigInt(p as bigint);
const op = (p: Ptr): OpEntry => {
  const e = opsByAddress.get(addr(p));
  if (!e) throw new Error(`no custom operator at ${addr(p)}`);
  return e;
};
const failure = (e: unknown): Ptr => api().CreateStatus(ORT_FAIL, (e as Error)?.message ?? String(e));

function readAttributes(kernel: CustomKernel, info: Ptr): Record<string, number> {
  const values: Record<string, number> = {};
  for (const [name, fallback] of Object.entries(kernel.attributes ?? {})) {
    const cell = [0];
    const status = api().KernelInfoGetAttribute_float(info, name, cell);
    if (status) api().ReleaseStatus(status); // absent: the default
    values[name] = status ? fallback : cell[0];
  }
  return values;
}

function createKernel(p: Ptr, info: Ptr): bigint {
  const entry = op(p);
  const id = nextKernel++;
  kernels.set(id, { op: entry, attributes: readAttributes(entry.kernel, info) });
  return id;
}

/** The function pointers of an OrtCustomOp, by byte offset in the struct (H29's field order). */
function fields(): Map<number, unknown> {
  if (trampolines) return trampolines;
  const reg = (signature: string, fn: (...args: any[]) => unknown) => koffi.register(fn, koffi.pointer(koffi.proto(signature)));
  const types = (list: 'inputs' | 'outputs') => (p: Ptr, i: number) => ELEMENT_TYPE[op(p).kernel[list][Number(i)]] ?? 0;
  trampolines = new Map<number, unknown>([
    [8, reg('void* FpOpCreateKernel(void* op, void* api, void* info)', (p, _a, info) => createKernel(p, info))],
    [16, reg('void* FpOpGetName(void* op)', (p) => op(p).name)],
    [24, reg('void* FpOpGetExecutionProviderType(void* op)', (p) => op(p).provider)],
    [32, reg('int FpOpGetInputType(void* op, size_t i)', types('inputs'))],
    [40, reg('size_t FpOpGetInputTypeCount(void* op)', (p) => op(p).kernel.inputs.length)],
    [48, reg('int FpOpGetOutputType(void* op, size_t i)', types('outputs'))],
    [56, reg('size_t FpOpGetOutputTypeCount(void* op)', (p) => op(p).kernel.outputs.length)],
    [64, reg('void FpOpKernelCompute(void* kernel, void* context)', () => { throw new Error('KernelComputeV2 is used'); })],
    [72, reg('void FpOpKernelDestroy(void* kernel)', (k) => { kernels.delete(addr(k)); })],
    [80, reg('int FpOpGetInputCharacteristic(void* op, size_t i)', () => 0)], // required
    [88, reg('int FpOpGetOutputCharacteristic(void* op, size_t i)', () => 0)],
    [96, reg('int FpOpGetInputMemoryType(void* op, size_t i)', () => 0)], // the provider's default memory
    [136, reg('void* FpOpCreateKernelV2(void* op, void* api, void* info, void** kernel)', (p, _a, info, cell) => {
      try {
        koffi.encode(cell, 'void*', createKernel(p, info));
        return null;
      } catch (e) {
        return failure(e);
      }
    })],
    [144, reg('void* FpOpKernelComputeV2(void* kernel, void* context)', (k, context) => {
      try {
        const kernel = kernels.get(addr(k));
        if (!kernel) throw new Error(`no kernel ${addr(k)}`);
        kernel.op.kernel.compute(new KernelContext(context), kernel.attributes);
        return null;
      } catch (e) {
        return failure(e);
      }
    })],
  ]);
  return trampolines;
}

/** A C string in native memory that stays put (koffi.free releases it). */
function cString(s: string): bigint {
  const bytes = Buffer.from(`${s}\0`, 'utf8');
  const p = koffi.alloc('uint8', bytes.length);
  koffi.encode(p, 'uint8', Array.from(bytes), bytes.length);
  return addr(p);
}

/** Custom operators of one domain, to add to session options. */
export class CustomOpDomain extends Handle {
  private constructor(ptr: Ptr, readonly domain: string, private readonly memory: bigint[], private readonly structs: bigint[]) {
    super(ptr, 'CustomOpDomain', 'ReleaseCustomOpDomain');
  }

  static create(domain: string, kernelList: CustomKernel[]): CustomOpDomain {
    const d = new CustomOpDomain(out('CreateCustomOpDomain', domain), domain, [], []);
    try {
      const table = fields();
      for (const kernel of kernelList) {
        const struct = addr(koffi.alloc('uint8', OP_BYTES));
        d.structs.push(struct);
        koffi.encode(struct, 'uint8', new Array(OP_BYTES).fill(0), OP_BYTES);
        koffi.encode(struct, 0, 'uint32', OP_VERSION);
        for (const [offset, fn] of table) koffi.encode(struct, offset, 'void*', fn);
        const name = cString(kernel.name);
        const provider = kernel.provider === 'cuda' ? cString('CUDAExecutionProvider') : null; // null: the CPU provider
        d.memory.push(name, ...(provider ? [provider] : []));
        opsByAddress.set(struct, { kernel, name, provider });
        check('CustomOpDomain_Add', api().CustomOpDomain_Add(d.ptr, struct));
      }
      return d;
    } catch (e) {
      d.release();
      throw e;
    }
  }

  /** Sessions created with `options` may use this domain's operators (the domain must outlive them). */
  addTo(options: SessionOptions): void {
    check('AddCustomOpDomain', api().AddCustomOpDomain(options.ptr, this.ptr));
  }

  override release(): void {
    if (this.released) return;
    super.release();
    for (const s of this.structs) opsByAddress.delete(s);
    for (const p of [...this.structs, ...this.memory]) koffi.free(p);
    this.structs.length = 0;
    this.memory.length = 0;
  }
}
