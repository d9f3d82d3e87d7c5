/**
 * Weight-only block quantization for com.microsoft.MatMulNBits (ONNX Runtime contrib op).
 *
 * A linear weight W [N, K] (torch layout, out x in) is cut along K into blocks of `blockSize`; each block of
 * each row gets a float scale and a uint8 zero point, w ~= (q - zp) * scale with q in [0, 2^bits).
 * Min/max ranges include 0 so that zero weights stay exact, as ONNX Runtime's own quantizer does.
 * Packed layout (MatMulNBits spec): B uint8 [N, blocks, blockSize*bits/8], 4-bit values two per byte with
 * the even element in the low nibble; scales [N, blocks]; zero points [N, ceil(blocks*bits/8)], 4-bit packed
 * the same way. K is zero-padded to a whole number of blocks.
 *
 * Prepared files hold B, then the scales as float32, then the zero points, back to back; they are written
 * once (to a temp name, then renamed) and reused by every later session.
 *
 * FP8 (`bits: 'fp8'`, for com.microsoft.GemmFloat8): W [N, K] as float8 E4M3FN with one float32 scale for
 * the whole tensor, s = amax(|W|) / 448 (the largest finite E4M3FN value), q = saturate(round(W / s)). The
 * file holds the N*K codes in W's own layout, then s. cuBLASLt's FP8 GEMM on Hopper/Ada takes one scale per
 * operand (a device scalar), so per-channel scales would cost an extra pass over every output.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { bfloat16ToFloat32, float32ToFloat8e4m3 } from './half.js';
import { decodeToFloat32, ST_ITEM_SIZE, type TensorEntry } from './safetensors.js';

export interface QuantJob {
  source: TensorEntry;
  bits: 4 | 8 | 'fp8';
  /** MatMulNBits block size (unused for fp8) */
  blockSize: number;
  /** absolute path of the prepared file */
  file: string;
  size: number;
}

export function quantizedLayout(n: number, k: number, bits: number, blockSize: number) {
  if (blockSize < 16 || (blockSize & (blockSize - 1))) throw new Error(`MatMulNBits block size must be a power of two >= 16, got ${blockSize}`);
  const blocks = Math.ceil(k / blockSize);
  const blobSize = (blockSize * bits) / 8;
  const zpCols = Math.ceil((blocks * bits) / 8);
  const bBytes = n * blocks * blobSize;
  const scaleBytes = n * blocks * 4;
  const zpBytes = n * zpCols;
  return { blocks, blobSize, zpCols, bBytes, scaleBytes, zpBytes, total: bBytes + scaleBytes + zpBytes };
}

/**
 * Quantizes rows [N, K] of float32 weights into the packed buffers. Every weight of a large network passes
 * through here once (21 billion for `low`'s DiT and LLaMA), so the inner loops stay branch-light.
 * round(v / scale) + zp is computed as trunc(v * (1 / scale) + zp + 0.5): the range includes 0 and zp is
 * round(-lo / scale), so the sum is never below 0 (beyond float error, which truncates to 0) and at most one
 * past qmax, the one clamp left.
 */
export function quantizeRows(w: Float32Array, n: number, k: number, bits: 4 | 8, blockSize: number, scratch?: Scratch) {
  const L = quantizedLayout(n, k, bits, blockSize);
  const B = scratch ? scratch.take('packed', L.bBytes) : new Uint8Array(L.bBytes);
  if (scratch && bits === 4) B.fill(0); // 4-bit codes are OR-ed into place
  const scales = new Float32Array(n * L.blocks);
  const zps = new Uint8Array(L.zpBytes);
  const qmax = (1 << bits) - 1;
  for (let r = 0; r < n; r++) {
    const row = r * k;
    for (let b = 0; b < L.blocks; b++) {
      const start = row + b * blockSize, end = Math.min(row + k, start + blockSize);
      let lo = 0, hi = 0;
      for (let i = start; i < end; i++) {
        const v = w[i];
        if (v < lo) lo = v;
        else if (v > hi) hi = v;
      }
      const scale = hi > lo ? (hi - lo) / qmax : 1;
      const inv = 1 / scale;
      const zp = Math.min(qmax, Math.max(0, Math.round(-lo * inv)));
      const zpHalf = zp + 0.5;
      scales[r * L.blocks + b] = scale;
      if (bits === 8) zps[r * L.zpCols + b] = zp;
      else zps[r * L.zpCols + (b >> 1)] |= zp << ((b & 1) * 4);
      const base = (r * L.blocks + b) * L.blobSize;
      // columns past K (the last block's zero padding) quantize to zp
      const filled = end - start;
      if (bits === 8) {
        for (let i = 0; i < filled; i++) {
          const q = (w[start + i] * inv + zpHalf) | 0;
          B[base + i] = q > 255 ? 255 : q;
        }
        for (let i = filled; i < blockSize; i++) B[base + i] = zp;
      } else {
        for (let i = 0; i < blockSize; i++) {
          const q = i < filled ? (w[start + i] * inv + zpHalf) | 0 : zp;
          B[base + (i >> 1)] |= (q > 15 ? 15 : q) << ((i & 1) * 4);
        }
      }
    }
  }
  return { B, scales, zps };
}

/** Float32 weights [N, K] that a prepared file stands for (tests compare MatMulNBits against these). */
export function dequantizeRows(B: Uint8Array, scales: Float32Array, zps: Uint8Array, n: number, k: number, bits: 4 | 8, blockSize: number): Float32Array {
  const L = quantizedLayout(n, k, bits, blockSize);
  const w = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) {
      const b = Math.floor(c / blockSize), i = c % blockSize;
      const base = (r * L.blocks + b) * L.blobSize;
      const q = bits === 8 ? B[base + i] : (B[base + (i >> 1)] >> ((i & 1) * 4)) & 15;
      const zp = bits === 8 ? zps[r * L.zpCols + b] : (zps[r * L.zpCols + (b >> 1)] >> ((b & 1) * 4)) & 15;
      w[r * k + c] = (q - zp) * scales[r * L.blocks + b];
    }
  }
  return w;
}

