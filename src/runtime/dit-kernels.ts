/**
 * Fused passes of the DiT blocks that ONNX Runtime has no kernel for, as custom operators
 * (ort-custom-ops.ts) of the domain DIT_KERNELS_DOMAIN, which src/nets/dit.ts emits with
 * DitGraphOptions.kernels. Each replaces several memory-bound passes over the image stream by one, and each takes
 * the bias of the linear layer whose output it reads: ONNX Runtime's Gemm adds a bias by first writing it over its
 * whole output and then reading that back, two passes the kernels' one addition spares.
 *
 *   RmsNormRope(x (1, S, H*hd), xb (H*hd), w (hd), cos (S, hd/2) f32, sin (S, hd/2) f32; epsilon) -> (1, S, H*hd)
 *     per head of x + xb (rounded to x's dtype, as the original's Linear output is): RMSNorm with weight
 *     (diffusers' RMSNorm: x * rsqrt(mean(x^2) + eps) in float32, rounded, times the weight, rounded), then
 *     FramePack's interleaved-pair rotation in float32 with float32 tables (apply_rotary_emb_transposed), rounded
 *     once. In the graph: RMSNormalization + RotaryEmbedding and their reshapes; on the H100 RotaryEmbedding
 *     alone took 0.5 ms a call for ~0.08 ms of memory traffic.
 *   RmsNormRopeJoint(x, xb, w, cos, sin, xt (1, St, H*hd), xtb (H*hd), wt (hd); epsilon) -> (1, S + St, H*hd)
 *     the dual blocks' joint q or k: RmsNormRope of the image rows, then the text rows' RMSNorm (weight wt, no
 *     rotation), written in place of the concatenation the attention takes (~0.4 ms a call on the H100)
 *   BiasConcat(a (1, Sa, D), ab (D), b (1, Sb, D), bb (D)) -> [a + ab ; b + bb] (1, Sa + Sb, D)
 *     the dual blocks' joint v: the two biases added in the copy that concatenates
 *   GatedResidualNorm(x (..., D), h (..., D), hb (D), gate (D), scale (D), shift (D); epsilon) -> (y, sum)
 *     AdaLN-Zero's gated residual and the next modulation, rounding where the original does: sum = x +
 *     (h + hb) * gate, y = LayerNorm(sum) * (1 + scale) + shift (no affine weights; statistics in float32).
 *     In the graph: Gemm's bias, Mul and SkipLayerNormalization.
 *   BiasGelu(x (..., N), b (N)) -> gelu_tanh(x + b)
 *     the sum rounded to x's dtype, GELU in float32, rounded once. In the graph: FastGelu, whose bfloat16 kernel
 *     rounds every step of the formula.
 *   LinearGelu(x (..., K), w (N, K), b (N)) -> gelu_tanh(x w^T + b)
 *     the FFNs' first linear with its bias and GELU in the GEMM's epilogue (cuBLASLt, cublas-lt.ts): the (S, 4D)
 *     product is written once, GELU'd, instead of written, read back and written again by BiasGelu. Float32 from
 *     the accumulator to the one rounding of the output.
 *
 * The CUDA kernels (bfloat16, compiled with NVRTC for the device at the first call on a thread) run on the stream
 * of the node; the CPU kernels (float32, plain loops) carry the same formulas for the tests on the host.
 */
import type { CustomKernel, KernelContext, KernelTensor } from './ort-custom-ops.js';
import { ELEMENT, hostArray } from './ort-custom-ops.js';
import { CudaModule, type CudaKernel } from './cuda-driver.js';
import { linear } from './cublas-lt.js';

export const DIT_KERNELS_DOMAIN = 'framepack.dit';
export const RMS_NORM_ROPE = 'RmsNormRope';
export const RMS_NORM_ROPE_JOINT = 'RmsNormRopeJoint';
export const BIAS_CONCAT = 'BiasConcat';
export const GATED_RESIDUAL_NORM = 'GatedResidualNorm';
export const BIAS_GELU = 'BiasGelu';
export const LINEAR_GELU = 'LinearGelu';

