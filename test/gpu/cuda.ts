/** Whether this machine runs CUDA sessions, for the GPU suites' skip reasons; inputs as a bfloat16 DiT gets them. */
import { toBf16 } from '../../src/framepack/sampler.js';
import type { DitInputs } from '../../src/framepack/transformer.js';
import { Graph } from '../../src/onnx/graph.js';
import type { HostTensor } from '../../src/onnx/safetensors.js';
import { Session } from '../../src/runtime/session.js';

/** The inputs with timestep and guidance rounded to bfloat16, as the sampler feeds a bfloat16 DiT. */
export function bf16Clock(inputs: DitInputs): DitInputs {
  const round = (x: HostTensor): HostTensor => ({ ...x, data: Float32Array.from(x.data as Float32Array, toBf16) });
  return { ...inputs, timestep: round(inputs.timestep), ...(inputs.guidance ? { guidance: round(inputs.guidance) } : {}) };
}

/**
 * Null when a one-node graph is created and runs correctly on the CUDA EP; otherwise why not (no provider
 * library next to libonnxruntime.so.1, its CUDA libraries missing, no GPU), in one line.
 */
export async function cudaFailure(): Promise<string | null> {
  const g = new Graph({ name: 'cuda-probe', precision: 'float32' });
  g.output(g.mul(g.input('x', 'float32', [2]), 3), 'y');
  try {
    const s = await Session.create(g.toModel(), { ep: 'cuda' });
    const y = await s.run({ x: { dtype: 'float32', dims: [2], data: Float32Array.of(1, 2) } });
    await s.release();
    const got = Array.from(y.y.data as Float32Array);
    return got[0] === 3 && got[1] === 6 ? null : `the probe graph gave [${got}] instead of [3, 6]`;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}
