import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HistoryThread } from '../../src/framepack/history-thread.js';
import { createHistory, planSections, zeros, type Float32Tensor, type SamplingMode } from '../../src/framepack/sections.js';
import { loopPauses } from '../event-loop.js';

/** A (1, C, T, h, w) latent of distinct values from `seed`. */
function latent(seed: number, T: number, C = 3, h = 2, w = 4): Float32Tensor {
  const x = zeros([1, C, T, h, w]);
  for (let i = 0; i < x.data.length; i++) x.data[i] = seed + i / 1000;
  return x;
}
const copy = (t: Float32Tensor): Float32Tensor => ({ ...t, data: t.data.slice() });

for (const mode of ['inverted', 'f1'] as SamplingMode[]) {
  test(`${mode}: the same conditioning, chunks and decode slices as the history on this thread`, async () => {
    const lws = 5;
    const start = latent(-1, 1);
    const here = createHistory(mode, start);
    const there = new HistoryThread(mode, start);
    const end = latent(-50, 1);
    try {
      for (const plan of planSections(4, lws, mode)) {
        const post = mode === 'inverted' && plan.index === 0 ? end : undefined;
        assert.deepEqual(await there.conditioning(post), here.conditioning(post), `section ${plan.index}: conditioning`);
        const generated = latent(100 * (plan.index + 1), lws);
        const expected = here.push(copy(generated), plan);
        assert.deepEqual(await there.push(generated, plan, { chunk: true }), expected, `section ${plan.index}: chunk`);
        assert.equal(generated.data.byteLength, 0, 'the sampler output was handed over, not copied');
        assert.equal(there.generated, here.generated);
        assert.deepEqual(await there.decodeSlice(plan, lws), here.decodeSlice(plan, lws), `section ${plan.index}: decode slice`);
      }
      assert.equal(end.data.length, 1 * 3 * 2 * 4, 'the end latent stays the caller\'s');
    } finally {
      await there.close();
    }
  });
}

test('the event loop keeps running while the history grows by 640 px sections', async (t) => {
  // 16 channels of 80 x 80 latents: each push copies the whole history (up to ~30 MB) in the worker. The
  // assertions compare the longest gap between timer ticks with the whole run, whatever this machine's speed.
  const lws = 9;
  const plans = planSections(10, lws);
  const history = new HistoryThread('inverted', latent(0, 1, 16, 80, 80));
  const outputs = plans.map((p) => latent(p.index, lws, 16, 80, 80)); // made before the clock starts: JavaScript work
  try {
    const { ticks, worst, took } = await loopPauses(async () => {
      for (const plan of plans) await history.push(outputs[plan.index], plan);
    });
    t.diagnostic(`${ticks} ticks, longest pause ${worst.toFixed(1)} ms during ${plans.length} pushes in ${took.toFixed(0)} ms`);
    assert.ok(ticks >= 5, `${ticks} timer ticks during ${took.toFixed(0)} ms of pushes`);
    assert.ok(worst < took / 2, `longest event-loop pause ${worst.toFixed(1)} ms during ${took.toFixed(0)} ms of pushes`);
    assert.equal(history.generated, plans.length * lws + 1);
  } finally {
    await history.close();
  }
});