const GELU_C = Math.sqrt(2 / Math.PI);
const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(GELU_C * (v + 0.044715 * v * v * v)));
const f32 = Math.fround;

function expect(cond: boolean, op: string, detail: string): void {
  if (!cond) throw new Error(`${op}: ${detail}`);
}

const count = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1);
const width = (t: KernelTensor) => t.dims[t.dims.length - 1];

/** `t` is a vector of length n (a bias, gate, weight: one value per column). */
const isVector = (t: KernelTensor, n: number) => t.dims.length === 1 && t.dims[0] === n;

/** dims of (x, xb, w, cos, sin) checked: [tokens, heads, head_dim]. */
function normRopeShape(x: KernelTensor, xb: KernelTensor, w: KernelTensor, cos: KernelTensor, sin: KernelTensor): [number, number, number] {
  const hd = w.dims[0];
  const S = count(x.dims.slice(0, -1));
  expect(w.dims.length === 1 && hd % 2 === 0 && width(x) % hd === 0 && isVector(xb, width(x)), RMS_NORM_ROPE,
    `x [${x.dims}] with bias [${xb.dims}] is not heads of the weight's ${hd}`);
  for (const t of [cos, sin]) expect(t.dims.length === 2 && t.dims[0] === S && t.dims[1] === hd / 2 && t.element === ELEMENT.float32,
    RMS_NORM_ROPE, `tables [${t.dims}] must be float32 (${S}, ${hd / 2})`);
  return [S, width(x) / hd, hd];
}

/** The text inputs of RmsNormRopeJoint (5: xt, 6: xtb, 7: wt), checked against x; the joint output's dims. */
function textPart(ctx: KernelContext, x: KernelTensor, hd: number) {
  const [xt, xtb, wt] = [5, 6, 7].map((i) => ctx.input(i));
  expect(xt.dims.length === x.dims.length && width(xt) === width(x) && [xt, xtb, wt].every((t) => t.element === x.element) &&
    isVector(xtb, width(x)) && isVector(wt, hd) && x.dims[0] === 1 && xt.dims[0] === 1, RMS_NORM_ROPE_JOINT,
    `text [${xt.dims}] does not continue x [${x.dims}]`);
  const tokens = count(xt.dims.slice(0, -1));
  return { x: xt, b: xtb, w: wt, tokens, dims: [1, count(x.dims.slice(0, -1)) + tokens, width(x)] };
}

/** RmsNormRope(Joint)'s inputs, checked (x, bias and weight in the `device` kernel's `dtype`), and its output. */
function normRopeIO(ctx: KernelContext, joint: boolean, dtype: 'float32' | 'bfloat16', device: string) {
  const [x, xb, w, cos, sin] = [0, 1, 2, 3, 4].map((i) => ctx.input(i));
  const op = joint ? RMS_NORM_ROPE_JOINT : RMS_NORM_ROPE;
  expect([x, xb, w].every((t) => t.element === ELEMENT[dtype]), op, `the ${device} kernel takes ${dtype} x, bias and weight`);
  const [S, H, hd] = normRopeShape(x, xb, w, cos, sin);
  const text = joint ? textPart(ctx, x, hd) : null;
  return { op, x, xb, w, cos, sin, S, H, hd, text, y: ctx.output(0, text ? text.dims : x.dims) };
}

/** BiasConcat's inputs checked (`dtype`), and its output. */
function biasConcatIO(ctx: KernelContext, dtype: 'float32' | 'bfloat16') {
  const [a, ab, b, bb] = [0, 1, 2, 3].map((i) => ctx.input(i));
  const D = width(a);
  expect([a, ab, b, bb].every((t) => t.element === ELEMENT[dtype]) && a.dims.length === 3 && b.dims.length === 3 && a.dims[0] === 1 &&
    b.dims[0] === 1 && width(b) === D && isVector(ab, D) && isVector(bb, D), BIAS_CONCAT,
    `a [${a.dims}] + [${ab.dims}] and b [${b.dims}] + [${bb.dims}] are not ${dtype} (1, S, D) rows with their biases`);
  return { a, ab, b, bb, D, y: ctx.output(0, [1, a.dims[1] + b.dims[1], D]) };
}

