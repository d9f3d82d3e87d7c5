/**
 * Every Graph helper on a small hand-built graph, run on the CPU execution provider and compared with the
 * plain-JavaScript references of reference.ts. Each test also checks that the inferred shapes match what
 * ONNX Runtime produced.
 */
import assert from 'node:assert/strict';
import { fromBinary } from '@bufbuild/protobuf';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ModelProtoSchema } from 'onnx-buf';
import { Graph, GraphError, type Value } from '../../src/onnx/graph.js';
import { bfloat16ToFloat32, float16ToFloat32, float32ToBFloat16, float32ToFloat16, float32ToFloat8e4m3, float8e4m3ToFloat32 } from '../../src/onnx/half.js';
import { Checkpoint, saveRaw, type HostTensor } from '../../src/onnx/safetensors.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';
import { tinyModels } from '../fixtures.js';
import { assertClose, bytesOf, f32, rand, runGraph, tempDir } from './helpers.js';
import * as ref from './reference.js';

let dir: string;
let cleanup: () => Promise<void>;
let ckpt: Checkpoint;
const W = rand(6 * 4, 11); // linear weight (out 6, in 4)
const B = rand(6, 12);

before(async () => {
  ({ dir, cleanup } = await tempDir());
  await mkdir(join(dir, 'plain'));
  await saveRaw(join(dir, 'plain', 'model.safetensors'), [
    { key: 'f32.weight', dtype: 'F32', shape: [6, 4], bytes: bytesOf(W) },
    { key: 'f32.bias', dtype: 'F32', shape: [6], bytes: bytesOf(B) },
    { key: 'f16.weight', dtype: 'F16', shape: [6, 4], bytes: bytesOf(float32ToFloat16(W)) },
    { key: 'bf16.weight', dtype: 'BF16', shape: [6, 4], bytes: bytesOf(float32ToBFloat16(W)) },
    { key: 'bf16.bias', dtype: 'BF16', shape: [6], bytes: bytesOf(float32ToBFloat16(B)) },
    { key: 'f8.weight', dtype: 'F8_E4M3', shape: [6, 4], bytes: float32ToFloat8e4m3(W) },
    { key: 'f64.weight', dtype: 'F64', shape: [6, 4], bytes: bytesOf(Float64Array.from(W)) },
    { key: 'norm.weight', dtype: 'F16', shape: [4], bytes: bytesOf(float32ToFloat16([1.5, 0.5, -1, 2])) },
    { key: 'ids', dtype: 'I64', shape: [3], bytes: bytesOf(BigInt64Array.from([2n, 0n, 1n])) },
  ]);
  ckpt = await Checkpoint.open(join(dir, 'plain'));
});
after(async () => {
  await terminateWorkers();
  await cleanup();
});

/** Checks inferred shapes against ONNX Runtime's output dims (symbolic dims match anything). */
function assertShape(v: Value, t: HostTensor, what = v.name) {
  assert.equal(v.shape.length, t.dims.length, `${what}: rank ${v.shape.length} inferred, ${t.dims.length} produced`);
  v.shape.forEach((d, i) => { if (typeof d === 'number') assert.equal(d, t.dims[i], `${what}: dim ${i}`); });
}

/** Runs `build` on fresh inputs; returns outputs with their inferred values checked. */
async function check(inputs: Record<string, HostTensor>, build: (g: Graph, x: Record<string, Value>) => Record<string, Value>, shapes?: Record<string, (string | number)[]>) {
  const g = new Graph({ name: 'test', precision: 'float32' });
  const xs: Record<string, Value> = {};
  for (const [k, t] of Object.entries(inputs)) xs[k] = g.input(k, t.dtype as any, shapes?.[k] ?? t.dims);
  const outs = build(g, xs);
  for (const [k, v] of Object.entries(outs)) g.output(v, k);
  const r = await runGraph(g, inputs);
  for (const [k, v] of Object.entries(outs)) assertShape(v, r[k], k);
  return r;
}

