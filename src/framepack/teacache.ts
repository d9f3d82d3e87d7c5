/**
 * TeaCache: skips the transformer blocks on calls whose input barely moved since the last call, re-using the
 * blocks' last residual instead.
 *
 * Reference: FramePack (lllyasviel) diffusers_helper/models/hunyuan_video_packed.py, `initialize_teacache`
 * and the `enable_teacache` branch of HunyuanVideoTransformer3DModelPacked.forward; the method is Liu et al.,
 * "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", 2024.
 *
 * Per forward call, with `mod` = the first dual-stream block's modulated image input (all packed tokens):
 *   1. the first call (cnt == 0) and the last (cnt == steps - 1) always compute, and reset the accumulator;
 *   2. otherwise acc += f(r) with r = mean|mod - prev| / mean|prev| and f the fitted polynomial below;
 *      the call computes when acc >= threshold, which resets acc to 0;
 *   3. prev = mod; cnt += 1, wrapping to 0 at `steps`;
 *   4. a computed call stores residual = blocks(img) - img; a skipped one uses img + residual.
 * The counter counts forward calls, not sampler steps, and the state is reset at the start of each section.
 *
 * With real CFG the original shares one state between the positive and negative calls, which interleave:
 * the counter wraps in the middle of the section, the distance compares a positive input with a negative one,
 * and a skipped positive call re-uses the negative branch's residual. `TeaCacheBank` keeps that behaviour as
 * the 'shared' mode and offers 'per-branch' (one state per branch, each seeing exactly the calls of a cfg = 1
 * run) as the default. With cfg = 1 the two modes are identical.
 */

import { bfloat16ToFloat32, float32ToBFloat16 } from '../onnx/half.js';

/** numpy.poly1d coefficients, highest power first, fitted by the original for HunyuanVideo. */
export const TEACACHE_POLYNOMIAL: readonly number[] = [7.33226126e2, -4.01131952e2, 6.75869174e1, -3.149878, 9.61237896e-2];

/** The original's default (its comment: 0.1 for about 1.6x speed-up, 0.15 for about 2.1x). */
export const DEFAULT_TEACACHE_THRESHOLD = 0.15;

/** f(r): the polynomial evaluated as numpy does (Horner, float64). */
export function rescaleDistance(r: number): number {
  let y = 0;
  for (const c of TEACACHE_POLYNOMIAL) y = y * r + c;
  return y;
}

/**
 * mean|cur - prev| / mean|prev| over all elements. With `bf16`, both means and the quotient are rounded to
 * bfloat16 as the original's bf16 tensors do on the GPU; without, the float32 reference's value.
 */
export function relativeL1(cur: ArrayLike<number>, prev: ArrayLike<number>, bf16 = false): number {
  if (cur.length !== prev.length) throw new RangeError(`relativeL1: ${cur.length} vs ${prev.length} elements`);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < cur.length; i++) {
    diff += Math.abs(cur[i] - prev[i]);
    norm += Math.abs(prev[i]);
  }
  return relativeL1FromSums(diff, norm, cur.length, bf16);
}

/** relativeL1 from its two sums over `count` elements (the runner has the device compute them). */
export function relativeL1FromSums(absDiff: number, absPrev: number, count: number, bf16 = false): number {
  if (!bf16) return absDiff / absPrev;
  return roundBf16(roundBf16(absDiff / count) / roundBf16(absPrev / count));
}

function roundBf16(x: number): number {
  return bfloat16ToFloat32(float32ToBFloat16([x]))[0];
}

/** What one call did: the original's state after the call, for logs and for checking against its traces. */
export interface TeaCacheDecision {
  compute: boolean;
  relL1: number | null;   // null on the calls that are computed without measuring (first and last)
  accumulated: number;    // after the call (0 after a computed call)
  cntAfter: number;
}

/**
 * One TeaCache state: counter, accumulator, the cached residual and the previous call's modulated input
 * (both in whatever form the runner keeps them: host arrays, or tensors left on the device).
 */
export class TeaCacheState<R = unknown, M = unknown> {
  private cnt = 0;
  private acc = 0;
  /** the modulated input of the last call, which the next call is measured against */
  previous: M | null = null;
  /** blocks(img) - img of the last computed call. */
  residual: R | null = null;

  /** `bf16Measure`: measure as the bf16 original does (see relativeL1) */
  constructor(readonly steps: number, readonly threshold: number = DEFAULT_TEACACHE_THRESHOLD, readonly bf16Measure = false) {
    if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`TeaCache steps must be a positive integer, got ${steps}`);
    if (!(threshold >= 0)) throw new RangeError(`TeaCache threshold must be >= 0, got ${threshold}`);
  }

  /**
   * The counter/accumulator arithmetic alone. `measure` is called only on calls that are not forced, and
   * returns the relative L1 (or null when there is nothing to compare with, which forces a compute).
   */
  advance(measure: () => number | null): TeaCacheDecision {
    let compute: boolean;
    let relL1: number | null = null;
    if (this.cnt === 0 || this.cnt === this.steps - 1) {
      compute = true;
      this.acc = 0;
    } else {
      relL1 = measure();
      if (relL1 === null) {
        compute = true;
        this.acc = 0;
      } else {
        this.acc += rescaleDistance(relL1);
        compute = this.acc >= this.threshold;
        if (compute) this.acc = 0;
      }
    }
    this.cnt += 1;
    if (this.cnt === this.steps) this.cnt = 0;
    // A skip needs a residual; the first call of a section always computes, so this only guards misuse.
    if (!compute && this.residual === null) {
      compute = true;
      this.acc = 0;
    }
    return { compute, relL1, accumulated: this.acc, cntAfter: this.cnt };
  }
}

export type TeaCacheMode = 'per-branch' | 'shared';

export interface TeaCacheSettings {
  enabled: boolean;
  threshold?: number;      // default 0.15
  mode?: TeaCacheMode;     // default 'per-branch'
}

/** The TeaCache states of one section: one per CFG branch, or one for all calls ('shared', the original). */
export class TeaCacheBank<R = unknown, M = unknown> {
  private readonly states = new Map<string, TeaCacheState<R, M>>();
  readonly mode: TeaCacheMode;
  readonly threshold: number;

  constructor(readonly steps: number, settings: Omit<TeaCacheSettings, 'enabled'> = {}, readonly bf16Measure = false) {
    this.mode = settings.mode ?? 'per-branch';
    this.threshold = settings.threshold ?? DEFAULT_TEACACHE_THRESHOLD;
    if (this.mode !== 'per-branch' && this.mode !== 'shared') throw new RangeError(`unknown TeaCache mode ${String(this.mode)}`);
  }

  /** The state that serves calls of `branch`. */
  state(branch: string): TeaCacheState<R, M> {
    const key = this.mode === 'shared' ? '*' : branch;
    let s = this.states.get(key);
    if (!s) {
      s = new TeaCacheState<R, M>(this.steps, this.threshold, this.bf16Measure);
      this.states.set(key, s);
    }
    return s;
  }
}
