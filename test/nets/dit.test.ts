import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Checkpoint, loadTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { gridRope, packedRope, pooledRope, ropeConfig } from '../../src/nets/dit-rope.js';
import { ditConfig, ditParameterShapes } from '../../src/nets/dit.js';
import { PackedTransformer, TransformerInputError, forwardDit, type DitInputs } from '../../src/framepack/transformer.js';
import { getNet } from '../../src/nets/registry.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const DIT_DIR = () => join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY');
const TOL = 1e-4; // fixtures README: components, relative L2

let ref: Record<string, HostTensor>;
let dit: PackedTransformer;

function plainInputs(): DitInputs {
  const { output, masked_output, masked_encoder_hidden_states, masked_encoder_attention_mask, ...rest } = ref;
  return rest as unknown as DitInputs;
}

function maskedInputs(): DitInputs {
  return { ...plainInputs(), encoder_hidden_states: ref.masked_encoder_hidden_states, encoder_attention_mask: ref.masked_encoder_attention_mask };
}

before(async () => {
  ref = await loadTensors(fixture('framepack-tiny', 'components', 'transformer.safetensors'));
  dit = await PackedTransformer.load(DIT_DIR(), { precision: 'float32', ep: 'cpu' });
});

after(async () => {
  await dit?.release();
  await terminateWorkers();
});

test('packed transformer matches the reference forward (float32, CPU)', async () => {
  dit.beginSection({ steps: 25 });
  const { output, teacache, magcache } = await dit.forward(plainInputs());
  assert.equal(teacache, null);
  assert.equal(magcache, null);
  assert.deepEqual(output.dims, ref.output.dims);
  const err = relL2(output.data as Float32Array, ref.output.data as Float32Array);
  console.log(`# dit plain call: relative L2 ${err.toExponential(3)}`);
  assert.ok(err <= TOL, `relative L2 ${err} > ${TOL}`);
});

test('a section that hands its clean latents over: bound once to embed and blocks, not copied, same output', async () => {
  const copy = (t: HostTensor): HostTensor => ({ ...t, data: t.data.slice() } as HostTensor);
  const inputs = { ...plainInputs() };
  for (const name of ['clean_latents', 'clean_latents_2x', 'clean_latents_4x'] as const) inputs[name] = copy(inputs[name]);
  dit.beginSection({ steps: 2, teacache: { enabled: true }, handOver: true });
  const first = await dit.forward(inputs, { branch: 'positive' });
  for (const name of ['clean_latents', 'clean_latents_2x', 'clean_latents_4x'] as const) {
    assert.equal(inputs[name].data.byteLength, 0, `${name} went to the session worker`);
  }
  assert.ok(relL2(first.output.data as Float32Array, ref.output.data as Float32Array) <= TOL, 'the first call as the reference');
  // the other branch's calls find them bound (TeaCache's measure in embed reads them too)
  const second = await dit.forward(inputs, { branch: 'negative' });
  assert.deepEqual(second.output.data, first.output.data);
  dit.beginSection({ steps: 25 });
  assert.ok(plainInputs().clean_latents.data.byteLength > 0, 'without handOver the caller keeps its tensors');
});

test('padded text: the refiner honours the mask and the context is cropped to the valid tokens', async () => {
  dit.beginSection({ steps: 25 });
  const { output } = await dit.forward(maskedInputs());
  const err = relL2(output.data as Float32Array, ref.masked_output.data as Float32Array);
  console.log(`# dit padded-text call: relative L2 ${err.toExponential(3)}`);
  assert.ok(err <= TOL, `relative L2 ${err} > ${TOL}`);
  // The padding must matter only through the mask: the plain and padded calls are different prompts.
  assert.ok(relL2(output.data as Float32Array, ref.output.data as Float32Array) > 1e-3);
});