describe('element-wise helpers', () => {
  test('arithmetic with broadcasting and numbers', async () => {
    const a = rand(24, 1), b = rand(12, 2, 0.5, 2);
    const r = await check({ a: f32([2, 3, 4], a), b: f32([3, 4], b) }, (g, { a, b }) => ({
      add: g.add(a, b), sub: g.sub(a, b), mul: g.mul(a, b), div: g.div(a, b), pow: g.pow(b, 3),
      addn: g.add(a, 2), rsub: g.rsub(1, a),
    }));
    const bc = (f: (x: number, y: number) => number) => ref.broadcast2(a, [2, 3, 4], b, [3, 4], f).data;
    assertClose(r.add.data as Float32Array, bc((x, y) => x + y));
    assertClose(r.sub.data as Float32Array, bc((x, y) => x - y));
    assertClose(r.mul.data as Float32Array, bc((x, y) => x * y));
    assertClose(r.div.data as Float32Array, bc((x, y) => x / y));
    assertClose(r.pow.data as Float32Array, Array.from(b, (x) => x ** 3));
    assertClose(r.addn.data as Float32Array, Array.from(a, (x) => x + 2));
    assertClose(r.rsub.data as Float32Array, Array.from(a, (x) => 1 - x));
  });

  test('unary functions and activations', async () => {
    const x = rand(40, 3, -3, 3), pos = rand(40, 4, 0.1, 4);
    const r = await check({ x: f32([5, 8], x), p: f32([5, 8], pos) }, (g, { x, p }) => ({
      sqrt: g.sqrt(p), neg: g.neg(x), exp: g.exp(x), sigmoid: g.sigmoid(x), tanh: g.tanh(x), silu: g.silu(x),
      gelu: g.gelu(x), gelu_tanh: g.gelu(x, 'tanh'), relu: g.relu(x), recip: g.reciprocal(p), sin: g.sin(x), cos: g.cos(x),
      where: g.where(g.op('Greater', [x, g.scalar(0)])[0], x, p),
    }));
    const m = (f: (v: number) => number, src = x) => Array.from(src, f);
    assertClose(r.sqrt.data as Float32Array, m(Math.sqrt, pos));
    assertClose(r.neg.data as Float32Array, m((v) => -v));
    assertClose(r.exp.data as Float32Array, m(Math.exp));
    assertClose(r.sigmoid.data as Float32Array, m(ref.sigmoid));
    assertClose(r.tanh.data as Float32Array, m(Math.tanh));
    assertClose(r.silu.data as Float32Array, m((v) => v * ref.sigmoid(v)));
    assertClose(r.gelu.data as Float32Array, m(ref.geluExact), 1e-5, 1e-4);
    assertClose(r.gelu_tanh.data as Float32Array, m(ref.geluTanh), 1e-5, 1e-4);
    assertClose(r.relu.data as Float32Array, m((v) => Math.max(0, v)));
    assertClose(r.recip.data as Float32Array, m((v) => 1 / v, pos));
    assertClose(r.sin.data as Float32Array, m(Math.sin));
    assertClose(r.cos.data as Float32Array, m(Math.cos));
    assertClose(r.where.data as Float32Array, x.map((v, i) => (v > 0 ? v : pos[i])));
    // exact and tanh GELU differ measurably, so each test sees its own formula
    assert.ok(Math.abs(ref.geluExact(1.5) - ref.geluTanh(1.5)) > 1e-4);
  });
});

describe('linear algebra', () => {
  test('matmul with batch broadcasting', async () => {
    const a = rand(2 * 3 * 4, 5), b = rand(4 * 5, 6);
    const r = await check({ a: f32([2, 3, 4], a), b: f32([4, 5], b) }, (g, { a, b }) => ({ y: g.matmul(a, b) }));
    assert.deepEqual(r.y.dims, [2, 3, 5]);
    assertClose(r.y.data as Float32Array, ref.matmul(a, b, 2, 3, 4, 5, false));
  });

  test('linear: weight [out, in] + bias, 3-D input with a symbolic batch, 2-D input, bias ignored', async () => {
    const x = rand(2 * 3 * 4, 7);
    const r = await check({ x: f32([2, 3, 4], x), x2: f32([3, 4], x.subarray(0, 12)) }, (g, { x, x2 }) => {
      const y = g.linear(x, ckpt, 'f32');
      assert.deepEqual(y.shape, ['batch', 3, 6]);
      return { y, y2: g.linear(x2, ckpt, 'f32'), nobias: g.linear(x2, ckpt, 'f32', { bias: false }) };
    }, { x: ['batch', 3, 4] });
    assertClose(r.y.data as Float32Array, ref.linear(x, W, B, 6, 4, 6));
    assertClose(r.y2.data as Float32Array, ref.linear(x.subarray(0, 12), W, B, 3, 4, 6));
    assertClose(r.nobias.data as Float32Array, ref.linear(x.subarray(0, 12), W, null, 3, 4, 6));
  });

  test('linear over column blocks of the weight, the second accumulating onto the first, equals linear of the concatenation', async () => {
    const a = rand(3 * 1, 21), b = rand(3 * 3, 22);
    const cat = new Float32Array(12);
    for (let r = 0; r < 3; r++) { cat[r * 4] = a[r]; cat.set(b.subarray(r * 3, r * 3 + 3), r * 4 + 1); }
    const r = await check({ a: f32([1, 3, 1], a), b: f32([1, 3, 3], b) }, (g, { a, b }) => {
      const first = g.linear(a, ckpt, 'f32', { columns: [0, 1] });
      return { y: g.linear(b, ckpt, 'f32', { columns: [1, 4], bias: false, accumulate: first }) };
    });
    assert.deepEqual(r.y.dims, [1, 3, 6]);
    assertClose(r.y.data as Float32Array, ref.linear(cat, W, B, 3, 4, 6));
    const g = new Graph({ name: 't', precision: 'float32', quantize: { bits: 8, blockSize: 32 } });
    const x = g.input('x', 'float32', [3, 3]);
    assert.throws(() => g.linear(x, ckpt, 'f32', { columns: [1, 4] }), /need a plain Gemm/);
    const g2 = new Graph({ name: 't', precision: 'float32' });
    const x2 = g2.input('x', 'float32', [3, 3]);
    assert.throws(() => g2.linear(x2, ckpt, 'f32', { columns: [2, 4] }), /input last dim 3.*columns 2\.\.4/);
    assert.throws(() => g2.linear(x2, ckpt, 'f32', { columns: [1, 4], accumulate: x2 }), /takes the place of the bias/);
  });

  test('linear rejects an input of the wrong width, naming weight and file', () => {
    const g = new Graph({ name: 't', precision: 'float32' });
    const x = g.input('x', 'float32', [2, 5]);
    assert.throws(() => g.linear(x, ckpt, 'f32'), (e: Error) => e instanceof GraphError && /input last dim 5, weight f32\.weight in .*model\.safetensors is \[6, 4\]/.test(e.message));
  });

  test('params of every stored float dtype are cast to float32 in the graph', async () => {
    const x = rand(12, 8);
    const expected: Record<string, Float32Array> = {
      f32: W, f16: float16ToFloat32(float32ToFloat16(W)), bf16: bfloat16ToFloat32(float32ToBFloat16(W)),
      f8: float8e4m3ToFloat32(float32ToFloat8e4m3(W)), f64: W,
    };
    const r = await check({ x: f32([3, 4], x) }, (g, { x }) => {
      const outs: Record<string, Value> = {};
      for (const k of Object.keys(expected)) outs[k] = g.linear(x, ckpt, k, { bias: false });
      outs.index_param = g.param(ckpt, 'ids');
      return outs;
    });
    for (const [k, w] of Object.entries(expected)) assertClose(r[k].data as Float32Array, ref.linear(x, w, null, 3, 4, 6), 1e-5, 1e-4, k);
    assert.deepEqual(r.index_param, { dtype: 'int64', dims: [3], data: BigInt64Array.from([2n, 0n, 1n]) });
    // float8 and bfloat16 really are lossy, so these comparisons are not vacuous
    assert.notDeepEqual(Array.from(expected.f8), Array.from(W));
  });

  test('the same param asked twice is one initializer', () => {
    const g = new Graph({ name: 't', precision: 'float32' });
    assert.equal(g.param(ckpt, 'f16.weight'), g.param(ckpt, 'f16.weight'));
    g.output(g.param(ckpt, 'f16.weight'), 'w');
    const m = fromBinary(ModelProtoSchema, g.toModel().bytes);
    assert.equal(m.graph!.initializer.filter((t) => t.name === 'f16.weight').length, 1);
  });
});

