/**
 * The DiT with FP8 linears on the CUDA EP (com.microsoft.GemmFloat8, sm89+) against its bfloat16 path:
 *   tiny fixtures   one forward on the fixture's inputs: FP8 vs bfloat16 (bound 2e-2 relative L2), and the
 *                   GemmFloat8 graph against the emulated one (Cast to float8 and back, Gemm), which must
 *                   agree far closer: it checks GemmFloat8's operand layout and scales, not FP8's error.
 *   full width      a checkpoint at the real widths (3072, 24 heads x 128, MLP 12288) with 1 dual and 2
 *                   single blocks and random weights (scripts/make-full-dit.ts --dual 1 --single 2), one
 *                   forward of 2 x 1,024 image tokens: FP8 vs bfloat16, bound 2e-2.
 * Skipped, saying why, without a CUDA session (CI, CPU-only machines) or on a GPU below compute capability 8.9.
 * On a GPU machine: node --test dist/test/gpu/dit-fp8.test.js; FRAMEPACK_GPU_REPORT=<file> writes the figures.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import { computeCapability } from '../../src/runtime/fp8-choice.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { PackedTransformer, type DitInputs, type TransformerOptions } from '../../src/framepack/transformer.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';
import { cudaFailure } from './cuda.js';
import { rand, tempDir } from '../onnx/helpers.js';

const BOUND = 2e-2;

const failure = await cudaFailure();
const cap = failure === null ? await computeCapability(0) : null;
const skip = failure !== null ? `no CUDA execution provider: ${failure}`
  : cap !== null && cap < 8.9 ? `compute capability ${cap}: GemmFloat8 needs 8.9 or newer` : false;

const report: Record<string, unknown>[] = [];
let cache: { dir: string; cleanup: () => Promise<void> };

before(async () => { cache = await tempDir(); });
after(async () => {
  await terminateWorkers();
  await cache?.cleanup();
  if (process.env.FRAMEPACK_GPU_REPORT && report.length) {
    writeFileSync(process.env.FRAMEPACK_GPU_REPORT, JSON.stringify({ computeCapability: cap, results: report }, null, 2) + '\n');
  }
});

async function forwardWith(dir: string, inputs: DitInputs, fp8?: TransformerOptions['fp8']): Promise<Float32Array> {
  const dit = await PackedTransformer.load(dir, { precision: 'bfloat16', ep: 'cuda', fp8 });
  try {
    dit.beginSection({ steps: 1 });
    return (await dit.forward(inputs)).output.data as Float32Array;
  } finally {
    await dit.release();
  }
}

/** Random inputs of a full-width DiT: 16 latent channels, 2 noisy frames of h8 x w8, LLaMA/CLIP/SigLIP widths. */
function fullInputs(h8: number, w8: number): DitInputs {
  const f = (dims: number[], seed: number, scale = 1): HostTensor =>
    ({ dtype: 'float32', dims, data: rand(dims.reduce((a, b) => a * b, 1), seed, -scale, scale) });
  const i = (values: number[]): HostTensor => ({ dtype: 'int64', dims: [1, values.length], data: BigInt64Array.from(values.map(BigInt)) });
  const L = 40;
  return {
    hidden_states: f([1, 16, 2, h8, w8], 1), timestep: { dtype: 'float32', dims: [1], data: Float32Array.of(900) },
    encoder_hidden_states: f([1, L, 4096], 2), encoder_attention_mask: i(new Array(L).fill(1)),
    pooled_projections: f([1, 768], 3), guidance: { dtype: 'float32', dims: [1], data: Float32Array.of(10000) },
    latent_indices: i([1, 2]), clean_latents: f([1, 16, 2, h8, w8], 4), clean_latent_indices: i([0, 3]),
    clean_latents_2x: f([1, 16, 2, h8, w8], 5), clean_latent_2x_indices: i([4, 5]),
    clean_latents_4x: f([1, 16, 16, h8, w8], 6), clean_latent_4x_indices: i(Array.from({ length: 16 }, (_, k) => 6 + k)),
    image_embeddings: f([1, 729, 1152], 7),
  } as DitInputs;
}

describe('FP8 DiT on the CUDA execution provider', { skip }, () => {
  test(`tiny fixtures: GemmFloat8 forward within ${BOUND} of bfloat16, and matching its emulation`, async () => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'transformer.safetensors'));
    const { output, masked_output, masked_encoder_hidden_states, masked_encoder_attention_mask, ...rest } = ref;
    const inputs = rest as unknown as DitInputs;
    const dir = join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY');
    const bf16 = await forwardWith(dir, inputs);
    const gemm = await forwardWith(dir, inputs, { mode: 'gemm', cacheDir: join(cache.dir, 'tiny') });
    const emulated = await forwardWith(dir, inputs, { mode: 'emulate', cacheDir: join(cache.dir, 'tiny') });
    const r = { case: 'tiny', fp8VsBf16: relL2(gemm, bf16), emulatedVsBf16: relL2(emulated, bf16), gemmVsEmulated: relL2(gemm, emulated),
      bf16VsReference: relL2(bf16, output.data as Float32Array) };
    report.push(r);
    console.log(`# ${JSON.stringify(r)}`);
    assert.ok(r.fp8VsBf16 > 0 && r.fp8VsBf16 <= BOUND, `fp8 vs bf16: ${r.fp8VsBf16}`);
    assert.ok(r.gemmVsEmulated < r.fp8VsBf16 / 2, `GemmFloat8 vs its emulation: ${r.gemmVsEmulated}`);
  });

  test(`full width (1 dual, 2 single blocks, random weights): GemmFloat8 forward within ${BOUND} of bfloat16`, async () => {
    const dir = join(cache.dir, 'full-width');
    execFileSync(process.execPath, [join(import.meta.dirname, '..', '..', 'scripts', 'make-full-dit.js'), '--out', dir, '--dual', '1', '--single', '2', '--distinct'],
      { stdio: 'inherit' });
    const inputs = fullInputs(64, 64); // 2 x 32 x 32 noisy tokens, ~3,100 image tokens in all
    const bf16 = await forwardWith(dir, inputs);
    const fp8 = await forwardWith(dir, inputs, { mode: 'gemm', cacheDir: join(cache.dir, 'full') });
    const fp8All = await forwardWith(dir, inputs, { mode: 'gemm', set: 'all', cacheDir: join(cache.dir, 'full') });
    const r = { case: 'full-width', fp8VsBf16: relL2(fp8, bf16), allLinearsVsBf16: relL2(fp8All, bf16) };
    report.push(r);
    console.log(`# ${JSON.stringify(r)}`);
    assert.ok(r.fp8VsBf16 > 0 && r.fp8VsBf16 <= BOUND, `fp8 vs bf16: ${r.fp8VsBf16}`);
  });
});