test('TeaCache in the runner: a skipped call re-uses the residual, first and last calls compute', async () => {
  dit.beginSection({ steps: 3, teacache: { enabled: true } });
  const a = await dit.forward(plainInputs());
  assert.deepEqual(a.teacache, { compute: true, relL1: null, accumulated: 0, cntAfter: 1 });
  // Same input again: r = 0, acc = f(0) = 0.0961 < 0.15 -> skipped, output from the cached residual.
  const b = await dit.forward(plainInputs());
  assert.equal(b.teacache!.compute, false);
  assert.equal(b.teacache!.relL1, 0);
  assert.ok(Math.abs(b.teacache!.accumulated - 0.0961237896) < 1e-12);
  const errSkip = relL2(b.output.data as Float32Array, ref.output.data as Float32Array);
  console.log(`# dit TeaCache-skipped call: relative L2 ${errSkip.toExponential(3)}`);
  assert.ok(errSkip <= TOL);
  // A changed input on a skipped call goes through the head with the old residual (no blocks).
  const c = await dit.forward(maskedInputs());
  assert.equal(c.teacache!.compute, true, 'the last call of a section always computes');
  assert.ok(relL2(c.output.data as Float32Array, ref.masked_output.data as Float32Array) <= TOL);
});

test('TeaCache skip with a changed input uses the cached residual, not fresh blocks', async () => {
  dit.beginSection({ steps: 4, teacache: { enabled: true, threshold: 1e9 } });
  await dit.forward(plainInputs());
  const skipped = await dit.forward(maskedInputs()); // text differs, image tokens do not: r = 0, skipped
  assert.equal(skipped.teacache!.compute, false);
  // The head sees img + residual of the plain call: image stream identical -> the plain output, not the masked one.
  assert.ok(relL2(skipped.output.data as Float32Array, ref.output.data as Float32Array) <= TOL);
  assert.ok(relL2(skipped.output.data as Float32Array, ref.masked_output.data as Float32Array) > 1e-3);
});

test('per-branch TeaCache keeps a separate state per CFG branch; shared mode is the original counter', async () => {
  dit.beginSection({ steps: 2, teacache: { enabled: true } });
  const p0 = await dit.forward(plainInputs(), { branch: 'positive' });
  const n0 = await dit.forward(plainInputs(), { branch: 'negative' });
  assert.equal(p0.teacache!.cntAfter, 1);
  assert.equal(n0.teacache!.cntAfter, 1, 'negative branch has its own counter');
  dit.beginSection({ steps: 2, teacache: { enabled: true, mode: 'shared' } });
  await dit.forward(plainInputs(), { branch: 'positive' });
  const s1 = await dit.forward(plainInputs(), { branch: 'negative' });
  assert.equal(s1.teacache!.cntAfter, 0, 'shared counter wraps after steps calls of both branches');
});

test('MagCache in the runner: skipped calls use the cached residual, decisions follow the calibration', async () => {
  // 25 steps at 640: calls 0-5 compute (retention), 6 and 7 skip, 8 computes (see test/framepack/magcache.test.ts).
  dit.beginSection({ steps: 25, magcache: { enabled: true, height: 640, width: 608 } });
  const got: string[] = [];
  for (let i = 0; i < 9; i++) {
    // call 5 (the last computed before the skips) sees the masked text; the skips must re-use its residual
    const r = await dit.forward(i === 5 ? maskedInputs() : plainInputs());
    assert.equal(r.teacache, null);
    got.push(r.magcache!.compute ? 'C' : 'S');
    if (i === 6) {
      // image stream of the plain call + residual of the masked call: not the plain output
      assert.ok(relL2(r.output.data as Float32Array, ref.output.data as Float32Array) > 1e-3, 'the skip re-used the cached residual');
    }
    if (i === 8) assert.ok(relL2(r.output.data as Float32Array, ref.output.data as Float32Array) <= TOL, 'computed calls are exact');
  }
  assert.equal(got.join(''), 'CCCCCCSSC');
  assert.throws(() => dit.beginSection({ steps: 2, teacache: { enabled: true }, magcache: { enabled: true, height: 640, width: 608 } }), /cannot both/);
});

