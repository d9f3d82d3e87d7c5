/**
 * HunyuanVideo VAE parity against the fixture references (diffusers AutoencoderKLHunyuanVideo in float32),
 * and the tiling paths of decode/encode.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { fitGrids, runByShape, Vae } from '../../src/framepack/vae-decode.js';
import {
  blend, block, decodeSpatialPlan, gridSpatialPlan, pixelFrames, SpatialStitcher, temporalWindows, TemporalStitcher,
} from '../../src/framepack/vae-tiling.js';
import { sliceTime, toUint8Frames, type Float32Tensor } from '../../src/framepack/sections.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const vaeDir = () => join(tinyModels(), 'hunyuanvideo-community', 'HunyuanVideo', 'vae');

describe('VAE tiling plans', () => {
  it('temporal windows and frame counts match diffusers (spec 4.5)', () => {
    assert.deepEqual(temporalWindows(4), [[0, 4]]);
    assert.deepEqual(temporalWindows(9), [[0, 5], [3, 8], [6, 9]]);
    assert.deepEqual(temporalWindows(19).at(-1), [18, 19]);
    assert.equal(pixelFrames(9), 33);
    assert.equal(pixelFrames(18), 69);
    assert.equal(pixelFrames(19), 73);
  });

  it('temporal stitching keeps 13 + 12 + ... frames and blends 4 frames linearly', () => {
    // 9 latents: windows decode to 17, 17 and 9 frames; tile k holds the constant k + 1
    const st = new TemporalStitcher(1, 9, 1, 1);
    [17, 17, 9].forEach((n, k) => st.push(k, block([1, n, 1, 1], new Float32Array(n).fill(k + 1))));
    const out = Array.from(st.finish().data);
    assert.equal(out.length, 33);
    // tile 1 (after dropping its first frame) starts at output frame 13: weights 0, 1/4, 2/4, 3/4 on itself
    assert.deepEqual(out.slice(12, 18), [1, 1, 1.25, 1.5, 1.75, 2]);
    assert.deepEqual(out.slice(24, 30), [2, 2, 2.25, 2.5, 2.75, 3]);
    assert.deepEqual(out.slice(29), [3, 3, 3, 3]);
    // the stitch keeps no reference to a tile: one scribbled over after its push changes nothing
    const again = new TemporalStitcher(1, 9, 1, 1);
    [17, 17, 9].forEach((n, k) => {
      const tile = block([1, n, 1, 1], new Float32Array(n).fill(k + 1));
      again.push(k, tile);
      tile.data.fill(NaN);
    });
    assert.deepEqual(Array.from(again.finish().data), out);
  });

  it('blend from an offset: a tile blends from its second frame without a copy', () => {
    const prev = block([1, 4, 1, 1], Float32Array.of(0, 0, 8, 8));
    const cur = block([1, 4, 1, 1], Float32Array.of(9, 4, 4, 4));
    blend(prev, cur, 1, 2, 1); // frames 1 and 2 of cur: cur[1] = prev[2], cur[2] = prev[3] * 0.5 + cur[2] * 0.5
    assert.deepEqual(Array.from(cur.data), [9, 8, 6, 4]);
  });

  it('spatial stitching writes into a spare buffer when it is large enough, with the same result', () => {
    const plan = gridSpatialPlan(6, 5, 2, 2);
    const tiles = () => plan.rows.flatMap((y0) => plan.cols.map((x0) => {
      const [h, w] = [Math.min(plan.tile[0], 6 - y0) * 8, Math.min(plan.tile[1], 5 - x0) * 8];
      return block([2, 3, h, w], Float32Array.from({ length: 2 * 3 * h * w }, (_, i) => Math.sin(i + y0 * 7 + x0 * 3)));
    }));
    const plain = new SpatialStitcher(plan);
    tiles().forEach((t, i) => plain.push(i, t));
    const want = plain.finish();
    const spare = new Float32Array(want.data.length + 100).fill(NaN); // every value the stitch keeps is written
    const reused = new SpatialStitcher(plan, spare);
    tiles().forEach((t, i) => reused.push(i, t));
    const got = reused.finish();
    assert.equal(got.data.buffer, spare.buffer);
    assert.deepEqual(Array.from(got.data), Array.from(want.data));
    const small = new SpatialStitcher(plan, new Float32Array(10));
    tiles().forEach((t, i) => small.push(i, t));
    assert.deepEqual(Array.from(small.finish().data), Array.from(want.data));
  });

  it('spatial blend is in place and uses the previous tile as blended', () => {
    const a = block([1, 1, 1, 4], Float32Array.of(0, 0, 8, 8));
    const b = block([1, 1, 1, 4], Float32Array.of(4, 4, 4, 4));
    blend(a, b, 3, 2); // extent 2: b[0] = a[2]*1 + b[0]*0, b[1] = a[3]*0.5 + b[1]*0.5
    assert.deepEqual(Array.from(b.data), [8, 6, 4, 4]);
  });

  it('spatial plan of the 640x608 bucket: 4 x 4 tiles, 192-px keep, 64-px blend', () => {
    const p = decodeSpatialPlan(80, 76);
    assert.deepEqual(p.rows, [0, 24, 48, 72]);
    assert.deepEqual(p.cols, [0, 24, 48, 72]);
    assert.deepEqual(p.keep, [192, 192]);
    assert.deepEqual(p.blend, [64, 64]);
    assert.equal(p.outWidth, 608);
  });

  it('grid plans of the 640x608 bucket: n x n tiles of one shape, overlapping by at least 8 latents', () => {
    const two = gridSpatialPlan(80, 76, 2);
    assert.deepEqual([two.rows, two.cols, two.tile, two.keep, two.blend], [[0, 36], [0, 34], [44, 42], [288, 272], [64, 64]]);
    const three = gridSpatialPlan(80, 76, 3);
    assert.deepEqual([three.rows, three.cols, three.tile, three.keep, three.blend], [[0, 24, 48], [0, 22, 44], [32, 32], [192, 176], [64, 80]]);
    for (const p of [two, three]) {
      assert.equal(p.rows.at(-1)! + p.tile[0], 80);
      assert.equal(p.cols.at(-1)! + p.tile[1], 76);
    }
    assert.deepEqual(gridSpatialPlan(8, 76, 2).rows, [0]); // too short for two tiles overlapping by 8 latents
    const wide = gridSpatialPlan(80, 76, 1, 2); // one row, two columns
    assert.deepEqual([wide.rows, wide.cols, wide.tile, wide.keep, wide.blend], [[0], [0, 34], [80, 42], [640, 272], [0, 64]]);
  });

  it('fit layouts from a first one: then only those of more tiles, and diffusers\' last', () => {
    assert.deepEqual(fitGrids([2, 2]), [[2, 2], [3, 3], null]);
    assert.deepEqual(fitGrids([1, 2]), [[1, 2], [2, 2], [3, 3], null]);
    assert.deepEqual(fitGrids([3, 3]), [[3, 3], null]);
    assert.deepEqual(fitGrids([4, 4]), [[4, 4], null]);
  });
});

describe('VAE parity with diffusers (tiny fixture, float32 CPU)', () => {
  let ref: Record<string, HostTensor>;
  let vae: Vae;

  before(async () => {
    ref = await loadTensors(fixture('framepack-tiny', 'components', 'vae.safetensors'));
    vae = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32' });
  });
  after(async () => { await vae.release(); await terminateWorkers(); });

  it('encode: posterior mean and std', async () => {
    const { mean, std } = await vae.encode(ref.encode_input);
    const em = relL2(mean, ref.encode_mean), es = relL2(std, ref.encode_std);
    console.log(`# encode mean rel L2 ${em.toExponential(2)}, std rel L2 ${es.toExponential(2)}`);
    assert.ok(em <= 1e-4, `mean rel L2 ${em}`);
    assert.ok(es <= 1e-4, `std rel L2 ${es}`);
  });

  it('encodeLatent scales the mean by the scaling factor', async () => {
    const z = await vae.encodeLatent(ref.encode_input);
    const m = ref.encode_mean.data as Float32Array;
    const scaled: HostTensor = { dtype: 'float32', dims: ref.encode_mean.dims, data: m.map((v) => v * 0.476986) };
    assert.ok(relL2(z, scaled) <= 1e-4);
  });

  it('decode of 3 latent frames (untiled)', async () => {
    const out = await vae.decode(ref.decode_input);
    const e = relL2(out, ref.decode_output);
    console.log(`# decode rel L2 ${e.toExponential(2)}`);
    assert.ok(e <= 1e-4, `rel L2 ${e}`);
  });

  it('decode of 7 latent frames (temporal tiled decode)', async () => {
    const out = await vae.decode(ref.decode_long_input);
    const e = relL2(out, ref.decode_long_output);
    console.log(`# decode_long rel L2 ${e.toExponential(2)}`);
    assert.ok(e <= 1e-4, `rel L2 ${e}`);
  });

  it('decodeLatents divides by the scaling factor first', async () => {
    const z = ref.decode_input.data as Float32Array;
    const scaled: HostTensor = { dtype: 'float32', dims: ref.decode_input.dims, data: z.map((v) => v * 0.476986) };
    const out = await vae.decodeLatents(scaled);
    assert.ok(relL2(out, ref.decode_output) <= 1e-4);
  });

  it('registry entries vae-encode / vae-decode use the fixture tensor names', async () => {
    const { getNet } = await import('../../src/nets/registry.js');
    const enc = await getNet('vae-encode'), dec = await getNet('vae-decode');
    const opts = { ep: 'cpu' as const, precision: 'float32' as const };
    const e = await enc.forward(vaeDir(), { encode_input: ref.encode_input }, opts);
    assert.ok(relL2(e.encode_mean, ref.encode_mean) <= 1e-4 && relL2(e.encode_std, ref.encode_std) <= 1e-4);
    const d = await dec.forward(vaeDir(), { decode_input: ref.decode_long_input }, opts);
    assert.ok(relL2(d.decode_output, ref.decode_long_output) <= 1e-4);
  });

  it('a decode with an aborted signal rejects', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(vae.decode(ref.decode_long_input, { signal: ac.signal }), { name: 'AbortError' });
  });

  it('rejects a latent with the wrong channel count', async () => {
    const bad: HostTensor = { dtype: 'float32', dims: [1, 4, 1, 2, 2], data: new Float32Array(16) };
    await assert.rejects(vae.decode(bad), /expected \(1, 16, T, h, w\)/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Spatial tiling (the original's low-VRAM mode). The fixtures hold no tiled reference, so the tiled paths are
// checked against a direct, non-streaming transcription of diffusers' tiled_decode / tiled_encode written
// here (its own crop, blend and concat loops) fed with untiled forwards of the same tiles, and against
// the untiled result within a loose bound (tiles see different GroupNorm statistics and attention context).

type T5 = { dims: number[]; data: Float32Array };

function crop(t: T5, y0: number, y1: number, x0: number, x1: number): T5 {
  const [B, C, T, H, W] = t.dims;
  y1 = Math.min(y1, H); x1 = Math.min(x1, W);
  const out = new Float32Array(B * C * T * (y1 - y0) * (x1 - x0));
  let o = 0;
  for (let c = 0; c < C * T; c++) for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) out[o++] = t.data[(c * H + y) * W + x];
  return { dims: [B, C, T, y1 - y0, x1 - x0], data: out };
}

/** blend_v (axis 3) / blend_h (axis 4) of diffusers, in place on b. */
function blendRef(a: T5, b: T5, axis: 3 | 4, extent: number): void {
  const e = Math.min(a.dims[axis], b.dims[axis], extent);
  const [, C, T, H, W] = b.dims, Ha = a.dims[3], Wa = a.dims[4];
  for (let k = 0; k < e; k++) {
    for (let c = 0; c < C * T; c++) {
      if (axis === 3) for (let x = 0; x < W; x++) b.data[(c * H + k) * W + x] = a.data[(c * Ha + Ha - e + k) * Wa + x] * (1 - k / e) + b.data[(c * H + k) * W + x] * (k / e);
      else for (let y = 0; y < H; y++) b.data[(c * H + y) * W + k] = a.data[(c * Ha + y) * Wa + Wa - e + k] * (1 - k / e) + b.data[(c * H + y) * W + k] * (k / e);
    }
  }
}

