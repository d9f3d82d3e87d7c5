/**
 * Precision policy: which dtype a network computes in on each execution provider.
 *
 * - CPU: float32 everywhere. ONNX Runtime's CPU kernels lack bfloat16 MatMul/Add, and the reference
 *   fixtures are float32; stored bf16/f16 weights are cast inside the graph (see graph.ts, castWeightsAt).
 * - CUDA: the DiT in bfloat16 (HunyuanVideo overflows float16 and yields black frames), the text/image
 *   encoders and the VAE in float16, as the original loads them.
 * - WebGPU: float16 at most; it has no bfloat16, so the DiT falls back to float32 there.
 *
 * Tensors crossing into JavaScript are float32 or float16 (no bfloat16 in the JS API): graphs take float32
 * inputs and cast them in (Graph.floatInput) and cast results back out (Graph.floatOutput).
 */
import type { Precision } from './graph.js';
import type { ExecutionProvider } from '../runtime/protocol.js';

export type NetKind = 'dit' | 'encoder' | 'vae';

export function precisionFor(ep: ExecutionProvider, kind: NetKind): Precision {
  if (ep === 'cpu') return 'float32';
  if (ep === 'webgpu') return kind === 'dit' ? 'float32' : 'float16';
  return kind === 'dit' ? 'bfloat16' : 'float16';
}

/** Precision named on a command line or in an env var, checked. */
export function parsePrecision(s: string): Precision {
  if (s === 'float32' || s === 'float16' || s === 'bfloat16') return s;
  if (s === 'fp32' || s === 'f32') return 'float32';
  if (s === 'fp16' || s === 'f16') return 'float16';
  if (s === 'bf16') return 'bfloat16';
  throw new Error(`unknown precision "${s}" (float32, float16 or bfloat16)`);
}
