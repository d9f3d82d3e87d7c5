/**
 * The section bookkeeping of FramePack's inverted anti-drifting generation (the original's
 * demo_gradio.py `worker`, which the Cog predictor repeats): how many sections, their padding schedule and
 * RoPE indices, the latent history the DiT is conditioned on, which latents each section decodes, and how
 * the decoded chunks are blended into one video.
 *
 * Sections run from the END of the video towards the input image: each new chunk is prepended, so index 0
 * of every buffer is the earliest frame generated so far. Tensors are batch-1 float32, laid out
 * (1, C, T, H, W) like the original.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';

/** Float32 tensor; structurally a HostTensor of dtype float32. */
export interface Float32Tensor {
  dtype: 'float32';
  dims: number[];
  data: Float32Array;
}

export const FPS = 30;
/** The history the DiT sees: 1 frame at 1x, 2 at 2x, 16 at 4x compression. */
const HISTORY_SIZES = [1, 2, 16] as const;
const HISTORY_FRAMES = 1 + 2 + 16;

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

/** Latent frames of the whole video: n windows plus the start latent. */
export const totalLatentFrames = (n: number, lws: number): number => n * lws + 1;
/** Pixel frames of the whole video: 4 n lws + 1. */
export const totalPixelFrames = (n: number, lws: number): number => 4 * n * lws + 1;

// ---------------------------------------------------------------------------------------------------------
// One section's plan

export interface SectionPlan {
  index: number;                // 0-based generation order (0 = the end of the video)
  count: number;                // number of sections
  padding: number;              // blank windows between the start frame and this window
  isLast: boolean;              // padding 0: adjacent to the input image, gets the start latent prepended
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
  const range = (start: number, len: number) => Array.from({ length: len }, (_, i) => start + i);
  const post = 1 + P + lws;
  return {
    latentIndices: range(1 + P, lws),
    cleanLatentIndices: [0, post],
    clean2xIndices: range(post + 1, 2),
    clean4xIndices: range(post + 3, 16),
  };
}

export function planSections(seconds: number, lws: number): SectionPlan[] {
  const n = sectionCount(seconds, lws);
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
  cleanLatents: Float32Tensor;   // (1, C, 2, h, w): [start, 1x post]
  cleanLatents2x: Float32Tensor; // (1, C, 2, h, w)
  cleanLatents4x: Float32Tensor; // (1, C, 16, h, w)
}

/**
 * The generated latents so far, earliest first, followed by 19 zero frames (the original's initial history):
 * the first 19 frames are the next section's 1x/2x/4x conditioning, zeros where nothing exists yet.
 */
export class LatentHistory {
  private buffer: Float32Tensor;
  /** Latent frames generated so far (the real part of the buffer). */
  generated = 0;

  constructor(readonly start: Float32Tensor) {
    const [B, C, , h, w] = start.dims;
    this.buffer = zeros([B, C, HISTORY_FRAMES, h, w]);
  }

  /** The DiT's clean inputs for the next section. */
  conditioning(): Conditioning {
    const head = sliceTime(this.buffer, 0, HISTORY_FRAMES);
    const [n1, n2] = HISTORY_SIZES;
    return {
      cleanLatents: concatTime(this.start, sliceTime(head, 0, n1)),
      cleanLatents2x: sliceTime(head, n1, n1 + n2),
      cleanLatents4x: sliceTime(head, n1 + n2, HISTORY_FRAMES),
    };
  }

  /**
   * Prepends a section's sampler output; the last section gets the start latent in front first.
   * Returns what was prepended (the section's generated latents as the original reports them).
   */
  push(generated: Float32Tensor, plan: SectionPlan): Float32Tensor {
    const chunk = plan.isLast ? concatTime(this.start, generated) : generated;
    this.generated += chunk.dims[2];
    this.buffer = concatTime(chunk, this.buffer);
    return chunk;
  }

  /** real_history = the generated frames only. */
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
      for (let j = 0; j < frame; j++) {
        blended.data[po + j] = Math.fround(w * a.data[pa + j]) + Math.fround((1 - w) * b.data[pb + j]);
      }
    }
  }
  return concatTime(sliceTime(a, 0, Ta - overlap), blended, sliceTime(b, overlap, Tb));
}

/**
 * (1, 3, F, H, W) float pixels in [-1, 1] -> F frames of H x W x 3 uint8: clamp, * 127.5 + 127.5, then
 * TRUNCATED as torch's uint8 cast does (not rounded).
 */
