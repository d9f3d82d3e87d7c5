/**
 * The DiT's GEMMs at the 640 bucket on the CUDA EP: bfloat16 Gemm (what linear() runs today) against FP8
 * (com.microsoft.GemmFloat8 on E4M3FN operands, the path graph.ts builds with `fp8`), per shape:
 *   bf16        Gemm(x, W, transB) in bfloat16
 *   fp8         GemmFloat8 on operands quantized once per run (the GEMM alone), bfloat16 output
 *   fp8+quant   the activation quantization counted (amax, scale, Cast to E4M3FN) as the DiT runs it
 *   fp8-f32out  GemmFloat8 with float32 output and a Cast to bfloat16 (in case cuBLASLt refuses bf16 output)
 * Each graph repeats its product R times on device-resident random operands (RandomUniformLike, nothing
 * large crosses to the host; common-subexpression elimination off so the repeats stay) and the time of the
 * same graph with R = 0 is subtracted: ms per product, TFLOP/s = 2 M K N / time. The relative L2 error of
 * FP8 against bf16 (both from the same bf16 operands, float32 arithmetic in the graph) is printed per shape.
 * Probes first: which casts to E4M3FN, amax reductions and QuantizeLinear the CUDA EP places and runs (PROBES).
 *
 *   node dist/scripts/gpu/gemm-fp8.js [--tokens 18800] [--text 750] [--reps 10] [--only name,...] [--out file.json] [--dry]
 * (--dry builds every graph and runs nothing: a check without a GPU)
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Graph, type BuiltModel, type Value } from '../../src/onnx/graph.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';

const D = 3072, F = 4 * D;
const FLOAT8 = 17, BF16 = 16, FLOAT16 = 10, FLOAT = 1;

interface Shape { name: string; m: number; k: number; n: number }

function shapes(tokens: number, text: number): Shape[] {
  const joint = tokens + text;
  return [
    { name: 'dual.img.qkv|out', m: tokens, k: D, n: D },
    { name: 'dual.img.ff.up', m: tokens, k: D, n: F },
    { name: 'dual.img.ff.down', m: tokens, k: F, n: D },
    { name: 'dual.txt.qkv|out', m: text, k: D, n: D },
    { name: 'dual.txt.ff.up', m: text, k: D, n: F },
    { name: 'single.qkv', m: joint, k: D, n: D },
    { name: 'single.proj_mlp', m: joint, k: D, n: F },
    { name: 'single.proj_out', m: joint, k: D + F, n: D },
  ];
}

type Variant = 'bf16' | 'fp8' | 'fp8+quant' | 'fp8-f32out';
const VARIANTS: Variant[] = ['bf16', 'fp8', 'fp8+quant', 'fp8-f32out'];

/**
 * Random bf16 (rows, cols) on the device, uniform in +-scale; the `seed` input keeps it from being folded.
 * Drawn in float16 (the dtype the CUDA EP's RandomUniformLike surely has) and cast.
 */
function random(g: Graph, seed: Value, rows: number, cols: number, scale: number): Value {
  const like = g.op('Expand', [g.cast(seed, 'float16'), g.ints([rows, cols])], {}, { shape: [rows, cols] })[0];
  const r = g.op('RandomUniformLike', [like], { low: -scale, high: scale, dtype: FLOAT16 }, { dtype: 'float16', shape: [rows, cols] })[0];
  return g.cast(r, 'bfloat16');
}

function gemmFp8(g: Graph, a: { q: Value; scale: Value }, w: { q: Value; scale: Value }, m: number, n: number, alpha: number, out: 'bfloat16' | 'float32'): Value {
  const y = g.op('GemmFloat8', [a.q, w.q, null, a.scale, w.scale], { transA: 0, transB: 1, alpha, dtype: out === 'bfloat16' ? BF16 : FLOAT },
    { domain: 'com.microsoft', dtype: out, shape: [m, n] })[0];
  return g.cast(y, 'bfloat16');
}

/** A corner of y: consumes the product without reading it all. */
const corner = (g: Graph, y: Value) => g.cast(g.slice(y, [0, 0], [1, 1]), 'float32');