/**
 * torch.cat(rows of torch.cat(tiles[..., :keep, :keep], -1), -2)[..., :outH, :outW], per axis; the last
 * tile of a row or column keeps everything (diffusers' last tiles are no longer than keep anyway).
 */
function assemble(tiles: T5[][], keep: [number, number], outH: number, outW: number): T5 {
  const [B, C, T] = tiles[0][0].dims;
  const out = new Float32Array(B * C * T * outH * outW);
  let y0 = 0;
  for (const row of tiles) {
    let x0 = 0, rowH = 0;
    for (const [j, t] of row.entries()) {
      const lastRow = row === tiles.at(-1), lastCol = j === row.length - 1;
      const h = lastRow ? t.dims[3] : Math.min(keep[0], t.dims[3]), w = lastCol ? t.dims[4] : Math.min(keep[1], t.dims[4]);
      for (let c = 0; c < C * T; c++) for (let y = 0; y < h && y0 + y < outH; y++) for (let x = 0; x < w && x0 + x < outW; x++) {
        out[(c * outH + y0 + y) * outW + x0 + x] = t.data[(c * t.dims[3] + y) * t.dims[4] + x];
      }
      x0 += w; rowH = h;
    }
    y0 += rowH;
  }
  return { dims: [B, C, T, outH, outW], data: out };
}

