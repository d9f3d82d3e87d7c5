import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadTensors } from '../../src/onnx/safetensors.js';
import {
  ForwardHistory, LatentHistory, PixelHistory, concatBytes, concatTime, linspace, overlapFrames, paddingSchedule, planSections, roundHalfEven,
  sectionCount, sectionIndices, sliceTime, softAppend, toUint8Frames, totalPixelFrames, zeros, type Float32Tensor,
} from '../../src/framepack/sections.js';
import { fixture } from '../fixtures.js';

const modeRefs = (name: string) => fileURLToPath(new URL(`../../../test/fixtures/end-frame-f1/${name}`, import.meta.url));

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

test('section count uses half-to-even rounding (spec 8.5)', () => {
  assert.equal(roundHalfEven(2.5), 2);
  assert.equal(roundHalfEven(3.5), 4);
  assert.equal(roundHalfEven(4.17), 4);
  const table: [number, number][] = [[1, 1], [2, 2], [3, 2], [5, 4], [10, 8], [60, 50]];
  for (const [seconds, n] of table) {
    assert.equal(sectionCount(seconds, 9), n, `${seconds} s`);
    assert.equal(totalPixelFrames(n, 9), 4 * n * 9 + 1);
  }
  assert.equal(totalPixelFrames(4, 9), 145);
  assert.equal(sectionCount(0.1, 9), 1, 'at least one section');
});

test('padding schedule, with repeated 2s above 4 sections', () => {
  assert.deepEqual(paddingSchedule(1), [0]);
  assert.deepEqual(paddingSchedule(2), [1, 0]);
  assert.deepEqual(paddingSchedule(4), [3, 2, 1, 0]);
  assert.deepEqual(paddingSchedule(5), [3, 2, 2, 1, 0]);
  assert.deepEqual(paddingSchedule(8), [3, 2, 2, 2, 2, 2, 1, 0]);
});

test('the fixture cases: section count, paddings and frame count from seconds and window', () => {
  for (const name of ['teacache_cfg1', 'realcfg_rescale']) {
    const p = JSON.parse(readFileSync(fixture('framepack-tiny', 'cases', name, 'params.json'), 'utf8'));
    const plans = planSections(p.total_video_length_seconds, p.latent_window_size);
    assert.equal(plans.length, p.total_latent_sections, name);
    assert.deepEqual(plans.map((s) => s.padding), p.latent_paddings, name);
    assert.equal(totalPixelFrames(plans.length, p.latent_window_size), p.frames, name);
    assert.deepEqual(plans.map((s) => s.isLast), plans.map((_, i) => i === plans.length - 1));
  }
});

test('per-section indices for lws 9 (spec 8.2)', () => {
  const rows: [number, number, number, number, number, number][] = [
    [3, 28, 36, 37, 38, 40], [2, 19, 27, 28, 29, 31], [1, 10, 18, 19, 20, 22], [0, 1, 9, 10, 11, 13],
  ];
  for (const [p, l0, l1, post, x2, x4] of rows) {
    const ix = sectionIndices(p, 9);
    assert.deepEqual(ix.latentIndices, range(l0, l1));
    assert.deepEqual(ix.cleanLatentIndices, [0, post]);
    assert.deepEqual(ix.clean2xIndices, [x2, x2 + 1]);
    assert.deepEqual(ix.clean4xIndices, range(x4, x4 + 15));
  }
});

/** A (1, C, T, h, w) latent whose every element of frame t holds `label + t`. */
function labelled(label: number, T: number, C = 2, h = 1, w = 2): Float32Tensor {
  const x = zeros([1, C, T, h, w]);
  for (let c = 0; c < C; c++) for (let t = 0; t < T; t++) x.data.fill(label + t, (c * T + t) * h * w, (c * T + t + 1) * h * w);
  return x;
}
const frameLabels = (x: Float32Tensor) => Array.from({ length: x.dims[2] }, (_, t) => x.data[t * x.dims[3] * x.dims[4]]);

