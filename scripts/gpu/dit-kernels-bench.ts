/**
 * The DiT's custom CUDA kernels (src/runtime/dit-kernels.ts) and its FFN's first linear, alone on the GPU at the
 * default request's shapes (17,500 image and 769 text tokens, width 3072, 24 heads of 128, FFN 12,288), timed with
 * CUDA events around back-to-back calls of the same host code the sessions run (each kernel's compute function,
 * handed device buffers instead of ONNX Runtime's tensors). Figures: milliseconds a call and the bandwidth its
 * reads and writes make at that time.
 *
 *   node dist/scripts/gpu/dit-kernels-bench.js [--kernels dist/src/runtime/dit-kernels.js,other/dit-kernels.js]
 *       [--iters 20] [--out bench/tmp/dit-kernels-bench.json]
 *
 * --kernels: builds of dit-kernels.js to compare (each compiles its own CUDA source). The linear part compares the
 * FFN's first linear as the graphs run it (cuBLASLt's plain GEMM, then BiasGelu) with cuBLASLt's GELU+bias
 * epilogue in the GEMM, and prints how far the two outputs are apart.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import koffi from 'koffi';
import type { CustomKernel, KernelContext, KernelTensor } from '../../src/runtime/ort-custom-ops.js';
import { ELEMENT } from '../../src/runtime/ort-custom-ops.js';
import { DeviceMemory } from '../../src/runtime/cuda-driver.js';
import { linear } from '../../src/runtime/cublas-lt.js';

const { values: args } = parseArgs({
  options: {
    kernels: { type: 'string', default: 'dist/src/runtime/dit-kernels.js' },
    iters: { type: 'string', default: '20' },
    out: { type: 'string', default: 'bench/tmp/dit-kernels-bench.json' },
  },
});
const ITERS = Number(args.iters);
const S = 17500, ST = 769, D = 3072, HD = 128, F = 4 * D, J = S + ST; // single blocks: the joint sequence

// ---- the driver entries a standalone benchmark needs beyond the runtime's (context, copies, events)
const cuda = koffi.load('libcuda.so.1');
const cu = {
  cuInit: cuda.func('int cuInit(unsigned int flags)'),
  cuDevicePrimaryCtxRetain: cuda.func('int cuDevicePrimaryCtxRetain(_Out_ void** ctx, int device)'),
  cuCtxSetCurrent: cuda.func('int cuCtxSetCurrent(void* ctx)'),
  cuStreamCreate: cuda.func('int cuStreamCreate(_Out_ void** stream, unsigned int flags)'),
  cuMemcpyHtoD: cuda.func('int cuMemcpyHtoD_v2(uint64_t dst, const void* src, size_t bytes)'),
  cuMemcpyDtoH: cuda.func('int cuMemcpyDtoH_v2(_Out_ void* dst, uint64_t src, size_t bytes)'),
  cuEventCreate: cuda.func('int cuEventCreate(_Out_ void** event, unsigned int flags)'),
  cuEventRecord: cuda.func('int cuEventRecord(void* event, void* stream)'),
  cuEventSynchronize: cuda.func('int cuEventSynchronize(void* event)'),
  cuEventElapsedTime: cuda.func('int cuEventElapsedTime(_Out_ float* ms, void* start, void* end)'),
};
function ok(call: string, r: number): void {
  if (r !== 0) throw new Error(`${call} failed: CUDA error ${r}`);
}
function cell<T>(call: string, ...a: unknown[]): T {
  const c: unknown[] = [null];
  ok(call, cu[call as keyof typeof cu](c, ...a));
  return c[0] as T;
}

ok('cuInit', cu.cuInit(0));
ok('cuCtxSetCurrent', cu.cuCtxSetCurrent(cell('cuDevicePrimaryCtxRetain', 0)));
const stream = cell<unknown>('cuStreamCreate', 0);
const [t0, t1] = [cell<unknown>('cuEventCreate', 0), cell<unknown>('cuEventCreate', 0)];

/** Milliseconds a call of `fn`, over ITERS calls after two untimed ones. */
function time(fn: () => void): number {
  fn();
  fn();
  ok('cuEventRecord', cu.cuEventRecord(t0, stream));
  for (let i = 0; i < ITERS; i++) fn();
  ok('cuEventRecord', cu.cuEventRecord(t1, stream));
  ok('cuEventSynchronize', cu.cuEventSynchronize(t1));
  return cell<number>('cuEventElapsedTime', t0, t1) / ITERS;
}