test('any window and bucket: padded text equals the same text cropped to its valid tokens (spec 5.6)', async () => {
  // A window of 5 frames on a 12 x 10 latent (both 2x and 4x need padding in H and W), 20 text slots, 7 valid.
  const x = plainInputs();
  const [T, H, W, L, valid] = [5, 12, 10, 20, 7];
  const wave = (n: number, f: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * f) * 0.8);
  const lat = (t: number, f: number): HostTensor => ({ dtype: 'float32', dims: [1, 16, t, H, W], data: wave(16 * t * H * W, f) });
  const ids = (v: number[]): HostTensor => ({ dtype: 'int64', dims: [1, v.length], data: BigInt64Array.from(v.map(BigInt)) });
  const text = wave(L * 64, 0.37);
  const base: DitInputs = {
    ...x,
    hidden_states: lat(T, 0.11), latent_indices: ids([9, 10, 11, 12, 13]),
    clean_latents: lat(2, 0.13), clean_latent_indices: ids([0, 14]),
    clean_latents_2x: lat(2, 0.17), clean_latent_2x_indices: ids([15, 16]),
    clean_latents_4x: lat(16, 0.19), clean_latent_4x_indices: ids(Array.from({ length: 16 }, (_, i) => 17 + i)),
  };
  dit.beginSection({ steps: 1 });
  const padded = await dit.forward({
    ...base,
    encoder_hidden_states: { dtype: 'float32', dims: [1, L, 64], data: text },
    encoder_attention_mask: ids(Array.from({ length: L }, (_, i) => (i < valid ? 1 : 0))),
  });
  const cropped = await dit.forward({
    ...base,
    encoder_hidden_states: { dtype: 'float32', dims: [1, valid, 64], data: text.slice(0, valid * 64) },
    encoder_attention_mask: ids(new Array(valid).fill(1)),
  });
  assert.deepEqual(padded.output.dims, [1, 16, T, H, W]);
  const out = padded.output.data as Float32Array;
  assert.ok(out.every(Number.isFinite));
  const err = relL2(out, cropped.output.data as Float32Array);
  assert.ok(err < 1e-6, `padded vs cropped text: relative L2 ${err}`);
});

test('bad inputs fail with clear errors', async () => {
  dit.beginSection({ steps: 1 });
  const x = plainInputs();
  const { hidden_states: _drop, ...missing } = x;
  await assert.rejects(dit.forward(missing as DitInputs), (e: Error) => e instanceof TransformerInputError && /hidden_states/.test(e.message));
  const two: HostTensor = { ...x.hidden_states, dims: [2, ...x.hidden_states.dims.slice(1)], data: new Float32Array(2 * x.hidden_states.data.length) };
  await assert.rejects(dit.forward({ ...x, hidden_states: two }), /batch 2/);
  const badIdx: HostTensor = { dtype: 'int64', dims: [1, 2], data: BigInt64Array.of(1n, 2n) };
  await assert.rejects(dit.forward({ ...x, latent_indices: badIdx }), /latent_indices: 2 indices for 3 frames/);
});

test('the registry `dit` net runs one uncached call on the fixture file as is (extra tensors ignored)', async () => {
  const net = await getNet('dit');
  assert.equal(net.forward, forwardDit);
  assert.deepEqual(net.outputs, ['output']);
  for (const name of net.inputs) assert.ok(name in ref || name === 'guidance', `fixture lacks ${name}`);
  const out = await net.forward(DIT_DIR(), ref, { precision: 'float32', ep: 'cpu' });
  assert.ok(relL2(out.output.data as Float32Array, ref.output.data as Float32Array) <= TOL);
});

// ---------------------------------------------------------------------------------------------------------
// RoPE tables (host side)

const cfg = ropeConfig({ rope_theta: 256, rope_axes_dim: [4, 6, 6] });

test('rope: frequencies 256^(-2k/d) per axis, one value per interleaved pair', () => {
  const t = gridRope(cfg, [3], 2, 5); // one frame, 2 x 5 grid
  assert.equal(t.half, 8);
  assert.equal(t.tokens, 10);
  // token (t=3, y=1, x=4): row 1*5+4 = 9; lanes [T0 T1 | Y0 Y1 Y2 | X0 X1 X2]
  const row = 9 * 8;
  const expect = [3, 3 / 256 ** 0.5, 1, 1 / 256 ** (1 / 3), 1 / 256 ** (2 / 3), 4, 4 / 256 ** (1 / 3), 4 / 256 ** (2 / 3)];
  for (let j = 0; j < 8; j++) {
    assert.ok(Math.abs(t.cos[row + j] - Math.cos(expect[j])) < 1e-6, `cos lane ${j}`);
    assert.ok(Math.abs(t.sin[row + j] - Math.sin(expect[j])) < 1e-6, `sin lane ${j}`);
  }
  // position 0 on every axis is the identity rotation
  const z = gridRope(cfg, [0], 1, 1);
  assert.deepEqual(Array.from(z.cos), new Array(8).fill(1));
  assert.deepEqual(Array.from(z.sin), new Array(8).fill(0));
});