test('latent history follows the worked example (spec 12.2): what each section is conditioned on', () => {
  const lws = 9;
  const start = labelled(-1, 1);
  const history = new LatentHistory(start);
  const plans = planSections(5, lws);
  const seen: { post: number[]; x2: number[]; x4: number[] }[] = [];
  const decoded: number[] = [];
  plans.forEach((plan, k) => {
    const c = history.conditioning();
    assert.deepEqual(c.cleanLatents.dims, [1, 2, 2, 1, 2]);
    assert.deepEqual(c.cleanLatents4x.dims, [1, 2, 16, 1, 2]);
    assert.equal(frameLabels(c.cleanLatents)[0], -1, 'clean latents start with the start latent');
    seen.push({ post: frameLabels(c.cleanLatents).slice(1), x2: frameLabels(c.cleanLatents2x), x4: frameLabels(c.cleanLatents4x) });
    // Section k generates frames labelled 100(k+1) + t.
    const chunk = history.push(labelled(100 * (k + 1), lws), plan);
    assert.equal(chunk.dims[2], plan.isLast ? lws + 1 : lws);
    decoded.push(history.decodeSlice(plan, lws).dims[2]);
  });
  const g = (k: number, a: number, b: number) => range(a, b - 1).map((t) => 100 * k + t);
  const z = (n: number) => Array<number>(n).fill(0);
  assert.deepEqual(seen[0], { post: [0], x2: z(2), x4: z(16) });
  assert.deepEqual(seen[1], { post: g(1, 0, 1), x2: g(1, 1, 3), x4: [...g(1, 3, 9), ...z(10)] });
  assert.deepEqual(seen[2], { post: g(2, 0, 1), x2: g(2, 1, 3), x4: [...g(2, 3, 9), ...g(1, 0, 9), 0] });
  assert.deepEqual(seen[3], { post: g(3, 0, 1), x2: g(3, 1, 3), x4: [...g(3, 3, 9), ...g(2, 0, 9), 100] });
  assert.equal(history.generated, 37);
  assert.deepEqual(frameLabels(history.real()), [-1, ...g(4, 0, 9), ...g(3, 0, 9), ...g(2, 0, 9), ...g(1, 0, 9)]);
  // Spec 12.3: decode 9, then 18, 18, and 19 (with the start latent) latents.
  assert.deepEqual(decoded, [9, 18, 18, 19]);
});

test('one-section videos decode everything, start latent included', () => {
  const lws = 3;
  const plans = planSections(0.4, lws);
  assert.equal(plans.length, 1);
  const h = new LatentHistory(labelled(-1, 1));
  h.push(labelled(100, lws), plans[0]);
  assert.deepEqual(frameLabels(h.decodeSlice(plans[0], lws)), [-1, 100, 101, 102]);
});

test('slice/concat along time keep channels apart', () => {
  const a = labelled(0, 3, 3);
  const b = labelled(10, 2, 3);
  const ab = concatTime(a, b);
  assert.deepEqual(ab.dims, [1, 3, 5, 1, 2]);
  for (let c = 0; c < 3; c++) assert.deepEqual(Array.from(ab.data.subarray(c * 10, c * 10 + 10)), [0, 0, 1, 1, 2, 2, 10, 10, 11, 11]);
  assert.deepEqual(sliceTime(ab, 2, 4).data, concatTime(sliceTime(a, 2, 3), sliceTime(b, 0, 1)).data);
  assert.equal(sliceTime(ab, 3, 99).dims[2], 2, 'clamped like Python slicing');
});

test('soft append: the new chunk fades into the old one over linspace(1, 0, overlap)', () => {
  const A = labelled(0, 6, 1, 1, 1);
  for (let t = 0; t < 6; t++) A.data[t] = 10;
  const B = labelled(0, 5, 1, 1, 1);
  for (let t = 0; t < 5; t++) B.data[t] = 20 + t;
  const r = softAppend(A, B, 3);
  assert.deepEqual(r.dims, [1, 1, 8, 1, 1]);
  // weights 1, 0.5, 0 on A's last 3 frames against B's first 3 (20, 21, 22)
  assert.deepEqual(Array.from(r.data), [10, 10, 10, 10, 15.5, 22, 23, 24]);
  assert.deepEqual(Array.from(linspace(1, 0, 5)), [1, 0.75, 0.5, 0.25, 0]);
  assert.throws(() => softAppend(A, sliceTime(B, 0, 2), 3));
});

