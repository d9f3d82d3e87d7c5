/**
 * Bit-level conversions between float32 and the narrow float formats checkpoints store:
 * IEEE half (F16), bfloat16 (BF16) and OCP float8 E4M3 "fn" (F8_E4M3: no infinities, 0x7f/0xff are NaN).
 * Narrowing rounds to nearest, ties to even, as PyTorch does.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bfloat16ToFloat32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

export function float32ToBFloat16(src: ArrayLike<number>, out = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const x = u32[0];
    if ((x & 0x7fffffff) > 0x7f800000) { out[i] = (x >>> 16) | 0x40; continue; } // keep NaN a NaN
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

// Half -> float table: 65536 entries computed once (256 KiB), faster than branching per element.
let halfTable: Float32Array | null = null;
function table(): Float32Array {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    halfTable[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return halfTable;
}

export function float16ToFloat32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const t = table();
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}

export function float32ToFloat16(src: ArrayLike<number>, out = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) { out[i] = sign | 0x7c00 | (mant ? 0x200 : 0); continue; }
    let e = exp - 127 + 15;
    if (e >= 31) { out[i] = sign | 0x7c00; continue; }
    if (e <= 0) {
      if (e < -10) { out[i] = sign; continue; }
      mant |= 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      let r = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      if (rem > half || (rem === half && (r & 1))) r++;
      out[i] = sign | r;
      continue;
    }
    let r = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++; // may carry into the exponent, which is correct
    out[i] = sign | r;
  }
  return out;
}

export function float8e4m3ToFloat32(src: Uint8Array, out = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) {
    const b = src[i];
    const s = b & 0x80 ? -1 : 1;
    const e = (b >> 3) & 0xf;
    const m = b & 0x7;
    if (e === 0xf && m === 0x7) out[i] = NaN;
    else out[i] = e === 0 ? s * m * 2 ** -9 : s * (1 + m / 8) * 2 ** (e - 7);
  }
  return out;
}

/**
 * Nearest E4M3FN encoding, ties to even, saturating: magnitudes above 448 (infinities too) become ±448, as
 * ONNX Cast with saturate=1 does; NaN becomes 0x7f. Used for test checkpoints and the FP8 weight cache.
 */
export function float32ToFloat8e4m3(src: ArrayLike<number>, out = new Uint8Array(src.length)): Uint8Array {
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const x = u32[0];
    const sign = (x >>> 24) & 0x80;
    if ((x & 0x7fffffff) > 0x7f800000) { out[i] = 0x7f; continue; }
    const e = ((x >>> 23) & 0xff) - 127 + 7; // E4M3 biased exponent
    let r: number;
    if (e >= 1) {
      const mant = x & 0x7fffff;
      r = (e << 3) | (mant >>> 20);
      const rem = mant & 0xfffff;
      if (rem > 0x80000 || (rem === 0x80000 && (r & 1))) r++; // may carry into the exponent, which is correct
    } else {
      // subnormal: multiples of 2^-9; exact in float64, rounded half to even (8 carries to the smallest normal)
      const m = Math.abs(f32[0]) * 512;
      r = Math.floor(m);
      const rem = m - r;
      if (rem > 0.5 || (rem === 0.5 && (r & 1))) r++;
    }
    out[i] = sign | Math.min(r, 0x7e);
  }
  return out;
}