// ---- buffers filled from a pool of seeded normal values (read at a stride, so rows differ)
let seed = 1234567;
function uniform(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return (seed + 1) / 4294967297;
}
const POOL = Float32Array.from({ length: (1 << 20) + 7 }, () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()));
const bits = new Uint32Array(POOL.buffer);
const one = new Float32Array(1), oneBits = new Uint32Array(one.buffer);
const toBf16 = (v: number) => ((one[0] = v), oneBits[0] >>> 16); // truncated: only the data's statistics matter
const fromBf16 = (h: number) => ((oneBits[0] = h << 16), one[0]);

const buffers: DeviceMemory[] = [];
function tensor(dims: number[], fill: 'normal' | 'none' | Float32Array = 'normal', scale = 1, element: number = ELEMENT.bfloat16): KernelTensor {
  const n = dims.reduce((a, b) => a * b, 1);
  const bytes = n * (element === ELEMENT.float32 ? 4 : 2);
  const m = DeviceMemory.alloc(bytes);
  buffers.push(m);
  if (fill !== 'none') {
    const host = element === ELEMENT.float32 ? new Float32Array(n) : new Uint16Array(n);
    const f32 = host instanceof Float32Array;
    for (let i = 0, j = 0; i < n; i++, j = (j + 7919) % POOL.length) {
      if (fill instanceof Float32Array) host[i] = fill[i % fill.length];
      else if (f32) host[i] = POOL[j] * scale;
      else host[i] = scale === 1 ? bits[j] >>> 16 : toBf16(POOL[j] * scale);
    }
    ok('cuMemcpyHtoD', cu.cuMemcpyHtoD(m.ptr, host, bytes));
  }
  return { data: m.ptr, dims, element };
}
function read(t: KernelTensor): Float32Array {
  const n = t.dims.reduce((a, b) => a * b, 1);
  const host = new Uint16Array(n);
  ok('cuMemcpyDtoH', cu.cuMemcpyDtoH(host, t.data, n * 2));
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = fromBf16(host[i]);
  return values;
}
const bytesOf = (ts: KernelTensor[]) => ts.reduce((a, t) => a + t.dims.reduce((x, y) => x * y, 1) * (t.element === ELEMENT.float32 ? 4 : 2), 0);

/** A kernel call through its compute function, on device buffers. */
function call(k: CustomKernel, inputs: KernelTensor[], outputs: KernelTensor[]): () => void {
  const ctx = { input: (i: number) => inputs[i], output: (i: number) => outputs[i], stream } as unknown as KernelContext;
  const attributes = { ...(k.attributes ?? {}) };
  return () => k.compute(ctx, attributes);
}

// ---- the shapes of the default request
const angles = (rows: number) => Float32Array.from({ length: rows * (HD / 2) }, (_, i) => (i % 97) / 97);
const cos = tensor([J, HD / 2], Float32Array.from(angles(J), Math.cos), 1, ELEMENT.float32);
const sin = tensor([J, HD / 2], Float32Array.from(angles(J), Math.sin), 1, ELEMENT.float32);
const cosImage = { ...cos, dims: [S, HD / 2] }, sinImage = { ...sin, dims: [S, HD / 2] };
const vec = (n: number, scale = 0.1) => tensor([n], 'normal', scale);
const xJ = tensor([1, J, D]), hJ = tensor([1, J, D]), yJ = tensor([1, J, D], 'none'), sumJ = tensor([1, J, D], 'none');
const text = tensor([1, ST, D]);
const wide = tensor([1, J, F], 'normal', 2), wideOut = tensor([1, J, F], 'none');
const [bD, bF, w, wt, gate, scale, shift] = [vec(D), vec(F), vec(HD, 1), vec(HD, 1), vec(D), vec(D), vec(D)];
const image = (t: KernelTensor, width = D) => ({ ...t, dims: [1, S, width] });