/** BiasGelu's inputs checked (`dtype`), and its output. */
function biasGeluIO(ctx: KernelContext, dtype: 'float32' | 'bfloat16') {
  const [x, b] = [ctx.input(0), ctx.input(1)];
  expect(x.element === ELEMENT[dtype] && b.element === ELEMENT[dtype] && isVector(b, width(x)), BIAS_GELU,
    `x [${x.dims}] and bias [${b.dims}] are not ${dtype} rows with their bias`);
  return { x, b, N: b.dims[0], y: ctx.output(0, x.dims) };
}

/** LinearGelu's inputs checked (`dtype`), and its output. */
function linearGeluIO(ctx: KernelContext, dtype: 'float32' | 'bfloat16') {
  const [x, w, b] = [ctx.input(0), ctx.input(1), ctx.input(2)];
  const [N, K] = w.dims;
  expect([x, w, b].every((t) => t.element === ELEMENT[dtype]) && w.dims.length === 2 && width(x) === K && isVector(b, N), LINEAR_GELU,
    `x [${x.dims}], weight [${w.dims}] and bias [${b.dims}] are not ${dtype} rows of ${K}, (N, ${K}) and (N)`);
  return { x, w, b, N, K, rows: count(x.dims.slice(0, -1)), y: ctx.output(0, [...x.dims.slice(0, -1), N]) };
}

/** GatedResidualNorm's inputs checked (`dtype`), and its outputs. */
function gatedNormIO(ctx: KernelContext, dtype: 'float32' | 'bfloat16') {
  const [x, h, hb, gate, scale, shift] = [0, 1, 2, 3, 4, 5].map((i) => ctx.input(i));
  const D = width(x);
  expect([x, h, hb, gate, scale, shift].every((t) => t.element === ELEMENT[dtype]) && count(h.dims) === count(x.dims) && width(h) === D &&
    [hb, gate, scale, shift].every((t) => isVector(t, D)), GATED_RESIDUAL_NORM,
    `x [${x.dims}], h [${h.dims}] and the (D) vectors [${[hb, gate, scale, shift].map((t) => t.dims).join('] [')}] do not match in ${dtype}`);
  return { x, h, hb, gate, scale, shift, D, rows: count(x.dims.slice(0, -1)), y: ctx.output(0, x.dims), sum: ctx.output(1, x.dims) };
}

// ---- CPU (float32): the formulas, one row at a time

/**
 * RMSNorm of `rows` heads of x + xb (and with tables the rotation) from row 0 into y from row `at`; xb is one
 * token's width (H * hd).
 */
function normRopeRows(x: Float32Array, xb: Float32Array, w: Float32Array, y: Float32Array, at: number, rows: number, H: number, hd: number,
  eps: number, tables: { cos: Float32Array; sin: Float32Array } | null): void {
  const a = new Float32Array(hd), h = new Float32Array(hd);
  for (let row = 0; row < rows; row++) {
    const o = row * hd, out = (at + row) * hd, t = Math.floor(row / H) * (hd / 2), b = (row % H) * hd;
    let ss = 0;
    for (let i = 0; i < hd; i++) {
      a[i] = x[o + i] + xb[b + i];
      ss += a[i] * a[i];
    }
    const r = 1 / Math.sqrt(ss / hd + eps);
    for (let i = 0; i < hd; i++) h[i] = f32(f32(a[i] * r) * w[i]);
    if (!tables) {
      y.set(h, out);
      continue;
    }
    for (let i = 0; i < hd / 2; i++) {
      const c = tables.cos[t + i], sn = tables.sin[t + i];
      y[out + 2 * i] = h[2 * i] * c - h[2 * i + 1] * sn;
      y[out + 2 * i + 1] = h[2 * i + 1] * c + h[2 * i] * sn;
    }
  }
}