describe('shape helpers', () => {
  test('reshape, transpose, concat, slice, split, gather, unsqueeze, squeeze, expand', async () => {
    const x = rand(24, 9); // (2, 3, 4)
    const at = (i: number, j: number, k: number) => x[i * 12 + j * 4 + k];
    const r = await check({ x: f32([2, 3, 4], x) }, (g, { x }) => {
      const [s1, s2] = g.split(x, [1, 3], 2);
      const [h1, h2] = g.split(x, 2, 2);
      return {
        reshape: g.reshape(x, [0, -1]), transpose: g.transpose(x, [2, 0, 1]), concat: g.concat([x, x], 1),
        slice: g.slice(x, [1, -3], [2, 100], [0, 2]), step: g.slice(x, [3], [0], [2], [-2]),
        s1, s2, h2, h1,
        gather: g.gather(x, 2, 1), gather_arr: g.gather(x, [2, 0], 2),
        unsq: g.unsqueeze(x, [0, -1]), sq: g.squeeze(g.unsqueeze(x, [1]), [1]),
        expand: g.expand(g.slice(x, [0], [1], [0]), [3, 3, 4]),
      };
    });
    assert.deepEqual(r.reshape.dims, [2, 12]);
    assertClose(r.reshape.data as Float32Array, x);
    const tr: number[] = [];
    for (let k = 0; k < 4; k++) for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) tr.push(at(i, j, k));
    assertClose(r.transpose.data as Float32Array, tr);
    const cc: number[] = [];
    for (let i = 0; i < 2; i++) for (let c = 0; c < 2; c++) for (let j = 0; j < 3; j++) for (let k = 0; k < 4; k++) cc.push(at(i, j, k));
    assertClose(r.concat.data as Float32Array, cc);
    const sl: number[] = [];
    for (let j = 0; j < 3; j++) for (let k = 1; k < 4; k++) sl.push(at(1, j, k));
    assertClose(r.slice.data as Float32Array, sl);
    const st: number[] = [];
    for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (const k of [3, 1]) st.push(at(i, j, k));
    assertClose(r.step.data as Float32Array, st);
    const part = (k0: number, k1: number) => { const o: number[] = []; for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let k = k0; k < k1; k++) o.push(at(i, j, k)); return o; };
    assertClose(r.s1.data as Float32Array, part(0, 1));
    assertClose(r.s2.data as Float32Array, part(1, 4));
    assertClose(r.h1.data as Float32Array, part(0, 2));
    assertClose(r.h2.data as Float32Array, part(2, 4));
    const ga: number[] = [];
    for (let i = 0; i < 2; i++) for (let k = 0; k < 4; k++) ga.push(at(i, 2, k));
    assert.deepEqual(r.gather.dims, [2, 4]);
    assertClose(r.gather.data as Float32Array, ga);
    const gb: number[] = [];
    for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (const k of [2, 0]) gb.push(at(i, j, k));
    assertClose(r.gather_arr.data as Float32Array, gb);
    assert.deepEqual(r.unsq.dims, [1, 2, 3, 4, 1]);
    assert.deepEqual(r.sq.dims, [2, 3, 4]);
    assert.deepEqual(r.expand.dims, [3, 3, 4]);
    assertClose(r.expand.data as Float32Array, [...x.subarray(0, 12), ...x.subarray(0, 12), ...x.subarray(0, 12)]);
  });

  test('cast, softmax, reduceMean, reduceSum', async () => {
    const x = rand(24, 10, -4, 4);
    const r = await check({ x: f32([2, 3, 4], x) }, (g, { x }) => ({
      half: g.cast(x, 'float16'), back: g.cast(g.cast(x, 'float16'), 'float32'), int: g.cast(x, 'int32'),
      softmax: g.softmax(x), softmax1: g.softmax(x, 1), mean: g.reduceMean(x, [-1]), sum: g.reduceSum(x, [1, 2], false),
    }));
    assert.equal(r.half.dtype, 'float16');
    assert.deepEqual(Array.from(r.half.data as Uint16Array), Array.from(float32ToFloat16(x)));
    assertClose(r.back.data as Float32Array, float16ToFloat32(float32ToFloat16(x)), 0, 0);
    assert.deepEqual(Array.from(r.int.data as Int32Array), Array.from(x, (v) => Math.trunc(v) | 0));
    assertClose(r.softmax.data as Float32Array, ref.softmaxRows(x, 4));
    const sm1: number[] = new Array(24);
    for (let i = 0; i < 2; i++) for (let k = 0; k < 4; k++) {
      const col = [0, 1, 2].map((j) => x[i * 12 + j * 4 + k]);
      const p = ref.softmaxRows(Float32Array.from(col), 3);
      [0, 1, 2].forEach((j) => (sm1[i * 12 + j * 4 + k] = p[j]));
    }
    assertClose(r.softmax1.data as Float32Array, sm1);
    assert.deepEqual(r.mean.dims, [2, 3, 1]);
    assertClose(r.mean.data as Float32Array, [0, 1, 2, 3, 4, 5].map((row) => x.subarray(row * 4, row * 4 + 4).reduce((a, b) => a + b) / 4));
    assert.deepEqual(r.sum.dims, [2]);
    assertClose(r.sum.data as Float32Array, [0, 1].map((i) => x.subarray(i * 12, i * 12 + 12).reduce((a, b) => a + b)));
  });

  test('pad: constant, edge (replicate), reflect', async () => {
    const x = rand(2 * 3 * 4, 13);
    const r = await check({ x: f32([2, 3, 4], x) }, (g, { x }) => ({
      c: g.pad(x, [0, 1, 2, 0, 0, 1], 'constant', 7), e: g.pad(x, [0, 2, 1, 0, 1, 3], 'edge'), rf: g.pad(x, [0, 1, 2, 0, 1, 1], 'reflect'),
    }));
    const s = [2, 3, 4];
    assertClose(r.c.data as Float32Array, ref.pad(x, s, [0, 1, 2], [0, 0, 1], 'constant', 7).data);
    assertClose(r.e.data as Float32Array, ref.pad(x, s, [0, 2, 1], [0, 1, 3], 'edge').data);
    assertClose(r.rf.data as Float32Array, ref.pad(x, s, [0, 1, 2], [0, 1, 1], 'reflect').data);
  });

  test('resize: nearest (torch), bilinear half-pixel, and to sizes', async () => {
    const x = rand(2 * 3 * 5, 14);
    const r = await check({ x: f32([1, 2, 3, 5], x) }, (g, { x }) => ({
      near: g.resize(x, { scales: [1, 1, 2, 2] }), lin: g.resize(x, { scales: [1, 1, 2, 2], mode: 'linear' }),
      sized: g.resize(x, { sizes: [1, 2, 6, 10], mode: 'linear' }),
    }));
    assert.deepEqual(r.near.dims, [1, 2, 6, 10]);
    const near: number[] = [];
    for (let c = 0; c < 2; c++) for (let i = 0; i < 6; i++) for (let j = 0; j < 10; j++) near.push(x[c * 15 + Math.floor(i / 2) * 5 + Math.floor(j / 2)]);
    assertClose(r.near.data as Float32Array, near);
    assertClose(r.lin.data as Float32Array, ref.bilinear(x, [1, 2, 3, 5], 6, 10));
    assertClose(r.sized.data as Float32Array, ref.bilinear(x, [1, 2, 3, 5], 6, 10));
  });

  test('inference errors are raised while building', () => {
    const g = new Graph({ name: 't', precision: 'float32' });
    const x = g.input('x', 'float32', [2, 3]);
    assert.throws(() => g.add(x, g.input('y', 'float32', [4])), /cannot broadcast shapes \[2, 3\] and \[4\]/);
    assert.throws(() => g.reshape(x, [4, 2]), /cannot reshape \[2,3\] \(6 elements\) to \[4,2\]/);
    assert.throws(() => g.matmul(x, x), /MatMul: inner dims differ/);
    assert.throws(() => g.split(x, [1, 1], 1), /Split: sizes \[1,1\] do not sum to dim 3/);
    assert.throws(() => g.input('x', 'float32', [1]), /duplicate value name x/);
    assert.throws(() => new Graph({ name: 'empty', precision: 'float32' }).toModel(), /has no outputs/);
  });
});