test('rope: 2x/4x tables average replicate-padded cos/sin values over k^3 cells', () => {
  const frames = [7, 8];
  const full = gridRope(cfg, frames, 3, 5); // h = 3, w = 5 -> padded to 4 x 6 for k = 2
  const pooled = pooledRope(cfg, frames, 3, 5, 2);
  assert.equal(pooled.tokens, 1 * 2 * 3);
  // output cell (0, 1, 2) averages rows y in {2, 2 (pad)}, x in {4, 4 (pad)}, t in {0, 1}
  const at = (t: number, y: number, x: number, j: number) => full.cos[((t * 3 + y) * 5 + x) * 8 + j];
  const cell = (0 * 2 + 1) * 3 + 2;
  for (let j = 0; j < 8; j++) {
    const want = (2 * at(0, 2, 4, j) + 2 * at(1, 2, 4, j) + 2 * at(0, 2, 4, j) + 2 * at(1, 2, 4, j)) / 8;
    assert.ok(Math.abs(pooled.cos[cell * 8 + j] - want) < 1e-6, `lane ${j}`);
  }
  // pooled entries are not unit rotations once angles differ inside a cell
  const c0 = pooled.cos[8 + 3], s0 = pooled.sin[8 + 3];
  assert.ok(c0 * c0 + s0 * s0 < 0.999);
});

test('rope: packed order is [4x | 2x | clean 1x | noisy]', () => {
  const idx = { latent: [3, 4, 5], clean: [0, 6], clean2x: [7, 8], clean4x: Array.from({ length: 16 }, (_, i) => 9 + i) };
  const t = packedRope(cfg, idx, 4, 3);
  const n4 = 4 * 1 * 1, n2 = 1 * 2 * 2, n1 = 2 * 4 * 3, nn = 3 * 4 * 3;
  assert.equal(t.tokens, n4 + n2 + n1 + nn);
  const noisy = gridRope(cfg, idx.latent, 4, 3);
  assert.deepEqual(Array.from(t.cos.subarray((n4 + n2 + n1) * 8)), Array.from(noisy.cos));
  const clean = gridRope(cfg, idx.clean, 4, 3);
  assert.deepEqual(Array.from(t.sin.subarray((n4 + n2) * 8, (n4 + n2 + n1) * 8)), Array.from(clean.sin));
});

test('parameter list: equals the fixture checkpoint; at full size 1274 tensors and 12,874,314,816 params (spec 1.7, 5.13)', async () => {
  const ck = await Checkpoint.open(DIT_DIR());
  const shapes = ditParameterShapes(ditConfig(ck.config));
  assert.deepEqual(shapes.map(([k]) => k).sort(), ck.keys().sort());
  for (const [k, shape] of shapes) assert.deepEqual(ck.entry(k).shape, shape, k);

  const full = ditParameterShapes(ditConfig({ image_proj_dim: 1152 }));
  assert.equal(full.length, 1274);
  const count = (prefix: string) => full.filter(([k]) => k.startsWith(prefix)).reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0);
  assert.equal(count(''), 12_874_314_816);
  assert.equal(count('transformer_blocks.0.'), 339_831_296);
  assert.equal(count('single_transformer_blocks.0.'), 141_591_808);
  assert.equal(count('context_embedder.'), 309_175_296);
  assert.equal(count('clean_x_embedder.'), 14_361_600);
  assert.equal(count('image_projection.'), 38_940_672);
});

test('config: the fixture transformer parses, and inconsistent configs are refused', () => {
  const c = ditConfig({ num_attention_heads: 2, attention_head_dim: 16, rope_axes_dim: [4, 6, 6], num_layers: 2 });
  assert.equal(c.dim, 32);
  assert.throws(() => ditConfig({ attention_head_dim: 16, rope_axes_dim: [4, 6, 4] }), /sums to 14/);
  assert.throws(() => ditConfig({ attention_head_dim: 16, rope_axes_dim: [4, 6, 6], patch_size_t: 2 }), /patch_size_t/);
});
