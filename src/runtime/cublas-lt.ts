/**
 * The entries of cuBLASLt (libcublasLt, which ONNX Runtime's CUDA provider loads too) that a linear layer with a
 * fused epilogue needs: y = act(x W^T + b) for bfloat16 row-major x (rows, k) and W (n, k), one call, where ONNX
 * Runtime's Gemm writes y and a second kernel reads it back to add the bias and apply the activation.
 *
 * Row-major y (rows, n) is column-major y^T (n, rows) = W (column-major (k, n), transposed) x^T (column-major
 * (k, rows)): so A = W with TRANSA, B = x, and the bias runs along y^T's rows (one value per output column), as
 * cuBLASLt's bias epilogues take it. Accumulation and the epilogue are float32; y is rounded once.
 *
 * Bound with koffi like cuda-driver.ts; every call blocks, so plans are made and run in session workers. A plan
 * (descriptors and the algorithm cuBLASLt's heuristic picks: deterministic, so a seed gives the same video every
 * run) is made once per shape; the rows change with the prompt's length and the resolution, so the last PLANS
 * plans are kept and older ones destroyed. Each stream gets its own workspace, as two streams' GEMMs may overlap.
 */
import koffi from 'koffi';
import { DeviceMemory, loadFirst, loadProblem } from './cuda-driver.js';

type Fn = (...args: any[]) => any;
let lt: { fn: Record<string, Fn>; keep: unknown } | null = null;

const NAMES = ['libcublasLt.so.13', 'libcublasLt.so.12', 'libcublasLt.so'];
const CUBLAS_COMPUTE_32F = 68;
const CUDA_R_32F = 0;
const CUDA_R_16BF = 14;
const DESC_TRANSA = 3;
const DESC_EPILOGUE = 7;
const DESC_BIAS_POINTER = 8;
const PREF_MAX_WORKSPACE_BYTES = 1;
const OP_T = 1;
const HEURISTIC_BYTES = 96; // cublasLtMatmulHeuristicResult_t: algo (64), workspaceSize, state, wavesCount, reserved[4]
const WORKSPACE = 32 << 20; // what cuBLAS itself takes on Hopper
const PLANS = 64;

/** cuBLASLt's epilogues used here (cublasLtEpilogue_t). */
export const EPILOGUE = { none: 1, bias: 4, geluBias: 36 } as const;
export type Epilogue = keyof typeof EPILOGUE;

function load(): Record<string, Fn> {
  if (lt) return lt.fn;
  const lib = loadFirst(NAMES, 'cuBLASLt');
  const fn = {
    cublasLtCreate: lib.func('int cublasLtCreate(_Out_ void** handle)'),
    cublasLtGetStatusString: lib.func('const char* cublasLtGetStatusString(int status)'),
    cublasLtMatmulDescCreate: lib.func('int cublasLtMatmulDescCreate(_Out_ void** desc, int compute, int scale)'),
    cublasLtMatmulDescDestroy: lib.func('int cublasLtMatmulDescDestroy(void* desc)'),
    cublasLtMatrixLayoutDestroy: lib.func('int cublasLtMatrixLayoutDestroy(void* layout)'),
    cublasLtMatmulDescSetAttribute: lib.func('int cublasLtMatmulDescSetAttribute(void* desc, int attr, const void* buf, size_t size)'),
    cublasLtMatrixLayoutCreate: lib.func('int cublasLtMatrixLayoutCreate(_Out_ void** layout, int type, uint64_t rows, uint64_t cols, int64_t ld)'),
    cublasLtMatmulPreferenceCreate: lib.func('int cublasLtMatmulPreferenceCreate(_Out_ void** pref)'),
    cublasLtMatmulPreferenceSetAttribute: lib.func('int cublasLtMatmulPreferenceSetAttribute(void* pref, int attr, const void* buf, size_t size)'),
    cublasLtMatmulPreferenceDestroy: lib.func('int cublasLtMatmulPreferenceDestroy(void* pref)'),
    cublasLtMatmulAlgoGetHeuristic: lib.func('int cublasLtMatmulAlgoGetHeuristic(void* handle, void* desc, void* a, void* b, void* c, void* d, void* pref, int requested, void* results, _Out_ int* count)'),
    cublasLtMatmul: lib.func('int cublasLtMatmul(void* handle, void* desc, const void* alpha, uint64_t a, void* adesc, uint64_t b, void* bdesc, const void* beta, uint64_t c, void* cdesc, uint64_t d, void* ddesc, const void* algo, uint64_t workspace, size_t wsSize, void* stream)'),
  };
  lt = { fn, keep: lib }; // koffi unloads a library whose handle is collected
  return fn;
}

function check(call: string, status: number): void {
  if (status !== 0) throw new Error(`${call} failed: cuBLAS status ${status} (${load().cublasLtGetStatusString(status)})`);
}

function out(call: string, ...args: unknown[]): unknown {
  const cell: unknown[] = [null];
  check(call, load()[call](cell, ...args));
  return cell[0];
}

const scalar = (v: number) => new Float32Array([v]);
const ONE = scalar(1), ZERO = scalar(0);