describe('normalisation', () => {
  test('layerNorm with and without affine, rmsNorm with weight', async () => {
    const x = rand(3 * 4, 15, -2, 3);
    const nw = [1.5, 0.5, -1, 2];
    const r = await check({ x: f32([3, 4], x) }, (g, { x }) => ({
      ln: g.layerNorm(x, g.param(ckpt, 'norm.weight'), g.slice(g.param(ckpt, 'f32.bias'), [0], [4]), 1e-5),
      plain: g.layerNorm(x, null, null, 1e-6), rms: g.rmsNorm(x, g.param(ckpt, 'norm.weight'), 1e-6),
    }));
    const base = ref.rowNorm(x, 4, 1e-5), plain = ref.rowNorm(x, 4, 1e-6), rms = ref.rowNorm(x, 4, 1e-6, true);
    assertClose(r.ln.data as Float32Array, Array.from(base, (v, i) => v * nw[i % 4] + B[i % 4]));
    assertClose(r.plain.data as Float32Array, plain);
    assertClose(r.rms.data as Float32Array, Array.from(rms, (v, i) => v * nw[i % 4]));
  });

  test('groupNorm on (N, C, T, H, W) with affine and on (N, C, L) without', async () => {
    const N = 2, C = 4, T = 2, H = 3, Wd = 2, G = 2;
    const x = rand(N * C * T * H * Wd, 16, -1, 2);
    const w = [1, 2, -1, 0.5], b = [0.1, -0.2, 0.3, 0];
    const r = await check({ x: f32([N, C, T, H, Wd], x), y: f32([N, C, 12], x) }, (g, { x, y }) => ({
      gn: g.groupNorm(x, G, g.constant(w, [4]), g.constant(b, [4]), 1e-6), plain: g.groupNorm(y, 4, null, null),
    }), { x: ['n', C, T, H, Wd] });
    const per = T * H * Wd * (C / G);
    const normed = ref.rowNorm(x, per, 1e-6);
    assertClose(r.gn.data as Float32Array, Array.from(normed, (v, i) => { const c = Math.floor(i / (T * H * Wd)) % C; return v * w[c] + b[c]; }));
    assertClose(r.plain.data as Float32Array, ref.rowNorm(x, 12, 1e-5));
  });

  test("groupNorm by rows (the half-precision method) equals the reference, constant rows included", async () => {
    const C = 4, T = 2, H = 3, Wd = 5, G = 2;
    const x = rand(C * T * H * Wd, 23, -3, 5);
    x.fill(0.75, 0, Wd); // one constant row: its InvStdDev is huge and must not poison the group
    const w = [1, 2, -1, 0.5], b = [0.1, -0.2, 0.3, 0];
    const r = await check({ x: f32([1, C, T, H, Wd], x) }, (g, { x }) => ({
      rows: g.groupNorm(x, G, g.constant(w, [4]), g.constant(b, [4]), 1e-6, 'rows'),
      plain: g.groupNorm(x, G, null, null, 1e-6, 'rows'),
    }), { x: [1, C, 't', 'h', 'w'] });
    const normed = ref.rowNorm(x, T * H * Wd * (C / G), 1e-6);
    assertClose(r.rows.data as Float32Array, Array.from(normed, (v, i) => { const c = Math.floor(i / (T * H * Wd)); return v * w[c] + b[c]; }), 1e-5, 1e-4);
    assertClose(r.plain.data as Float32Array, normed, 1e-5, 1e-4);
  });
});

