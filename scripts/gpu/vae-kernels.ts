/**
 * The VAE decoder's full-resolution kernels on the CUDA EP, one ONNX graph per operator, at the shapes of a
 * 640x608 section decode (128 channels, up to 65 frames):
 *   correctness  every video frame of the input is the same frame, so every output frame must be equal; the
 *                largest difference between the first and the last output frame is printed (0 expected).
 *                Tensors of more than 2^31 elements show whether a kernel indexes with 32-bit integers.
 *   speed        time per operator (median of 3 after a warm-up, minus the graph that only makes the input).
 * Input frames come from RandomUniform on the device, so nothing large crosses the host boundary.
 *
 *   node dist/scripts/gpu/vae-kernels.js [--frames 33,65] [--time 33] [--only op,...] [--out file.json] [--dry]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Graph, type Value } from '../../src/onnx/graph.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';
import { rand } from '../../test/onnx/helpers.js';

const C = 128, H = 640, W = 608, G = 32, EPS = 1e-6;

type Build = (g: Graph, x: Value, T: number) => Value;

function randomConst(g: Graph, n: number, shape: number[], scale: number): Value {
  return g.constant(rand(n, 12345, -scale, scale), shape, 'float16');
}

/** Nearest x2 in (T, H, W) of the first half of the frames at half the size (the upsampler's shapes). */
function halfInput(g: Graph, x: Value, T: number): Value {
  return g.slice(x, [0, 0, 0], [Math.ceil(T / 2), H / 2, W / 2], [2, 3, 4]); // (1, C, T/2, H/2, W/2)
}

/** Nearest x2 as Unsqueeze + Expand + Reshape (a broadcast copy) instead of Resize. */
function expandUpsample(g: Graph, x: Value): Value {
  const wide = g.op('Expand', [g.unsqueeze(x, [3, 5, 7]), g.ints([1, 1, 1, 2, 1, 2, 1, 2])], {}, { shape: [1, C, 't', 2, 'h', 2, 'w', 2] })[0];
  const shape = g.op('Mul', [g.op('Shape', [x], {}, { dtype: 'int64', shape: [5] })[0], g.ints([1, 1, 2, 2, 2])], {}, { dtype: 'int64', shape: [5] })[0];
  return g.op('Reshape', [wide, shape], {}, { shape: [1, C, 'T2', 'H2', 'W2'] })[0];
}

const OPS: Record<string, Build> = {
  input: (_g, x) => x,
  add: (g, x) => g.add(x, 1),
  silu: (g, x) => g.silu(x),
  pad: (g, x) => g.pad(x, [0, 0, 2, 1, 1, 0, 0, 0, 1, 1], 'edge'),
  padconcat: (g, x) => g.replicatePad(g.replicatePad(g.replicatePad(x, 2, 2, 0), 3, 1, 1), 4, 1, 1),
  pad4d: (g, x, T) => g.reshape(g.pad(g.reshape(g.replicatePad(x, 2, 2, 0), [1, -1, H, W]), [0, 0, 1, 1, 0, 0, 1, 1], 'edge'), [1, C, T + 2, H + 2, W + 2]),
  conv: (g, x) => g.causalConv3d(x, randomConst(g, C * C * 27, [C, C, 3, 3, 3], 0.02), null),
  groupnorm: (g, x) => g.groupNorm(x, G, null, null, EPS),
  resize: (g, x, T) => g.resize(halfInput(g, x, T), { scales: [1, 1, 2, 2, 2], mode: 'nearest' }),
  upexpand: (g, x, T) => expandUpsample(g, halfInput(g, x, T)),
};

function build(op: string, T: number): ReturnType<Graph['toModel']> {
  const g = new Graph({ name: `probe_${op}_t${T}`, precision: 'float16' });
  const seed = g.input('seed', 'float32', [1]); // unused value; keeps the graph from being folded at load
  const frame = g.op('RandomUniformLike', [g.op('Expand', [g.cast(seed, 'float16'), g.ints([1, C, 1, H, W])], {}, { shape: [1, C, 1, H, W] })[0]],
    { low: -2.5, high: 2.5, dtype: 10 }, { dtype: 'float16', shape: [1, C, 1, H, W] })[0];
  const x = g.op('Expand', [frame, g.ints([1, C, T, H, W])], {}, { shape: [1, C, T, H, W] })[0];
  const y = OPS[op](g, x, T);
  const first = g.slice(y, [0], [1], [2]);
  const last = g.slice(y, [-1], [Number.MAX_SAFE_INTEGER], [2]);
  const diff = g.op('ReduceMax', [g.op('Abs', [g.sub(g.cast(last, 'float32'), g.cast(first, 'float32'))])[0]], { keepdims: 0 }, { shape: [] })[0];
  const meanLast = g.op('ReduceMean', [g.op('Abs', [g.cast(last, 'float32')])[0]], { keepdims: 0 }, { shape: [] })[0];
  g.output(diff, 'diff');
  g.output(meanLast, 'mean_abs_last');
  return g.toModel();
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { frames: { type: 'string', default: '33,65' }, time: { type: 'string', default: '33' }, out: { type: 'string' }, only: { type: 'string' }, dry: { type: 'boolean' } } });
  const ops = values.only ? values.only.split(',') : Object.keys(OPS);
  const results: Record<string, unknown>[] = [];
  const feeds = { seed: { dtype: 'float32' as const, dims: [1], data: new Float32Array([1]) } };
  for (const T of values.frames!.split(',').map(Number)) {
    for (const op of ops) {
      const r: Record<string, unknown> = { op, frames: T, elements: C * T * H * W, over2p31: C * T * H * W > 2 ** 31 };
      let s: Session | null = null;
      if (values.dry) { build(op, T); continue; }
      try {
        s = await Session.create(build(op, T), { ep: 'cuda' });
        const timed = T === Number(values.time);
        const times: number[] = [];
        for (let i = 0; i < (timed ? 4 : 1); i++) {
          const t0 = performance.now();
          const out = await s.run(feeds);
          times.push((performance.now() - t0) / 1000);
          r.diff = (out.diff.data as Float32Array)[0];
          r.meanAbsLast = (out.mean_abs_last.data as Float32Array)[0];
        }
        if (timed) r.medianS = times.slice(1).sort((a, b) => a - b)[1];
      } catch (err) {
        r.error = (err as Error).message.split('\n')[0].slice(0, 300);
      } finally {
        await s?.release();
      }
      const base = results.find((b) => b.op === 'input' && b.frames === T)?.medianS as number | undefined;
      if (typeof r.medianS === 'number' && base !== undefined && op !== 'input') r.opS = r.medianS - base;
      console.log(JSON.stringify(r));
      results.push(r);
    }
  }
  if (values.out) writeFileSync(values.out, JSON.stringify(results, null, 1));
  await terminateWorkers();
}

main().catch((err) => { console.error(err); process.exit(1); });
