/**
 * The VAE decoder's causal 3x3x3 convolution and its GroupNorm + SiLU in other layouts, on the CUDA EP, at the
 * decoder's largest shapes (128 channels at 640x608, 256 at 320x304; 17 frames, a 5-latent window):
 *   ncdhw        what the decoder runs: (1, C, T, H, W), three replicate pads as Concats, Conv3d
 *   tchw-stack   frames as the batch (T, C, H, W): pads, then the three time taps side by side on channels,
 *                (T, 3C, H+2, W+2), one Conv2d with the weight (C, 3C, 3, 3)
 *   tchw-sum     frames as the batch, three Conv2d over the time-shifted slices, summed
 *   thwc-nhwc    channels last (T, H, W, C): the taps side by side on channels, com.microsoft.NhwcConv
 *   gn-*         GroupNorm(32) + SiLU: by rows in (1, C, T, H, W) (the decoder's), by rows with frames as
 *                the batch, com.microsoft.GroupNorm channels last with SiLU fused
 * Every form gets the same random video (RandomUniform, generated on the device in (1, C, T, H, W) and
 * transposed into the form's layout) and the same weights; each returns a window of frames 0, 1 and T-1
 * (8 channels x 8 x 8 pixels) in (t, c, h, w) order, compared with the first form's (max |difference|).
 * Time per form: median of 3 runs after a warm-up, minus the run of the graph that only makes the input
 * in that layout.
 *
 *   node dist/scripts/gpu/vae-conv-forms.js [--shapes 128x640x608,256x320x304] [--frames 17]
 *        [--only form,...] [--nhwc] [--out file.json] [--ep cpu]
 * --nhwc adds each NCHW form again under the provider option prefer_nhwc=1. --ep cpu checks the forms in
 * float32 on small shapes (--shapes 8x112x112 --frames 5; the channels-last contrib ops are CUDA only).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Graph, type Value } from '../../src/onnx/graph.js';
import { cudaProviderOptions } from '../../src/runtime/providers.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';
import { rand } from '../../test/onnx/helpers.js';

type Layout = 'ncdhw' | 'tchw' | 'thwc';
interface Shape { C: number; T: number; H: number; W: number }
interface Form { layout: Layout; build: (g: Graph, x: Value, s: Shape) => Value }

/** The conv weight (C, C, 3, 3, 3) and bias, the same numbers for every form. */
function weights(C: number): { w: Float32Array; b: Float32Array } {
  const scale = 1 / Math.sqrt(C * 27);
  return { w: rand(C * C * 27, 7, -scale, scale), b: rand(C, 11, -0.1, 0.1) };
}

/** (C, C, 3, 3, 3) -> the time tap k's 2-D kernel (C, C, 3, 3). */
function tap(w: Float32Array, C: number, k: number): Float32Array {
  const out = new Float32Array(C * C * 9);
  for (let o = 0; o < C; o++) for (let c = 0; c < C; c++) for (let i = 0; i < 9; i++) out[(o * C + c) * 9 + i] = w[((o * C + c) * 3 + k) * 9 + i];
  return out;
}

/** (C, C, 3, 3, 3) -> (C, 3C, 3, 3) with input channel k C + c holding tap k of channel c. */
function stacked(w: Float32Array, C: number): Float32Array {
  const out = new Float32Array(C * 3 * C * 9);
  for (let o = 0; o < C; o++) for (let k = 0; k < 3; k++) for (let c = 0; c < C; c++) for (let i = 0; i < 9; i++) {
    out[((o * 3 * C) + k * C + c) * 9 + i] = w[((o * C + c) * 3 + k) * 9 + i];
  }
  return out;
}

/** (M, Cin, 3, 3) -> (M, 3, 3, Cin), the channels-last kernel. */
function kernelLast(w: Float32Array, M: number, Cin: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let o = 0; o < M; o++) for (let c = 0; c < Cin; c++) for (let i = 0; i < 9; i++) out[(o * 9 + i) * Cin + c] = w[(o * Cin + c) * 9 + i];
  return out;
}

/** Replicate padding of the frames-as-batch video: 1 pixel on H and W (axes hAxis, hAxis + 1), 2 frames in front. */
function padFramesFirst(g: Graph, x: Value, hAxis: number): Value {
  return g.replicatePad(g.replicatePad(g.replicatePad(x, hAxis, 1, 1), hAxis + 1, 1, 1), 0, 2, 0);
}

/** The three time taps of a padded (T+2, ...) video side by side on `axis`: (T, ..., 3C, ...). */
function taps(g: Graph, xp: Value, T: number, axis: number): Value {
  return g.concat([0, 1, 2].map((k) => g.slice(xp, [k], [k + T], [0])), axis);
}