describe('convolution', () => {
  test('conv2d with stride, padding and groups; conv3d; causal conv3d with replicate padding', async () => {
    const x2 = rand(1 * 4 * 5 * 6, 17), w2 = rand(6 * 2 * 3 * 3, 18), b2 = rand(6, 19);
    const x3 = rand(1 * 2 * 4 * 5 * 5, 20), w3 = rand(3 * 2 * 3 * 3 * 3, 21), b3 = rand(3, 22);
    const r = await check({ x2: f32([1, 4, 5, 6], x2), x3: f32([1, 2, 4, 5, 5], x3) }, (g, { x2, x3 }) => {
      const cw2 = g.constant(w2, [6, 2, 3, 3]), cb2 = g.constant(b2, [6]);
      const cw3 = g.constant(w3, [3, 2, 3, 3, 3]), cb3 = g.constant(b3, [3]);
      return {
        c2: g.conv2d(x2, cw2, cb2, { stride: 2, padding: 1, groups: 2 }),
        c3: g.conv3d(x3, cw3, null, { padding: [1, 0, 1] }),
        causal: g.causalConv3d(x3, cw3, cb3),
        down: g.causalConv3d(x3, cw3, cb3, { stride: [1, 2, 2] }),
      };
    });
    const e2 = ref.conv(x2, [1, 4, 5, 6], w2, [6, 2, 3, 3], b2, [2, 2], [1, 1], [1, 1], 2);
    assert.deepEqual(r.c2.dims, e2.shape);
    assertClose(r.c2.data as Float32Array, e2.data, 1e-5, 1e-4);
    const e3 = ref.conv(x3, [1, 2, 4, 5, 5], w3, [3, 2, 3, 3, 3], null, [1, 1, 1], [1, 0, 1], [1, 1, 1], 1);
    assert.deepEqual(r.c3.dims, e3.shape);
    assertClose(r.c3.data as Float32Array, e3.data, 1e-5, 1e-4);
    // causal: replicate-pad 2 frames before, 1 pixel each side of H and W, none after
    const padded = ref.pad(x3, [1, 2, 4, 5, 5], [0, 0, 2, 1, 1], [0, 0, 0, 1, 1], 'edge');
    const ec = ref.conv(padded.data, padded.shape, w3, [3, 2, 3, 3, 3], b3, [1, 1, 1], [0, 0, 0], [1, 1, 1], 1);
    assert.deepEqual(r.causal.dims, [1, 3, 4, 5, 5]);
    assertClose(r.causal.data as Float32Array, ec.data, 1e-5, 1e-4);
    const ed = ref.conv(padded.data, padded.shape, w3, [3, 2, 3, 3, 3], b3, [1, 2, 2], [0, 0, 0], [1, 1, 1], 1);
    assert.deepEqual(r.down.dims, ed.shape);
    assertClose(r.down.data as Float32Array, ed.data, 1e-5, 1e-4);
  });
});

