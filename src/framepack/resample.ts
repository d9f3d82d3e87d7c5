/**
 * Pillow's separable resampler for 8-bit images (`Image.resize` with LANCZOS or BICUBIC), re-implemented
 * so that FramePack's bucket resize and SigLIP's 384x384 resize give the same bytes as the Python original.
 * libvips (sharp) is close when shrinking but several levels off when enlarging, and the start image is
 * the first frame of every video, so the port follows Pillow's algorithm:
 *
 * - a horizontal pass, then a vertical pass, each a 1-D convolution;
 * - output sample i is centred on source coordinate (i + 0.5) * scale, scale = in / out;
 * - when shrinking the filter is stretched by the scale (antialiasing): support = filter support * max(scale, 1);
 * - taps are clipped to the image and their weights renormalised to sum 1 (edge handling);
 * - weights become signed integers with 22 fractional bits; each pass adds half an LSB, shifts and clamps
 *   to 0..255, so the intermediate image is 8-bit too.
 *
 * PyTorch's antialiased uint8 interpolation (`interpolate(..., antialias=True)` on uint8, which torchvision
 * and therefore current transformers image processors use) is the same algorithm with one difference: the
 * weights are int16 with as many fractional bits as the largest weight of the axis allows (about 14-15)
 * instead of 22. `fixedPoint: 'pytorch'` selects that rounding; results differ from Pillow's by one level
 * on a fraction of a percent of the samples.
 *
 * References: Pillow's `libImaging/Resample.c` and PyTorch's `UpSampleKernel.cpp` (algorithms only);
 * Keys, "Cubic convolution interpolation for digital image processing" (1981) for the a = -0.5 cubic.
 */

export interface ResampleFilter {
  /** half-width of the kernel at scale 1 */
  support: number;
  weight(x: number): number;
}

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

/** Lanczos with three lobes, truncated to [-3, 3). */
export const LANCZOS: ResampleFilter = {
  support: 3,
  weight: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0),
};

/** Keys' cubic with a = -0.5 (Pillow's BICUBIC, and PyTorch's antialiased bicubic). */
export const BICUBIC: ResampleFilter = {
  support: 2,
  weight: (x) => {
    const a = -0.5;
    const t = Math.abs(x);
    if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
    if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
    return 0;
  },
};

/** How the normalised weights become integers: Pillow's 22 fractional bits, or PyTorch's int16 weights. */
export type FixedPoint = 'pillow' | 'pytorch';

const PILLOW_PRECISION_BITS = 32 - 8 - 2;

/** Taps of one axis: output index i reads source [start[i], start[i] + count[i]) with weights[i * ksize + k]. */
interface AxisCoefficients {
  ksize: number;
  start: Int32Array;
  count: Int32Array;
  weights: Int32Array; // fixed point with `bits` fractional bits
  bits: number;
}

/** Fractional bits PyTorch gives int16 weights: the most for which the largest weight still fits. */
function pytorchPrecision(maxWeight: number): number {
  let bits = 0;
  for (; bits < 22; bits++) {
    if (Math.trunc(0.5 + maxWeight * 2 ** (bits + 1)) >= 1 << 15) break;
  }
  return bits;
}

function axisCoefficients(inSize: number, outSize: number, filter: ResampleFilter,
  fixedPoint: FixedPoint): AxisCoefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const w = new Float64Array(outSize * ksize);
  let maxWeight = 0;
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    // C's (int) cast truncates toward zero; the clamp to 0 makes the sign irrelevant.
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const n = hi - lo;
    const row = i * ksize;
    let sum = 0;
    for (let k = 0; k < n; k++) {
      w[row + k] = filter.weight((k + lo - center + 0.5) / filterScale);
      sum += w[row + k];
    }
    if (sum !== 0) {
      for (let k = 0; k < n; k++) {
        w[row + k] /= sum;
        maxWeight = Math.max(maxWeight, w[row + k]);
      }
    }
    start[i] = lo;
    count[i] = n;
  }
  const bits = fixedPoint === 'pillow' ? PILLOW_PRECISION_BITS : pytorchPrecision(maxWeight);
  const one = 2 ** bits;
  const weights = new Int32Array(outSize * ksize);
  // round half away from zero, as C's (int)(v * 2^bits +- 0.5)
  for (let j = 0; j < w.length; j++) weights[j] = Math.trunc(w[j] < 0 ? w[j] * one - 0.5 : w[j] * one + 0.5);
  return { ksize, start, count, weights, bits };
}

/** Rounds an accumulator (which started at half an LSB) down to 8 bits and clamps. */
function clip8(acc: number, bits: number): number {
  if (acc <= 0) return 0;
  const v = acc >> bits;
  return v > 255 ? 255 : v;
}

/**
 * Resizes an interleaved 8-bit image (HWC, `channels` per pixel) to outWidth x outHeight.
 * Same size in and out returns a copy, as Pillow does.
 */
export function resample(src: Uint8Array, width: number, height: number, channels: number,
  outWidth: number, outHeight: number, filter: ResampleFilter, fixedPoint: FixedPoint = 'pillow'): Uint8Array {
  if (src.length !== width * height * channels) throw new Error('resample: buffer size does not match the image');
  if (outWidth < 1 || outHeight < 1) throw new Error(`resample: invalid size ${outWidth}x${outHeight}`);
  if (outWidth === width && outHeight === height) return src.slice();

  let cur = src;
  // Horizontal pass: (height, width) -> (height, outWidth).
  if (outWidth !== width) {
    const c = axisCoefficients(width, outWidth, filter, fixedPoint);
    const half = 2 ** (c.bits - 1);
    const out = new Uint8Array(height * outWidth * channels);
    const { start, count, weights, ksize, bits } = c;
    for (let y = 0; y < height; y++) {
      const row = y * width * channels;
      for (let x = 0; x < outWidth; x++) {
        const n = count[x], wo = x * ksize;
        const o = (y * outWidth + x) * channels;
        for (let ch = 0; ch < channels; ch++) {
          // |acc| < 255 * sum|w| * 2^bits < 2^31: exact in doubles and safe for the int32 shift in clip8.
          let acc = half;
          let at = row + start[x] * channels + ch;
          for (let k = 0; k < n; k++, at += channels) acc += cur[at] * weights[wo + k];
          out[o + ch] = clip8(acc, bits);
        }
      }
    }
    cur = out;
  }
  // Vertical pass: (height, outWidth) -> (outHeight, outWidth), whole rows at a time.
  if (outHeight !== height) {
    const c = axisCoefficients(height, outHeight, filter, fixedPoint);
    const half = 2 ** (c.bits - 1);
    const stride = outWidth * channels;
    const out = new Uint8Array(outHeight * stride);
    const acc = new Float64Array(stride);
    for (let y = 0; y < outHeight; y++) {
      const s = c.start[y], n = c.count[y], wo = y * c.ksize;
      acc.fill(half);
      for (let k = 0; k < n; k++) {
        const w = c.weights[wo + k];
        const src = (s + k) * stride;
        for (let i = 0; i < stride; i++) acc[i] += cur[src + i] * w;
      }
      const o = y * stride;
      for (let i = 0; i < stride; i++) out[o + i] = clip8(acc[i], c.bits);
    }
    cur = out;
  }
  return cur;
}
