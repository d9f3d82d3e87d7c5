/**
 * Full-size transformer graphs: build time, session creation time and resident memory.
 *
 *   node dist/scripts/make-full-dit.js                       # once: random bf16 checkpoint, ~1.7 GB on disk
 *   node dist/scripts/bench-dit.js [--weights bench/tmp/framepack-dit-full]
 *       [--ep cpu|cuda] [--precision float32|bfloat16] [--cast run|load] [--threads N] [--rss-limit-gb 16]
 *       [--run] [--frames 1 --height 8 --width 8 --text 8 --image-tokens 8]
 *
 * Builds the embed, blocks and head graphs from the checkpoint and creates their sessions one after the
 * other, printing after each step the elapsed time and the process's resident memory (sessions live in a
 * worker thread of this process, so RSS covers ONNX Runtime) and its peak (VmHWM). Weights stay external
 * (mapped from the safetensors file), so RSS shows what the sessions themselves hold.
 *
 * On the CPU the precision is float32 and the stored weights are bf16: `--cast load` would let ONNX Runtime
 * fold every Cast(W) into a float32 copy at creation (13 B params -> 52 GB), so the default is `--cast run`
 * (casts evaluated per inference, one weight at a time). `--run` then times one forward on a tiny window
 * (few tokens) to show the full-size graphs execute; a watchdog stops the process when its anonymous
 * memory passes --rss-limit-gb.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Checkpoint, type HostTensor } from '../src/onnx/safetensors.js';
import type { Precision } from '../src/onnx/graph.js';
import { buildDitGraphs } from '../src/nets/dit.js';
import { Session, terminateWorkers, type ExecutionProvider } from '../src/runtime/session.js';
import { PackedTransformer, type DitInputs } from '../src/framepack/transformer.js';

const GiB = 2 ** 30;

/**
 * Resident memory of this process: anon = what ONNX Runtime and Node allocated; file = pages of the mapped
 * checkpoint that were touched (page cache, reclaimable; with shared-block test checkpoints the same pages
 * are counted once per block mapping); peak = VmHWM (anon + file).
 */
function memory(): { rssGiB: number; anonGiB: number; fileGiB: number; peakGiB: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const gib = (field: string) => +((Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024) / GiB).toFixed(2);
  return { rssGiB: gib('VmRSS'), anonGiB: gib('RssAnon'), fileGiB: gib('RssFile'), peakGiB: gib('VmHWM') };
}

/** highest anonymous RSS seen by the watchdog (sampled every 100 ms) */
let peakAnonGiB = 0;

function report(step: string, seconds: number, extra: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ step, seconds: +seconds.toFixed(2), ...memory(), peakAnonGiB, ...extra }));
}

async function timed<T>(fn: () => Promise<T> | T): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await fn();
  return [r, (performance.now() - t0) / 1000];
}

function tensor(dims: number[], fill: (i: number) => number): HostTensor {
  const n = dims.reduce((a, b) => a * b, 1);
  return { dtype: 'float32', dims, data: Float32Array.from({ length: n }, (_, i) => fill(i)) };
}

function ids(values: number[]): HostTensor {
  return { dtype: 'int64', dims: [1, values.length], data: BigInt64Array.from(values.map(BigInt)) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      weights: { type: 'string', default: 'bench/tmp/framepack-dit-full' },
      ep: { type: 'string', default: 'cpu' },
      precision: { type: 'string' },
      cast: { type: 'string' },
      threads: { type: 'string' },
      'rss-limit-gb': { type: 'string', default: '16' },
      run: { type: 'boolean', default: false },
      frames: { type: 'string', default: '1' },
      height: { type: 'string', default: '8' },
      width: { type: 'string', default: '8' },
      text: { type: 'string', default: '8' },
      'image-tokens': { type: 'string', default: '8' },
    },
  });
  const ep = values.ep as ExecutionProvider;
  const precision = (values.precision ?? (ep === 'cpu' ? 'float32' : 'bfloat16')) as Precision;
  const castWeightsAt = (values.cast ?? (precision === 'bfloat16' ? 'load' : 'run')) as 'load' | 'run';
  const threads = values.threads ? Number(values.threads) : undefined;
  const limit = Number(values['rss-limit-gb']);
  const watchdog = setInterval(() => {
    const m = memory();
    peakAnonGiB = Math.max(peakAnonGiB, m.anonGiB);
    if (m.anonGiB > limit) {
      console.log(JSON.stringify({ step: 'abort', reason: `anonymous RSS ${m.anonGiB} GiB above --rss-limit-gb ${limit}`, ...m }));
      process.exit(2);
    }
  }, 100);
  watchdog.unref();

  console.log(JSON.stringify({ weights: values.weights, ep, precision, castWeightsAt, threads: threads ?? 'default', cpus: (await import('node:os')).cpus().length }));
  report('start', 0);
  const [ck, tOpen] = await timed(() => Checkpoint.open(values.weights!));
  report('open checkpoint (headers)', tOpen, { tensors: ck.keys().length });
  const [graphs, tBuild] = await timed(() => buildDitGraphs(ck, { precision, castWeightsAt }));
  report('build graphs', tBuild, {
    protoKiB: Object.fromEntries((['embed', 'blocks', 'head'] as const).map((k) => [k, Math.round(graphs[k].bytes.length / 1024)])),
  });

  let total = 0;
  const sessions: Session[] = [];
  for (const name of ['embed', 'blocks', 'head'] as const) {
    const [s, t] = await timed(() => Session.create(graphs[name], { ep, threads }));
    sessions.push(s);
    total += t;
    report(`create ${name} session`, t);
  }
  report('all three sessions', total);
  await Promise.all(sessions.map((s) => s.release()));
  report('released', 0);

  if (values.run) {
    const [dit, tLoad] = await timed(() => PackedTransformer.load(values.weights!, { ep, precision, castWeightsAt, threads }));
    report('load runner', tLoad);
    const c = dit.config;
    const [T, H, W, L, I] = [values.frames, values.height, values.width, values.text, values['image-tokens']].map(Number);
    const latents = (t: number) => tensor([1, c.inChannels, t, H, W], (i) => Math.sin(i * 0.37));
    const inputs: DitInputs = {
      hidden_states: latents(T), timestep: tensor([1], () => 1000), guidance: tensor([1], () => 10000),
      encoder_hidden_states: tensor([1, L, c.textDim], (i) => Math.cos(i * 0.11)),
      encoder_attention_mask: ids(new Array(L).fill(1)),
      pooled_projections: tensor([1, c.pooledDim], (i) => Math.sin(i)),
      image_embeddings: tensor([1, I, c.imageProjDim], (i) => Math.sin(i * 0.5)),
      latent_indices: ids(Array.from({ length: T }, (_, i) => 1 + i)),
      clean_latents: latents(2), clean_latent_indices: ids([0, T + 1]),
      clean_latents_2x: latents(2), clean_latent_2x_indices: ids([T + 2, T + 3]),
      clean_latents_4x: latents(16), clean_latent_4x_indices: ids(Array.from({ length: 16 }, (_, i) => T + 4 + i)),
    };
    dit.beginSection({ steps: 1 });
    const [r, tRun] = await timed(() => dit.forward(inputs));
    const out = r.output.data as Float32Array;
    report('one forward (tiny window)', tRun, { output: r.output.dims, finite: out.every(Number.isFinite) });
    await dit.release();
  }
  await terminateWorkers();
}

await main();