test('frames: clamp, x127.5 + 127.5, truncated to uint8; HWC order', () => {
  const px = zeros([1, 3, 1, 1, 4]);
  px.data.set([-2, -1, 0, 0.999, /* G */ 1, 5, 0.5, -0.5, /* B */ 0.0001, -0.9999, 0.996, 0.2]);
  const f = toUint8Frames(px);
  // R: 0, 0, 127 (127.5 truncated), 254 (254.87); G: 255, 255, 191, 63; B: 127, 0, 254, 153
  assert.deepEqual(Array.from(f), [0, 255, 127, 0, 255, 0, 127, 191, 254, 254, 63, 153]);
});

test('pixel history assembles the worked example lengths (spec 12.3) and equals a plain float assembly', async () => {
  const lws = 2;
  const O = overlapFrames(lws);
  assert.equal(overlapFrames(9), 33);
  const decode = (latents: number, seed: number): Float32Tensor => {
    const T = 4 * (latents - 1) + 1;
    const x = zeros([1, 3, T, 2, 2]);
    for (let i = 0; i < x.data.length; i++) x.data[i] = 1.2 * Math.sin(seed * 7.3 + i * 0.37); // beyond [-1, 1]: the clamp too
    return x;
  };
  const plans = planSections(1, lws); // 4 sections: paddings 3, 2, 1, 0
  const latentCounts = [2, 4, 4, 5];
  const ph = new PixelHistory(O);
  let plain: Float32Tensor | null = null;
  const lengths: number[] = [];
  assert.equal(plans.length, 4);
  for (const [k, latents] of latentCounts.entries()) {
    const chunk = decode(latents, k);
    plain = plain === null ? chunk : softAppend(chunk, plain, O);
    await ph.add(chunk);
    lengths.push(ph.frameCount);
  }
  assert.deepEqual(lengths, [5, 13, 21, 33]);
  assert.equal(ph.frameCount, totalPixelFrames(4, lws));
  assert.deepEqual(ph.frames(), toUint8Frames(plain!));
  assert.equal(ph.width, 2);
});

test('section indices of both orders equal the ones the upstream runs fed their transformer', async () => {
  const cases = [['end_frame_teacache.safetensors', 'inverted'], ['f1_teacache.safetensors', 'f1']] as const;
  for (const [file, mode] of cases) {
    const ref = await loadTensors(modeRefs(file));
    const plans = planSections(0.5, 2, mode);
    assert.equal(plans.length, 2);
    plans.forEach((plan, i) => {
      const row = (k: string) => Array.from(ref[`section_${i}_${k}`].data as BigInt64Array, Number);
      assert.deepEqual(plan.latentIndices, row('latent_indices'), `${mode} ${i}`);
      assert.deepEqual(plan.cleanLatentIndices, row('clean_latent_indices'), `${mode} ${i}`);
      assert.deepEqual(plan.clean2xIndices, row('clean_latent_2x_indices'), `${mode} ${i}`);
      assert.deepEqual(plan.clean4xIndices, row('clean_latent_4x_indices'), `${mode} ${i}`);
    });
  }
  // F1's indices do not depend on the section: start 0, 4x 1..16, 2x 17-18, 1x 19, the window from 20
  const f1 = planSections(10, 9, 'f1');
  assert.equal(f1.length, 8);
  assert.ok(f1.every((p) => p.padding === 0 && p.latentIndices.join() === range(20, 28).join()));
  assert.deepEqual(f1.map((p) => p.isLast), [...Array(7).fill(false), true]);
});

