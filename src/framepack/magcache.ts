/**
 * MagCache: skips the transformer blocks on calls where the blocks' residual is predicted to barely change,
 * re-using the last computed residual (the same re-use as TeaCache, a different decision).
 *
 * Reference: Ma et al., "MagCache: Fast Video Generation with Magnitude-Aware Cache", arXiv 2506.09045; the
 * FramePack port in FramePack-Studio (diffusers_helper/models/mag_cache.py), whose decisions and calibrated
 * ratios (src/framepack/magcache-ratios.ts) this follows.
 *
 * The decision needs no tensor at all: it depends only on the call's index in the section and a table of
 * calibrated magnitude ratios |residual_i| / |residual_{i-1}| for the model family, resolution and step count.
 * Per forward call i of a section (i counts calls, wrapping at `steps`, like TeaCache's counter):
 *   - calls i < max(1, floor(retention * steps)) always compute;
 *   - otherwise acc_ratio *= ratio[i], acc_err += |1 - acc_ratio|, acc_steps += 1; the call is skipped when
 *     acc_err <= threshold, acc_steps <= maxConsecutiveSkips and |1 - ratio[i]| <= 0.06; a computed call
 *     resets acc_ratio = 1, acc_err = 0, acc_steps = 0.
 * The ratio table is the calibration closest in (height + width) / 2 and then in step count; another step
 * count samples it at round-half-even((steps_db - 1) / (steps - 1) * i), as numpy.round does.
 */
import { MAG_RATIOS } from './magcache-ratios.js';

export type MagCacheFamily = 'Original' | 'F1';

export interface MagCacheSettings {
  family?: MagCacheFamily;         // default 'Original' (the I2V transformer)
  threshold?: number;              // default 0.1
  maxConsecutiveSkips?: number;    // default 2
  retentionRatio?: number;         // default 0.25: the first quarter of the steps always computes
}

/** FramePack-Studio's defaults (chosen there over the paper's 0.1 / 3 / 0.2 for quality). */
export const MAGCACHE_DEFAULTS = { threshold: 0.1, maxConsecutiveSkips: 2, retentionRatio: 0.25 } as const;

/** |1 - ratio| above which a step is never skipped, whatever the accumulated error. */
const MAX_STEP_DEVIATION = 0.06;

/** What one call did, for logs and tests. */
export interface MagCacheDecision {
  compute: boolean;
  step: number;           // the call's index in the section
  ratio: number;          // the calibrated magnitude ratio of this step
  accumulatedError: number;
}

/** The calibrated ratios for a section of `steps` calls at `height` x `width` pixels. */
export function magRatios(family: MagCacheFamily, height: number, width: number, steps: number): number[] {
  const groups = MAG_RATIOS[family];
  if (!groups) throw new RangeError(`MagCache has no calibration for model family ${family}`);
  const avg = (height + width) / 2;
  const res = closest(Object.keys(groups).map(Number), avg);
  const bySteps = groups[res];
  const base = bySteps[closest(Object.keys(bySteps).map(Number), steps)];
  if (base.length === steps) return [...base];
  if (steps === 1) return [base[base.length - 1]];
  const scale = (base.length - 1) / (steps - 1);
  return Array.from({ length: steps }, (_, i) => base[roundHalfEven(i * scale)]);
}

/** The first of the keys nearest to `x` (Python's min() keeps the first of equals). */
function closest(keys: number[], x: number): number {
  let best = keys[0];
  for (const k of keys) if (Math.abs(k - x) < Math.abs(best - x)) best = k;
  return best;
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** One MagCache state: the step counter, the error accumulator and the cached residual. */
export class MagCacheState<R = unknown> {
  private step = 0;
  private accRatio = 1;
  private accErr = 0;
  private accSteps = 0;
  readonly ratios: number[];
  readonly threshold: number;
  readonly maxConsecutiveSkips: number;
  readonly retentionRatio: number;
  /** blocks(img) - img of the last computed call */
  residual: R | null = null;

  constructor(readonly steps: number, height: number, width: number, settings: MagCacheSettings = {}) {
    if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`MagCache steps must be a positive integer, got ${steps}`);
    this.threshold = settings.threshold ?? MAGCACHE_DEFAULTS.threshold;
    this.maxConsecutiveSkips = settings.maxConsecutiveSkips ?? MAGCACHE_DEFAULTS.maxConsecutiveSkips;
    this.retentionRatio = settings.retentionRatio ?? MAGCACHE_DEFAULTS.retentionRatio;
    if (!(this.threshold >= 0)) throw new RangeError(`MagCache threshold must be >= 0, got ${this.threshold}`);
    if (!(this.retentionRatio >= 0 && this.retentionRatio <= 1)) throw new RangeError(`MagCache retention ratio must be in [0, 1], got ${this.retentionRatio}`);
    this.ratios = magRatios(settings.family ?? 'Original', height, width, steps);
  }

  /** The decision for the next call of the section. */
  decide(): MagCacheDecision {
    const step = this.step;
    if (step === 0) this.reset();
    const ratio = this.ratios[step];
    let compute = true;
    if (step >= 1 && step >= Math.trunc(this.retentionRatio * this.steps)) {
      this.accRatio *= ratio;
      this.accErr += Math.abs(1 - this.accRatio);
      this.accSteps += 1;
      compute = !(this.accErr <= this.threshold && this.accSteps <= this.maxConsecutiveSkips && Math.abs(1 - ratio) <= MAX_STEP_DEVIATION);
      if (compute) this.reset();
    }
    this.step = (step + 1) % this.steps;
    // A skip needs a residual; step 0 always computes, so this only guards misuse.
    if (!compute && this.residual === null) compute = true;
    return { compute, step, ratio, accumulatedError: this.accErr };
  }

  private reset(): void {
    this.accRatio = 1;
    this.accErr = 0;
    this.accSteps = 0;
  }
}