describe('attention and rotary', () => {
  test('MultiHeadAttention: self, cross with key padding mask, additive bias, custom scale', async () => {
    const Bn = 2, S = 3, L = 5, H = 2, D = 4, Dv = 3;
    const q = rand(Bn * S * H * D, 23), k = rand(Bn * L * H * D, 24), v = rand(Bn * L * H * Dv, 25), kv = rand(Bn * L * H * D, 26);
    const bias = rand(Bn * H * S * L, 27, -2, 2);
    const keep = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]];
    const r = await check({
      q: f32([Bn, S, H * D], q), k: f32([Bn, L, H * D], k), v: f32([Bn, L, H * Dv], v), kv: f32([Bn, L, H * D], kv),
      mask: { dtype: 'int32', dims: [Bn, L], data: Int32Array.from(keep.flat()) }, bias: f32([Bn, H, S, L], bias),
    }, (g, x) => ({
      self: g.attention(x.q, x.q, x.q, { heads: H }),
      cross: g.attention(x.q, x.k, x.v, { heads: H, keyPaddingMask: x.mask }),
      biased: g.attention(x.q, x.k, x.kv, { heads: H, bias: x.bias, scale: 0.3 }),
    }));
    assertClose(r.self.data as Float32Array, ref.attention(q, q, q, Bn, S, S, H, D, D), 1e-5, 1e-4);
    assert.deepEqual(r.cross.dims, [Bn, S, H * Dv]);
    assertClose(r.cross.data as Float32Array, ref.attention(q, k, v, Bn, S, L, H, D, Dv, undefined, (b, l) => keep[b][l] === 1), 1e-5, 1e-4);
    assertClose(r.biased.data as Float32Array, ref.attention(q, k, kv, Bn, S, L, H, D, D, 0.3, undefined, (b, h, s, l) => bias[((b * H + h) * S + s) * L + l]), 1e-5, 1e-4);
  });

  test('RotaryEmbedding: interleaved pairs and rotated halves, per-token positions', async () => {
    const Bn = 1, S = 4, H = 2, D = 8, maxPos = 6;
    const x = rand(Bn * S * H * D, 28);
    const cos = rand(maxPos * D / 2, 29), sin = rand(maxPos * D / 2, 30);
    const pos = [5, 0, 3, 3];
    const r = await check({ x: f32([Bn, S, H * D], x), pos: { dtype: 'int64', dims: [Bn, S], data: BigInt64Array.from(pos.map(BigInt)) } }, (g, x2) => {
      const c = g.constant(cos, [maxPos, D / 2]), s = g.constant(sin, [maxPos, D / 2]);
      return {
        inter: g.rotary(x2.x, x2.pos, c, s, { interleaved: true, heads: H }),
        halves: g.rotary(x2.x, x2.pos, c, s, { interleaved: false, heads: H }),
      };
    });
    assertClose(r.inter.data as Float32Array, ref.rotary(x, Bn, S, H, D, pos, cos, sin, true), 1e-5, 1e-4);
    assertClose(r.halves.data as Float32Array, ref.rotary(x, Bn, S, H, D, pos, cos, sin, false), 1e-5, 1e-4);
  });
});