function groupNormFramesFirst(g: Graph, x: Value, C: number, G: number): Value {
  // rows of W values; statistics over every frame (the batch axis) too
  const [T, , , W] = x.shape as number[];
  const rows = g.reshape(x, [T, G, -1, W]); // (T, G, R, W)
  const [, mean, inv] = g.op('LayerNormalization', [rows, g.constant(new Array(W).fill(1), [W], x.dtype)], { axis: -1, epsilon: 1e-5, stash_type: 1 },
    { outputs: 3, dtype: 'float32', shape: [T, G, C * (x.shape[2] as number) / G, 1] });
  const rowVar = g.sub(g.reciprocal(g.mul(inv, inv)), 1e-5);
  const m = g.reduceMean(mean, [0, 2, 3]); // (1, G, 1, 1)
  const spread = g.sub(mean, m);
  const variance = g.reduceMean(g.add(rowVar, g.mul(spread, spread)), [0, 2, 3]);
  const a = g.reshape(g.expand(g.reciprocal(g.sqrt(g.add(variance, 1e-6))), [1, G, C / G, 1]), [C]);
  const b = g.neg(g.mul(g.reshape(g.expand(m, [1, G, C / G, 1]), [C]), a));
  const zeros = g.constant(new Array(C).fill(0), [C], x.dtype);
  return g.op('BatchNormalization', [x, g.cast(a, x.dtype), g.cast(b, x.dtype), zeros, g.constant(new Array(C).fill(1), [C], x.dtype)], { epsilon: 0 })[0];
}

const FORMS: Record<string, Form> = {
  ncdhw: {
    layout: 'ncdhw',
    build: (g, x, { C }) => { const { w, b } = weights(C); return g.causalConv3d(x, g.constant(w, [C, C, 3, 3, 3], dtype()), g.constant(b, [C], dtype())); },
  },
  'tchw-stack': {
    layout: 'tchw',
    build: (g, x, { C, T }) => {
      const { w, b } = weights(C);
      return g.conv2d(taps(g, padFramesFirst(g, x, 2), T, 1), g.constant(stacked(w, C), [C, 3 * C, 3, 3], dtype()), g.constant(b, [C], dtype()));
    },
  },
  'tchw-sum': {
    layout: 'tchw',
    build: (g, x, { C, T }) => {
      const { w, b } = weights(C);
      const xp = padFramesFirst(g, x, 2);
      const parts = [0, 1, 2].map((k) => g.conv2d(g.slice(xp, [k], [k + T], [0]), g.constant(tap(w, C, k), [C, C, 3, 3], dtype()), k === 0 ? g.constant(b, [C], dtype()) : null));
      return g.add(g.add(parts[0], parts[1]), parts[2]);
    },
  },
  'thwc-nhwc': {
    layout: 'thwc',
    build: (g, x, { C, T, H, W }) => {
      const { w, b } = weights(C);
      const k = g.constant(stacked(w, C), [C, 3 * C, 3, 3], dtype());
      return g.op('NhwcConv', [taps(g, padFramesFirst(g, x, 1), T, 3), k, g.constant(b, [C], dtype())], { kernel_shape: [3, 3] },
        { domain: 'com.microsoft', dtype: x.dtype, shape: [T, H, W, C] })[0];
    },
  },
  'thwc-nhwc-klast': {
    layout: 'thwc',
    build: (g, x, { C, T, H, W }) => {
      const { w, b } = weights(C);
      const k = g.constant(kernelLast(stacked(w, C), C, 3 * C), [C, 3, 3, 3 * C], dtype());
      return g.op('NhwcConv', [taps(g, padFramesFirst(g, x, 1), T, 3), k, g.constant(b, [C], dtype())], { kernel_shape: [3, 3] },
        { domain: 'com.microsoft', dtype: x.dtype, shape: [T, H, W, C] })[0];
    },
  },
  'gn-ncdhw': { layout: 'ncdhw', build: (g, x, { C }) => g.silu(g.groupNorm(x, 32, null, null, 1e-6)) },
  'gn-tchw': { layout: 'tchw', build: (g, x, { C }) => g.silu(groupNormFramesFirst(g, x, C, 32)) },
  'gn-thwc': {
    layout: 'thwc',
    build: (g, x, { C, T, H, W }) => {
      const flat = g.reshape(x, [1, T * H, W, C]); // every frame in one image: statistics over all of them
      const y = g.op('GroupNorm', [flat, g.constant(new Array(C).fill(1), [C], 'float32'), g.constant(new Array(C).fill(0), [C], 'float32')],
        { epsilon: 1e-6, groups: 32, activation: 1, channels_last: 1 }, { domain: 'com.microsoft', dtype: x.dtype, shape: [1, T * H, W, C] })[0];
      return g.reshape(y, [T, H, W, C]);
    },
  },
};

/** The random video (1, C, T, H, W) in the form's layout. */
function input(g: Graph, s: Shape, layout: Layout): Value {
  const seed = g.input('seed', 'float32', [1]); // keeps the graph from being folded at load
  const shape = [1, s.C, s.T, s.H, s.W];
  const like = g.op('Expand', [g.cast(seed, dtype()), g.ints(shape)], {}, { shape })[0];
  // ONNX Runtime's CPU EP has no RandomUniformLike at this opset: a sine of the flat index there
  const n = shape.reduce((a, b) => a * b);
  const x = EP === 'cuda'
    ? g.op('RandomUniformLike', [like], { low: -2, high: 2, dtype: 10, seed: 3 }, { dtype: dtype(), shape })[0]
    : g.reshape(g.mul(g.sin(g.mul(g.op('Range', [g.scalar(0, 'float32'), g.mul(g.scalar(n, 'float32'), seed), g.scalar(1, 'float32')], {}, { dtype: 'float32', shape: [n] })[0], 0.7311)), 2), shape);
  if (layout === 'ncdhw') return x;
  const frames = g.transpose(g.reshape(x, [s.C, s.T, s.H, s.W]), layout === 'tchw' ? [1, 0, 2, 3] : [1, 2, 3, 0]);
  return frames;
}

