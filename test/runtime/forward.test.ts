/**
 * `framepack forward`: named tensors in, a registered network, named tensors out.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { main } from '../../src/cli/forward.js';
import { registerNet, type ForwardNet } from '../../src/nets/registry.js';
import { Graph } from '../../src/onnx/graph.js';
import { Checkpoint, loadTensors, saveRaw, saveTensors } from '../../src/onnx/safetensors.js';
import { Session } from '../../src/runtime/session.js';
import { assertClose, bytesOf, f32, rand, tempDir } from '../onnx/helpers.js';
import * as ref from '../onnx/reference.js';

let dir: string;
let cleanup: () => Promise<void>;
const W = rand(3 * 4, 51), B = rand(3, 52);

/** A one-layer network in the shape every real one has: weights folder in, named tensors out. */
const tinyNet: ForwardNet = {
  inputs: ['hidden'],
  outputs: ['projected'],
  async forward(weightsDir, feeds, opts) {
    const ck = await Checkpoint.open(weightsDir);
    const g = new Graph({ name: 'tiny', precision: opts.precision });
    const x = g.floatInput('hidden', ['batch', 4]);
    g.floatOutput(g.linear(x, ck, 'proj'), 'projected');
    const s = await Session.create(g.toModel(), { ep: opts.ep });
    try {
      return await s.run(feeds);
    } finally {
      await s.release();
    }
  },
};

before(async () => {
  ({ dir, cleanup } = await tempDir());
  await mkdir(join(dir, 'weights'));
  await saveRaw(join(dir, 'weights', 'model.safetensors'), [
    { key: 'proj.weight', dtype: 'F32', shape: [3, 4], bytes: bytesOf(W) },
    { key: 'proj.bias', dtype: 'F32', shape: [3], bytes: bytesOf(B) },
  ]);
  registerNet('tiny-test', async () => tinyNet);
});
after(() => cleanup());

describe('framepack forward', () => {
  test('runs a network on named inputs and writes its outputs', async () => {
    const x = rand(2 * 4, 53);
    const inputs = join(dir, 'in.safetensors'), output = join(dir, 'out.safetensors');
    await saveTensors(inputs, { hidden: f32([2, 4], x), unrelated: f32([1], [0]) });
    await main(['tiny-test', '--weights', join(dir, 'weights'), '--inputs', inputs, '--output', output]);
    const out = await loadTensors(output);
    assert.deepEqual(Object.keys(out), ['projected']);
    assert.deepEqual(out.projected.dims, [2, 3]);
    assertClose(out.projected.data as Float32Array, ref.linear(x, W, B, 2, 4, 3));
  });

  test('usage errors say what is wrong', async () => {
    const inputs = join(dir, 'wrong.safetensors');
    await saveTensors(inputs, { other: f32([1], [0]) });
    const w = join(dir, 'weights');
    await assert.rejects(main(['nope', '--weights', w, '--inputs', inputs, '--output', 'o']), /unknown network "nope"/);
    await assert.rejects(main(['tiny-test', '--weights', w, '--inputs', inputs, '--output', 'o']), /lacks hidden \(tiny-test takes hidden; found other\)/);
    await assert.rejects(main(['tiny-test', '--weights', w]), /--weights, --inputs and --output are required/);
    await assert.rejects(main(['tiny-test', '--weights', w, '--inputs', inputs, '--output', 'o', '--ep', 'tpu']), /--ep must be cpu, cuda or webgpu/);
    await assert.rejects(main(['tiny-test', '--bogus']), /bogus/);
  });
});
