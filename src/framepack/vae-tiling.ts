/**
 * Tile plans and tile stitching of the HunyuanVideo VAE, as diffusers' AutoencoderKLHunyuanVideo does them
 * (`_temporal_tiled_decode`, `tiled_decode`, `tiled_encode`, `blend_t/v/h`; diffusers 0.33.1).
 *
 * Pure array code with no runtime dependencies, so that it runs inside the stitching worker
 * (vae-stitch-worker.ts) and in tests alike. Tensors are float32, batch 1, laid out (C, T, H, W).
 *
 * Two details matter for exact parity with the original:
 * - blending writes INTO the current tile, and the next tile blends against that modified copy
 *   (only the leading rows/columns/frames change, but small edge tiles can overlap both ends);
 * - a tile keeps only its first `keep` rows/columns/frames; the blended-away tail of the previous tile
 *   is used only as the blend source.
 */

/** Temporal tiling constants (pixel frames: tile 16, stride 12 -> latent tile 4 + 1, stride 3, blend 4). */
export const TEMPORAL = {
  latentTile: 5, // tile_sample_min_num_frames / 4 + 1
  latentStride: 3, // tile_sample_stride_num_frames / 4
  blendFrames: 4, // tile_sample_min_num_frames - tile_sample_stride_num_frames
  keepFrames: 12, // tile_sample_stride_num_frames (the first tile keeps one more)
  minLatentFrames: 4, // more latent frames than this -> temporal tiling
} as const;

/** Spatial tiling constants in pixels (sample) and latents (spatial compression 8). */
export const SPATIAL = {
  sampleTile: 256,
  sampleStride: 192,
  latentTile: 32,
  latentStride: 24,
} as const;

export const pixelFrames = (latentFrames: number): number => 4 * (latentFrames - 1) + 1;

/** A (C, T, H, W) float32 tensor of batch 1. */
export interface Block {
  dims: [number, number, number, number];
  data: Float32Array;
}

export const block = (dims: [number, number, number, number], data?: Float32Array): Block => {
  const n = dims[0] * dims[1] * dims[2] * dims[3];
  if (data && data.length !== n) throw new Error(`block data has ${data.length} values, dims ${dims.join('x')} need ${n}`);
  return { dims, data: data ?? new Float32Array(n) };
};

/** Latent-frame windows [start, end) of the temporal tiled decode; one window when no tiling applies. */
export function temporalWindows(latentFrames: number): Array<[number, number]> {
  if (latentFrames <= TEMPORAL.minLatentFrames) return [[0, latentFrames]];
  const out: Array<[number, number]> = [];
  for (let s = 0; s < latentFrames; s += TEMPORAL.latentStride) {
    out.push([s, Math.min(s + TEMPORAL.latentTile, latentFrames)]);
  }
  return out;
}

/** Start offsets [0, stride, 2*stride, ...) below `size`; tiles are [start, min(start + tile, size)). */
export function tileStarts(size: number, stride: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < size; s += stride) out.push(s);
  return out;
}

/** Copies frames [t0, t1) x rows [y0, y1) x cols [x0, x1) of `src` into `dst` at (dt, dy, dx). */
export function copyRegion(
  src: Block, dst: Block,
  t0: number, t1: number, y0: number, y1: number, x0: number, x1: number,
  dt: number, dy: number, dx: number,
): void {
  const [C, T, H, W] = src.dims;
  const [C2, T2, H2, W2] = dst.dims;
  if (C !== C2) throw new Error(`copyRegion: channels ${C} vs ${C2}`);
  if (t1 - t0 + dt > T2 || y1 - y0 + dy > H2 || x1 - x0 + dx > W2) throw new Error('copyRegion: region exceeds destination');
  const w = x1 - x0;
  for (let c = 0; c < C; c++) {
    for (let t = t0; t < t1; t++) {
      for (let y = y0; y < y1; y++) {
        const s = ((c * T + t) * H + y) * W + x0;
        const d = ((c * T2 + (t - t0 + dt)) * H2 + (y - y0 + dy)) * W2 + dx;
        dst.data.set(src.data.subarray(s, s + w), d);
      }
    }
  }
}

/**
 * blend_t / blend_v / blend_h: cur[at + k] = prev[n_prev - E + k] * (1 - k/E) + cur[at + k] * (k/E) for k < E,
 * E = min(extent, n_prev, n_cur - at), along time (axis 1), height (axis 2) or width (axis 3). In place on
 * `cur`; `at` lets a tile blend from its second frame without being copied first.
 */