/** Frames 0, 1 and T-1, channels 0..7, rows and columns 100..107 of the output, as (3, 8, 8, 8) (t, c, h, w). */
function window(g: Graph, y: Value, s: Shape, layout: Layout): Value {
  const pick = (t: number) => {
    if (layout === 'ncdhw') return g.reshape(g.slice(y, [0, t, 100, 100], [8, t + 1, 108, 108], [1, 2, 3, 4]), [1, 8, 8, 8]);
    if (layout === 'tchw') return g.slice(y, [t, 0, 100, 100], [t + 1, 8, 108, 108], [0, 1, 2, 3]);
    return g.transpose(g.slice(y, [t, 100, 100, 0], [t + 1, 108, 108, 8], [0, 1, 2, 3]), [0, 3, 1, 2]);
  };
  return g.cast(g.concat([pick(0), pick(1), pick(s.T - 1)], 0), 'float32');
}

let EP: 'cuda' | 'cpu' = 'cuda';
const dtype = () => (EP === 'cuda' ? 'float16' : 'float32');

function build(form: string | null, s: Shape, layout: Layout): ReturnType<Graph['toModel']> {
  const g = new Graph({ name: `conv_form_${form ?? 'input'}`, precision: dtype() });
  const x = input(g, s, layout);
  g.output(window(g, form ? FORMS[form].build(g, x, s) : x, s, layout), 'window');
  return g.toModel();
}

async function timed(model: ReturnType<Graph['toModel']>, cuda: Record<string, string>): Promise<{ s: number; window: Float32Array }> {
  const session = await Session.create(model, EP === 'cuda' ? { ep: 'cuda', cuda } : { ep: 'cpu' });
  try {
    const feeds = { seed: { dtype: 'float32' as const, dims: [1], data: new Float32Array([1]) } };
    const times: number[] = [];
    let window: Float32Array = new Float32Array();
    for (let i = 0; i < 4; i++) {
      const t0 = performance.now();
      const out = await session.run(feeds);
      times.push((performance.now() - t0) / 1000);
      window = out.window.data as Float32Array;
    }
    return { s: times.slice(1).sort((a, b) => a - b)[1], window };
  } finally {
    await session.release();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    shapes: { type: 'string', default: '128x640x608,256x320x304' }, frames: { type: 'string', default: '17' },
    only: { type: 'string' }, nhwc: { type: 'boolean' }, out: { type: 'string' }, ep: { type: 'string', default: 'cuda' },
  } });
  EP = values.ep === 'cpu' ? 'cpu' : 'cuda';
  const forms = values.only ? values.only.split(',') : Object.keys(FORMS);
  const results: Record<string, unknown>[] = [];
  for (const spec of values.shapes!.split(',')) {
    const [C, H, W] = spec.split('x').map(Number);
    const s: Shape = { C, T: Number(values.frames), H, W };
    const base: Partial<Record<Layout, number>> = {};
    const reference: Record<string, Float32Array> = {};
    const variants: Array<[string, Record<string, string>]> = [['', cudaProviderOptions('vae')]];
    if (values.nhwc) variants.push(['+prefer_nhwc', { ...cudaProviderOptions('vae'), prefer_nhwc: '1' }]);
    for (const form of forms) {
      for (const [suffix, cuda] of variants) {
        if (suffix && FORMS[form].layout === 'thwc') continue;
        const { layout } = FORMS[form];
        const r: Record<string, unknown> = { shape: spec, frames: s.T, form: form + suffix };
        try {
          base[layout] ??= (await timed(build(null, s, layout), cuda)).s;
          const { s: total, window } = await timed(build(form, s, layout), cuda);
          r.ms = Math.round((total - base[layout]!) * 1e4) / 10;
          const kind = form.startsWith('gn-') ? 'gn' : 'conv';
          if (!reference[kind]) reference[kind] = window;
          let diff = 0, scale = 0;
          for (let i = 0; i < window.length; i++) { diff = Math.max(diff, Math.abs(window[i] - reference[kind][i])); scale = Math.max(scale, Math.abs(reference[kind][i])); }
          r.maxDiff = diff; r.maxAbs = scale;
        } catch (err) {
          r.error = (err as Error).message.split('\n')[0].slice(0, 300);
        }
        console.log(JSON.stringify(r));
        results.push(r);
      }
    }
  }
  if (values.out) writeFileSync(values.out, JSON.stringify(results, null, 1));
  await terminateWorkers();
}

main().catch((err) => { console.error(err); process.exit(1); });