/** One shape and epilogue: the descriptors and the algorithm, kept for the thread's life. */
interface Plan { desc: unknown; a: unknown; b: unknown; y: unknown; algo: Uint8Array; epilogue: Epilogue }

/** cuBLASLt on one thread: a handle, a workspace per stream and the recent plans. */
class Lt {
  private readonly handle = out('cublasLtCreate');
  private readonly workspaces = new Map<bigint, DeviceMemory>();
  private readonly plans = new Map<string, Plan>(); // in order of use

  plan(rows: number, n: number, k: number, epilogue: Epilogue): Plan {
    const key = `${rows} ${n} ${k} ${epilogue}`;
    const known = this.plans.get(key);
    if (known) {
      this.plans.delete(key);
      this.plans.set(key, known);
      return known;
    }
    const f = load();
    const desc = out('cublasLtMatmulDescCreate', CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const plan: Plan = { desc, a: null, b: null, y: null, algo: new Uint8Array(64), epilogue };
    const pref = out('cublasLtMatmulPreferenceCreate');
    try {
      check('cublasLtMatmulDescSetAttribute', f.cublasLtMatmulDescSetAttribute(desc, DESC_TRANSA, new Int32Array([OP_T]), 4));
      check('cublasLtMatmulDescSetAttribute', f.cublasLtMatmulDescSetAttribute(desc, DESC_EPILOGUE, new Int32Array([EPILOGUE[epilogue]]), 4));
      plan.a = out('cublasLtMatrixLayoutCreate', CUDA_R_16BF, k, n, k); // W: column-major (k, n), used transposed
      plan.b = out('cublasLtMatrixLayoutCreate', CUDA_R_16BF, k, rows, k); // x: column-major (k, rows)
      plan.y = out('cublasLtMatrixLayoutCreate', CUDA_R_16BF, n, rows, n); // y^T: column-major (n, rows)
      check('cublasLtMatmulPreferenceSetAttribute', f.cublasLtMatmulPreferenceSetAttribute(pref, PREF_MAX_WORKSPACE_BYTES, new BigUint64Array([BigInt(WORKSPACE)]), 8));
      const result = new Uint8Array(HEURISTIC_BYTES);
      const count = [0];
      check('cublasLtMatmulAlgoGetHeuristic', f.cublasLtMatmulAlgoGetHeuristic(this.handle, desc, plan.a, plan.b, plan.y, plan.y, pref, 1, result, count));
      if (count[0] < 1) throw new Error(`cuBLASLt has no algorithm for (${rows} x ${k}) x (${n} x ${k})^T with epilogue ${epilogue}`);
      plan.algo.set(result.subarray(0, 64));
    } catch (e) {
      destroy(plan);
      throw e;
    } finally {
      f.cublasLtMatmulPreferenceDestroy(pref);
    }
    this.plans.set(key, plan);
    for (const [old, p] of this.plans) {
      if (this.plans.size <= PLANS) break;
      this.plans.delete(old);
      destroy(p);
    }
    return plan;
  }

  /** y (rows, n) = epilogue(x (rows, k) W^T + bias (n)), enqueued on `stream`; device addresses. */
  run(plan: Plan, x: bigint, w: bigint, bias: bigint | null, y: bigint, stream: unknown): void {
    const f = load();
    if (plan.epilogue !== 'none') {
      if (!bias) throw new Error(`epilogue ${plan.epilogue} needs a bias`);
      check('cublasLtMatmulDescSetAttribute', f.cublasLtMatmulDescSetAttribute(plan.desc, DESC_BIAS_POINTER, new BigUint64Array([bias]), 8));
    }
    check('cublasLtMatmul', f.cublasLtMatmul(this.handle, plan.desc, ONE, w, plan.a, x, plan.b, ZERO, y, plan.y, y, plan.y, plan.algo,
      this.workspace(stream).ptr, WORKSPACE, stream));
  }

  private workspace(stream: unknown): DeviceMemory {
    const key = stream === null ? 0n : BigInt(koffi.address(stream as object));
    let m = this.workspaces.get(key);
    if (!m) this.workspaces.set(key, (m = DeviceMemory.alloc(WORKSPACE)));
    return m;
  }
}

/** Releases a plan's descriptors (those it got before a failure, too). */
function destroy(p: Plan): void {
  const f = load();
  for (const layout of [p.a, p.b, p.y]) if (layout) f.cublasLtMatrixLayoutDestroy(layout);
  f.cublasLtMatmulDescDestroy(p.desc);
}

let thread: Lt | null = null;

/**
 * y (rows, n) = epilogue(x (rows, k) W (n, k)^T + bias) in bfloat16 on `stream`, through the current context
 * (the CUDA provider's, in a kernel).
 */
export function linear(x: bigint, w: bigint, bias: bigint | null, y: bigint, rows: number, n: number, k: number, epilogue: Epilogue, stream: unknown): void {
  thread ??= new Lt();
  thread.run(thread.plan(rows, n, k, epilogue), x, w, bias, y, stream);
}

/** Null when cuBLASLt loads in this process; otherwise why not (one line). */
export const cublasLtProblem = (): string | null => loadProblem(load);
