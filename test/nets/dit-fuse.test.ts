import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Checkpoint, loadTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { buildDitGraphs } from '../../src/nets/dit.js';
import { PackedTransformer, type DitInputs } from '../../src/framepack/transformer.js';
import { ditOpCounts } from '../../scripts/dit-ops.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const DIT_DIR = () => join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY');

after(() => terminateWorkers());

test('fused blocks graph equals the unfused one within float32 rounding (tiny model, CPU)', async () => {
  const ref = await loadTensors(fixture('framepack-tiny', 'components', 'transformer.safetensors'));
  const { output: expected, masked_output, masked_encoder_hidden_states, masked_encoder_attention_mask, ...plain } = ref;
  const cases: Record<string, DitInputs> = {
    plain: plain as unknown as DitInputs,
    masked: { ...plain, encoder_hidden_states: masked_encoder_hidden_states, encoder_attention_mask: masked_encoder_attention_mask } as unknown as DitInputs,
  };
  const ck = await Checkpoint.open(DIT_DIR());
  const outputs: Record<string, Record<string, HostTensor>> = {};
  for (const fuse of [false, true]) {
    const dit = await PackedTransformer.create(buildDitGraphs(ck, { precision: 'float32', fuse }), { ep: 'cpu', precision: 'float32' });
    try {
      dit.beginSection({ steps: 2 });
      outputs[String(fuse)] = {};
      for (const [name, inputs] of Object.entries(cases)) outputs[String(fuse)][name] = (await dit.forward(inputs)).output;
    } finally {
      await dit.release();
    }
  }
  for (const name of Object.keys(cases)) {
    const fused = outputs.true[name].data as Float32Array, unfused = outputs.false[name].data as Float32Array;
    const err = relL2(fused, unfused);
    console.log(`# ${name}: fused vs unfused relative L2 ${err.toExponential(3)}`);
    assert.ok(err <= 1e-6, `${name}: fused and unfused differ by ${err}`);
    // both are the reference forward (tolerance of the fixtures)
    const reference = (name === 'plain' ? expected : masked_output).data as Float32Array;
    for (const out of [fused, unfused]) assert.ok(relL2(out, reference) <= 1e-4);
  }
});

test('fused by default in half precision only: the float32 graphs stay the plain ones', async () => {
  const ck = await Checkpoint.open(DIT_DIR());
  const bytes = (o: { precision: 'float32' | 'bfloat16'; fuse?: boolean }) => Buffer.from(buildDitGraphs(ck, o).blocks.bytes);
  assert.ok(bytes({ precision: 'float32' }).equals(bytes({ precision: 'float32', fuse: false })));
  assert.ok(bytes({ precision: 'bfloat16' }).equals(bytes({ precision: 'bfloat16', fuse: true })));
  assert.ok(!bytes({ precision: 'bfloat16' }).equals(bytes({ precision: 'bfloat16', fuse: false })));
});

test('full-size blocks graph: the fused ops replace the passes they stand for (node counts)', async () => {
  const D = 20, S = 40; // dual and single blocks of the real config
  const bf16 = await ditOpCounts('bfloat16');
  const f32 = await ditOpCounts('float32');
  const n = (c: Record<string, number>, op: string) => c[op] ?? 0;
  for (const { unfused, fused } of [bf16, f32]) {
    // every AdaLN but the first of each stream (no pending residual) takes the residual add with it
    assert.equal(n(fused.graph, 'com.microsoft.SkipLayerNormalization'), 4 * D - 2 + S - 1);
    assert.equal(n(unfused.graph, 'com.microsoft.SkipLayerNormalization'), 0);
    assert.equal(n(fused.graph, 'LayerNormalization'), n(unfused.graph, 'LayerNormalization') - (4 * D - 2 + S - 1));
    assert.equal(n(fused.graph, 'Add'), n(unfused.graph, 'Add') - (4 * D - 2 + S - 1));
    // the MLPs' tanh GELU takes its GEMM's bias
    assert.equal(n(fused.graph, 'Gelu'), 0);
    assert.equal(n(fused.graph, 'com.microsoft.FastGelu'), n(unfused.graph, 'Gelu'));
    assert.equal(n(fused.graph, 'com.microsoft.FastGelu'), 2 * D + S);
    // single blocks: proj_out as two GEMMs over its column blocks instead of one over a concatenation
    assert.equal(n(fused.graph, 'Gemm'), n(unfused.graph, 'Gemm') + S);
    assert.equal(n(fused.graph, 'Concat'), n(unfused.graph, 'Concat') - S);
    assert.equal(n(fused.singleBlock, 'Concat'), n(unfused.singleBlock, 'Concat') - 1);
    assert.equal(n(fused.graph, 'com.microsoft.RotaryEmbedding'), n(unfused.graph, 'com.microsoft.RotaryEmbedding'));
  }
  // bfloat16: q and k rotate in bf16 (no float32 round trip); float32 graphs had no casts to drop
  assert.equal(n(bf16.unfused.dualBlock, 'Cast'), 4);
  assert.equal(n(bf16.fused.dualBlock, 'Cast'), 0);
  assert.equal(n(bf16.fused.singleBlock, 'Cast'), 0);
  assert.equal(n(bf16.unfused.graph, 'Cast') - n(bf16.fused.graph, 'Cast'), 4 * (D + S) - 2);
  assert.equal(n(f32.fused.graph, 'Cast'), n(f32.unfused.graph, 'Cast'));
  const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
  console.log(`# blocks graph nodes, bfloat16: ${total(bf16.unfused.graph)} -> ${total(bf16.fused.graph)}; float32: ${total(f32.unfused.graph)} -> ${total(f32.fused.graph)}`);
});