interface Case { name: string; op: string; inputs: KernelTensor[]; outputs: KernelTensor[] }
const CASES: Case[] = [
  { name: 'RmsNormRope, single block q (joint rows)', op: 'RmsNormRope', inputs: [xJ, bD, w, cos, sin], outputs: [yJ] },
  { name: 'RmsNormRopeJoint, dual block q', op: 'RmsNormRopeJoint', inputs: [image(xJ), bD, w, cosImage, sinImage, text, bD, wt], outputs: [yJ] },
  { name: 'BiasConcat, dual block v', op: 'BiasConcat', inputs: [image(xJ), bD, text, bD], outputs: [yJ] },
  { name: 'GatedResidualNorm, single block', op: 'GatedResidualNorm', inputs: [xJ, hJ, bD, gate, scale, shift], outputs: [yJ, sumJ] },
  { name: 'GatedResidualNorm, dual block image', op: 'GatedResidualNorm', inputs: [image(xJ), image(hJ), bD, gate, scale, shift], outputs: [image(yJ), image(sumJ)] },
  { name: 'BiasGelu, single block MLP', op: 'BiasGelu', inputs: [wide, bF], outputs: [wideOut] },
  { name: 'BiasGelu, dual block FFN', op: 'BiasGelu', inputs: [image(wide, F), bF], outputs: [image(wideOut, F)] },
];

const report: Record<string, unknown> = { shapes: { S, ST, D, HD, F }, iters: ITERS, kernels: {} as Record<string, unknown>, linear: {} };
const builds = args.kernels!.split(',');
for (const build of builds) {
  const mod = await import(pathToFileURL(resolve(build)).href);
  const kernels = new Map<string, CustomKernel>((mod.ditKernels('cuda') as CustomKernel[]).map((k) => [k.name, k]));
  const rows: Record<string, unknown>[] = [];
  for (const c of CASES) {
    const ms = time(call(kernels.get(c.op)!, c.inputs, c.outputs));
    const gbs = bytesOf([...c.inputs, ...c.outputs]) / (ms / 1e3) / 1e9;
    rows.push({ case: c.name, ms: +ms.toFixed(4), gbPerS: Math.round(gbs) });
    console.log(`${build}  ${c.name.padEnd(40)} ${ms.toFixed(4)} ms  ${Math.round(gbs)} GB/s`);
  }
  (report.kernels as Record<string, unknown>)[build] = rows;
}

// ---- the FFN's first linear: GEMM then BiasGelu (the graphs) against cuBLASLt's GELU+bias epilogue
const biasGelu = new Map<string, CustomKernel>(((await import(pathToFileURL(resolve(builds[0])).href)).ditKernels('cuda') as CustomKernel[])
  .map((k) => [k.name, k])).get('BiasGelu')!;
const x = tensor([J, D]), W = tensor([F, D], 'normal', 0.02), Wq = tensor([D, D], 'normal', 0.02);
const plain = tensor([J, F], 'none'), fused = tensor([J, F], 'none'), viaKernel = tensor([J, F], 'none'), q = tensor([J, D], 'none');
const gemm = (y: KernelTensor, epilogue: 'none' | 'geluBias') => () => linear(x.data, W.data, epilogue === 'none' ? null : bF.data, y.data, J, F, D, epilogue, stream);
const flop = 2 * J * D * F;
const lin = {
  gemmMs: time(gemm(plain, 'none')),
  biasGeluMs: time(call(biasGelu, [{ ...plain, dims: [1, J, F] }, bF], [{ ...viaKernel, dims: [1, J, F] }])),
  gemmGeluBiasMs: time(gemm(fused, 'geluBias')),
  qGemmMs: time(() => linear(x.data, Wq.data, null, q.data, J, D, D, 'none', stream)),
};
const [a, b] = [read(fused), read(viaKernel)];
let num = 0, den = 0, worst = 0;
for (let i = 0; i < a.length; i++) {
  num += (a[i] - b[i]) ** 2;
  den += b[i] ** 2;
  worst = Math.max(worst, Math.abs(a[i] - b[i]));
}
report.linear = {
  ...lin, tflops: { gemm: +(flop / lin.gemmMs / 1e9).toFixed(1), gemmGeluBias: +(flop / lin.gemmGeluBiasMs / 1e9).toFixed(1), q: +((2 * J * D * D) / lin.qGemmMs / 1e9).toFixed(1) },
  epilogueVsKernel: { relativeL2: Math.sqrt(num / den), maxAbs: worst },
};
console.log(JSON.stringify(report.linear, null, 1));
writeFileSync(args.out!, JSON.stringify(report, null, 1));
for (const m of buffers) m.release();
