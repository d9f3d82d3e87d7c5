/**
 * LLaMA text encoder parity: hidden_states[-3] of the tiny LLaMA-3-shaped checkpoint (4 layers, GQA 4 q / 2 kv
 * heads, rotary theta 500000) against transformers' LlamaModel in float32 (fixture components/text_encoder).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Checkpoint, loadTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import { buildLlama, llamaConfig, llamaNet } from '../../src/nets/llama.js';
import { getNet } from '../../src/nets/registry.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const TOLERANCE = 1e-4; // fixtures README: components, relative L2

const weights = () => join(tinyModels(), 'hunyuanvideo-community', 'HunyuanVideo', 'text_encoder');

/** Rows [from, to) of a (1, S, D) tensor. */
function rows(x: HostTensor, from: number, to: number): HostTensor {
  const D = x.dims[2];
  return { dtype: 'float32', dims: [1, to - from, D], data: (x.data as Float32Array).slice(from * D, to * D) };
}

after(() => terminateWorkers());

describe('LLaMA text encoder (hidden_states[-3])', () => {
  it('reads the config FramePack depends on', async () => {
    const cfg = llamaConfig((await Checkpoint.open(weights())).config);
    assert.deepEqual([cfg.layers, cfg.heads, cfg.kvHeads, cfg.headDim, cfg.ropeTheta], [4, 4, 2, 16, 500000]);
    assert.throws(() => llamaConfig({ ...cfg, rope_scaling: { type: 'llama3' } }), /rope_scaling/);
  });

  it('matches transformers on the 351 padded tokens with their attention mask', async (t) => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'text_encoder.safetensors'));
    const out = await llamaNet.forward(weights(), { input_ids: ref.input_ids, attention_mask: ref.attention_mask },
      { precision: 'float32', ep: 'cpu' });
    const err = relL2(out.hidden_states_minus_3, ref.hidden_states_minus_3);
    t.diagnostic(`text_encoder hidden_states_minus_3 (351 tokens, masked): relative L2 ${err.toExponential(3)}`);
    assert.ok(err <= TOLERANCE, `relative L2 ${err} > ${TOLERANCE}`);
    // the final norm would give last_hidden_state's scale; hidden_states[-3] must be far from it
    assert.ok(relL2(out.hidden_states_minus_3, ref.last_hidden_state) > 0.1, 'output looks like the last hidden state');
  });

  it('gives the same real-token rows when run on the real tokens only (how FramePack runs it)', async (t) => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'text_encoder.safetensors'));
    const mask = ref.attention_mask.data as BigInt64Array;
    const A = mask.reduce((n, v) => n + Number(v), 0);
    assert.ok(A > 95 && A < 351, `fixture has ${A} real tokens`);
    const ids: HostTensor = { dtype: 'int64', dims: [1, A], data: (ref.input_ids.data as BigInt64Array).slice(0, A) };
    const ones: HostTensor = { dtype: 'int64', dims: [1, A], data: new BigInt64Array(A).fill(1n) };
    const session = await Session.create(buildLlama(await Checkpoint.open(weights()), { precision: 'float32' }), { ep: 'cpu' });
    try {
      const out = await session.run({ input_ids: ids, attention_mask: ones });
      const err = relL2(out.hidden_states_minus_3, rows(ref.hidden_states_minus_3, 0, A));
      t.diagnostic(`text_encoder hidden_states_minus_3 (${A} real tokens, no padding): relative L2 ${err.toExponential(3)}`);
      assert.ok(err <= TOLERANCE, `relative L2 ${err} > ${TOLERANCE}`);
    } finally {
      await session.release();
    }
  });

  it('is registered for `framepack forward`', async () => {
    const net = await getNet('llama');
    assert.equal(net, llamaNet);
    assert.deepEqual(net.outputs, ['hidden_states_minus_3']);
  });
});