/** x (and with `joint` xt after it) rotated and normalized on the CPU. */
const rmsNormRopeCpu = (joint: boolean) => (ctx: KernelContext, { epsilon }: Record<string, number>): void => {
  const { S, H, hd, text, ...io } = normRopeIO(ctx, joint, 'float32', 'CPU');
  const [x, xb, w, cos, sin, y] = [io.x, io.xb, io.w, io.cos, io.sin, io.y].map((t) => hostArray(t, Float32Array));
  normRopeRows(x, xb, w, y, 0, S * H, H, hd, epsilon, { cos, sin });
  if (text) {
    const [xt, xtb, wt] = [text.x, text.b, text.w].map((t) => hostArray(t, Float32Array));
    normRopeRows(xt, xtb, wt, y, S * H, text.tokens * H, H, hd, epsilon, null);
  }
};

function biasConcatCpu(ctx: KernelContext): void {
  const io = biasConcatIO(ctx, 'float32');
  const [a, ab, b, bb, y] = [io.a, io.ab, io.b, io.bb, io.y].map((t) => hostArray(t, Float32Array));
  for (let i = 0; i < a.length; i++) y[i] = a[i] + ab[i % io.D];
  for (let i = 0; i < b.length; i++) y[a.length + i] = b[i] + bb[i % io.D];
}

function gatedNormCpu(ctx: KernelContext, { epsilon }: Record<string, number>): void {
  const { D, rows, ...io } = gatedNormIO(ctx, 'float32');
  const [x, h, hb, gate, scale, shift, y, sum] = [io.x, io.h, io.hb, io.gate, io.scale, io.shift, io.y, io.sum].map((t) => hostArray(t, Float32Array));
  for (let r = 0; r < rows; r++) {
    const o = r * D;
    let mean = 0, v = 0;
    for (let i = 0; i < D; i++) mean += (sum[o + i] = f32(x[o + i] + f32(f32(h[o + i] + hb[i]) * gate[i])));
    mean /= D;
    for (let i = 0; i < D; i++) v += (sum[o + i] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / D + epsilon);
    for (let i = 0; i < D; i++) y[o + i] = f32(f32(f32((sum[o + i] - mean) * rstd) * f32(1 + scale[i])) + shift[i]);
  }
}

function biasGeluCpu(ctx: KernelContext): void {
  const { N, ...io } = biasGeluIO(ctx, 'float32');
  const [x, b, y] = [io.x, io.b, io.y].map((t) => hostArray(t, Float32Array));
  for (let i = 0; i < x.length; i++) y[i] = gelu(f32(x[i] + b[i % N]));
}

function linearGeluCpu(ctx: KernelContext): void {
  const { N, K, rows, ...io } = linearGeluIO(ctx, 'float32');
  const [x, w, b, y] = [io.x, io.w, io.b, io.y].map((t) => hostArray(t, Float32Array));
  for (let r = 0; r < rows; r++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += x[r * K + k] * w[n * K + k];
      y[r * N + n] = gelu(acc + b[n]);
    }
  }
}

// ---- CUDA (bfloat16)

const GATED_CHUNKS = 16; // eights a lane in gated_residual_norm: widths up to 8 * 32 * 16 = 4096

