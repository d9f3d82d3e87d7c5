/**
 * The section bookkeeping of FramePack's two sampling orders: how many sections, their RoPE indices, the
 * latent history the DiT is conditioned on, which latents each section decodes, and how the decoded chunks
 * are blended into one video.
 *
 * - inverted (FramePackI2V_HY; the original's demo_gradio.py `worker`, which the Cog predictor repeats):
 *   sections run from the END of the video towards the input image, with the padding schedule; each new
 *   chunk is prepended.
 * - f1 (FramePack_F1_I2V_HY; demo_gradio_f1.py's `worker`, diffusers' `vanilla` sampling): sections run
 *   forward from the input image with constant indices; each new chunk is appended.
 *
 * Index 0 of every buffer is the earliest frame. Tensors are batch-1 float32, laid out (1, C, T, H, W)
 * like the original.
 */

/** Float32 tensor; structurally a HostTensor of dtype float32. */
export interface Float32Tensor {
  dtype: 'float32';
  dims: number[];
  data: Float32Array;
}

export const FPS = 30;
export type SamplingMode = 'inverted' | 'f1';
/** The history the DiT sees: 1 frame at 1x, 2 at 2x, 16 at 4x compression (after the window when inverted). */
const HISTORY_SIZES = [1, 2, 16] as const;
const HISTORY_FRAMES = 1 + 2 + 16;
/** F1 keeps the same history oldest first: 16 frames at 4x, 2 at 2x, then the 1x frame before the window. */
const F1_HISTORY_SIZES = [16, 2, 1] as const;

// ---------------------------------------------------------------------------------------------------------
// Counting

/**
 * torch.linspace in float32: the first half is filled from the start, the second half from the end, so
 * both ends are exact. The sigma schedule and the soft-append weights both come from it.
 */
export function linspace(start: number, end: number, points: number): Float32Array {
  const out = new Float32Array(points);
  if (points === 1) {
    out[0] = start;
    return out;
  }
  const step = Math.fround((end - start) / (points - 1));
  const halfway = Math.floor(points / 2);
  for (let i = 0; i < points; i++) out[i] = i < halfway ? start + step * i : end - step * (points - i - 1);
  return out;
}

/** Python's round(): halves go to the even neighbour (2.5 -> 2, 3.5 -> 4). */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const diff = x - f;
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** n = int(max(round(seconds * 30 / (lws * 4)), 1)). */
export function sectionCount(seconds: number, latentWindowSize: number): number {
  return Math.max(roundHalfEven((seconds * FPS) / (latentWindowSize * 4)), 1);
}

/** [n-1, ..., 1, 0] for n <= 4; [3, 2, ..., 2, 1, 0] above (the original repeats 2s rather than growing). */
export function paddingSchedule(n: number): number[] {
  if (n <= 4) return Array.from({ length: n }, (_, i) => n - 1 - i);
  return [3, ...Array<number>(n - 3).fill(2), 1, 0];
}

/**
 * Image-stream tokens of one DiT call for a window of `lws` latents of h8 x w8: the noisy window and the clean
 * 1x latents in (1, 2, 2) patches, the 2x latents in (2, 4, 4) and the 4x in (4, 8, 8) after replicate padding.
 * What a section's time and activation memory grow with (17,500 at the 640x608 bucket, lws 9).
 */
export function imageTokens(h8: number, w8: number, lws: number): number {
  const ceil = (a: number, b: number) => Math.ceil(a / b);
  const patches = (h8 / 2) * (w8 / 2);
  return lws * patches + 2 * patches + ceil(h8, 4) * ceil(w8, 4) + 4 * ceil(h8, 8) * ceil(w8, 8);
}

/** Latent frames of the whole video: n windows plus the start latent. */
export const totalLatentFrames = (n: number, lws: number): number => n * lws + 1;
/** Pixel frames of the whole video: 4 n lws + 1. */
export const totalPixelFrames = (n: number, lws: number): number => 4 * n * lws + 1;

// ---------------------------------------------------------------------------------------------------------
// One section's plan