/** The largest finite float8 E4M3FN value: a per-tensor scale maps amax onto it. */
export const FP8_MAX = 448;

/** Bytes of a prepared FP8 file: the codes, then the float32 scale. */
export const fp8Layout = (n: number, k: number) => ({ codeBytes: n * k, total: n * k + 4 });

/** The per-tensor scale amax / 448 (1 for an all-zero tensor, so that dividing by it stays finite). */
export function fp8Scale(amax: number): number {
  return amax > 0 ? Math.fround(amax / FP8_MAX) : 1;
}

/** E4M3FN codes of w / scale (saturating), in w's layout. */
export function quantizeFp8(w: Float32Array, scale: number): Uint8Array {
  const inv = 1 / scale;
  const scaled = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) scaled[i] = w[i] * inv;
  return float32ToFloat8e4m3(scaled);
}

/**
 * Slab memory reused from slab to slab and file to file. Fresh memory costs a page fault per 4 KiB at first
 * touch: with a new read buffer, float32 copy and packed output for every 64 MB slab, decoding bf16 ran at
 * ~55M weights/s where the loop itself does ~900M/s, and the whole file at ~27M/s.
 */
export class Scratch {
  private readonly views = new Map<string, Uint8Array<ArrayBuffer>>();
  /** `bytes` bytes of the buffer named `name` (contents undefined), grown when too small. */
  take(name: string, bytes: number): Uint8Array<ArrayBuffer> {
    let v = this.views.get(name);
    if (!v || v.length < bytes) this.views.set(name, v = new Uint8Array(bytes));
    return v.subarray(0, bytes);
  }
}

/** Source bytes (of `dtype`) as float32, into the scratch's memory. */
function decodeSlab(dtype: TensorEntry['dtype'], bytes: Uint8Array, scratch: Scratch): Float32Array {
  if (dtype !== 'BF16') return decodeToFloat32(dtype, bytes);
  const n = bytes.length / 2;
  const out = scratch.take('floats', n * 4);
  return bfloat16ToFloat32(new Uint16Array(bytes.buffer, bytes.byteOffset, n), new Float32Array(out.buffer, out.byteOffset, n));
}

/** Whether `job`'s file is there and complete (files are renamed into place whole, so its size tells). */
export async function isPrepared(job: QuantJob): Promise<boolean> {
  const existing = await stat(job.file).catch(() => null);
  return existing?.size === job.size;
}

/**
 * Writes the prepared file of `job` unless a complete one exists. Reads the source a slab of rows at a time,
 * into `scratch` (pass one to reuse its memory across files; by default a new one per file).
 */
export async function prepareQuantized(job: QuantJob, scratch = new Scratch()): Promise<'cached' | 'written'> {
  if (await isPrepared(job)) return 'cached';
  const [n, k] = job.source.shape;
  const item = ST_ITEM_SIZE[job.source.dtype];
  await mkdir(dirname(job.file), { recursive: true });
  // unique per writer: the session workers of several GPUs may prepare the same file at the same moment
  const tmp = `${job.file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const src = await open(job.source.file, 'r');
  const dst = await open(tmp, 'w');
  try {
    const rowsPerSlab = Math.max(1, Math.floor((64 << 20) / (k * item))); // ~64 MB of source per read
    const slabs = async (each: (w: Float32Array, r0: number, rows: number) => Promise<void>) => {
      for (let r0 = 0; r0 < n; r0 += rowsPerSlab) {
        const rows = Math.min(rowsPerSlab, n - r0);
        // 8-byte aligned (a fresh buffer's start) for the typed views of any dtype
        const bytes = scratch.take('source', rows * k * item);
        const { bytesRead } = await src.read(bytes, 0, bytes.length, job.source.offset + r0 * k * item);
        if (bytesRead !== bytes.length) throw new Error(`${job.source.file}: truncated while reading ${job.source.key}`);
        await each(decodeSlab(job.source.dtype, bytes, scratch), r0, rows);
      }
    };
    if (job.bits === 'fp8') {
      let amax = 0;
      await slabs(async (w) => { for (let i = 0; i < w.length; i++) amax = Math.max(amax, Math.abs(w[i])); });
      const scale = fp8Scale(amax);
      await slabs(async (w, r0) => { const q = quantizeFp8(w, scale); await dst.write(q, 0, q.length, r0 * k); });
      await dst.write(new Uint8Array(Float32Array.of(scale).buffer), 0, 4, n * k);
    } else {
      const bits = job.bits;
      const L = quantizedLayout(n, k, bits, job.blockSize);
      const scalesAll = new Float32Array(n * L.blocks);
      const zpsAll = new Uint8Array(L.zpBytes);
      await slabs(async (w, r0, rows) => {
        const q = quantizeRows(w, rows, k, bits, job.blockSize, scratch);
        await dst.write(q.B, 0, q.B.length, r0 * L.blocks * L.blobSize);
        scalesAll.set(q.scales, r0 * L.blocks);
        zpsAll.set(q.zps, r0 * L.zpCols);
      });
      const sb = new Uint8Array(scalesAll.buffer);
      await dst.write(sb, 0, sb.length, L.bBytes);
      await dst.write(zpsAll, 0, zpsAll.length, L.bBytes + L.scaleBytes);
    }
    await dst.close();
    await rename(tmp, job.file);
    return 'written';
  } catch (e) {
    await dst.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw e;
  } finally {
    await src.close();
  }
}