describe('precision paths', () => {
  test('float16 graph: bf16 weights cast to float16, float16 output crosses as Uint16Array', async () => {
    const g = new Graph({ name: 'half', precision: 'float16' });
    const x = g.floatInput('x', [3, 4]);
    assert.equal(x.dtype, 'float16');
    const w = g.param(ckpt, 'bf16.weight');
    assert.equal(w.dtype, 'float16');
    g.output(w, 'w16');
    g.floatOutput(g.cast(g.add(x, x), 'float32'), 'y');
    const r = await runGraph(g, { x: f32([3, 4], rand(12, 31)) });
    assert.equal(r.w16.dtype, 'float16');
    assert.ok(r.w16.data instanceof Uint16Array);
    assertClose(float16ToFloat32(r.w16.data as Uint16Array), bfloat16ToFloat32(float32ToBFloat16(W)), 2e-3, 2e-3);
    assertClose(r.y.data as Float32Array, Array.from(float16ToFloat32(float32ToFloat16(rand(12, 31))), (v) => 2 * v), 0, 1e-3);
  });

  test('bfloat16 graph: bf16 weights are used as stored, without a Cast', async () => {
    const g = new Graph({ name: 'bf16', precision: 'bfloat16' });
    const w = g.param(ckpt, 'bf16.weight');
    assert.equal(w.name, 'bf16.weight'); // the initializer itself
    g.floatOutput(w, 'w');
    const m = fromBinary(ModelProtoSchema, g.toModel().bytes);
    assert.deepEqual(m.graph!.node.map((n) => n.opType), ['Cast', 'Identity']); // only the output cast
    const r = await runGraph(g, {});
    assertClose(r.w.data as Float32Array, bfloat16ToFloat32(float32ToBFloat16(W)), 0, 0);
  });

  test("castWeightsAt 'run' gives the same result and asks the session not to fold", async () => {
    const x = rand(12, 32);
    const results: Float32Array[] = [];
    for (const castWeightsAt of ['load', 'run'] as const) {
      const g = new Graph({ name: 'cast', precision: 'float32', castWeightsAt });
      g.output(g.linear(g.input('x', 'float32', [3, 4]), ckpt, 'bf16'), 'y');
      const m = g.toModel();
      if (castWeightsAt === 'run') assert.equal(m.sessionConfig?.['optimization.disable_specified_optimizers'], 'ConstantFolding');
      else assert.equal(m.sessionConfig, undefined);
      results.push((await runGraph(g, { x: f32([3, 4], x) })).y.data as Float32Array);
    }
    const wb = bfloat16ToFloat32(float32ToBFloat16(W)), bb = bfloat16ToFloat32(float32ToBFloat16(B));
    assertClose(results[0], ref.linear(x, wb, bb, 3, 4, 6));
    assertClose(results[1], results[0], 0, 0);
  });
});

