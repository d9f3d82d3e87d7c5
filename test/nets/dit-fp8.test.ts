/**
 * The DiT with FP8 linears, emulated on the CPU (weights and activations quantized to E4M3FN exactly as the
 * GemmFloat8 path does, the products in float32): one forward against the fixture's reference forward
 * (upstream, float32), and a whole section of sampling (25 UniPC steps from the fixture's latents) against
 * the float32 path, itself checked against the references by dit.test.ts and e2e.test.ts.
 * Bounds: relative L2 <= 2e-2 for one forward, <= 5e-2 for the section's latents.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { fp8Layer } from '../../src/nets/dit.js';
import { PackedTransformer, type DitInputs, type TransformerOptions } from '../../src/framepack/transformer.js';
import { sampleUniPC, sectionSigmas } from '../../src/framepack/sampler.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';
import { tempDir } from '../onnx/helpers.js';

const DIT_DIR = () => join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY');
const FORWARD_BOUND = 2e-2;
const SECTION_BOUND = 5e-2;

let ref: Record<string, HostTensor>;
let cache: { dir: string; cleanup: () => Promise<void> };
const dits: PackedTransformer[] = [];

function inputs(): DitInputs {
  const { output, masked_output, masked_encoder_hidden_states, masked_encoder_attention_mask, ...rest } = ref;
  return rest as unknown as DitInputs;
}

async function load(fp8?: TransformerOptions['fp8'], lora = false): Promise<PackedTransformer> {
  const dit = await PackedTransformer.load(DIT_DIR(), { precision: 'float32', ep: 'cpu', fp8, lora });
  dits.push(dit);
  return dit;
}

async function forward(dit: PackedTransformer, x: DitInputs): Promise<Float32Array> {
  dit.beginSection({ steps: 1 });
  return (await dit.forward(x)).output.data as Float32Array;
}

/** The latents of one section: UniPC over 25 steps from the fixture's hidden_states as the noise. */
async function section(dit: PackedTransformer): Promise<Float32Array> {
  const base = inputs();
  const [, , T, h8, w8] = base.hidden_states.dims;
  const steps = 25;
  dit.beginSection({ steps });
  return sampleUniPC({
    noise: Float32Array.from(base.hidden_states.data as Float32Array), sigmas: sectionSigmas(steps, T, h8, w8),
    cfg: 1, rescale: 0, halfPrecision: false,
    velocity: async (x, t) => (await dit.forward({
      ...base,
      hidden_states: { dtype: 'float32', dims: base.hidden_states.dims, data: Float32Array.from(x) },
      timestep: { dtype: 'float32', dims: [1], data: Float32Array.of(t) },
    })).output.data as Float32Array,
  });
}

before(async () => {
  ref = await loadTensors(fixture('framepack-tiny', 'components', 'transformer.safetensors'));
  cache = await tempDir();
});

after(async () => {
  await Promise.all(dits.map((d) => d.release()));
  await terminateWorkers();
  await cache?.cleanup();
});

test('the FP8 layer sets: attention projections, then the MLPs; never modulation, text, embedders or the head', () => {
  const attention = ['transformer_blocks.3.attn.to_q', 'transformer_blocks.0.attn.to_k', 'transformer_blocks.0.attn.to_out.0',
    'single_transformer_blocks.7.attn.to_v'];
  const mlp = ['transformer_blocks.1.ff.net.0.proj', 'transformer_blocks.1.ff.net.2', 'single_transformer_blocks.0.proj_mlp',
    'single_transformer_blocks.0.proj_out'];
  const never = ['transformer_blocks.0.norm1.linear', 'single_transformer_blocks.0.norm.linear', 'norm_out.linear', 'proj_out',
    'transformer_blocks.0.attn.add_q_proj', 'transformer_blocks.0.attn.to_add_out', 'transformer_blocks.0.ff_context.net.2',
    'context_embedder.proj_in', 'context_embedder.token_refiner.refiner_blocks.0.attn.to_q', 'image_projection.up',
    'time_text_embed.text_embedder.linear_1'];
  for (const l of attention) assert.ok(fp8Layer(l) && fp8Layer(l, 'all'), l);
  for (const l of mlp) assert.ok(!fp8Layer(l) && fp8Layer(l, 'all'), l);
  for (const l of never) assert.ok(!fp8Layer(l) && !fp8Layer(l, 'all'), l);
});

test(`one forward with FP8 linears (emulated) within ${FORWARD_BOUND} of the reference`, async () => {
  const f32 = await load();
  const fp8 = await load({ mode: 'emulate', cacheDir: join(cache.dir, 'q') });
  const fp8All = await load({ mode: 'emulate', set: 'all', cacheDir: join(cache.dir, 'q') });
  const reference = ref.output.data as Float32Array;
  const ours32 = await forward(f32, inputs());
  const ours8 = await forward(fp8, inputs());
  const ours8All = await forward(fp8All, inputs());
  const e32 = relL2(ours32, reference), e8 = relL2(ours8, reference), e8All = relL2(ours8All, reference);
  console.log(`# dit forward, relative L2 to the reference: float32 ${e32.toExponential(3)}, fp8 'attention' ${e8.toExponential(3)} ` +
    `(${relL2(ours8, ours32).toExponential(3)} to our float32), fp8 'all' ${e8All.toExponential(3)} (not used: above the bound)`);
  assert.ok(e32 <= 1e-4);
  assert.ok(e8 > 1e-4, `fp8 changed nothing (${e8}): the float path ran instead`);
  assert.ok(e8 <= FORWARD_BOUND, `fp8 forward: relative L2 ${e8}`);
  assert.ok(e8All > e8, 'the MLPs in FP8 add error');
});

test(`a whole section (25 steps) with FP8 linears (emulated) within ${SECTION_BOUND} of the float32 path`, async () => {
  const [f32, fp8, fp8All] = dits;
  assert.equal(dits.length, 3, 'the forward test loads the three transformers');
  const a = await section(f32);
  const b = await section(fp8);
  const e = relL2(b, a);
  const eAll = relL2(await section(fp8All), a);
  console.log(`# dit section latents (25 steps) vs float32: fp8 'attention' relative L2 ${e.toExponential(3)}, 'all' ${eAll.toExponential(3)}`);
  assert.ok(e > 0);
  assert.ok(e <= SECTION_BOUND, `section latents: relative L2 ${e}`);
});

test('built for LoRA, the FP8 transformer without a LoRA gives the same output', async () => {
  const plain = dits[1];
  const withLora = await load({ mode: 'emulate', cacheDir: join(cache.dir, 'q') }, true);
  assert.deepEqual(Array.from(await forward(withLora, inputs())), Array.from(await forward(plain, inputs())));
});
