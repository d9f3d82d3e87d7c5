/**
 * The DiT's fused CUDA kernels (src/runtime/dit-kernels.ts: every operator of its domain; NVRTC) in the tiny
 * transformer on the CUDA execution provider, bfloat16: against the float32 forward on the same inputs (timestep
 * and guidance rounded to bfloat16 as the sampler hands them over; the CPU suite checks that float32 forward
 * against the upstream reference) at the parity suite's bfloat16 tolerance, and no further from it than ONNX
 * Runtime's own bfloat16 operators are (the graph without the kernels). The full-size comparison is
 * scripts/gpu/dit-forward.ts --variant fused,kernels.
 *
 * Skipped, saying why, where no CUDA session can be created (CI, CPU-only machines). On a GPU machine:
 *   node --test dist/test/gpu/dit-kernels.test.js
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadTensors } from '../../src/onnx/safetensors.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { PackedTransformer, type DitInputs } from '../../src/framepack/transformer.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';
import { bf16Clock, cudaFailure } from './cuda.js';

const BF16_TOL = 5e-2;

const failure = await cudaFailure();
const skip = failure === null ? false : `no CUDA execution provider: ${failure}`;

after(() => terminateWorkers());

describe('DiT kernels on CUDA, bfloat16', { skip }, () => {
  test('the kernels graph is as close to the float32 forward as ONNX Runtime\'s bfloat16 operators', async () => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'transformer.safetensors'));
    const { output, masked_output, masked_encoder_hidden_states, masked_encoder_attention_mask, ...rest } = ref;
    const inputs = bf16Clock(rest as unknown as DitInputs);
    const dir = join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY');
    const outputs: Record<string, Float32Array> = {};
    for (const [name, o] of [['float32', { precision: 'float32' }], ['ort', { precision: 'bfloat16' }], ['kernels', { precision: 'bfloat16', kernels: true }]] as const) {
      const dit = await PackedTransformer.load(dir, { ...o, ep: 'cuda' });
      try {
        dit.beginSection({ steps: 1 });
        outputs[name] = (await dit.forward(inputs)).output.data as Float32Array;
      } finally {
        await dit.release();
      }
    }
    const errKernels = relL2(outputs.kernels, outputs.float32), errOrt = relL2(outputs.ort, outputs.float32);
    console.log(`# relative L2 to the float32 forward: kernels ${errKernels.toExponential(3)}, ONNX Runtime's bfloat16 operators ${errOrt.toExponential(3)}`);
    assert.ok(errKernels <= BF16_TOL, `kernels: ${errKernels}`);
    assert.ok(errKernels <= errOrt * 1.5, `the kernels (${errKernels}) are further from float32 than ONNX Runtime's operators (${errOrt})`);
  });
});