function tiledRef(tiles: T5[][], extent: [number, number], keep: [number, number], outH: number, outW: number): T5 {
  tiles.forEach((row, i) => row.forEach((t, j) => {
    if (i > 0) blendRef(tiles[i - 1][j], t, 3, extent[0]);
    if (j > 0) blendRef(row[j - 1], t, 4, extent[1]);
  }));
  return assemble(tiles, keep, outH, outW);
}

/** frames [t0, t1) of a (1, C, T, h, w) tensor */
function framesOf(z: HostTensor, t0: number, t1: number): Float32Array {
  const [, C, T, h, w] = z.dims, d = z.data as Float32Array, hw = h * w;
  const out = new Float32Array(C * (t1 - t0) * hw);
  for (let c = 0; c < C; c++) out.set(d.subarray((c * T + t0) * hw, (c * T + t1) * hw), c * (t1 - t0) * hw);
  return out;
}

const starts = (n: number, s: number) => Array.from({ length: Math.ceil(n / s) }, (_, i) => i * s);

function wave(dims: number[], f: number, amp: number): HostTensor {
  const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = amp * Math.sin(i * f) * Math.cos(i * 0.013);
  return { dtype: 'float32', dims, data };
}

describe('VAE spatial tiling (low-VRAM mode)', () => {
  it('runByShape runs one tile shape after the other and returns the results in tile order', async () => {
    const jobs = [[0, 32, 0, 32], [0, 32, 24, 28], [24, 32, 0, 32], [24, 32, 24, 28], [0, 32, 0, 32]].map(([y0, y1, x0, x1], i) => ({ y0, y1, x0, x1, i }));
    const ran: number[] = [];
    const lastOfShape: number[] = [];
    const out = await runByShape(jobs, async (j, last) => {
      ran.push(j.i);
      if (last) lastOfShape.push(j.i);
      return { dtype: 'float32', dims: [1], data: Float32Array.of(j.i) };
    });
    assert.deepEqual(ran, [0, 4, 1, 2, 3]); // 32x32 twice, then 32x4, 8x32, 8x4
    assert.deepEqual(lastOfShape, [4, 1, 2, 3]);
    assert.deepEqual(out.map((t) => (t.data as Float32Array)[0]), [0, 1, 2, 3, 4]);
  });

  it('runByShape keeps `depth` jobs in flight, in shape order, and waits for them before throwing', async () => {
    const jobs = [[0, 32, 0, 32], [0, 32, 24, 28], [0, 32, 0, 32], [0, 32, 24, 28], [0, 32, 0, 32]].map(([y0, y1, x0, x1], i) => ({ y0, y1, x0, x1, i }));
    const tick = () => new Promise((r) => setTimeout(r, 2));
    let inFlight = 0, most = 0;
    const started: number[] = [];
    const out = await runByShape(jobs, async (j) => {
      started.push(j.i);
      most = Math.max(most, ++inFlight);
      await tick();
      inFlight--;
      return { dtype: 'float32', dims: [1], data: Float32Array.of(j.i) };
    }, undefined, 2);
    assert.equal(most, 2);
    assert.deepEqual(started, [0, 2, 4, 1, 3]);
    assert.deepEqual(out.map((t) => (t.data as Float32Array)[0]), [0, 1, 2, 3, 4]);

    const settled: number[] = [];
    await assert.rejects(runByShape(jobs, async (j) => {
      if (j.i === 0) { await tick(); settled.push(j.i); throw new Error('out of memory'); }
      await tick(); await tick();
      settled.push(j.i);
      return { dtype: 'float32', dims: [1], data: Float32Array.of(j.i) };
    }, undefined, 2), /out of memory/);
    assert.deepEqual(settled, [0, 2]); // job 2 was in flight when job 0 failed: it finished first; nothing started after
  });

  let plain: Vae, tiled: Vae;
  before(async () => {
    plain = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32' });
    tiled = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32', spatialTiling: true });
  });
  after(async () => { await plain.release(); await tiled.release(); await terminateWorkers(); });

  it('decode equals diffusers tiled_decode of the same tiles, and stays near the untiled decode', async () => {
    const z = wave([1, 16, 2, 36, 44], 0.37, 1.5); // 2 x 2 tiles of 32 latents, stride 24
    const out = await tiled.decode(z);
    assert.deepEqual(out.dims, [1, 3, 5, 288, 352]);
    const tiles: T5[][] = [];
    for (const i of starts(36, 24)) {
      const row: T5[] = [];
      for (const j of starts(44, 24)) row.push((await plain.decode({ dtype: 'float32', ...crop(z as T5, i, i + 32, j, j + 32) })) as T5);
      tiles.push(row);
    }
    const ref = tiledRef(tiles, [64, 64], [192, 192], 288, 352) as HostTensor;
    const e = relL2(out, { ...ref, dtype: 'float32' });
    const untiled = relL2(out, await plain.decode(z));
    console.log(`# tiled decode vs transcription rel L2 ${e.toExponential(2)}, vs untiled ${untiled.toExponential(2)}`);
    assert.ok(e <= 1e-6, `tiled decode differs from the transcription: ${e}`);
    assert.ok(untiled > 0 && untiled <= 0.2, `tiled vs untiled decode ${untiled}`);
  });

  it('fit tiles: 2 x 2 equal tiles blended over their overlap; out of device memory -> 3 x 3, then diffusers\' tiles, remembered', async () => {
    const fit = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32', spatialTiling: true, tiles: 'fit' });
    try {
      const z = wave([1, 16, 2, 40, 44], 0.31, 1.4); // rows [0, 16) + 24, cols [0, 18) + 26: overlaps of 8 latents
      const out = await fit.decode(z);
      const tiles: T5[][] = [];
      for (const i of [0, 16]) {
        const row: T5[] = [];
        for (const j of [0, 18]) row.push((await plain.decode({ dtype: 'float32', ...crop(z as T5, i, i + 24, j, j + 26) })) as T5);
        tiles.push(row);
      }
      const ref = tiledRef(tiles, [64, 64], [128, 144], 320, 352) as HostTensor;
      assert.equal(relL2(out, { ...ref, dtype: 'float32' }), 0);

      // the device running out of memory moves to the next layout, once, and says so
      const told: string[] = [];
      (fit.opts as { onTiles?: (m: string) => void }).onTiles = (m) => told.push(m);
      const grids: number[] = [];
      const real = (fit as any).decodeWindows.bind(fit);
      (fit as any).decodeWindows = (zz: HostTensor, d: number, plan: { rows: number[] } | null, ...rest: unknown[]) => {
        grids.push(plan!.rows.length);
        if (grids.length === 1) throw new Error('ONNX Runtime RunWithBinding failed: Failed to allocate memory for requested buffer of size 4294967296');
        return real(zz, d, plan, ...rest);
      };
      const again = await fit.decode(z);
      await fit.decode(z);
      assert.deepEqual(grids, [2, 3, 3]); // rows of 3 x 3: [0, 10, 20], tile 20
      assert.deepEqual(told, ['VAE decode in 2 x 2 tiles ran out of device memory; now 3 x 3 tiles']);
      assert.ok(relL2(again, out) > 0 && relL2(again, out) < 0.2);
    } finally {
      await fit.release();
    }
  });

  it('fit tiles from 1 x 2: one row of two tiles blended over their columns\' overlap; out of memory -> 2 x 2', async () => {
    const wide = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32', spatialTiling: true, tiles: 'fit', grids: fitGrids([1, 2]) });
    try {
      const z = wave([1, 16, 2, 40, 44], 0.31, 1.4); // cols [0, 26) + [18, 44): an overlap of 8 latents
      const out = await wide.decode(z);
      const row: T5[] = [];
      for (const j of [0, 18]) row.push((await plain.decode({ dtype: 'float32', ...crop(z as T5, 0, 40, j, j + 26) })) as T5);
      const ref = tiledRef([row], [0, 64], [320, 144], 320, 352) as HostTensor;
      assert.equal(relL2(out, { ...ref, dtype: 'float32' }), 0);

      const told: string[] = [];
      (wide.opts as { onTiles?: (m: string) => void }).onTiles = (m) => told.push(m);
      const real = (wide as any).decodeWindows.bind(wide);
      let failed = false;
      (wide as any).decodeWindows = (...args: unknown[]) => {
        if (!failed) { failed = true; throw new Error('ONNX Runtime RunWithBinding failed: Failed to allocate memory for requested buffer of size 4294967296'); }
        return real(...args);
      };
      await wide.decode(z);
      assert.deepEqual(told, ['VAE decode in 1 x 2 tiles ran out of device memory; now 2 x 2 tiles']);
    } finally {
      await wide.release();
    }
  });

  it('temporal + spatial tiling together: each temporal window is tiled spatially', async () => {
    const z = wave([1, 16, 6, 8, 40], 0.29, 1.2);
    const out = await tiled.decode(z);
    assert.deepEqual(out.dims, [1, 3, 21, 64, 320]);
    // reference: each window [0,5), [3,6) decoded with spatial tiling alone, stitched in time
    const st = new TemporalStitcher(3, 6, 64, 320);
    for (const [k, [t0, t1]] of temporalWindows(6).entries()) {
      const win = await tiled.decode({ dtype: 'float32', dims: [1, 16, t1 - t0, 8, 40], data: framesOf(z, t0, t1) }, { temporalTiling: false });
      st.push(k, block(win.dims.slice(1) as [number, number, number, number], win.data as Float32Array));
    }
    const ref = st.finish();
    assert.equal(relL2(out, { dtype: 'float32', dims: [1, ...ref.dims], data: ref.data }), 0);
    const untiled = relL2(out, await plain.decode(z)); // plain still tiles in time
    console.log(`# temporal+spatial vs temporal-only rel L2 ${untiled.toExponential(2)}`);
    assert.ok(untiled > 0 && untiled <= 0.2, `rel L2 ${untiled}`);
  });

  it('later tiles are copied into the buffers the stitching handed back, with the same result', async () => {
    const z = wave([1, 16, 9, 8, 40], 0.29, 1.2); // windows [0,5), [3,8), [6,9); 2 tiles each
    const reusing = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32', spatialTiling: true });
    const fresh = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32', spatialTiling: true });
    try {
      (fresh as any).stitcher.take = () => undefined;
      const stitcher = (reusing as any).stitcher;
      const take = stitcher.take.bind(stitcher);
      let taken = 0;
      stitcher.take = (bytes: number) => {
        const b = take(bytes);
        if (b) taken++;
        return b;
      };
      const want = await fresh.decode(z);
      // A tile finds a buffer when a window's stitch handed its tiles back (no smaller) before the tile's last
      // run: in the first decode that depends on timing; the second starts with the first one's last tiles.
      const taken1 = await (async () => { taken = 0; assert.deepEqual(await reusing.decode(z), want); return taken; })();
      taken = 0;
      assert.deepEqual(await reusing.decode(z), want);
      console.log(`# ${taken1} and ${taken} of 6 tiles written into buffers that came back`);
      assert.ok(taken > 0);
    } finally {
      await Promise.all([reusing.release(), fresh.release()]);
    }
  });

  it('stitches a window while the device runs the later ones; a failed stitch stops the decode', async () => {
    const z = wave([1, 16, 6, 8, 40], 0.29, 1.2); // windows [0,5), [3,6); 2 tiles each (5x8x32, 5x8x16, 3x8x32, 3x8x16)
    const v = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32', spatialTiling: true });
    const stitcher = (v as any).stitcher;
    const realPush = stitcher.push.bind(stitcher);
    const realChunk = (v as any).decodeChunk.bind(v);
    try {
      // the last tile's run waits for window 0 to reach the temporal stitcher (with its last tile, the second):
      // without the overlap it never would
      let pushed0!: () => void;
      const window0 = new Promise<void>((resolve) => { pushed0 = resolve; });
      const windowOf = new Map<string, number>(); // spatial stitch -> its window in the temporal one
      stitcher.openSpatial = ((open) => (key: string, plan: unknown, into?: { index: number }) => {
        if (into) windowOf.set(key, into.index);
        return open(key, plan, into);
      })(stitcher.openSpatial.bind(stitcher));
      const completesWindow0 = (key: string, index: number) => windowOf.get(key) === 0 && index === 1;
      stitcher.push = async (key: string, index: number, t: HostTensor) => {
        const r = await realPush(key, index, t);
        if (completesWindow0(key, index)) pushed0();
        return r;
      };
      let runs = 0;
      (v as any).decodeChunk = async (x: HostTensor, ...rest: unknown[]) => {
        if (++runs === 4) {
          await Promise.race([window0, new Promise((_, reject) => setTimeout(() => reject(new Error('the last run began before window 0 was stitched')), 10_000))]);
        }
        return realChunk(x, ...rest);
      };
      const out = await v.decode(z);
      assert.equal(runs, 4);
      assert.equal(relL2(out, await tiled.decode(z)), 0);

      // window 0's stitch fails while the fourth tile runs (windows [0,5), [3,8), [6,9), in shape order w0t0, w1t0,
      // w0t1, w1t1, w2t0, w2t1): the fifth had started beside it (two jobs in flight), the sixth never starts, and
      // the error is the decode's
      const z9 = wave([1, 16, 9, 8, 40], 0.29, 1.2);
      runs = 0;
      let failed!: () => void;
      const failure = new Promise<void>((resolve) => { failed = resolve; });
      stitcher.push = (key: string, index: number, t: HostTensor) => {
        if (!completesWindow0(key, index)) return realPush(key, index, t);
        failed();
        return Promise.reject(new Error('stitching failed'));
      };
      (v as any).decodeChunk = async (x: HostTensor, ...rest: unknown[]) => {
        if (++runs === 4) await failure;
        return realChunk(x, ...rest);
      };
      await assert.rejects(v.decode(z9), /stitching failed/);
      assert.equal(runs, 5);
    } finally {
      await v.release();
    }
  });

  it('stream: the first frames come as video frames as their windows are stitched; a repeat in smaller tiles sends none twice', async () => {
    const z = wave([1, 16, 8, 8, 40], 0.27, 1.2); // windows [0,5) [3,8) [6,8): 13 + 12 + 4 frames, 2 tiles each
    const frames = 20, frameBytes = 3 * 64 * 320;
    const v = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32', spatialTiling: true, tiles: 'fit', onTiles: () => {} });
    const realChunk = (v as any).decodeChunk.bind(v);
    try {
      let runs = 0;
      (v as any).decodeChunk = (...a: unknown[]) => { runs++; return realChunk(...a); };
      const taken: Array<{ bytes: Uint8Array; runs: number }> = [];
      const ahead: Array<{ frames: HostTensor; from: number }> = [];
      const out = await v.decode(z, { stream: { frames, take: (f) => taken.push({ bytes: f.slice(), runs }), ahead: (f, from) => ahead.push({ frames: f, from }) } });
      const total = runs;
      assert.deepEqual(taken.map((t) => t.bytes.length / frameBytes), [13, 7]);
      assert.ok(taken[0].runs < total, 'window 0 came before the last run');
      const all = Buffer.concat(taken.map((t) => t.bytes));
      assert.ok(all.equals(toUint8Frames(out as Float32Tensor, 0, frames)), 'the frames of the decode\'s output');
      // the frames after the streamed ones, final once window 1 is in, as float; the last window's are not sent
      assert.deepEqual(ahead.map((a) => [a.from, a.frames.dims[2]]), [[20, 5]]);
      assert.deepEqual(ahead[0].frames.data, sliceTime(out as Float32Tensor, 20, 25).data);

      // out of memory in window 1's first run, after window 0 was streamed: the 3 x 3 repeat sends frames 13.. only
      const again: Uint8Array[] = [];
      let first = true;
      runs = 0;
      (v as any).decodeChunk = async (...a: unknown[]) => {
        if (first && ++runs === 3) {
          while (again.length === 0) await new Promise((r) => setTimeout(r, 5));
          first = false;
          throw new Error('ONNX Runtime RunWithBinding failed: Failed to allocate memory for requested buffer of size 4294967296');
        }
        return realChunk(...a);
      };
      const smaller = await v.decode(z, { stream: { frames, take: (f) => again.push(f.slice()) } });
      assert.deepEqual(again.map((f) => f.length / frameBytes), [13, 7]); // 13 from 2 x 2; then 13 + 12 from 3 x 3, 13 left out
      assert.ok(relL2(smaller, out) > 0, 'the layouts differ, so the test tells the attempts apart');
      assert.ok(Buffer.from(again[0]).equals(toUint8Frames(out as Float32Tensor, 0, 13)));
      assert.ok(Buffer.from(again[1]).equals(toUint8Frames(smaller as Float32Tensor, 13, frames)));
      // a decode of 4 latents or fewer is one window: nothing streams
      const short: Uint8Array[] = [];
      await v.decode({ ...z, dims: [1, 16, 3, 8, 40], data: framesOf(z, 0, 3) }, { stream: { frames: 5, take: (f) => short.push(f) } });
      assert.equal(short.length, 0);
    } finally {
      await v.release();
    }
  });

  it('encode equals diffusers tiled_encode (blend of the moments), and stays near the untiled encode', async () => {
    const x = wave([1, 3, 1, 288, 320], 0.011, 0.9); // 2 x 2 tiles of 256 px, stride 192
    const { mean, std } = await tiled.encode(x);
    assert.deepEqual(mean.dims, [1, 16, 1, 36, 40]);
    const tm: T5[][] = [], tl: T5[][] = [];
    for (const i of starts(288, 192)) {
      const rm: T5[] = [], rl: T5[] = [];
      for (const j of starts(320, 192)) {
        const p = await plain.encode({ dtype: 'float32', ...crop(x as T5, i, i + 256, j, j + 256) });
        rm.push(p.mean as T5);
        rl.push({ dims: p.std.dims, data: (p.std.data as Float32Array).map((s) => 2 * Math.log(s)) });
      }
      tm.push(rm); tl.push(rl);
    }
    const refMean = tiledRef(tm, [8, 8], [24, 24], 36, 40), refLogvar = tiledRef(tl, [8, 8], [24, 24], 36, 40);
    const refStd = refLogvar.data.map((l) => Math.exp(0.5 * l));
    const em = relL2(mean, { dtype: 'float32', ...refMean });
    const es = relL2(std, { dtype: 'float32', dims: refLogvar.dims, data: refStd });
    const untiled = relL2(mean, (await plain.encode(x)).mean);
    console.log(`# tiled encode vs transcription rel L2 mean ${em.toExponential(2)} std ${es.toExponential(2)}, mean vs untiled ${untiled.toExponential(2)}`);
    assert.ok(em <= 1e-6 && es <= 1e-5, `tiled encode differs from the transcription: ${em}, ${es}`);
    assert.ok(untiled > 0 && untiled <= 0.2, `tiled vs untiled encode ${untiled}`);
  });
});