/** The CUDA C of the kernels (exported for test/runtime/dit-kernels-cuda.test.ts, which runs it on the CPU). */
export const CUDA_SOURCE = String.raw`
typedef unsigned short bf16;
__device__ __forceinline__ float bf2f(unsigned int h) { return __uint_as_float(h << 16); }
// Round to nearest even. On the device one conversion instruction (canonical NaN); the integer form is for the CPU
// emulation of the tests (NaN stays NaN): the same roundings in a fraction of the instructions.
__device__ __forceinline__ unsigned int f2bf(float f) {
#ifdef __CUDA_ARCH__
  unsigned short r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
#else
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
#endif
}
// two floats rounded into one word, lo in the low half
__device__ __forceinline__ unsigned int pack2(float lo, float hi) {
#ifdef __CUDA_ARCH__
  unsigned int r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return f2bf(lo) | (f2bf(hi) << 16);
#endif
}
__device__ __forceinline__ float round_bf(float f) { return bf2f(f2bf(f)); }
// element j (0..7) of eight bfloat16 in a uint4, as float
__device__ __forceinline__ float elem(uint4 v, int j) {
  unsigned int w = j < 2 ? v.x : j < 4 ? v.y : j < 6 ? v.z : v.w;
  return bf2f((j & 1) ? w >> 16 : w & 0xffffu);
}
__device__ __forceinline__ uint4 pack8(const float* f) {
  return make_uint4(pack2(f[0], f[1]), pack2(f[2], f[3]), pack2(f[4], f[5]), pack2(f[6], f[7]));
}

// A warp per token: lanes of Lh = hd / 8 each take eight elements of a head (16-byte loads), 32 / Lh heads a pass.
// The weight and the token's rotation tables (its hd / 2 pairs) are read once per lane and serve every head. Tokens
// from "rotated" on are the text rows of x2 (bias b2, weight w2), normalized only. hd a power of two, 8..256.
extern "C" __global__ void rms_norm_rope(const bf16* __restrict__ x, const bf16* __restrict__ b, const bf16* __restrict__ w,
    const float* __restrict__ cosT, const float* __restrict__ sinT, bf16* __restrict__ y, long long tokens, int heads, int hd, float eps,
    const bf16* __restrict__ x2, const bf16* __restrict__ b2, const bf16* __restrict__ w2, long long rotated) {
  const long long token = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (token >= tokens) return;  // the whole warp
  const int lane = threadIdx.x & 31, Lh = hd >> 3, sub = lane & (Lh - 1), per = 32 / Lh;
  const bool text = token >= rotated;
  const long long width = (long long)heads * hd;
  const bf16* src = text ? x2 + (token - rotated) * width : x + token * width;
  const bf16* bias = text ? b2 : b;
  const uint4 wv = reinterpret_cast<const uint4*>(text ? w2 : w)[sub];
  float c[4] = {1.f, 1.f, 1.f, 1.f}, sn[4] = {0.f, 0.f, 0.f, 0.f};
  if (!text) {
    const float4 cv = reinterpret_cast<const float4*>(cosT + token * (hd >> 1))[sub];
    const float4 sv = reinterpret_cast<const float4*>(sinT + token * (hd >> 1))[sub];
    c[0] = cv.x; c[1] = cv.y; c[2] = cv.z; c[3] = cv.w; sn[0] = sv.x; sn[1] = sv.y; sn[2] = sv.z; sn[3] = sv.w;
  }
  for (int h0 = 0; h0 < heads; h0 += per) {  // every lane takes every pass: the shuffles need the whole warp
    const int head = h0 + lane / Lh;
    const bool live = head < heads;
    const long long at = (long long)head * hd / 8 + sub;  // in eights
    const uint4 v = live ? reinterpret_cast<const uint4*>(src)[at] : make_uint4(0u, 0u, 0u, 0u);
    const uint4 bv = live ? reinterpret_cast<const uint4*>(bias)[at] : make_uint4(0u, 0u, 0u, 0u);
    float a[8], ss = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++) { a[j] = round_bf(elem(v, j) + elem(bv, j)); ss += a[j] * a[j]; }
    for (int o = Lh >> 1; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float r = rsqrtf(ss / (float)hd + eps);
    float o[8];
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const float h0v = round_bf(round_bf(a[2 * k] * r) * elem(wv, 2 * k)), h1v = round_bf(round_bf(a[2 * k + 1] * r) * elem(wv, 2 * k + 1));
      o[2 * k] = h0v * c[k] - h1v * sn[k];
      o[2 * k + 1] = h1v * c[k] + h0v * sn[k];
    }
    if (live) reinterpret_cast<uint4*>(y + token * width)[at] = pack8(o);
  }
}

// Eight elements a thread (16-byte loads) over the rows of a then b; n8 and na8 in eights, w8 = D / 8. The column
// advances with the grid stride instead of a 64-bit remainder per element.
extern "C" __global__ void bias_concat(const bf16* __restrict__ a, const bf16* __restrict__ ab, const bf16* __restrict__ b,
    const bf16* __restrict__ bb, bf16* __restrict__ y, long long na8, long long n8, long long w8) {
  const long long stride = (long long)gridDim.x * blockDim.x, step = stride % w8;
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x, col = i % w8;
  for (; i < n8; i += stride) {
    const bool first = i < na8;
    const uint4 v = first ? reinterpret_cast<const uint4*>(a)[i] : reinterpret_cast<const uint4*>(b)[i - na8];
    const uint4 bv = reinterpret_cast<const uint4*>(first ? ab : bb)[col];
    float f[8];
    for (int j = 0; j < 8; j++) f[j] = elem(v, j) + elem(bv, j);
    reinterpret_cast<uint4*>(y)[i] = pack8(f);
    col += step;
    if (col >= w8) col -= w8;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// A warp per row of width D (D % 8 == 0, D / 8 <= 32 * GATED_CHUNKS): every load of the row issued at once, the
// sum kept packed in registers (it is bfloat16 already) between the statistics and the output.
#define GATED_CHUNKS ${GATED_CHUNKS}
extern "C" __global__ void gated_residual_norm(const bf16* __restrict__ x, const bf16* __restrict__ h, const bf16* __restrict__ hb,
    const bf16* __restrict__ gate, const bf16* __restrict__ scale, const bf16* __restrict__ shift, bf16* __restrict__ y,
    bf16* __restrict__ sum, long long rows, int D, float eps) {
  const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp
  const int lane = threadIdx.x & 31, chunks = D >> 3;
  const long long base = row * chunks;
  uint4 s[GATED_CHUNKS];
  float part = 0.f;
#pragma unroll
  for (int k = 0; k < GATED_CHUNKS; k++) {
    const int c = lane + 32 * k;
    if (c >= chunks) break;
    const uint4 xv = reinterpret_cast<const uint4*>(x)[base + c], hv = reinterpret_cast<const uint4*>(h)[base + c];
    const uint4 bv = reinterpret_cast<const uint4*>(hb)[c], gv = reinterpret_cast<const uint4*>(gate)[c];
    float f[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
      f[j] = round_bf(elem(xv, j) + round_bf(round_bf(elem(hv, j) + elem(bv, j)) * elem(gv, j)));
      part += f[j];
    }
    s[k] = pack8(f);
    reinterpret_cast<uint4*>(sum)[base + c] = s[k];
  }
  const float mean = warp_sum(part) / (float)D;
  float dev = 0.f;
#pragma unroll
  for (int k = 0; k < GATED_CHUNKS; k++) {
    if (lane + 32 * k >= chunks) break;
#pragma unroll
    for (int j = 0; j < 8; j++) dev += (elem(s[k], j) - mean) * (elem(s[k], j) - mean);
  }
  const float rstd = rsqrtf(warp_sum(dev) / (float)D + eps);
#pragma unroll
  for (int k = 0; k < GATED_CHUNKS; k++) {
    const int c = lane + 32 * k;
    if (c >= chunks) break;
    const uint4 sc = reinterpret_cast<const uint4*>(scale)[c], sh = reinterpret_cast<const uint4*>(shift)[c];
    float o[8];
#pragma unroll
    for (int j = 0; j < 8; j++) o[j] = round_bf(round_bf(round_bf((elem(s[k], j) - mean) * rstd) * round_bf(1.0f + elem(sc, j))) + elem(sh, j));
    reinterpret_cast<uint4*>(y)[base + c] = pack8(o);
  }
}

// gelu_tanh in float32 as t * sigmoid(2u) (= 0.5 t (1 + tanh u)) on the fast exponential: a few instructions
// instead of tanhf's many (the kernel was bound by them, not by memory), and accurate where 1 + tanh u is tiny.
__device__ __forceinline__ float gelu_tanh(float t) {
  const float u = 0.7978845608028654f * (t + 0.044715f * t * t * t);
  return __fdividef(t, 1.0f + __expf(-2.0f * u));
}

// Eight elements a thread (16-byte loads); n8 = elements / 8, nb8 = bias length / 8; the column as in bias_concat.
extern "C" __global__ void bias_gelu(const bf16* __restrict__ x, const bf16* __restrict__ b, bf16* __restrict__ y, long long n8, long long nb8) {
  const long long stride = (long long)gridDim.x * blockDim.x, step = stride % nb8;
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x, col = i % nb8;
  for (; i < n8; i += stride) {
    const uint4 v = reinterpret_cast<const uint4*>(x)[i], bv = reinterpret_cast<const uint4*>(b)[col];
    float f[8];
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = gelu_tanh(round_bf(elem(v, j) + elem(bv, j)));
    reinterpret_cast<uint4*>(y)[i] = pack8(f);
    col += step;
    if (col >= nb8) col -= nb8;
  }
}
`;

