/**
 * Fused passes of the DiT blocks that ONNX Runtime has no kernel for, as custom operators
 * (ort-custom-ops.ts) of the domain DIT_KERNELS_DOMAIN, which src/nets/dit.ts emits with
 * DitGraphOptions.kernels. Each replaces several memory-bound passes over the image stream by one:
 *
 *   RmsNormRope(x (1, S, H*hd), w (hd), cos (S, hd/2) f32, sin (S, hd/2) f32; epsilon) -> (1, S, H*hd)
 *     per head: RMSNorm with weight (diffusers' RMSNorm: x * rsqrt(mean(x^2) + eps) in float32, rounded to x's
 *     dtype, times the weight, rounded), then FramePack's interleaved-pair rotation in float32 with float32 tables
 *     (apply_rotary_emb_transposed), rounded once. In the graph: RMSNormalization + RotaryEmbedding and their
 *     reshapes; on the H100 RotaryEmbedding alone took 0.5 ms a call for ~0.08 ms of memory traffic.
 *   RmsNormRopeJoint(x, w, cos, sin, xt (1, St, H*hd), wt (hd); epsilon) -> (1, S + St, H*hd)
 *     the dual blocks' joint q or k: RmsNormRope of the image rows, then the text rows' RMSNorm (weight wt, no
 *     rotation), written in place of the concatenation the attention takes (~0.4 ms a call on the H100)
 *   BiasGelu(x (..., N), b (N)) -> gelu_tanh(x + b)
 *     the sum rounded to x's dtype (as the original's Linear output is), GELU in float32, rounded once. In the
 *     graph: FastGelu, whose bfloat16 kernel rounds every step of the formula.
 *
 * The CUDA kernels (bfloat16, compiled with NVRTC for the device at the first call on a thread) run on the stream
 * of the node; the CPU kernels (float32, plain loops) carry the same formulas for the tests on the host.
 */
import type { CustomKernel, KernelContext, KernelTensor } from './ort-custom-ops.js';
import { ELEMENT, hostArray } from './ort-custom-ops.js';
import { CudaKernel } from './cuda-driver.js';

export const DIT_KERNELS_DOMAIN = 'framepack.dit';
export const RMS_NORM_ROPE = 'RmsNormRope';
export const RMS_NORM_ROPE_JOINT = 'RmsNormRopeJoint';
export const BIAS_GELU = 'BiasGelu';

const GELU_C = Math.sqrt(2 / Math.PI);
const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(GELU_C * (v + 0.044715 * v * v * v)));

function expect(cond: boolean, op: string, detail: string): void {
  if (!cond) throw new Error(`${op}: ${detail}`);
}

/** dims of (x, w, cos, sin) checked: [tokens, heads, head_dim]. */
function normRopeShape(x: KernelTensor, w: KernelTensor, cos: KernelTensor, sin: KernelTensor): [number, number, number] {
  const hd = w.dims[0];
  const width = x.dims[x.dims.length - 1];
  const S = x.dims.slice(0, -1).reduce((a, b) => a * b, 1);
  expect(w.dims.length === 1 && hd % 2 === 0 && width % hd === 0, RMS_NORM_ROPE, `x [${x.dims}] is not heads of the weight's ${hd}`);
  for (const t of [cos, sin]) expect(t.dims.length === 2 && t.dims[0] === S && t.dims[1] === hd / 2 && t.element === ELEMENT.float32,
    RMS_NORM_ROPE, `tables [${t.dims}] must be float32 (${S}, ${hd / 2})`);
  return [S, width / hd, hd];
}

