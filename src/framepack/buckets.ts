/**
 * Resolution buckets: the sizes a start image is resized and cropped to, by aspect ratio.
 *
 * References: FramePack `diffusers_helper/bucket_tools.py` (the 640 table, `find_nearest_bucket`: metric
 * |h bw - w bh|, `<=` so the later bucket wins ties) and kijai's ComfyUI-FramePackWrapper
 * `diffusers_helper/bucket_tools.py`, which serves other resolutions by scaling the chosen 640 bucket by
 * resolution / 640 and rounding each side to a multiple of 16. (FramePack-Studio instead ships hand-written
 * tables for 128..768 in steps of 128, with a 640 table of its own that adds 640x640; they follow no rule.)
 * test/fixtures/buckets/buckets.json holds every class's table as that code makes it.
 *
 * No model code here: the input schema reads the classes.
 */
import { roundHalfEven } from './sections.js';

/** (height, width) buckets for resolution 640, in the original's order (the order decides ties). */
export const BUCKETS_640: readonly (readonly [number, number])[] = [
  [416, 960], [448, 864], [480, 832], [512, 768], [544, 704], [576, 672], [608, 640],
  [640, 608], [672, 576], [704, 544], [768, 512], [832, 480], [864, 448], [960, 416],
];

/**
 * Resolution classes (the `resolution` input): 320 to 960 in steps of 32; 640 is FramePack's own table.
 * Whether a request fits the device is estimated when it starts (placement.ts `sizeProblem`).
 */
export const RESOLUTION = { min: 320, max: 960, step: 32, default: 640 } as const;

/**
 * A 640 bucket scaled to another class: each side x resolution / 640, rounded half-to-even to a multiple of 16
 * (the latent grid then stays even for the 2 x 2 patches). 640 returns the bucket itself.
 */
export function scaleBucket(b: readonly [number, number], resolution: number): [number, number] {
  if (resolution === 640) return [b[0], b[1]];
  const scale = resolution / 640;
  return [roundHalfEven((b[0] * scale) / 16) * 16, roundHalfEven((b[1] * scale) / 16) * 16];
}

/** The buckets of a class, in the 640 table's order. */
export const bucketsFor = (resolution: number): [number, number][] => BUCKETS_640.map((b) => scaleBucket(b, resolution));

/** The bucket of an h x w image: the 640 bucket of the closest aspect ratio, scaled to `resolution`. Returns [h, w]. */
export function findNearestBucket(h: number, w: number, resolution = 640): [number, number] {
  let best = Infinity;
  let found: readonly [number, number] = BUCKETS_640[0];
  for (const b of BUCKETS_640) {
    const metric = Math.abs(h * b[1] - w * b[0]);
    if (metric <= best) {
      best = metric;
      found = b;
    }
  }
  return scaleBucket(found, resolution);
}