/** start, start + 1, ..., len values */
const range = (start: number, len: number) => Array.from({ length: len }, (_, i) => start + i);

export interface SectionPlan {
  index: number;                // 0-based generation order (inverted: 0 = the end of the video)
  count: number;                // number of sections
  padding: number;              // inverted: blank windows between the start frame and this window (f1: 0)
  isLast: boolean;              // the last section generated (inverted: padding 0, gets the start latent prepended)
  latentIndices: number[];      // RoPE time positions of the noisy window (lws)
  cleanLatentIndices: number[]; // [start, 1x post]
  clean2xIndices: number[];     // 2
  clean4xIndices: number[];     // 16
}

/**
 * Splits arange(1 + P + lws + 1 + 2 + 16) into [1, P, lws, 1, 2, 16] with P = padding * lws: the blank gap
 * shifts the window's positions away from the start frame without occupying tokens.
 */
export function sectionIndices(padding: number, lws: number) {
  const P = padding * lws;
  const post = 1 + P + lws;
  return {
    latentIndices: range(1 + P, lws),
    cleanLatentIndices: [0, post],
    clean2xIndices: range(post + 1, 2),
    clean4xIndices: range(post + 3, 16),
  };
}

/**
 * F1's constant indices: arange(1 + 16 + 2 + 1 + lws) split [1, 16, 2, 1, lws] = start, 4x, 2x, 1x history
 * (oldest first), then the window right after them.
 */
export function forwardIndices(lws: number) {
  const [n4, n2] = F1_HISTORY_SIZES;
  const post = 1 + n4 + n2;
  return {
    latentIndices: range(post + 1, lws),
    cleanLatentIndices: [0, post],
    clean2xIndices: range(1 + n4, n2),
    clean4xIndices: range(1, n4),
  };
}

export function planSections(seconds: number, lws: number, mode: SamplingMode = 'inverted'): SectionPlan[] {
  const n = sectionCount(seconds, lws);
  if (mode === 'f1') {
    return Array.from({ length: n }, (_, index) => ({ index, count: n, padding: 0, isLast: index === n - 1, ...forwardIndices(lws) }));
  }
  return paddingSchedule(n).map((padding, index) => ({
    index, count: n, padding, isLast: padding === 0, ...sectionIndices(padding, lws),
  }));
}

// ---------------------------------------------------------------------------------------------------------
// Tensor helpers along time (axis 2 of (1, C, T, H, W))

export function zeros(dims: number[]): Float32Tensor {
  return { dtype: 'float32', dims, data: new Float32Array(dims.reduce((a, b) => a * b, 1)) };
}

/** x[:, :, start:end] (clamped to the available frames, as Python slicing is). */
export function sliceTime(x: Float32Tensor, start: number, end: number): Float32Tensor {
  const [B, C, T, H, W] = x.dims;
  const s = Math.min(Math.max(start, 0), T);
  const e = Math.min(Math.max(end, s), T);
  const frame = H * W;
  const out = zeros([B, C, e - s, H, W]);
  for (let bc = 0; bc < B * C; bc++) {
    out.data.set(x.data.subarray((bc * T + s) * frame, (bc * T + e) * frame), bc * (e - s) * frame);
  }
  return out;
}

