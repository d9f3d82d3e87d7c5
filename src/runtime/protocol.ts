/**
 * Messages between the main thread (src/runtime/session.ts) and a session worker (src/runtime/worker.ts).
 * One request is in flight per worker at a time; the main thread queues the rest, which is what lets a
 * queued run be cancelled before it starts. Tensor buffers travel in the transfer list where possible.
 */
import type { HostTensor } from '../onnx/safetensors.js';
import type { QuantJob } from '../onnx/quantize.js';

export type ExecutionProvider = 'cpu' | 'cuda' | 'webgpu';

export interface CreatePayload {
  bytes: Uint8Array;
  externalFolder: string | null;
  name: string;
  /** flat session config entries ("session.disable_cpu_ep_fallback" -> "1") */
  config: Record<string, string>;
  prepare: QuantJob[];
  ep: ExecutionProvider;
  deviceId: number;
  intraOpThreads?: number;
  memoryArena?: boolean;
  memoryPattern?: boolean;
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
  /** CUDA provider options (ONNX Runtime's string keys), device_id included */
  cuda?: Record<string, string>;
  /** inputs with a default: bound to it at creation, and again when unbound (BuiltModel.inputDefaults) */
  inputDefaults?: Record<string, HostTensor>;
  /** ONNX Runtime's profiler: the file prefix (C API sessions; the file is complete once the session is released) */
  profile?: string;
  /** domains of custom operators the model uses (BuiltModel.customDomains; C API sessions only) */
  customDomains?: string[];
}

/** A tensor kept in the worker (on the session's device) by an earlier run, named by its reference. */
export interface TensorRef { ref: number }
export type Feed = HostTensor | TensorRef;
export const isRef = (f: Feed): f is TensorRef => typeof (f as TensorRef).ref === 'number';

export interface RunRequest {
  id: number;
  op: 'run';
  session: number;
  /** inputs of this run only; together with the bound ones they must name every input */
  feeds: Record<string, Feed>;
  /** compute only these outputs (default: all) */
  outputs?: string[];
  /** outputs that stay in the worker, on the device, and come back as references */
  keep?: string[];
  /** give the device memory the run's transient tensors used back to the device (arena shrinkage) */
  shrink?: boolean;
  /** host memory for outputs that come back: each is copied into its buffer when that is large enough */
  into?: Record<string, ArrayBuffer>;
}

export type Request =
  | { id: number; op: 'create'; payload: CreatePayload }
  | RunRequest
  /**
   * inputs bound until bound again: a device session copies them to the device once, here. `also`: more
   * sessions of this worker that bind the same tensors (one host copy for all of them)
   */
  | { id: number; op: 'bind'; session: number; also?: number[]; feeds: Record<string, Feed> }
  /** inputs with a default bound to it again: what was bound in its place is freed */
  | { id: number; op: 'unbind'; session: number; names: string[] }
  | { id: number; op: 'free'; refs: number[] }
  | { id: number; op: 'release'; session: number };

export interface CreateResult {
  session: number;
  /** inputs a run must feed unless bound */
  inputs: string[];
  /** inputs with a default, bound to it unless bound to something else */
  optionalInputs: string[];
  outputs: string[];
  prepared: { file: string; status: 'cached' | 'written' }[];
  /** which runtime drives the session: ONNX Runtime's C API, or onnxruntime-node (WebGPU, or the C API missing) */
  runtime: 'c-api' | 'onnxruntime-node';
  /** the CUDA provider's effective options as ONNX Runtime reports them */
  providerOptions?: string;
}
export interface KeptTensor { ref: number; dtype: HostTensor['dtype']; dims: number[] }
export type RunResult = Record<string, HostTensor | KeptTensor>;

export interface WireError { name: string; message: string; stack?: string; code?: string }

export type Response =
  /** ms: time the worker spent on the request (for a run: binding, ONNX Runtime and the copies out) */
  | { id: number; ok: true; result: CreateResult | RunResult | null; ms: number }
  | { id: number; ok: false; error: WireError };

/** The distinct ArrayBuffers behind `tensors`, for a postMessage transfer list. */
export function buffersOf(tensors: Record<string, Feed | KeptTensor>): ArrayBuffer[] {
  const set = new Set<ArrayBuffer>();
  for (const t of Object.values(tensors)) {
    if ('data' in t && t.data.buffer instanceof ArrayBuffer) set.add(t.data.buffer);
  }
  return [...set];
}

/** "a.b.c" -> { a: { b: { c } } }: the shape onnxruntime-node expects in `extra`. */
export function nest(flat: Record<string, string>): Record<string, unknown> {
  const out: Record<string, any> = {};
  for (const [key, value] of Object.entries(flat)) {
    const parts = key.split('.');
    let o = out;
    for (const p of parts.slice(0, -1)) o = o[p] ??= {};
    o[parts[parts.length - 1]] = value;
  }
  return out;
}