export function blend(prev: Block, cur: Block, axis: 1 | 2 | 3, extent: number, at = 0): void {
  const E = Math.min(extent, prev.dims[axis], cur.dims[axis] - at);
  if (E <= 0) return;
  const [C, T, H, W] = cur.dims;
  const [, Tp, Hp, Wp] = prev.dims;
  for (let d = 0; d < 4; d++) {
    if (d !== axis && prev.dims[d] !== cur.dims[d]) {
      throw new Error(`blend: dims ${prev.dims.join('x')} and ${cur.dims.join('x')} differ off axis ${axis}`);
    }
  }
  const p = prev.data, q = cur.data;
  for (let j = 0; j < E; j++) {
    const wc = j / E, wp = 1 - wc;
    const kp = prev.dims[axis] - E + j, k = at + j;
    for (let c = 0; c < C; c++) {
      if (axis === 1) {
        const so = ((c * Tp + kp) * Hp) * Wp, co = ((c * T + k) * H) * W;
        for (let i = 0; i < H * W; i++) q[co + i] = p[so + i] * wp + q[co + i] * wc;
      } else {
        for (let t = 0; t < T; t++) {
          if (axis === 2) {
            const so = ((c * Tp + t) * Hp + kp) * Wp, co = ((c * T + t) * H + k) * W;
            for (let x = 0; x < W; x++) q[co + x] = p[so + x] * wp + q[co + x] * wc;
          } else {
            for (let y = 0; y < H; y++) {
              q[((c * T + t) * H + y) * W + k] = p[((c * Tp + t) * Hp + y) * Wp + kp] * wp + q[((c * T + t) * H + y) * W + k] * wc;
            }
          }
        }
      }
    }
  }
}

/**
 * Stitches the temporal tiles of one decode into its output (C, 4(T-1)+1, H, W), tile by tile, keeping
 * only the previous tile's last frames (the blend source).
 */
export class TemporalStitcher {
  readonly out: Block;
  private next = 0; // index of the next tile expected
  /** output frames written so far: frames [0, written) of `out` are final */
  written = 0;
  private tail: Block | null = null; // last frames of the previous (blended) tile

  constructor(channels: number, latentFrames: number, height: number, width: number) {
    this.out = block([channels, pixelFrames(latentFrames), height, width]);
  }

  /**
   * `tile` is the decoder output of window `index` (all its frames); tiles arrive in order. The stitch keeps no
   * reference to it (the next tile's blend source is copied into a buffer of its own), so the caller may reuse it.
   */
  push(index: number, tile: Block): void {
    if (index !== this.next) throw new Error(`temporal tile ${index} pushed, expected ${this.next}`);
    this.next++;
    const [C, , H, W] = tile.dims;
    // after the first, a tile's first frame is the one it shares with the previous tile: dropped
    const from = index > 0 ? 1 : 0;
    const n = tile.dims[1] - from;
    if (index > 0 && this.tail) blend(this.tail, tile, 1, TEMPORAL.blendFrames, from);
    const keep = Math.min(n, index === 0 ? TEMPORAL.keepFrames + 1 : TEMPORAL.keepFrames, this.out.dims[1] - this.written);
    if (keep > 0) copyRegion(tile, this.out, from, from + keep, 0, H, 0, W, this.written, 0, 0);
    this.written += Math.max(keep, 0);
    // the tile's last frames are the next tile's blend source; once the output is whole no tile blends again
    const tailFrames = Math.min(TEMPORAL.blendFrames, n);
    if (tailFrames <= 0 || this.written === this.out.dims[1]) {
      this.tail = null;
      return;
    }
    const dims: Block['dims'] = [C, tailFrames, H, W];
    if (!this.tail || this.tail.dims.some((d, i) => d !== dims[i])) this.tail = block(dims);
    copyRegion(tile, this.tail, from + n - tailFrames, from + n, 0, H, 0, W, 0, 0, 0);
  }

  finish(): Block {
    if (this.written !== this.out.dims[1]) throw new Error(`temporal stitch wrote ${this.written} of ${this.out.dims[1]} frames`);
    return this.out;
  }
}

/**
 * Geometry of a spatial tiling, per axis ([rows, columns]): input tile starts and size, and the output rows
 * or columns each tile keeps and blends. The last tile of an axis keeps everything up to the edge.
 */
export interface SpatialPlan {
  rows: number[]; // input start rows
  cols: number[]; // input start columns
  tile: [number, number]; // input tile size
  keep: [number, number]; // output rows / columns kept per tile (= stride x compression)
  blend: [number, number]; // output blend extent (= overlap x compression)
  outHeight: number;
  outWidth: number;
}

/** diffusers `tiled_decode`: latent tiles 32 / stride 24, pixel blend 64, keep 192. */
export function decodeSpatialPlan(latentHeight: number, latentWidth: number): SpatialPlan {
  return {
    rows: tileStarts(latentHeight, SPATIAL.latentStride),
    cols: tileStarts(latentWidth, SPATIAL.latentStride),
    tile: [SPATIAL.latentTile, SPATIAL.latentTile],
    keep: [SPATIAL.sampleStride, SPATIAL.sampleStride],
    blend: [SPATIAL.sampleTile - SPATIAL.sampleStride, SPATIAL.sampleTile - SPATIAL.sampleStride],
    outHeight: latentHeight * 8,
    outWidth: latentWidth * 8,
  };
}

