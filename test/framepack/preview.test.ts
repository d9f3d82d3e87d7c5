/**
 * Live previews: the original's latent -> RGB projection (vae_decode_fake), laid out as its Gradio app shows
 * it, and the renderer that draws one preview at a time and drops the stale ones.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { LATENT_RGB_BIAS, LATENT_RGB_FACTORS, latentsToRgb } from '../../src/framepack/preview.js';
import { PreviewRenderer, type PreviewImage } from '../../src/framepack/preview-renderer.js';
import type { Float32Tensor } from '../../src/framepack/sections.js';

const latents = (T: number, h: number, w: number, set: Array<[c: number, t: number, y: number, x: number, v: number]> = []): Float32Tensor => {
  const data = new Float32Array(16 * T * h * w);
  for (const [c, t, y, x, v] of set) data[((c * T + t) * h + y) * w + x] = v;
  return { dtype: 'float32', dims: [1, 16, T, h, w], data };
};

test('the projection is vae_decode_fake: 16 channels -> RGB with its factors and bias, clamped, truncated to uint8', () => {
  assert.equal(LATENT_RGB_FACTORS.length, 16);
  assert.deepEqual(LATENT_RGB_FACTORS[10], [0.1166, 0.1627, 0.0962]);
  assert.deepEqual(LATENT_RGB_FACTORS[12], [-0.2315, -0.1920, -0.1355]);
  assert.deepEqual(LATENT_RGB_BIAS, [0.0259, -0.0192, -0.0761]);
  // 2 frames of 2x3: channel 10 = 2 at (t 1, y 0, x 2); channel 12 = -5 at (t 0, y 1, x 0); zeros elsewhere
  const strip = latentsToRgb(latents(2, 2, 3, [[10, 1, 0, 2, 2], [12, 0, 1, 0, -5]]));
  assert.equal(strip.width, 6, 'frames side by side');
  assert.equal(strip.height, 2);
  const px = (row: number, col: number) => Array.from(strip.rgb.subarray((row * 6 + col) * 3, (row * 6 + col) * 3 + 3));
  // zero latents give the bias: 0.0259 * 255 = 6.6 -> 6; negative values clamp to 0
  assert.deepEqual(px(0, 0), [6, 0, 0]);
  // 0.0259 + 2 * 0.1166 = 0.2591 -> 66; -0.0192 + 2 * 0.1627 = 0.3062 -> 78; -0.0761 + 2 * 0.0962 = 0.1163 -> 29
  assert.deepEqual(px(0, 5), [66, 78, 29], 'frame 1, column 2 lands at column 3 + 2');
  // 0.0259 + 1.1575 > 1 -> 255; -0.0192 + 0.96 = 0.9408 -> 239; -0.0761 + 0.6775 = 0.6014 -> 153
  assert.deepEqual(px(1, 0), [255, 239, 153]);
  assert.throws(() => latentsToRgb({ dtype: 'float32', dims: [1, 4, 1, 2, 2], data: new Float32Array(16) }), /expected \(1, 16/);
});

test('the renderer draws JPEGs off the event loop, one at a time, and keeps only the newest waiting offer', async () => {
  const seen: Array<{ meta: number; preview: PreviewImage }> = [];
  const errors: unknown[] = [];
  const r = new PreviewRenderer<number>((meta, preview) => seen.push({ meta, preview }), (err) => errors.push(err));
  // frame 2 lit: green = 255 * (-0.0192 + 3 * 0.1627) = 119.6 -> 119 (a whole 8x10 frame, so JPEG keeps it)
  const lit: Array<[number, number, number, number, number]> = [];
  for (let y = 0; y < 8; y++) for (let xx = 0; xx < 10; xx++) lit.push([10, 2, y, xx, 3]);
  const x = latents(3, 8, 10, lit);
  for (let i = 0; i < 5; i++) {
    r.offer(i, x);
    x.data.fill(0); // the caller's buffer changes after the offer: the renderer copied it
  }
  while (seen.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
  await r.close();
  assert.deepEqual(errors, []);
  assert.deepEqual(seen.map((s) => s.meta), [0, 4], 'offers 1-3 were replaced while 0 was being drawn');
  const first = await sharp(seen[0].preview.jpeg).raw().toBuffer({ resolveWithObject: true });
  assert.equal(first.info.format, 'raw');
  assert.deepEqual([seen[0].preview.width, seen[0].preview.height, first.info.width, first.info.height], [30, 8, 30, 8]);
  assert.equal((await sharp(seen[0].preview.jpeg).metadata()).format, 'jpeg');
  // offer 0 had frame 2 lit (columns 20-29), offer 4 only zeros
  const green = (buf: Buffer, col: number, row: number) => buf[(row * 30 + col) * 3 + 1];
  assert.ok(Math.abs(green(first.data, 25, 4) - 119) <= 4, `green of the lit frame: ${green(first.data, 25, 4)}`);
  assert.ok(green(first.data, 5, 4) <= 4, `green of an unlit frame: ${green(first.data, 5, 4)}`);
  const last = await sharp(seen[1].preview.jpeg).raw().toBuffer();
  assert.ok(green(last, 25, 4) <= 4, 'the newest offer was drawn from its own copy');
  r.offer(9, x); // after close: ignored
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(seen.length, 2);
});