test('F1 history: start latent last of 19 zero frames, sections appended, conditioning from the tail', () => {
  const lws = 3;
  const history = new ForwardHistory(labelled(-1, 1));
  const plans = planSections(1.2, lws, 'f1');
  assert.equal(plans.length, 3);
  const seen: { pre: number; x1: number[]; x2: number[]; x4: number[] }[] = [];
  const decoded: number[][] = [];
  plans.forEach((plan, k) => {
    const c = history.conditioning();
    const clean = frameLabels(c.cleanLatents);
    seen.push({ pre: clean[0], x1: clean.slice(1), x2: frameLabels(c.cleanLatents2x), x4: frameLabels(c.cleanLatents4x) });
    assert.equal(history.push(labelled(100 * (k + 1), lws)).dims[2], lws, 'nothing prepended in F1');
    decoded.push(frameLabels(history.decodeSlice(plan, lws)));
  });
  const z = (n: number) => Array<number>(n).fill(0);
  assert.deepEqual(seen[0], { pre: -1, x1: [-1], x2: z(2), x4: z(16) });
  assert.deepEqual(seen[1], { pre: -1, x1: [102], x2: [100, 101], x4: [...z(15), -1] });
  assert.deepEqual(seen[2], { pre: -1, x1: [202], x2: [200, 201], x4: [...z(12), -1, 100, 101, 102] });
  // first decode: start + window; then the newest 2 lws latents
  assert.deepEqual(decoded, [[-1, 100, 101, 102], [100, 101, 102, 200, 201, 202], [200, 201, 202, 300, 301, 302]]);
  assert.equal(history.generated, 10);
  assert.deepEqual(frameLabels(history.real()), [-1, 100, 101, 102, 200, 201, 202, 300, 301, 302]);
  assert.throws(() => history.conditioning(labelled(5, 1)), /no end-frame slot/);
});

test('inverted history: an end latent replaces only the first section\'s 1x frame, never the history', () => {
  const lws = 2;
  const history = new LatentHistory(labelled(-1, 1));
  const plans = planSections(0.8, lws);
  const end = labelled(77, 1);
  const c0 = history.conditioning(end);
  assert.deepEqual(frameLabels(c0.cleanLatents), [-1, 77]);
  history.push(labelled(100, lws), plans[0]);
  const c1 = history.conditioning();
  assert.deepEqual([...frameLabels(c1.cleanLatents), ...frameLabels(c1.cleanLatents2x), ...frameLabels(c1.cleanLatents4x)],
    [-1, 100, 101, 0, ...Array(16).fill(0)]);
});

test('pixel history: a chunk\'s unblended first frames left float (lazy) read the same from every frame on', () => {
  const O = overlapFrames(2);
  const decode = (latents: number, seed: number): Float32Tensor => {
    const x = zeros([1, 3, 4 * (latents - 1) + 1, 3, 2]);
    for (let i = 0; i < x.data.length; i++) x.data[i] = Math.sin(seed * 2.9 + i * 0.43) * 1.1;
    return x;
  };
  const latentCounts = [2, 4, 4, 5];
  const plain = new PixelHistory(O);
  for (const [k, latents] of latentCounts.entries()) plain.add(decode(latents, k));
  const frameBytes = 3 * 3 * 2;
  // lazy on the last chunk only (what the pipeline does), on every chunk (later chunks blend into those frames
  // and convert them), and more than the chunk's unblended frames (17 - 5 = 12 at most)
  for (const lazyAt of [(k: number) => (k === 3 ? 12 : 0), () => 12, () => 100, (k: number) => 3 * k]) {
    const lazy = new PixelHistory(O);
    for (const [k, latents] of latentCounts.entries()) lazy.add(decode(latents, k), lazyAt(k));
    assert.equal(lazy.frameCount, plain.frameCount);
    for (let from = 0; from <= plain.frameCount; from++) {
      assert.deepEqual(concatBytes([...lazy.chunks(from)]), plain.frames().subarray(from * frameBytes), `from ${from}`);
    }
  }
  // a chunk shorter than the overlap beside its unblended frames: its float frames are a blended copy
  const short = new PixelHistory(overlapFrames(3)), shortPlain = new PixelHistory(overlapFrames(3));
  for (const [k, latents] of [4, 3, 5].entries()) {
    short.add(decode(latents, k), 40);
    shortPlain.add(decode(latents, k));
  }
  assert.deepEqual(short.frames(), shortPlain.frames());
});