/** concat along T. */
export function concatTime(...parts: Float32Tensor[]): Float32Tensor {
  const [B, C, , H, W] = parts[0].dims;
  for (const p of parts) {
    if (p.dims[0] !== B || p.dims[1] !== C || p.dims[3] !== H || p.dims[4] !== W) {
      throw new Error(`concatTime: shape mismatch ${JSON.stringify(parts.map((q) => q.dims))}`);
    }
  }
  const T = parts.reduce((a, p) => a + p.dims[2], 0);
  const frame = H * W;
  const out = zeros([B, C, T, H, W]);
  for (let bc = 0; bc < B * C; bc++) {
    let t = 0;
    for (const p of parts) {
      const pt = p.dims[2];
      out.data.set(p.data.subarray(bc * pt * frame, (bc + 1) * pt * frame), (bc * T + t) * frame);
      t += pt;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Latent history

export interface Conditioning {
  cleanLatents: Float32Tensor;   // (1, C, 2, h, w): [start, 1x history frame]
  cleanLatents2x: Float32Tensor; // (1, C, 2, h, w)
  cleanLatents4x: Float32Tensor; // (1, C, 16, h, w)
}

/** The latents generated so far and what the next section is conditioned on, in either sampling order. */
export interface SectionHistory {
  /** Latent frames generated so far (counting the start latent once it is part of the video). */
  readonly generated: number;
  /** The DiT's clean inputs for the next section; `post` replaces the 1x frame (the end image's latent). */
  conditioning(post?: Float32Tensor): Conditioning;
  /** Adds a section's sampler output; returns the chunk added (the section's latents as the original reports them). */
  push(generated: Float32Tensor, plan: SectionPlan): Float32Tensor;
  /** real_history: the generated frames only. */
  real(): Float32Tensor;
  /** The latents to decode after `plan`'s section. */
  decodeSlice(plan: SectionPlan, lws: number): Float32Tensor;
}

export function createHistory(mode: SamplingMode, start: Float32Tensor): SectionHistory {
  return mode === 'f1' ? new ForwardHistory(start) : new LatentHistory(start);
}

/**
 * Inverted order: the generated latents so far, earliest first, followed by 19 zero frames (the original's
 * initial history): the first 19 frames are the next section's 1x/2x/4x conditioning, zeros where nothing
 * exists yet.
 */
export class LatentHistory implements SectionHistory {
  private buffer: Float32Tensor;
  /** Latent frames generated so far (the real part of the buffer). */
  generated = 0;

  constructor(readonly start: Float32Tensor) {
    const [B, C, , h, w] = start.dims;
    this.buffer = zeros([B, C, HISTORY_FRAMES, h, w]);
  }

  conditioning(post?: Float32Tensor): Conditioning {
    const [n1, n2] = HISTORY_SIZES; // the buffer's first HISTORY_FRAMES frames
    return {
      cleanLatents: concatTime(this.start, post ?? sliceTime(this.buffer, 0, n1)),
      cleanLatents2x: sliceTime(this.buffer, n1, n1 + n2),
      cleanLatents4x: sliceTime(this.buffer, n1 + n2, HISTORY_FRAMES),
    };
  }

  /** Prepends a section's sampler output; the last section gets the start latent in front first. */
  push(generated: Float32Tensor, plan: SectionPlan): Float32Tensor {
    const chunk = plan.isLast ? concatTime(this.start, generated) : generated;
    this.generated += chunk.dims[2];
    this.buffer = concatTime(chunk, this.buffer);
    return chunk;
  }

  real(): Float32Tensor {
    return sliceTime(this.buffer, 0, this.generated);
  }

  /**
   * The latents to decode after `plan`'s section: everything for the first section; afterwards the newest
   * 2 lws latents (2 lws + 1 in the last section, which includes the start latent). The previous section's
   * lws latents are decoded again so the overlap region can be blended.
   */
  decodeSlice(plan: SectionPlan, lws: number): Float32Tensor {
    if (plan.index === 0) return this.real();
    return sliceTime(this.buffer, 0, Math.min(plan.isLast ? 2 * lws + 1 : 2 * lws, this.generated));
  }
}

/**
 * F1's forward order: 19 zero frames, the start latent, then every section's latents appended. The last 19
 * frames split [16, 2, 1] are the next section's 4x/2x/1x conditioning (the start latent is the 1x frame of
 * the first section); the start latent counts as generated from the beginning.
 */
export class ForwardHistory implements SectionHistory {
  private buffer: Float32Tensor;
  generated = 1;

  constructor(readonly start: Float32Tensor) {
    const [B, C, , h, w] = start.dims;
    this.buffer = concatTime(zeros([B, C, HISTORY_FRAMES, h, w]), start);
  }

  conditioning(post?: Float32Tensor): Conditioning {
    if (post) throw new Error('the F1 order has no end-frame slot');
    const tail = this.buffer.dims[2] - HISTORY_FRAMES; // the buffer's last HISTORY_FRAMES frames
    const [n4, n2] = F1_HISTORY_SIZES;
    return {
      cleanLatents: concatTime(this.start, sliceTime(this.buffer, tail + n4 + n2, tail + HISTORY_FRAMES)),
      cleanLatents2x: sliceTime(this.buffer, tail + n4, tail + n4 + n2),
      cleanLatents4x: sliceTime(this.buffer, tail, tail + n4),
    };
  }

  push(generated: Float32Tensor): Float32Tensor {
    this.generated += generated.dims[2];
    this.buffer = concatTime(this.buffer, generated);
    return generated;
  }

  real(): Float32Tensor {
    const T = this.buffer.dims[2];
    return sliceTime(this.buffer, T - this.generated, T);
  }

  /** Everything after the first section (start latent + window); afterwards the newest 2 lws latents. */
  decodeSlice(plan: SectionPlan, lws: number): Float32Tensor {
    if (plan.index === 0) return this.real();
    const T = this.buffer.dims[2];
    return sliceTime(this.buffer, T - Math.min(2 * lws, this.generated), T);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Pixels

/** Pixel frames shared by consecutive decoded chunks: 4 lws - 3. */
export const overlapFrames = (lws: number): number => 4 * lws - 3;

/**
 * soft_append_bcthw(a, b, overlap): a's last `overlap` frames fade into b's first ones with weights
 * linspace(1, 0, overlap) on a. In the inverted order `a` is the newly decoded, earlier chunk.
 */
export function softAppend(a: Float32Tensor, b: Float32Tensor, overlap: number): Float32Tensor {
  if (overlap <= 0) return concatTime(a, b);
  const Ta = a.dims[2], Tb = b.dims[2];
  if (Ta < overlap || Tb < overlap) throw new Error(`softAppend: chunks of ${Ta} and ${Tb} frames cannot overlap by ${overlap}`);
  const [B, C, , H, W] = a.dims;
  const frame = H * W;
  const blended = zeros([B, C, overlap, H, W]);
  const weights = linspace(1, 0, overlap);
  for (let bc = 0; bc < B * C; bc++) {
    for (let k = 0; k < overlap; k++) {
      const w = weights[k];
      const pa = (bc * Ta + Ta - overlap + k) * frame;
      const pb = (bc * Tb + k) * frame;
      const po = (bc * overlap + k) * frame;
      for (let j = 0; j < frame; j++) blended.data[po + j] = mix(w, a.data[pa + j], 1 - w, b.data[pb + j]);
    }
  }
  return concatTime(sliceTime(a, 0, Ta - overlap), blended, sliceTime(b, overlap, Tb));
}

/** One blended value, wa x + wb y with torch's float32 products (the sum is rounded where it is stored). */
function mix(wa: number, x: number, wb: number, y: number): number {
  return Math.fround(wa * x) + Math.fround(wb * y);
}

/**
 * (1, 3, F, H, W) float pixels in [-1, 1] -> F frames of H x W x 3 uint8: clamp, * 127.5 + 127.5, then
 * TRUNCATED as torch's uint8 cast does (not rounded).
 */
export function toUint8Frames(pixels: Float32Tensor, from = 0, to = pixels.dims[2]): Uint8Array {
  const [, C, , H, W] = pixels.dims;
  if (C !== 3) throw new Error(`toUint8Frames: expected 3 channels, got ${C}`);
  const frame = H * W;
  const out = new Uint8Array((to - from) * frame * 3);
  for (let t = from; t < to; t++) planesToRgb(framePlanes(pixels, t), out, (t - from) * frame * 3);
  return out;
}

/** One frame's channel planes -> interleaved uint8 at `offset` of `out`, as toUint8Frames converts. */
function planesToRgb(planes: Float32Array[], out: Uint8Array, offset: number): void {
  const C = planes.length;
  for (let c = 0; c < C; c++) {
    const src = planes[c];
    for (let j = 0, o = offset + c; j < src.length; j++, o += C) out[o] = toByte(src[j]);
  }
}

/** A float pixel in [-1, 1] (clamped) as uint8, truncated as torch's cast does. */
function toByte(x: number): number {
  const v = x < -1 ? -1 : x > 1 ? 1 : x;
  return Math.fround(Math.fround(v * 127.5) + 127.5) | 0;
}

/**
 * One frame of mix(wa, a, wb, b) per channel plane, converted to interleaved uint8 at out[offset..]: pixel by
 * pixel, so the bytes are written in order (a plane at a time writes every third byte; the last chunk's add
 * took ~1.2x as long that way).
 */
function blendToRgb(wa: number, a: Float32Array[], wb: number, b: Float32Array[], out: Uint8Array, offset: number): void {
  const C = a.length, n = a[0].length;
  if (C !== 3) {
    for (let c = 0; c < C; c++) {
      for (let j = 0, o = offset + c; j < n; j++, o += C) out[o] = toByte(Math.fround(mix(wa, a[c][j], wb, b[c][j])));
    }
    return;
  }
  const [a0, a1, a2] = a, [b0, b1, b2] = b;
  for (let j = 0, o = offset; j < n; j++, o += 3) {
    out[o] = toByte(Math.fround(mix(wa, a0[j], wb, b0[j])));
    out[o + 1] = toByte(Math.fround(mix(wa, a1[j], wb, b1[j])));
    out[o + 2] = toByte(Math.fround(mix(wa, a2[j], wb, b2[j])));
  }
}

/** The channel planes of frame t of a (1, C, T, H, W) tensor, as views. */
function framePlanes(x: Float32Tensor, t: number): Float32Array[] {
  const [, C, T, H, W] = x.dims, plane = H * W;
  return Array.from({ length: C }, (_, c) => x.data.subarray((c * T + t) * plane, (c * T + t + 1) * plane));
}

/**
 * The video being assembled, earliest frame first. Only the `overlap` frames at the growing end can still
 * change (the next chunk blends into them): the first ones when chunks are prepended (inverted order), the
 * last ones when they are appended (F1). Everything else is converted to uint8 at once: a quarter of the
 * float memory, and the same bytes as converting at the end. Synchronous (a section at 640 px is ~70 frames
 * of 1.2M values): a server runs it in a worker thread (video-pixels.ts).
 *
 * The float frames are a view of the chunk they came from where no blend touched them (no copy), converted to
 * uint8 only when read.
 */
export class PixelHistory {
  // float frames at the growing end, which may still be blended: frames [from, from + count) of `tensor`
  private live: { tensor: Float32Tensor; from: number; count: number } | null = null;
  private finals: Uint8Array[] = [];         // uint8 frames, earliest first (a chunk's in one or more segments)
  private finalCount = 0;
  // frames of the next chunk blended before it came (ahead()): uint8 by chunk frame, for a chunk of `frames`
  private blendedAhead: { frames: number; byFrame: Map<number, Uint8Array> } | null = null;
  width = 0;
  height = 0;

  /** `grows` 'backward': each chunk precedes the video (inverted order); 'forward': it follows it (F1). */
  constructor(readonly overlap: number, readonly grows: 'backward' | 'forward' = 'backward') {}

  get frameCount(): number {
    return (this.live?.count ?? 0) + this.finalCount;
  }

  /**
   * Adds a decoded chunk (1, 3, F, H, W): softAppend(chunk, video, overlap) when growing backward,
   * softAppend(video, chunk, overlap) when growing forward, computed one output frame at a time. The chunk is
   * kept (not copied): it must not change afterwards.
   *
   * `lazy` (growing backward): up to this many of the chunk's first frames, which no blend touches, stay float
   * and are converted only if read. The last chunk of a video whose first frames were already encoded from
   * elsewhere passes their count, so that nothing converts them again before the rest can be read.
   */
  add(chunk: Float32Tensor, lazy = 0): void {
    const [, C, Tc, H, W] = chunk.dims;
    const old = this.live;
    const ahead = this.blendedAhead?.frames === Tc ? this.blendedAhead.byFrame : null;
    this.blendedAhead = null;
    this.checkFits(chunk.dims, 'chunk');
    const backward = this.grows === 'backward';
    const chunkView = { tensor: chunk, from: 0, count: Tc };
    // softAppend(a, b, O): a is the earlier part, weighted by linspace(1, 0, O) over the overlap
    const [a, b] = backward ? [chunkView, old] : [old, chunkView];
    const O = old === null ? 0 : this.overlap;
    const Ta = a?.count ?? 0, Tb = b?.count ?? 0;
    if (Ta < O || Tb < O) throw new Error(`PixelHistory: chunks of ${Ta} and ${Tb} frames cannot overlap by ${O}`);
    const T = Ta + Tb - O;
    const plane = H * W;
    // the output frames that stay float: [liveFrom, liveFrom + keep)
    const keep = backward ? Math.max(Math.min(this.overlap, T), Math.min(lazy, Ta - O)) : Math.min(this.overlap, T);
    const liveFrom = backward ? 0 : T - keep;
    // Unblended, they are frames of the chunk: a view of it. Otherwise (a chunk shorter than the overlap) a copy.
    const unblended = backward ? keep <= Ta - O : liveFrom >= Ta;
    const live = unblended
      ? { tensor: chunk, from: backward ? 0 : liveFrom - Ta + O, count: keep }
      : { tensor: zeros([1, C, keep, H, W]), from: 0, count: keep };
    // The final frames join the video in order, as segments: frames blended ahead as ahead() made them (not copied
    // again), the rest converted into one new buffer.
    const isLiveFrame = (t: number) => t >= liveFrom && t < liveFrom + keep;
    const aheadCount = [...(ahead?.keys() ?? [])].filter((t) => !isLiveFrame(t) && t >= Ta - O && t < Ta).length;
    const fresh = new Uint8Array((T - keep - aheadCount) * plane * C);
    const segments: Uint8Array[] = [];
    let runStart = 0, finalAt = 0; // fresh's bytes: the run not yet a segment starts at runStart, the next frame goes at finalAt
    const endRun = () => {
      if (finalAt > runStart) segments.push(fresh.subarray(runStart, finalAt));
      runStart = finalAt;
    };
    const weights = linspace(1, 0, Math.max(O, 1));
    // the channel planes of frame t of view v
    const planesOf = (v: { tensor: Float32Tensor; from: number }, t: number) => framePlanes(v.tensor, v.from + t);
    for (let t = 0; t < T; t++) {
      const isLive = isLiveFrame(t);
      if (isLive && unblended) continue;
      const liveAt = (c: number) => (c * keep + t - liveFrom) * plane;
      // frame t of [a[0 : Ta-O], blend(a[Ta-O : Ta], b[0 : O]), b[O :]]
      if (t >= Ta - O && t < Ta) {
        // blended and stored (float, or converted to uint8) in one pass
        const k = t - (Ta - O);
        const wa = weights[k], wb = 1 - weights[k];
        if (isLive) {
          const pa = planesOf(a!, t), pb = planesOf(b!, k), out = live.tensor.data;
          for (let c = 0; c < C; c++) {
            const lo = liveAt(c), x = pa[c], y = pb[c];
            for (let j = 0; j < plane; j++) out[lo + j] = mix(wa, x[j], wb, y[j]);
          }
        } else {
          const done = ahead?.get(t); // blended already, when the frame came ahead of its chunk
          if (done) {
            endRun();
            segments.push(done);
          } else {
            blendToRgb(wa, planesOf(a!, t), wb, planesOf(b!, k), fresh, finalAt);
            finalAt += plane * C;
          }
        }
        continue;
      }
      const planes = t < Ta ? planesOf(a!, t) : planesOf(b!, t - Ta + O);
      if (isLive) for (let c = 0; c < C; c++) live.tensor.data.set(planes[c], liveAt(c));
      else {
        planesToRgb(planes, fresh, finalAt);
        finalAt += plane * C;
      }
    }
    endRun();
    this.live = live;
    if (T > keep) {
      if (backward) this.finals.unshift(...segments);
      else this.finals.push(...segments);
      this.finalCount += T - keep;
    }
    this.height = H;
    this.width = W;
  }

  /** Frames of (1, C, F, H, W) `dims` must match the video's channels and size. */
  private checkFits(dims: number[], what: string): void {
    const v = this.live?.tensor.dims;
    if (v && (v[1] !== dims[1] || v[3] !== dims[3] || v[4] !== dims[4])) {
      throw new Error(`PixelHistory: ${what} (${dims}) does not match (${v})`);
    }
  }

  /**
   * Frames [from, from + F) of the next chunk, (1, C, F, H, W) of a chunk of `chunkFrames` frames, handed over
   * before the chunk is whole (a decode's windows finish in order). Those the chunk's add() blends into the video
   * are blended and converted now, and add() takes them as they are: the same bytes, with less left to do once
   * the chunk is whole. Returns them as the video will read once the chunk is added, (n, H, W, C) uint8 from
   * video frame `from` on (a later chunk may still blend into the first `overlap`), or null when there are none.
   * Growing backward only; `frames` is read now, not kept.
   */
  ahead(frames: Float32Tensor, from: number, chunkFrames: number): { from: number; frames: Uint8Array } | null {
    if (this.grows !== 'backward') throw new Error('PixelHistory.ahead: only for a video growing backward');
    const b = this.live;
    if (b === null) return null; // the first chunk blends with nothing
    this.checkFits(frames.dims, 'frames ahead');
    const [, C, F, H, W] = frames.dims;
    const O = this.overlap, plane = H * W, weights = linspace(1, 0, Math.max(O, 1));
    if (this.blendedAhead?.frames !== chunkFrames) this.blendedAhead = { frames: chunkFrames, byFrame: new Map() };
    // the chunk's frames [chunkFrames - O, chunkFrames) blend with the video's first O frames
    const first = Math.max(from, chunkFrames - O), end = Math.min(from + F, chunkFrames);
    if (end <= first) return null;
    const out = new Uint8Array((end - first) * plane * C);
    for (let t = first; t < end; t++) {
      const k = t - (chunkFrames - O);
      const frame = out.subarray((t - first) * plane * C, (t - first + 1) * plane * C);
      blendToRgb(weights[k], framePlanes(frames, t - from), 1 - weights[k], framePlanes(b.tensor, b.from + k), frame, 0);
      this.blendedAhead.byFrame.set(t, frame);
    }
    return { from: first, frames: out };
  }

  /**
   * All frames so far from frame `from` on, earliest first, as (F, H, W, 3) uint8 buffers: the float frames one
   * at a time (converted when asked for) and the finished chunks, in time order. Taken when called: a later
   * add() (which replaces the float frames and adds a chunk, never changing a buffer) does not change what an
   * encoder still reading them gets.
   */
  chunks(from = 0): Iterable<Uint8Array> {
    const live = this.live;
    const finals = this.finals.slice();
    const backward = this.grows === 'backward';
    const frameBytes = 3 * this.width * this.height;
    return (function* () {
      if (live === null) return;
      let skip = from; // frames still to leave out
      const liveFrames = function* () {
        for (let t = live.from; t < live.from + live.count; t++) {
          if (skip > 0) skip--;
          else yield toUint8Frames(live.tensor, t, t + 1);
        }
      };
      const finalFrames = function* () {
        for (const f of finals) {
          const n = f.length / frameBytes;
          if (skip < n) yield skip ? f.subarray(skip * frameBytes) : f;
          skip = Math.max(0, skip - n);
        }
      };
      if (backward) {
        yield* liveFrames();
        yield* finalFrames();
      } else {
        yield* finalFrames();
        yield* liveFrames();
      }
    })();
  }

  /** All frames as one contiguous (F, H, W, 3) uint8 buffer. */
  frames(): Uint8Array {
    return concatBytes([...this.chunks()]);
  }
}

/** The parts one after the other in one buffer. */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
