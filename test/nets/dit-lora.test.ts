/**
 * LoRA on the packed transformer against the upstream loaders (test/fixtures/lora, made by
 * scripts/references/lora-reference.py): each published key layout applied by the code that reads it
 * (diffusers + peft, diffusers' HunyuanVideo converter, musubi-tuner), one forward of the tiny transformer in
 * float32 on the CPU, relative L2 against the reference output.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTensors, readHeader, type HostTensor } from '../../src/onnx/safetensors.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { LoraError, ditLinears, loraFeeds, parseLora, type LoraFile } from '../../src/nets/dit-lora.js';
import { PackedTransformer, type DitInputs } from '../../src/framepack/transformer.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const DIT_DIR = () => join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY');
const LORA_DIR = new URL('../../../test/fixtures/lora/', import.meta.url).pathname;
const TOL = 1e-3;

let inputs: DitInputs;
let refs: Record<string, HostTensor>;
let plain: PackedTransformer;
let dit: PackedTransformer;

async function lora(name: string): Promise<LoraFile> {
  const file = join(LORA_DIR, `${name}.safetensors`);
  return parseLora(await loadTensors(file), (await readHeader(file)).metadata, dit.config, name);
}

async function forward(t: PackedTransformer): Promise<Float32Array> {
  t.beginSection({ steps: 1 });
  return (await t.forward(inputs)).output.data as Float32Array;
}

before(async () => {
  const ref = await loadTensors(fixture('framepack-tiny', 'components', 'transformer.safetensors'));
  const { output, masked_output, masked_encoder_hidden_states, masked_encoder_attention_mask, ...rest } = ref;
  inputs = rest as unknown as DitInputs;
  refs = await loadTensors(join(LORA_DIR, 'outputs.safetensors'));
  plain = await PackedTransformer.load(DIT_DIR(), { precision: 'float32', ep: 'cpu' });
  dit = await PackedTransformer.load(DIT_DIR(), { precision: 'float32', ep: 'cpu', lora: true });
});

after(async () => {
  await Promise.all([plain?.release(), dit?.release()]);
  await terminateWorkers();
});

test('built for LoRA and given none, the transformer gives the bytes of the one built without', async () => {
  const a = await forward(plain), b = await forward(dit);
  assert.deepEqual(b, a);
  assert.ok(relL2(a, refs.base_output.data as Float32Array) < 1e-4);
});

const cases: Array<[string, Array<[string, number]>]> = [
  ['out_diffusers_a', [['diffusers_a', 1]]],
  ['out_diffusers_ab', [['diffusers_a', 0.8], ['diffusers_b', -0.6]]],
  ['out_hunyuan_original', [['hunyuan_original', 1.3]]],
  ['out_musubi_framepack', [['musubi_framepack', 0.7]]],
  ['out_musubi_hunyuan', [['musubi_hunyuan', 0.9]]],
];

for (const [ref, files] of cases) {
  test(`${ref}: ${files.map(([f, w]) => `${f} x ${w}`).join(' + ')} within ${TOL} of the upstream loader`, async (t) => {
    const parsed = await Promise.all(files.map(async ([f, weight]) => ({ file: await lora(f), weight })));
    await dit.setLora(loraFeeds(parsed, dit.config));
    const out = await forward(dit);
    const expected = refs[ref].data as Float32Array;
    const err = relL2(out, expected);
    const moved = relL2(refs.base_output.data as Float32Array, expected);
    t.diagnostic(`${ref}: relative L2 ${err.toExponential(2)} (the LoRA moves the output by ${moved.toFixed(2)})`);
    assert.ok(err <= TOL, `relative L2 ${err}`);
    assert.ok(moved > 100 * TOL, 'the LoRA changes the output far beyond the tolerance');
    await dit.setLora(null);
    assert.deepEqual(await forward(dit), await forward(plain), 'removing the LoRA restores the plain output');
  });
}

test('another LoRA bound over one: the first one\'s layers are unbound; a transformer built without LoRA inputs refuses one', async () => {
  const musubi = loraFeeds([{ file: await lora('musubi_framepack'), weight: 0.7 }], dit.config);
  assert.equal(await dit.setLora(musubi), true);
  const alone = await forward(dit);
  assert.equal(await dit.setLora(musubi), false, 'the same weights are not bound again');
  await dit.setLora(loraFeeds([{ file: await lora('diffusers_a'), weight: 1 }], dit.config));
  await dit.setLora(musubi);
  assert.deepEqual(await forward(dit), alone);
  await dit.setLora(null);
  await assert.rejects(plain.setLora(musubi), /built without LoRA inputs/);
  assert.equal(await plain.setLora(null), false);
});

test('every linear layer is covered by the diffusers file, and the layout errors name the first bad key', async () => {
  const a = await lora('diffusers_a');
  assert.deepEqual([...a.keys()].sort(), [...ditLinears(dit.config).keys()].sort());
  const good = await loadTensors(join(LORA_DIR, 'musubi_framepack.safetensors'));
  const bad = (extra: Record<string, HostTensor>, why: RegExp) =>
    assert.throws(() => parseLora({ ...good, ...extra }, {}, dit.config, 'bad.safetensors'), (e: unknown) => e instanceof LoraError && why.test(e.message));
  const t = (dims: number[]): HostTensor => ({ dtype: 'float32', dims, data: new Float32Array(dims.reduce((x, y) => x * y, 1)) });
  bad({ 'lora_unet_x_embedder_proj.lora_down.weight': t([4, 64]) }, /^LoRA bad\.safetensors: key "lora_unet_x_embedder_proj\.lora_down\.weight": no layer of the FramePack transformer has this kohya name$/);
  bad({ 'transformer.blocks.0.attn1.to_q.lora_A.weight': t([4, 32]) }, /key "transformer\.blocks\.0\.attn1\.to_q\.lora_A\.weight": no linear layer of the FramePack transformer is called "blocks\.0\.attn1\.to_q"/);
  bad({ 'lora_unet_transformer_blocks_0_attn_to_q.dora_scale': t([1, 32]) }, /DoRA is not supported/);
  bad({ 'lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight': t([4, 48]) }, /"transformer_blocks\.0\.attn\.to_q" is \[32, 32\] in this transformer, the LoRA is for \[32, 48\]/);
  bad({ 'diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight': t([4, 32]) }, /"double_blocks\.0\.img_attn_qkv" has no lora_B \/ lora_up tensor/);
});

test('8-bit weights (the low placement): LoRA branches on MatMulNBits layers, packed weights prepared once per layer', async (t) => {
  const cacheDir = await mkdtemp(join(tmpdir(), 'lora-q8-'));
  const opts = { precision: 'float32' as const, ep: 'cpu' as const, quantize: { bits: 8 as const, cacheDir } };
  const { buildTransformerGraphs } = await import('../../src/framepack/transformer.js');
  const graphs = await buildTransformerGraphs(DIT_DIR(), { ...opts, lora: true });
  const jobs = (graphs.blocks.prepare ?? []).map((j) => j.file);
  assert.equal(new Set(jobs).size, jobs.length, 'each packed weight once, read by both bodies');
  const q = await PackedTransformer.create(graphs, opts);
  const qPlain = await PackedTransformer.load(DIT_DIR(), opts);
  try {
    assert.deepEqual(await forward(q), await forward(qPlain), 'no LoRA: the bytes of the graphs built without');
    await q.setLora(loraFeeds([{ file: await lora('musubi_framepack'), weight: 0.7 }], q.config));
    const err = relL2(await forward(q), refs.out_musubi_framepack.data as Float32Array);
    t.diagnostic(`8-bit weights + LoRA against the float32 reference: relative L2 ${err.toExponential(2)}`);
    assert.ok(err < 0.05, `8-bit weights with the LoRA: relative L2 ${err} to the float32 reference`);
  } finally {
    await Promise.all([q.release(), qPlain.release()]);
    await rm(cacheDir, { recursive: true, force: true });
  }
});
