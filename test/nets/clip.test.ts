/**
 * CLIP text encoder parity: pooler_output (final-layer-normed state at the first end-of-text token) and
 * last_hidden_state of the tiny CLIP-L-shaped checkpoint against transformers' CLIPTextModel in float32
 * (fixture components/text_encoder_2).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadTensors } from '../../src/onnx/safetensors.js';
import { clipNet } from '../../src/nets/clip.js';
import { getNet } from '../../src/nets/registry.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const TOLERANCE = 1e-4; // fixtures README: components, relative L2

const weights = () => join(tinyModels(), 'hunyuanvideo-community', 'HunyuanVideo', 'text_encoder_2');
const cpu = { precision: 'float32', ep: 'cpu' } as const;

after(() => terminateWorkers());

describe('CLIP text encoder', () => {
  it('matches transformers: pooler_output and last_hidden_state', async (t) => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'text_encoder_2.safetensors'));
    const out = await clipNet.forward(weights(), { input_ids: ref.input_ids }, cpu);
    const pooled = relL2(out.pooler_output, ref.pooler_output);
    const last = relL2(out.last_hidden_state, ref.last_hidden_state);
    t.diagnostic(`text_encoder_2 pooler_output: relative L2 ${pooled.toExponential(3)}`);
    t.diagnostic(`text_encoder_2 last_hidden_state: relative L2 ${last.toExponential(3)}`);
    assert.ok(pooled <= TOLERANCE, `pooler_output relative L2 ${pooled} > ${TOLERANCE}`);
    assert.ok(last <= TOLERANCE, `last_hidden_state relative L2 ${last} > ${TOLERANCE}`);
  });

  it('pools at the first end-of-text token, not the last one', async () => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'text_encoder_2.safetensors'));
    const ids = Array.from(ref.input_ids.data as BigInt64Array, Number);
    const eos = Math.max(...ids);
    // BOS, two tokens, EOS at 3, more text, EOS padding: pooling must read row 3
    const custom = [ids[0], ids[1], ids[2], eos, ids[1], ids[2], ...new Array(71).fill(eos)];
    const out = await clipNet.forward(weights(),
      { input_ids: { dtype: 'int64', dims: [1, 77], data: BigInt64Array.from(custom, BigInt) } }, cpu);
    const D = out.pooler_output.dims[1];
    const row3 = (out.last_hidden_state.data as Float32Array).slice(3 * D, 4 * D);
    assert.deepEqual(Array.from(out.pooler_output.data as Float32Array), Array.from(row3));
  });

  it('is registered for `framepack forward`', async () => {
    assert.equal(await getNet('clip'), clipNet);
  });
});