function build(s: Shape, v: Variant, reps: number): BuiltModel {
  const g = new Graph({ name: `gemm_${v}`, precision: 'bfloat16' });
  const seed = g.input('seed', 'float32', [1]);
  const x = random(g, seed, s.m, s.k, 2);
  const w = random(g, seed, s.n, s.k, 1 / Math.sqrt(s.k));
  const xq = v === 'fp8' || v === 'fp8-f32out' ? g.quantizeFp8(x) : null;
  const wq = v === 'bf16' ? null : g.quantizeFp8(w);
  let acc = g.add(corner(g, x), corner(g, w));
  for (let r = 0; r < reps; r++) {
    const alpha = 1 + r / 1024; // distinct nodes, whatever the optimizer thinks of identical ones
    let y: Value;
    if (v === 'bf16') y = g.op('Gemm', [x, w], { transB: 1, alpha })[0];
    else if (v === 'fp8+quant') y = gemmFp8(g, g.quantizeFp8(x), wq!, s.m, s.n, alpha, 'bfloat16');
    else y = gemmFp8(g, xq!, wq!, s.m, s.n, alpha, v === 'fp8' ? 'bfloat16' : 'float32');
    acc = g.add(acc, corner(g, y));
  }
  g.output(acc, 'acc');
  return { ...g.toModel(), sessionConfig: { 'optimization.disable_specified_optimizers': 'CommonSubexpressionElimination' } };
}

/** Relative L2 of the FP8 product against the bf16 one, from the same operands. */
function buildError(s: Shape): BuiltModel {
  const g = new Graph({ name: 'gemm_error', precision: 'bfloat16' });
  const seed = g.input('seed', 'float32', [1]);
  const x = random(g, seed, s.m, s.k, 2);
  const w = random(g, seed, s.n, s.k, 1 / Math.sqrt(s.k));
  const ref = g.cast(g.op('Gemm', [x, w], { transB: 1 })[0], 'float32');
  const y8 = g.cast(gemmFp8(g, g.quantizeFp8(x), g.quantizeFp8(w), s.m, s.n, 1, 'bfloat16'), 'float32');
  const d = g.sub(y8, ref);
  const sq = (t: Value) => g.op('ReduceSum', [g.mul(t, t)], { keepdims: 0 }, { shape: [] })[0];
  g.output(g.sqrt(g.div(sq(d), sq(ref))), 'rel');
  return g.toModel();
}

/**
 * Which of the ops an FP8 path could use the CUDA EP places and runs (the CPU fallback off, so a node it does
 * not take is an error): casts to E4M3FN from each float type, the amax reductions, QuantizeLinear.
 */
const PROBES: Record<string, (g: Graph, x: Value) => Value> = {
  'Cast bfloat16->e4m3fn': (g, x) => g.cast(g.op('Cast', [g.cast(x, 'bfloat16')], { to: FLOAT8, saturate: 1 }, { dtype: 'float8e4m3fn' })[0], 'float32'),
  'Cast float16->e4m3fn': (g, x) => g.cast(g.op('Cast', [g.cast(x, 'float16')], { to: FLOAT8, saturate: 1 }, { dtype: 'float8e4m3fn' })[0], 'float32'),
  'Cast float32->e4m3fn': (g, x) => g.cast(g.op('Cast', [x], { to: FLOAT8, saturate: 1 }, { dtype: 'float8e4m3fn' })[0], 'float32'),
  'ReduceMax float32': (g, x) => g.op('ReduceMax', [x], { keepdims: 0 }, { shape: [] })[0],
  'ReduceMax float16': (g, x) => g.cast(g.op('ReduceMax', [g.cast(x, 'float16')], { keepdims: 0 }, { shape: [] })[0], 'float32'),
  'ReduceMax bfloat16': (g, x) => g.cast(g.op('ReduceMax', [g.cast(x, 'bfloat16')], { keepdims: 0 }, { shape: [] })[0], 'float32'),
  'GlobalMaxPool float32': (g, x) => g.reshape(g.op('GlobalMaxPool', [g.reshape(g.op('Abs', [x])[0], [1, 1, -1])], {}, { shape: [1, 1, 1] })[0], []),
  'QuantizeLinear float16->e4m3fn': (g, x) => g.cast(g.op('QuantizeLinear', [g.cast(x, 'float16'), g.scalar(0.5, 'float16')],
    { output_dtype: FLOAT8, saturate: 1 }, { dtype: 'float8e4m3fn' })[0], 'float32'),
};

