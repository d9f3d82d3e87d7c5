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
}

export type Request =
  | { id: number; op: 'create'; payload: CreatePayload }
  | { id: number; op: 'run'; session: number; feeds: Record<string, HostTensor>; outputs?: string[] }
  | { id: number; op: 'release'; session: number };

export interface CreateResult { session: number; inputs: string[]; outputs: string[]; prepared: { file: string; status: 'cached' | 'written' }[] }
export type RunResult = Record<string, HostTensor>;

export interface WireError { name: string; message: string; stack?: string }

export type Response =
  | { id: number; ok: true; result: CreateResult | RunResult | null }
  | { id: number; ok: false; error: WireError };

/** The distinct ArrayBuffers behind `tensors`, for a postMessage transfer list. */
export function buffersOf(tensors: Record<string, HostTensor>): ArrayBuffer[] {
  const set = new Set<ArrayBuffer>();
  for (const t of Object.values(tensors)) {
    if (t.data.buffer instanceof ArrayBuffer) set.add(t.data.buffer);
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