const THREADS = 256;
const WARPS = THREADS / 32; // tokens (rows) a block of the warp-per-token kernels
const GATED_MAX_WIDTH = 8 * 32 * GATED_CHUNKS;
const MAX_BLOCKS = 132 * 16; // a grid-stride loop beyond this: enough blocks to fill an H100's 132 SMs
type Kernels = { normRope: CudaKernel; biasConcat: CudaKernel; gatedNorm: CudaKernel; biasGelu: CudaKernel };
let compiled: Kernels | null = null;
/** The kernels, compiled at the first call on this thread (a session worker serves one device). */
function cuda(stream: unknown): Kernels {
  if (compiled) return compiled;
  const m = CudaModule.compile(CUDA_SOURCE, 'dit_kernels', stream);
  return (compiled = {
    normRope: m.kernel('rms_norm_rope', 14),
    biasConcat: m.kernel('bias_concat', 8),
    gatedNorm: m.kernel('gated_residual_norm', 11),
    biasGelu: m.kernel('bias_gelu', 5),
  });
}

/** Grid of a grid-stride loop over n items, THREADS a block. */
const strideGrid = (n: number) => Math.min(Math.ceil(n / THREADS), MAX_BLOCKS);

const rmsNormRopeCuda = (joint: boolean) => (ctx: KernelContext, { epsilon }: Record<string, number>): void => {
  const { op, x, xb, w, cos, sin, S, H, hd, text, y } = normRopeIO(ctx, joint, 'bfloat16', 'CUDA');
  expect([8, 16, 32, 64, 128, 256].includes(hd), op, `the CUDA kernel takes head_dim 8 to 256 (a power of two), not ${hd}`);
  const tokens = S + (text ? text.tokens : 0);
  if (tokens === 0) return;
  const stream = ctx.stream;
  cuda(stream).normRope.launch(Math.ceil(tokens / WARPS), THREADS, stream, [
    { ptr: x.data }, { ptr: xb.data }, { ptr: w.data }, { ptr: cos.data }, { ptr: sin.data }, { ptr: y.data }, { i64: tokens }, { i32: H },
    { i32: hd }, { f32: epsilon }, { ptr: text ? text.x.data : x.data }, { ptr: text ? text.b.data : xb.data }, { ptr: text ? text.w.data : w.data },
    { i64: S },
  ]);
};