/** diffusers `tiled_encode`: pixel tiles 256 / stride 192, latent blend 8, keep 24. */
export function encodeSpatialPlan(height: number, width: number): SpatialPlan {
  return {
    rows: tileStarts(height, SPATIAL.sampleStride),
    cols: tileStarts(width, SPATIAL.sampleStride),
    tile: [SPATIAL.sampleTile, SPATIAL.sampleTile],
    keep: [SPATIAL.latentStride, SPATIAL.latentStride],
    blend: [SPATIAL.latentTile - SPATIAL.latentStride, SPATIAL.latentTile - SPATIAL.latentStride],
    outHeight: Math.floor(height / 8),
    outWidth: Math.floor(width / 8),
  };
}

/**
 * n equal tiles over `size` latents that overlap by at least diffusers' 8 latents (64 px): the smallest tile
 * whose stride is whole. One tile when the axis is too short for n.
 */
function gridAxis(size: number, n: number): { starts: number[]; tile: number; stride: number; overlap: number } {
  const minOverlap = SPATIAL.latentTile - SPATIAL.latentStride;
  if (n > 1) {
    for (let tile = Math.ceil((size + (n - 1) * minOverlap) / n); tile < size; tile++) {
      if ((size - tile) % (n - 1) === 0) {
        const stride = (size - tile) / (n - 1);
        return { starts: Array.from({ length: n }, (_, i) => i * stride), tile, stride, overlap: tile - stride };
      }
    }
  }
  return { starts: [0], tile: size, stride: size, overlap: 0 };
}

/**
 * rows x cols tiles of one shape covering the latent exactly (a decode with fewer, larger tiles than diffusers'
 * and a single input shape, so the convolution algorithms are chosen once): each tile blends its overlap
 * with the previous one linearly, as diffusers' tiles do over their 64 px.
 */
export function gridSpatialPlan(latentHeight: number, latentWidth: number, rows: number, cols = rows): SpatialPlan {
  const r = gridAxis(latentHeight, rows), c = gridAxis(latentWidth, cols);
  return {
    rows: r.starts, cols: c.starts, tile: [r.tile, c.tile], keep: [r.stride * 8, c.stride * 8], blend: [r.overlap * 8, c.overlap * 8],
    outHeight: latentHeight * 8, outWidth: latentWidth * 8,
  };
}

/** Whether diffusers would tile a latent of this size spatially (decode) when tiling is enabled. */
export const decodeNeedsSpatialTiling = (latentHeight: number, latentWidth: number): boolean =>
  latentHeight > SPATIAL.latentTile || latentWidth > SPATIAL.latentTile;

/** Whether diffusers would tile an image of this size spatially (encode) when tiling is enabled. */
export const encodeNeedsSpatialTiling = (height: number, width: number): boolean =>
  height > SPATIAL.sampleTile || width > SPATIAL.sampleTile;

/**
 * Stitches the spatial tiles of one (temporal) chunk, row-major order. Keeps the previous row of tiles
 * (blend_v source) and the previous tile of the current row (blend_h source), each as blended.
 */
export class SpatialStitcher {
  private out: Block | null = null;
  private above: Block[] = [];
  private current: Block[] = [];
  private next = 0;

  /**
   * `spare`: memory for the output, used when large enough (its first values; every one of them is written),
   * so that a decode's windows reuse one buffer instead of each touching new pages.
   */
  constructor(readonly plan: SpatialPlan, private readonly spare?: Float32Array) {}

  get complete(): boolean { return this.next === this.count; }

  get count(): number { return this.plan.rows.length * this.plan.cols.length; }

  push(index: number, tile: Block): void {
    if (index !== this.next) throw new Error(`spatial tile ${index} pushed, expected ${this.next}`);
    this.next++;
    const { rows, cols, keep, blend: extent } = this.plan;
    const r = Math.floor(index / cols.length), c = index % cols.length;
    if (!this.out) {
      const dims: Block['dims'] = [tile.dims[0], tile.dims[1], this.plan.outHeight, this.plan.outWidth];
      const n = dims[0] * dims[1] * dims[2] * dims[3];
      this.out = block(dims, this.spare && this.spare.length >= n ? this.spare.subarray(0, n) : undefined);
    }
    if (r > 0) blend(this.above[c], tile, 2, extent[0]);
    if (c > 0) blend(this.current[c - 1], tile, 3, extent[1]);
    this.current.push(tile);
    const y0 = r * keep[0], x0 = c * keep[1];
    // the last tile of an axis keeps all it has up to the edge (diffusers' last tiles are shorter than keep)
    const h = Math.min(r === rows.length - 1 ? Infinity : keep[0], tile.dims[2], this.plan.outHeight - y0);
    const w = Math.min(c === cols.length - 1 ? Infinity : keep[1], tile.dims[3], this.plan.outWidth - x0);
    if (h > 0 && w > 0) copyRegion(tile, this.out, 0, tile.dims[1], 0, h, 0, w, 0, y0, x0);
    if (c === cols.length - 1) {
      this.above = this.current;
      this.current = [];
    }
  }

  finish(): Block {
    if (!this.out || !this.complete) throw new Error(`spatial stitch got ${this.next} of ${this.count} tiles`);
    return this.out;
  }
}