export function toUint8Frames(pixels: Float32Tensor, from = 0, to = pixels.dims[2]): Uint8Array {
  const [, C, F, H, W] = pixels.dims;
  if (C !== 3) throw new Error(`toUint8Frames: expected 3 channels, got ${C}`);
  const frame = H * W;
  const n = to - from;
  const out = new Uint8Array(n * frame * 3);
  for (let c = 0; c < 3; c++) {
    for (let t = 0; t < n; t++) {
      const src = (c * F + from + t) * frame;
      const dst = t * frame * 3 + c;
      for (let j = 0; j < frame; j++) {
        const v = Math.min(Math.max(pixels.data[src + j], -1), 1);
        out[dst + 3 * j] = Math.fround(Math.fround(v * 127.5) + 127.5) | 0;
      }
    }
  }
  return out;
}

/**
 * The video being assembled, earliest frame first. Only the first `overlap` frames can still change (the
 * next, earlier chunk blends into them), so everything after them is converted to uint8 at once: a quarter
 * of the float memory, and the same bytes as converting at the end. The work goes frame by frame with a
 * yield to the event loop in between (a section at 640 px is ~70 frames of 1.2M values).
 */
export class PixelHistory {
  private head: Float32Tensor | null = null; // float frames that may still be blended
  private finals: Uint8Array[] = [];         // uint8 frames after the head, earliest chunk first
  private finalCount = 0;
  width = 0;
  height = 0;

  constructor(readonly overlap: number) {}

  get frameCount(): number {
    return (this.head?.dims[2] ?? 0) + this.finalCount;
  }

  /**
   * Adds a decoded chunk (1, 3, F, H, W) that precedes everything added so far: softAppend(chunk, video,
   * overlap), computed one output frame at a time.
   */
  async prepend(chunk: Float32Tensor): Promise<void> {
    const [, C, Ta, H, W] = chunk.dims;
    const old = this.head;
    const O = old === null ? 0 : this.overlap;
    const To = old?.dims[2] ?? 0;
    if (old !== null) {
      if (old.dims[1] !== C || old.dims[3] !== H || old.dims[4] !== W) throw new Error(`PixelHistory: chunk (${chunk.dims}) does not match (${old.dims})`);
      if (Ta < O || To < O) throw new Error(`PixelHistory: chunks of ${Ta} and ${To} frames cannot overlap by ${O}`);
    }
    const T = Ta + To - O;
    const keep = Math.min(this.overlap, T);
    const plane = H * W;
    const weights = linspace(1, 0, Math.max(O, 1));
    const head = zeros([1, C, keep, H, W]);
    const finals = new Uint8Array((T - keep) * plane * C);
    const frame = new Float32Array(C * plane);
    for (let t = 0; t < T; t++) {
      // frame t of [chunk[0 : Ta-O], blend(chunk[Ta-O : Ta], old[0 : O]), old[O :]], channel-major
      for (let c = 0; c < C; c++) {
        const out = frame.subarray(c * plane, (c + 1) * plane);
        if (t < Ta - O) {
          out.set(chunk.data.subarray((c * Ta + t) * plane, (c * Ta + t + 1) * plane));
        } else if (t < Ta) {
          const k = t - (Ta - O);
          const w = weights[k];
          const pa = (c * Ta + t) * plane, pb = (c * To + k) * plane;
          for (let j = 0; j < plane; j++) out[j] = Math.fround(w * chunk.data[pa + j]) + Math.fround((1 - w) * old!.data[pb + j]);
        } else {
          const k = t - Ta + O;
          out.set(old!.data.subarray((c * To + k) * plane, (c * To + k + 1) * plane));
        }
        if (t < keep) head.data.set(out, (c * keep + t) * plane);
      }
      await yieldToLoop(); // blending and converting a 640 px frame are each ~10 ms of JavaScript
      if (t >= keep) {
        const f = toUint8Frames({ dtype: 'float32', dims: [1, C, 1, H, W], data: frame });
        finals.set(f, (t - keep) * plane * C);
      }
      await yieldToLoop();
    }
    this.head = head;
    if (T > keep) {
      this.finals.unshift(finals);
      this.finalCount += T - keep;
    }
    this.height = H;
    this.width = W;
  }

  /**
   * All frames, earliest first, as (F, H, W, 3) uint8 buffers: the head one frame at a time (converted when
   * asked for), then the finished chunks.
   */
  *chunks(): Generator<Uint8Array> {
    const head = this.head;
    if (head === null) return;
    for (let t = 0; t < head.dims[2]; t++) yield toUint8Frames(head, t, t + 1);
    yield* this.finals;
  }

  /** All frames as one contiguous (F, H, W, 3) uint8 buffer. */
  frames(): Uint8Array {
    const parts = [...this.chunks()];
    const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}