test('pixel history: frames of a chunk blended ahead, in parts, give the same video as the whole chunk', () => {
  const O = overlapFrames(2); // 5
  const decode = (latents: number, seed: number): Float32Tensor => {
    const x = zeros([1, 3, 4 * (latents - 1) + 1, 3, 2]);
    for (let i = 0; i < x.data.length; i++) x.data[i] = Math.sin(seed * 3.7 + i * 0.41) * 1.1;
    return x;
  };
  const chunks = [decode(2, 0), decode(4, 1), decode(4, 2), decode(5, 3)]; // 5, 13, 13, 17 frames
  // the parts a decode's windows would hand over: every frame, some twice (a decode repeated in smaller tiles),
  // some never; on the last chunk with lazy as the pipeline passes it
  const parts: Array<Array<[number, number]>> = [[[0, 5]], [[0, 6], [6, 9], [6, 10]], [[9, 11]], [[0, 12], [12, 16]]];
  const lazy = [0, 0, 0, 12];
  const plain = new PixelHistory(O), ahead = new PixelHistory(O);
  const returned: Array<{ from: number; frames: Uint8Array } | null> = [];
  chunks.forEach((chunk, k) => {
    for (const [from, to] of parts[k]) returned.push(ahead.ahead(sliceTime(chunk, from, to), from, chunk.dims[2]));
    plain.add(chunk, lazy[k]);
    ahead.add(chunk, lazy[k]);
  });
  const video = plain.frames(), frameBytes = 3 * 3 * 2;
  assert.deepEqual(ahead.frames(), video);
  // what ahead() returns: the blended frames only (a chunk's last 5), as the video reads them after the last chunk
  assert.deepEqual(returned.map((r) => r && [r.from, r.frames.length / frameBytes]), [null, null, [8, 1], [8, 2], [9, 2], null, [12, 4]]);
  const last = returned.at(-1)!;
  assert.deepEqual(last.frames, video.subarray(12 * frameBytes, 16 * frameBytes));
  // the last chunk's frames blended ahead join the video as ahead() made them, not copied again
  assert.ok([...ahead.chunks(12)].some((part) => part.buffer === last.frames.buffer));
  // frames handed over for a chunk of another length are not used: that chunk is blended whole
  const other = new PixelHistory(O), reference = new PixelHistory(O);
  other.add(chunks[1]); reference.add(chunks[1]);
  const wrong = zeros([1, 3, 13, 3, 2]); // frames of a different chunk, said to be 13 frames long
  other.ahead(sliceTime(wrong, 8, 13), 8, 13);
  other.add(chunks[3]); reference.add(chunks[3]);
  assert.deepEqual(other.frames(), reference.frames());
  assert.throws(() => new PixelHistory(O, 'forward').ahead(chunks[0], 0, 5), /only for a video growing backward/);
});

test('pixel history growing forward equals soft_append(old, new) and ends with the newest frames', async () => {
  const lws = 2;
  const O = overlapFrames(lws);
  const decode = (latents: number, seed: number): Float32Tensor => {
    const x = zeros([1, 3, 4 * (latents - 1) + 1, 2, 2]);
    for (let i = 0; i < x.data.length; i++) x.data[i] = Math.sin(seed * 5.1 + i * 0.29);
    return x;
  };
  const ph = new PixelHistory(O, 'forward');
  let plain: Float32Tensor | null = null;
  const lengths: number[] = [];
  for (const [k, latents] of [3, 4, 4].entries()) { // first: start + lws; then 2 lws each
    const chunk = decode(latents, k);
    plain = plain === null ? chunk : softAppend(plain, chunk, O);
    await ph.add(chunk);
    lengths.push(ph.frameCount);
  }
  assert.deepEqual(lengths, [9, 17, 25]);
  assert.equal(ph.frameCount, totalPixelFrames(3, lws));
  assert.deepEqual(ph.frames(), toUint8Frames(plain!));
});