describe('weight layouts', () => {
  test('plain folder and Hugging Face cache (blobs/<sha>, snapshot symlinks) give the same result', async () => {
    const repo = join(dir, 'hub', 'models--org--tiny');
    const sha1 = '1'.repeat(64), sha2 = '2'.repeat(64);
    await mkdir(join(repo, 'blobs'), { recursive: true });
    const snap = join(repo, 'snapshots', 'deadbeef', 'transformer');
    await mkdir(snap, { recursive: true });
    // sharded in the cache: weight in one blob, bias in another, linked from the snapshot
    await saveRaw(join(repo, 'blobs', sha1), [{ key: 'p.weight', dtype: 'BF16', shape: [6, 4], bytes: bytesOf(float32ToBFloat16(W)) }]);
    await saveRaw(join(repo, 'blobs', sha2), [{ key: 'p.bias', dtype: 'BF16', shape: [6], bytes: bytesOf(float32ToBFloat16(B)) }]);
    await symlink(join('..', '..', '..', 'blobs', sha1), join(snap, 'm-1.safetensors'));
    await symlink(join('..', '..', '..', 'blobs', sha2), join(snap, 'm-2.safetensors'));
    await writeFile(join(repo, 'blobs', '3'.repeat(64)), JSON.stringify({ weight_map: { 'p.weight': 'm-1.safetensors', 'p.bias': 'm-2.safetensors' } }));
    await symlink(join('..', '..', '..', 'blobs', '3'.repeat(64)), join(snap, 'm.safetensors.index.json'));

    const hf = await Checkpoint.open(snap);
    const x = rand(12, 33);
    const build = (ck: Checkpoint, prefix: string) => {
      const g = new Graph({ name: 'layout', precision: 'float32' });
      g.output(g.linear(g.input('x', 'float32', [3, 4]), ck, prefix), 'y');
      return g;
    };
    const hfModel = build(hf, 'p').toModel();
    assert.equal(hfModel.externalFolder, repo);
    const locations = fromBinary(ModelProtoSchema, hfModel.bytes).graph!.initializer
      .flatMap((t) => t.externalData.filter((e) => e.key === 'location').map((e) => e.value)).sort();
    assert.deepEqual(locations, [`blobs/${sha1}`, `blobs/${sha2}`]);
    const plainModel = build(ckpt, 'bf16').toModel();
    assert.equal(plainModel.externalFolder, join(dir, 'plain'));

    const a = await runGraph(build(hf, 'p'), { x: f32([3, 4], x) });
    const b = await runGraph(build(ckpt, 'bf16'), { x: f32([3, 4], x) });
    assertClose(a.y.data as Float32Array, b.y.data as Float32Array, 0, 0);
    assertClose(a.y.data as Float32Array, ref.linear(x, bfloat16ToFloat32(float32ToBFloat16(W)), bfloat16ToFloat32(float32ToBFloat16(B)), 3, 4, 6));

    // weights from both places in one graph: the folder is their common ancestor, locations stay inside it
    const g = new Graph({ name: 'mixed', precision: 'float32' });
    const xin = g.input('x', 'float32', [3, 4]);
    g.output(g.add(g.linear(xin, hf, 'p'), g.linear(xin, ckpt, 'bf16')), 'y');
    const mixed = g.toModel();
    assert.equal(mixed.externalFolder, dir);
    const r = await runGraph(g, { x: f32([3, 4], x) });
    assertClose(r.y.data as Float32Array, Array.from(a.y.data as Float32Array, (v) => 2 * v), 1e-6, 1e-6);
  });

  test('sharded fixture checkpoint (bf16 transformer) feeds a graph', async () => {
    const dit = await Checkpoint.open(join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY'));
    const key = 'x_embedder.proj.bias';
    const g = new Graph({ name: 'fixture', precision: 'float32' });
    g.output(g.param(dit, key), 'b');
    const r = await runGraph(g, {});
    assertClose(r.b.data as Float32Array, await dit.readFloat32(key), 0, 0);
  });
});

describe('scopes', () => {
  test('node names carry the scope path', () => {
    const g = new Graph({ name: 'scoped', precision: 'float32' });
    const x = g.input('x', 'float32', [2]);
    g.scope('block', () => g.scope('attn', () => g.output(g.relu(x), 'y')));
    const names = fromBinary(ModelProtoSchema, g.toModel().bytes).graph!.node.map((n) => n.name);
    assert.ok(names.some((n) => /^block\/attn\/Relu_\d+$/.test(n)), names.join(','));
  });
});

describe('If branches and inputs with defaults', () => {
  /** y = x W^T + b, plus (x A) B when `on`: the shape the DiT's LoRA branches take. A, B default to 0 ranks. */
  function build(precision: 'float32' = 'float32') {
    const g = new Graph({ name: 'if-test', precision, castWeightsAt: 'load' });
    const x = g.input('x', 'float32', [3, 4]);
    const on = g.optionalInput('on', [], { dtype: 'bool', dims: [], data: Uint8Array.of(0) });
    const a = g.optionalInput('a', [4, 'r'], f32([4, 0], []));
    const b = g.optionalInput('b', ['r', 6], f32([0, 6], []));
    const [y] = g.ifElse(on,
      () => { const base = g.linear(x, ckpt, 'bf16'); return [g.add(base, g.matmul(g.matmul(x, a), b))]; },
      () => [g.linear(x, ckpt, 'bf16')]);
    g.output(y, 'y');
    return g.toModel();
  }

  test('the default branch runs without the optional inputs; the other with them, or with their zero-size defaults', async () => {
    const model = build();
    assert.deepEqual(model.inputs, ['x']);
    assert.deepEqual(Object.keys(model.inputDefaults!), ['on', 'a', 'b']);
    // one Cast of each bf16 weight, in the main graph, shared by both branches
    const proto = fromBinary(ModelProtoSchema, model.bytes);
    assert.equal(proto.graph!.node.filter((n) => n.opType === 'Cast').length, 2);
    assert.deepEqual(proto.graph!.node.map((n) => n.opType).filter((t) => t !== 'Cast' && t !== 'Identity'), ['If']);
    const x = f32([3, 4], rand(12, 3));
    const session = await Session.create(model, { ep: 'cpu' });
    try {
      const plain = (await session.run({ x })).y;
      const X = x.data as Float32Array;
      assert.deepEqual(session.inputs, ['x']);
      assert.deepEqual(session.optionalInputs, ['on', 'a', 'b']);
      const on = { dtype: 'bool' as const, dims: [], data: Uint8Array.of(1) };
      // the branch with rank-0 A and B adds exact zeros
      await session.bind({ on });
      assert.deepEqual((await session.run({ x })).y.data, plain.data);
      // a rank-2 branch bound once, then every run uses it
      const A = f32([4, 2], rand(8, 4)), Bm = f32([2, 6], rand(12, 5));
      await session.bind({ on, a: A, b: Bm });
      const y = (await session.run({ x })).y.data as Float32Array;
      const expected = Float32Array.from(plain.data as Float32Array);
      for (let i = 0; i < 3; i++) for (let o = 0; o < 6; o++) {
        let s = 0;
        for (let r = 0; r < 2; r++) { let t = 0; for (let k = 0; k < 4; k++) t += X[i * 4 + k] * (A.data as Float32Array)[k * 2 + r]; s += t * (Bm.data as Float32Array)[r * 6 + o]; }
        expected[i * 6 + o] += s;
      }
      assertClose(y, expected, 1e-5, 1e-5, 'x W^T + b + (x A) B');
      // unbound: the defaults again, and the default branch
      await session.unbind();
      assert.deepEqual((await session.run({ x })).y.data, plain.data);
      await session.bind({ on, a: A, b: Bm });
      await session.unbind(['on']);
      assert.deepEqual((await session.run({ x })).y.data, plain.data);
      await assert.rejects(session.unbind(['x']), /inputs without a default: x/);
    } finally {
      await session.release();
    }
  });
});