describe('VAE encode under fit tiles (high and medium placements)', () => {
  it('runs untiled as the original\'s high-VRAM path; out of device memory -> diffusers\' tiles, told once, remembered', async () => {
    const x = wave([1, 3, 1, 288, 320], 0.011, 0.9); // diffusers would tile this: 2 x 2 tiles of 256 px
    const plain = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32' });
    const tiled = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32', spatialTiling: true });
    const told: string[] = [];
    const fit = await Vae.load(vaeDir(), { ep: 'cpu', precision: 'float32', spatialTiling: true, tiles: 'fit', onTiles: (m) => told.push(m) });
    try {
      const untiledMean = (await plain.encode(x)).mean;
      const tiledMean = (await tiled.encode(x)).mean;
      assert.ok(relL2(tiledMean, untiledMean) > 0, 'the tiled encode must differ for this test to tell them apart');
      assert.equal(relL2((await fit.encode(x)).mean, untiledMean), 0);

      const shapes: number[][] = [];
      const real = (fit as any).encodeChunk.bind(fit);
      (fit as any).encodeChunk = (xx: HostTensor, ...rest: unknown[]) => {
        shapes.push(xx.dims.slice(3));
        if (shapes.length === 1) throw new Error('ONNX Runtime RunWithBinding failed: Failed to allocate memory for requested buffer of size 4294967296');
        return real(xx, ...rest);
      };
      const image = Float32Array.from(x.data as Float32Array);
      assert.equal(relL2((await fit.encode(x, { consume: true })).mean, tiledMean), 0);
      assert.deepEqual(x.data, image, 'the input survives the failed untiled try');
      assert.equal(relL2((await fit.encode(x)).mean, tiledMean), 0);
      // the untiled try, then 2 x 2 tiles of at most 256 px for each of the two encodes
      assert.deepEqual(shapes[0], [288, 320]);
      assert.equal(shapes.length, 9);
      assert.ok(shapes.slice(1).every(([h, w]) => h <= 256 && w <= 256), JSON.stringify(shapes));
      assert.deepEqual(told, ['VAE encode untiled ran out of device memory; now diffusers\' 256-pixel tiles']);
    } finally {
      await Promise.all([plain.release(), tiled.release(), fit.release()]);
    }
  });
});

describe('VAE parameter list', () => {
  it('matches the fixture checkpoint key for key, and the real VAE has 246,478,803 parameters (spec 1.7)', async () => {
    const { Checkpoint } = await import('../../src/onnx/safetensors.js');
    const { vaeConfig, vaeParameterShapes } = await import('../../src/nets/vae.js');
    const ckpt = await Checkpoint.open(vaeDir());
    const shapes = vaeParameterShapes(vaeConfig(ckpt.config));
    assert.deepEqual([...shapes.keys()].sort(), ckpt.keys().sort());
    for (const [k, s] of shapes) assert.deepEqual(ckpt.entry(k).shape, s, k);
    const real = vaeParameterShapes(vaeConfig({}));
    const count = (m: Map<string, number[]>, prefix = '') => [...m].filter(([k]) => k.startsWith(prefix))
      .reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0);
    assert.equal(count(real), 246_478_803);
  });
});