function biasConcatCuda(ctx: KernelContext): void {
  const { a, ab, b, bb, D, y } = biasConcatIO(ctx, 'bfloat16');
  expect(D % 8 === 0, BIAS_CONCAT, `the CUDA kernel takes widths in eights, not ${D}`);
  const na8 = count(a.dims) / 8, n8 = na8 + count(b.dims) / 8;
  if (n8 === 0) return;
  const stream = ctx.stream;
  cuda(stream).biasConcat.launch(strideGrid(n8), THREADS, stream, [
    { ptr: a.data }, { ptr: ab.data }, { ptr: b.data }, { ptr: bb.data }, { ptr: y.data }, { i64: na8 }, { i64: n8 }, { i64: D / 8 },
  ]);
}

function gatedNormCuda(ctx: KernelContext, { epsilon }: Record<string, number>): void {
  const { x, h, hb, gate, scale, shift, D, rows, y, sum } = gatedNormIO(ctx, 'bfloat16');
  expect(D % 8 === 0 && D <= GATED_MAX_WIDTH, GATED_RESIDUAL_NORM, `the CUDA kernel takes widths in eights up to ${GATED_MAX_WIDTH}, not ${D}`);
  if (rows === 0) return;
  const stream = ctx.stream;
  cuda(stream).gatedNorm.launch(Math.ceil(rows / WARPS), THREADS, stream, [
    { ptr: x.data }, { ptr: h.data }, { ptr: hb.data }, { ptr: gate.data }, { ptr: scale.data }, { ptr: shift.data }, { ptr: y.data },
    { ptr: sum.data }, { i64: rows }, { i32: D }, { f32: epsilon },
  ]);
}