/** The text inputs of RmsNormRopeJoint (4: xt, 5: wt), checked against x; the joint output's dims. */
function textPart(ctx: KernelContext, x: KernelTensor, hd: number): { x: KernelTensor; w: KernelTensor; tokens: number; dims: number[] } {
  const [xt, wt] = [ctx.input(4), ctx.input(5)];
  const width = x.dims[x.dims.length - 1];
  expect(xt.dims.length === x.dims.length && xt.dims[xt.dims.length - 1] === width && xt.element === x.element && wt.element === x.element &&
    wt.dims.length === 1 && wt.dims[0] === hd && x.dims[0] === 1 && xt.dims[0] === 1, RMS_NORM_ROPE_JOINT, `text [${xt.dims}] does not continue x [${x.dims}]`);
  const tokens = xt.dims.slice(0, -1).reduce((a, b) => a * b, 1);
  return { x: xt, w: wt, tokens, dims: [1, x.dims.slice(0, -1).reduce((a, b) => a * b, 1) + tokens, width] };
}

/** RmsNormRope(Joint)'s inputs, checked (x and w in the `device` kernel's `dtype`), and its output. */
function normRopeIO(ctx: KernelContext, joint: boolean, dtype: 'float32' | 'bfloat16', device: string) {
  const [x, w, cos, sin] = [0, 1, 2, 3].map((i) => ctx.input(i));
  const op = joint ? RMS_NORM_ROPE_JOINT : RMS_NORM_ROPE;
  expect(x.element === ELEMENT[dtype] && w.element === ELEMENT[dtype], op, `the ${device} kernel takes ${dtype} x and weight`);
  const [S, H, hd] = normRopeShape(x, w, cos, sin);
  const text = joint ? textPart(ctx, x, hd) : null;
  return { op, x, w, cos, sin, S, H, hd, text, y: ctx.output(0, text ? text.dims : x.dims) };
}

// ---- CPU (float32): the formulas, one row at a time