async function probe(name: string): Promise<Record<string, unknown>> {
  const g = new Graph({ name: 'fp8_probe', precision: 'float32' });
  g.output(PROBES[name](g, g.input('x', 'float32', [3])), 'y');
  let s: Session | null = null;
  try {
    s = await Session.create(g.toModel(), { ep: 'cuda', allowCpuFallback: false });
    const y = await s.run({ x: { dtype: 'float32', dims: [3], data: Float32Array.of(500, 0.3, -2) } });
    return { probe: name, ok: true, values: Array.from(y.y.data as Float32Array) };
  } catch (e) {
    return { probe: name, ok: false, error: (e as Error).message.split('\n')[0].slice(0, 300) };
  } finally {
    await s?.release();
  }
}

async function timeModel(model: BuiltModel, runs: number): Promise<number> {
  const s = await Session.create(model, { ep: 'cuda' });
  try {
    const feeds = { seed: { dtype: 'float32' as const, dims: [1], data: Float32Array.of(1) } };
    await s.run(feeds); // warm-up: cuBLAS heuristics, arena growth
    const t: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await s.run(feeds);
      t.push(performance.now() - t0);
    }
    return t.sort((a, b) => a - b)[Math.floor(runs / 2)];
  } finally {
    await s.release();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    tokens: { type: 'string', default: '18800' }, text: { type: 'string', default: '750' }, reps: { type: 'string', default: '10' },
    runs: { type: 'string', default: '5' }, only: { type: 'string' }, out: { type: 'string' }, dry: { type: 'boolean' },
  } });
  const reps = Number(values.reps), runs = Number(values.runs);
  if (values.dry) {
    for (const s of shapes(Number(values.tokens), Number(values.text))) {
      for (const v of VARIANTS) build(s, v, 2);
      buildError(s);
    }
    console.log('every graph built');
    return;
  }
  const probes: Record<string, unknown>[] = [];
  for (const name of Object.keys(PROBES)) {
    probes.push(await probe(name));
    console.log(JSON.stringify(probes.at(-1)));
  }
  const results: Record<string, unknown>[] = [];
  const wanted = values.only?.split(',');
  for (const s of shapes(Number(values.tokens), Number(values.text)).filter((x) => !wanted || wanted.includes(x.name))) {
    const flop = 2 * s.m * s.k * s.n;
    const r: Record<string, unknown> = { ...s, gflop: flop / 1e9 };
    for (const v of VARIANTS) {
      try {
        const base = await timeModel(build(s, v, 0), runs);
        const full = await timeModel(build(s, v, reps), runs);
        const ms = (full - base) / reps;
        r[v] = { ms: +ms.toFixed(4), tflops: +(flop / (ms / 1e3) / 1e12).toFixed(1) };
      } catch (e) {
        r[v] = { error: (e as Error).message.split('\n')[0].slice(0, 400) };
      }
    }
    try {
      const s8 = await Session.create(buildError(s), { ep: 'cuda' });
      r.relL2Fp8VsBf16 = (await s8.run({ seed: { dtype: 'float32', dims: [1], data: Float32Array.of(1) } })).rel.data[0];
      await s8.release();
    } catch (e) {
      r.relL2Fp8VsBf16 = { error: (e as Error).message.split('\n')[0].slice(0, 400) };
    }
    console.log(JSON.stringify(r));
    results.push(r);
  }
  if (values.out) writeFileSync(values.out, JSON.stringify({ reps, runs, probes, results }, null, 1));
  await terminateWorkers();
}

main().catch((err) => { console.error(err); process.exit(1); });
