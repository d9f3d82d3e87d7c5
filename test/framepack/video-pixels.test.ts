/**
 * The video assembled in a worker thread: the same bytes as PixelHistory on this thread (both growth
 * directions), snapshots that later chunks do not change, the caller's chunk handed over, and the event
 * loop left free while a large chunk is blended.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PixelHistory, overlapFrames, zeros, type Float32Tensor } from '../../src/framepack/sections.js';
import { VideoPixels } from '../../src/framepack/video-pixels.js';
import { loopPauses } from '../event-loop.js';

const decoded = (latents: number, seed: number, H = 4, W = 6): Float32Tensor => {
  const x = zeros([1, 3, 4 * (latents - 1) + 1, H, W]);
  for (let i = 0; i < x.data.length; i++) x.data[i] = Math.sin(seed * 3.7 + i * 0.41) * 1.2; // some beyond [-1, 1]
  return x;
};

const collect = async (chunks: AsyncIterable<Uint8Array>) => {
  const parts: number[] = [];
  for await (const c of chunks) parts.push(...c);
  return Uint8Array.from(parts);
};

for (const grows of ['backward', 'forward'] as const) {
  test(`${grows}: the same frames as PixelHistory, and a snapshot keeps the frames it was taken of`, async () => {
    const O = overlapFrames(2);
    const here = new PixelHistory(O, grows);
    const there = new VideoPixels(O, grows);
    const latentCounts = grows === 'backward' ? [2, 4, 4, 5] : [3, 4, 4];
    let early: AsyncIterable<Uint8Array> | null = null;
    let earlyFrames: Uint8Array | null = null;
    for (const [k, latents] of latentCounts.entries()) {
      // the last chunk's unblended frames left float, as the pipeline leaves the frames it streamed
      const lazy = k === latentCounts.length - 1 ? 1000 : 0;
      here.add(decoded(latents, k), lazy);
      const chunk = decoded(latents, k);
      await there.add(chunk, lazy);
      assert.equal(chunk.data.length, 0, 'the chunk was handed over, not copied');
      assert.deepEqual([there.frameCount, there.width, there.height], [here.frameCount, here.width, here.height]);
      if (k === 1) {
        early = there.chunks();
        earlyFrames = here.frames();
      }
    }
    assert.deepEqual(await collect(early!), earlyFrames, 'taken after the second chunk, read after the last');
    assert.deepEqual(await collect(there.chunks()), here.frames());
    // from frame k on: within the float frames, within a uint8 chunk, at a boundary, none left
    const frameBytes = 3 * here.width * here.height;
    for (const from of [1, O + 2, O, here.frameCount - 1, here.frameCount]) {
      assert.deepEqual(await collect(there.chunks(from)), here.frames().subarray(from * frameBytes), `from ${from}`);
    }
    assert.deepEqual(await there.frames(), here.frames());
    await assert.rejects(collect(there.chunks()), /closed/, 'frames() closed it');
  });
}

test('a failure in the worker is the caller\'s error', async () => {
  const v = new VideoPixels(overlapFrames(2));
  await v.add(decoded(2, 0));
  await assert.rejects(v.add(decoded(2, 1, 4, 8)), /assembling the video: PixelHistory: chunk .* does not match/);
  await v.close();
  await assert.rejects(v.add(decoded(2, 1)), /closed/);
});

test('the event loop keeps running while a large chunk is blended in', async (t) => {
  // Were the blending on this thread, no timer could fire until add() returned. The assertions compare the
  // longest gap between ticks with the whole add(), whatever this machine's speed.
  const v = new VideoPixels(overlapFrames(6));
  await v.add(decoded(7, 0, 256, 256));
  const chunk = decoded(13, 1, 256, 256); // made before the clock starts: it is JavaScript work
  const { ticks, worst, took } = await loopPauses(() => v.add(chunk));
  await v.close();
  t.diagnostic(`${ticks} ticks, longest pause ${worst.toFixed(1)} ms during a ${took.toFixed(0)} ms add`);
  assert.ok(ticks >= 5, `${ticks} timer ticks during a ${took.toFixed(0)} ms add`);
  assert.ok(worst < took / 2, `longest event-loop pause ${worst.toFixed(1)} ms during a ${took.toFixed(0)} ms add`);
});