/** RMSNorm (and with tables the rotation) of `rows` heads of x from row 0 into y from row `at`. */
function normRopeRows(x: Float32Array, w: Float32Array, y: Float32Array, at: number, rows: number, H: number, hd: number, eps: number,
  tables: { cos: Float32Array; sin: Float32Array } | null): void {
  const h = new Float32Array(hd);
  for (let row = 0; row < rows; row++) {
    const o = row * hd, out = (at + row) * hd, t = Math.floor(row / H) * (hd / 2);
    let ss = 0;
    for (let i = 0; i < hd; i++) ss += x[o + i] * x[o + i];
    const r = 1 / Math.sqrt(ss / hd + eps);
    for (let i = 0; i < hd; i++) h[i] = Math.fround(Math.fround(x[o + i] * r) * w[i]);
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
  const [x, w, cos, sin, y] = [io.x, io.w, io.cos, io.sin, io.y].map((t) => hostArray(t, Float32Array));
  normRopeRows(x, w, y, 0, S * H, H, hd, epsilon, { cos, sin });
  if (text) normRopeRows(hostArray(text.x, Float32Array), hostArray(text.w, Float32Array), y, S * H, text.tokens * H, H, hd, epsilon, null);
};

function biasGeluCpu(ctx: KernelContext): void {
  const [xt, bt] = [ctx.input(0), ctx.input(1)];
  expect(xt.element === ELEMENT.float32, BIAS_GELU, 'the CPU kernel takes float32');
  const N = bt.dims[0];
  expect(bt.dims.length === 1 && xt.dims[xt.dims.length - 1] === N, BIAS_GELU, `bias [${bt.dims}] does not match x [${xt.dims}]`);
  const yt = ctx.output(0, xt.dims);
  const [x, b, y] = [xt, bt, yt].map((t) => hostArray(t, Float32Array));
  for (let i = 0; i < x.length; i++) y[i] = gelu(Math.fround(x[i] + b[i % N]));
}

// ---- CUDA (bfloat16)

const CUDA_SOURCE = String.raw`
typedef unsigned short bf16;
__device__ __forceinline__ float bf2f(unsigned int h) { return __uint_as_float(h << 16); }
__device__ __forceinline__ unsigned int f2bf(float f) {  // round to nearest even; NaN stays NaN
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
__device__ __forceinline__ float round_bf(float f) { return bf2f(f2bf(f)); }

// L = hd / 4 lanes per (token, head) row (hd a power of two, 8..128): four elements and two rotation pairs a
// lane, the sum of squares reduced within the row's lanes (aligned groups of a warp). Rows from "rotated" on are
// the text rows of x2 (weight w2), normalized only.
extern "C" __global__ void rms_norm_rope(const bf16* __restrict__ x, const bf16* __restrict__ w,
    const float* __restrict__ cosT, const float* __restrict__ sinT, bf16* __restrict__ y, long long rows, int heads, int hd, float eps,
    const bf16* __restrict__ x2, const bf16* __restrict__ w2, long long rotated) {
  int L = hd >> 2;
  long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  long long row = t >> (__ffs(L) - 1);
  int lane = (int)(t & (L - 1));
  bool live = row < rows;  // every lane of the warp joins the shuffles
  bool text = row >= rotated;
  const bf16* src = text ? x2 + (row - rotated) * hd : x + row * hd;
  uint2 v = live ? reinterpret_cast<const uint2*>(src)[lane] : make_uint2(0u, 0u);
  float a0 = bf2f(v.x & 0xffffu), a1 = bf2f(v.x >> 16), a2 = bf2f(v.y & 0xffffu), a3 = bf2f(v.y >> 16);
  float ss = a0 * a0 + a1 * a1 + a2 * a2 + a3 * a3;
  for (int o = L >> 1; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (!live) return;
  long long token = row / heads;
  float r = rsqrtf(ss / (float)hd + eps);
  uint2 wv = reinterpret_cast<const uint2*>(text ? w2 : w)[lane];
  float h0 = round_bf(round_bf(a0 * r) * bf2f(wv.x & 0xffffu)), h1 = round_bf(round_bf(a1 * r) * bf2f(wv.x >> 16));
  float h2 = round_bf(round_bf(a2 * r) * bf2f(wv.y & 0xffffu)), h3 = round_bf(round_bf(a3 * r) * bf2f(wv.y >> 16));
  uint2 o;
  if (text) {
    o.x = f2bf(h0) | (f2bf(h1) << 16);
    o.y = f2bf(h2) | (f2bf(h3) << 16);
    reinterpret_cast<uint2*>(y + row * hd)[lane] = o;
    return;
  }
  float2 c = reinterpret_cast<const float2*>(cosT + token * (hd >> 1))[lane];
  float2 s = reinterpret_cast<const float2*>(sinT + token * (hd >> 1))[lane];
  o.x = f2bf(h0 * c.x - h1 * s.x) | (f2bf(h1 * c.x + h0 * s.x) << 16);
  o.y = f2bf(h2 * c.y - h3 * s.y) | (f2bf(h3 * c.y + h2 * s.y) << 16);
  reinterpret_cast<uint2*>(y + row * hd)[lane] = o;
}

__device__ __forceinline__ unsigned int gelu2(unsigned int xv, unsigned int bv) {
  unsigned int r = 0;
  for (int k = 0; k < 2; k++) {
    float t = round_bf(bf2f((xv >> (16 * k)) & 0xffffu) + bf2f((bv >> (16 * k)) & 0xffffu));
    float g = 0.5f * t * (1.0f + tanhf(0.7978845608028654f * (t + 0.044715f * t * t * t)));
    r |= f2bf(g) << (16 * k);
  }
  return r;
}

// Eight elements a thread (16-byte loads); n8 = elements / 8, nb8 = bias length / 8.
extern "C" __global__ void bias_gelu(const bf16* __restrict__ x, const bf16* __restrict__ b, bf16* __restrict__ y, long long n8, long long nb8) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += (long long)gridDim.x * blockDim.x) {
    uint4 v = reinterpret_cast<const uint4*>(x)[i];
    uint4 bb = reinterpret_cast<const uint4*>(b)[i % nb8];
    uint4 o;
    o.x = gelu2(v.x, bb.x); o.y = gelu2(v.y, bb.y); o.z = gelu2(v.z, bb.z); o.w = gelu2(v.w, bb.w);
    reinterpret_cast<uint4*>(y)[i] = o;
  }
}
`;

const THREADS = 256;
const MAX_BLOCKS = 132 * 16; // a grid-stride loop beyond this: enough blocks to fill an H100's 132 SMs
let compiled: { normRope: CudaKernel; biasGelu: CudaKernel } | null = null;
/** The kernels, compiled at the first call on this thread (a session worker serves one device). */
const cuda = (stream: unknown) => (compiled ??= {
  normRope: CudaKernel.compile(CUDA_SOURCE, 'rms_norm_rope', 12, stream),
  biasGelu: CudaKernel.compile(CUDA_SOURCE, 'bias_gelu', 5, stream),
});

const rmsNormRopeCuda = (joint: boolean) => (ctx: KernelContext, { epsilon }: Record<string, number>): void => {
  const { op, x, w, cos, sin, S, H, hd, text, y } = normRopeIO(ctx, joint, 'bfloat16', 'CUDA');
  expect([8, 16, 32, 64, 128].includes(hd), op, `the CUDA kernel takes head_dim 8 to 128 (a power of two), not ${hd}`);
  const rotated = S * H, rows = rotated + (text ? text.tokens * H : 0);
  if (rows === 0) return;
  const stream = ctx.stream;
  cuda(stream).normRope.launch(Math.ceil((rows * (hd / 4)) / THREADS), THREADS, stream, [
    { ptr: x.data }, { ptr: w.data }, { ptr: cos.data }, { ptr: sin.data }, { ptr: y.data }, { i64: rows }, { i32: H }, { i32: hd }, { f32: epsilon },
    { ptr: text ? text.x.data : x.data }, { ptr: text ? text.w.data : w.data }, { i64: rotated },
  ]);
};

function biasGeluCuda(ctx: KernelContext): void {
  const [x, b] = [ctx.input(0), ctx.input(1)];
  expect(x.element === ELEMENT.bfloat16 && b.element === ELEMENT.bfloat16, BIAS_GELU, 'the CUDA kernel takes bfloat16');
  const N = b.dims[0];
  expect(b.dims.length === 1 && x.dims[x.dims.length - 1] === N && N % 8 === 0, BIAS_GELU, `bias [${b.dims}] does not match x [${x.dims}] in groups of 8`);
  const y = ctx.output(0, x.dims);
  const n8 = x.dims.reduce((a, c) => a * c, 1) / 8;
  if (n8 === 0) return;
  const stream = ctx.stream;
  cuda(stream).biasGelu.launch(Math.min(Math.ceil(n8 / THREADS), MAX_BLOCKS), THREADS, stream, [
    { ptr: x.data }, { ptr: b.data }, { ptr: y.data }, { i64: n8 }, { i64: N / 8 },
  ]);
}

/** The domain's kernels for one provider. */
export function ditKernels(provider: 'cpu' | 'cuda'): CustomKernel[] {
  const onCuda = provider === 'cuda';
  const t = onCuda ? 'bfloat16' : 'float32';
  return [
    { name: RMS_NORM_ROPE, provider, inputs: [t, t, 'float32', 'float32'], outputs: [t], attributes: { epsilon: 1e-6 },
      compute: (onCuda ? rmsNormRopeCuda : rmsNormRopeCpu)(false) },
    { name: RMS_NORM_ROPE_JOINT, provider, inputs: [t, t, 'float32', 'float32', t, t], outputs: [t], attributes: { epsilon: 1e-6 },
      compute: (onCuda ? rmsNormRopeCuda : rmsNormRopeCpu)(true) },
    { name: BIAS_GELU, provider, inputs: [t, t], outputs: [t], compute: onCuda ? biasGeluCuda : biasGeluCpu },
  ];
}