function biasGeluCuda(ctx: KernelContext): void {
  const { x, b, N, y } = biasGeluIO(ctx, 'bfloat16');
  expect(N % 8 === 0, BIAS_GELU, `the CUDA kernel takes widths in eights, not ${N}`);
  const n8 = count(x.dims) / 8;
  if (n8 === 0) return;
  const stream = ctx.stream;
  cuda(stream).biasGelu.launch(strideGrid(n8), THREADS, stream, [{ ptr: x.data }, { ptr: b.data }, { ptr: y.data }, { i64: n8 }, { i64: N / 8 }]);
}

function linearGeluCuda(ctx: KernelContext): void {
  const { x, w, b, N, K, rows, y } = linearGeluIO(ctx, 'bfloat16');
  if (rows > 0) linear(x.data, w.data, b.data, y.data, rows, N, K, 'geluBias', ctx.stream);
}

/** The domain's kernels for one provider. */
export function ditKernels(provider: 'cpu' | 'cuda'): CustomKernel[] {
  const onCuda = provider === 'cuda';
  const t = onCuda ? 'bfloat16' : 'float32';
  const eps = { epsilon: 1e-6 };
  return [
    { name: RMS_NORM_ROPE, provider, inputs: [t, t, t, 'float32', 'float32'], outputs: [t], attributes: eps,
      compute: (onCuda ? rmsNormRopeCuda : rmsNormRopeCpu)(false) },
    { name: RMS_NORM_ROPE_JOINT, provider, inputs: [t, t, t, 'float32', 'float32', t, t, t], outputs: [t], attributes: eps,
      compute: (onCuda ? rmsNormRopeCuda : rmsNormRopeCpu)(true) },
    { name: BIAS_CONCAT, provider, inputs: [t, t, t, t], outputs: [t], compute: onCuda ? biasConcatCuda : biasConcatCpu },
    { name: GATED_RESIDUAL_NORM, provider, inputs: [t, t, t, t, t, t], outputs: [t, t], attributes: eps,
      compute: onCuda ? gatedNormCuda : gatedNormCpu },
    { name: BIAS_GELU, provider, inputs: [t, t], outputs: [t], compute: onCuda ? biasGeluCuda : biasGeluCpu },
    { name: LINEAR_GELU, provider, inputs: [t, t, t], outputs: [t], compute: onCuda ? linearGeluCuda : linearGeluCpu },
  ];
}
