/**
 * The project's seeded standard-normal generator: Philox4x32-10 (Salmon et al., "Parallel Random Numbers:
 * As Easy as 1, 2, 3", SC'11; the Random123 reference) in counter mode, followed by Box-Muller.
 *
 * Why our own: the original draws its noise from torch (mt19937 on the CPU, or Philox on CUDA in the Cog
 * predictor); neither stream can be reproduced bit-exactly without torch, and what matters for users is that
 * one seed gives one video on every machine that runs this project. Only 32-bit integer arithmetic is used
 * for the bits (Math.imul and exact float64 products), so the integer stream is identical everywhere; the
 * normals go through V8's own log/sqrt/cos/sin (fdlibm ports, not the platform libm) and are rounded to
 * float32.
 *
 * Stream layout (a contract: changing it changes every video):
 * - key  = the seed as a 64-bit two's-complement word, split (low 32 bits, high 32 bits); any safe integer.
 * - block b (0, 1, 2, ...) is Philox(counter = (b mod 2^32, floor(b / 2^32), 0, 0), key) -> 4 words.
 * - words (w0, w1) and (w2, w3) each give two normals by Box-Muller:
 *     u1 = (w0 + 1) / 2^32 in (0, 1], u2 = w1 / 2^32 in [0, 1),
 *     r = sqrt(-2 ln u1), n0 = r cos(2 pi u2), n1 = r sin(2 pi u2).
 * - A tensor of N values consumes ceil(N / 4) blocks; the values left over in its last block are dropped,
 *   so every draw starts on a block boundary.
 * - One generator serves a whole job and keeps advancing across sections (as the original's generator
 *   does): section i's noise depends on the sizes of the draws before it.
 */

import { randomBytes } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO_POW_32 = 4294967296;

/** High 32 bits of the 64-bit product of two uint32 values, computed exactly with 16-bit limbs. */
function mulhi(a: number, b: number): number {
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const low = a * bl; // < 2^48, exact
  const mid = a * bh + Math.floor(low / 65536); // < 2^49, exact
  return Math.floor(mid / 65536) >>> 0;
}

/** One Philox4x32-10 block: 10 rounds over the 128-bit counter with the 64-bit key. Writes 4 uint32 to `out`. */
export function philox4x32(ctr: ArrayLike<number>, key: ArrayLike<number>, out: Uint32Array = new Uint32Array(4)): Uint32Array {
  let c0 = ctr[0] >>> 0, c1 = ctr[1] >>> 0, c2 = ctr[2] >>> 0, c3 = ctr[3] >>> 0;
  let k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  for (let round = 0; round < 10; round++) {
    const hi0 = mulhi(M0, c0), lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
  return out;
}

export class NormalGenerator {
  readonly seed: number;
  private readonly key: [number, number];
  private block = 0;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer of magnitude below 2^53, got ${seed}`);
    this.seed = seed;
    const word = BigInt.asUintN(64, BigInt(seed));
    this.key = [Number(word & 0xffffffffn), Number(word >> 32n)];
  }

  /** How many Philox blocks have been consumed so far (the position in the stream). */
  get position(): number {
    return this.block;
  }

  /** The next `count` standard-normal float32 values of the stream. */
  normal(count: number): Float32Array {
    const out = new Float32Array(count);
    const ctr = new Uint32Array(4);
    const words = new Uint32Array(4);
    for (let i = 0; i < count; i += 4) {
      ctr[0] = this.block % TWO_POW_32;
      ctr[1] = Math.floor(this.block / TWO_POW_32);
      philox4x32(ctr, this.key, words);
      this.block++;
      for (let pair = 0; pair < 2; pair++) {
        const u1 = (words[2 * pair] + 1) / TWO_POW_32;
        const u2 = words[2 * pair + 1] / TWO_POW_32;
        const r = Math.sqrt(-2 * Math.log(u1));
        const theta = 2 * Math.PI * u2;
        const j = i + 2 * pair;
        if (j < count) out[j] = r * Math.cos(theta);
        if (j + 1 < count) out[j + 1] = r * Math.sin(theta);
      }
    }
    return out;
  }

  /**
   * `normal(count)` computed in slices with a turn of the event loop between them (a section's noise at
   * 640 px is ~600k values, tens of milliseconds of JavaScript). `slice` is a multiple of 4 (whole
   * blocks), so the values and the stream position are those of one call.
   */
  async normalYielding(count: number, slice = 1 << 16): Promise<Float32Array> {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i += slice) {
      out.set(this.normal(Math.min(slice, count - i)), i);
      await yieldToLoop();
    }
    return out;
  }
}

/** A random seed the way the Cog predictor picks one when none is given: 32 random bits. */
export function randomSeed(): number {
  return randomBytes(4).readUInt32BE(0);
}
