/**
 * The DiT forward alone at the default request's shapes (dit-request.ts: 640x608 bucket, window 9, 17,500
 * image + 769 text tokens), timed through PackedTransformer as the sampler calls it (embed + blocks, TeaCache
 * off), for the graph variants of src/nets/dit.ts built and compared in one process:
 *   unfused  the blocks as the plain formulas (DitGraphOptions.fuse false)
 *   fused    the default: fewer passes over the image stream (docs/transformer.md, "Fused ops")
 *   fp8      fused, with the 'attention' FP8 linears (GemmFloat8; weights prepared into the quantized-weight
 *            cache when the session is created), the activation amax by ReduceMax; fp8-pool: by GlobalMaxPool;
 *            fp8-all: the 'all' layer set
 *   lora     fused, built with LoRA inputs (FRAMEPACK_LORA=on) and run without a LoRA: the If node and ~1,000
 *            rank-0 inputs; its output must equal fused's bit for bit
 *   lora-on  the same with a random rank-32 LoRA on every linear layer (make-random-lora.ts, read by the
 *            server's parser and bound as a request binds it)
 *   kernels  fused, with the custom CUDA kernels of src/runtime/dit-kernels.ts (DitGraphOptions.kernels)
 *   no-rope, no-gelu, no-qknorm, no-memops
 *            fused, with ORT's RotaryEmbedding, FastGelu, per-head RMSNormalization (or all three) replaced by
 *            Identity: the output is wrong, the time bounds what faster kernels for those operators could save
 *
 *   node dist/scripts/make-full-weights.js --out bench/tmp/full           # random full-size weights, once
 *   FRAMEPACK_CUDA_OPTIONS='dit:sdpa_kernel=8' node dist/scripts/gpu/dit-forward.js --weights bench/tmp/full \
 *       [--variant both|fused|unfused|fp8|fp8-pool|fp8-all|lora|lora-on|kernels|no-rope|...|a,b,...] [--runs 5] [--warmup 2] [--ep cuda] [--out bench/tmp/dit-forward.json]
 *       [--latent 80x76]   # other latent sizes, e.g. 8x8 for a quick check on the CPU with the tiny model
 *
 * Per variant, one after the other (each variant's sessions are released before the next is created):
 * graph build and session creation times, the blocks graph's node count per op type, `warmup` untimed
 * forwards, then `runs` timed ones: wall time of the whole forward and of the blocks session's run (median,
 * min, all). The outputs of the variants (same inputs) are compared: relative L2 of each against the first.
 * The CUDA provider options are the `dit` ones of src/runtime/providers.ts, with FRAMEPACK_CUDA_OPTIONS applied.
 * Writes JSON to --out and prints it; exits non-zero when a variant failed or gave a non-finite output.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { opCounts, type Precision } from '../../src/onnx/graph.js';
import { Checkpoint, type HostTensor } from '../../src/onnx/safetensors.js';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { buildDitGraphs, type DitGraphOptions } from '../../src/nets/dit.js';
import { loraFeeds, parseLora } from '../../src/nets/dit-lora.js';
import { PackedTransformer, type DitInputs } from '../../src/framepack/transformer.js';
import { cudaProviderOptions } from '../../src/runtime/providers.js';
import { terminateWorkers, type ExecutionProvider } from '../../src/runtime/session.js';
import { relL2 } from '../../test/numerics.js';
import { gpuInfo } from '../gpu-memory.js';
import { ditInputs, LATENT, PROMPT_TOKENS, WINDOW } from '../dit-request.js';
import { randomLora } from '../make-random-lora.js';

const VARIANTS = {
  unfused: { fuse: false },
  fused: { fuse: true },
  fp8: { fuse: true, fp8: { mode: 'gemm', set: 'attention' } },
  'fp8-pool': { fuse: true, fp8: { mode: 'gemm', set: 'attention', amax: 'pool' } },
  'fp8-all': { fuse: true, fp8: { mode: 'gemm', set: 'all' } },
  lora: { fuse: true, lora: true },
  'lora-on': { fuse: true, lora: true },
  kernels: { fuse: true, kernels: true },
  'no-rope': { fuse: true },
  'no-gelu': { fuse: true },
  'no-qknorm': { fuse: true },
  'no-memops': { fuse: true },
} satisfies Record<string, Pick<DitGraphOptions, 'fuse' | 'fp8' | 'lora' | 'kernels'>>;
const LORA_RANK = 32;
type Variant = keyof typeof VARIANTS;

/** Operators (domain.opType) a variant replaces by Identity in the blocks graph. */
const ABLATED: Partial<Record<Variant, string[]>> = {
  'no-rope': ['com.microsoft.RotaryEmbedding'],
  'no-gelu': ['com.microsoft.FastGelu'],
  'no-qknorm': ['RMSNormalization'],
  'no-memops': ['com.microsoft.RotaryEmbedding', 'com.microsoft.FastGelu', 'RMSNormalization'],
};

/** The model with every node of `ops` made Identity(input 0) -> output 0; the number of nodes replaced. */
function ablate(bytes: Uint8Array, ops: string[]): { bytes: Uint8Array; replaced: number } {
  const model = fromBinary(ModelProtoSchema, bytes);
  let replaced = 0;
  for (const n of model.graph?.node ?? []) {
    if (!ops.includes(n.domain ? `${n.domain}.${n.opType}` : n.opType)) continue;
    if (n.output.filter(Boolean).length !== 1) throw new Error(`${n.name}: ${n.opType} with several outputs cannot be ablated`);
    Object.assign(n, { opType: 'Identity', domain: '', input: [n.input[0]], output: [n.output[0]], attribute: [] });
    replaced++;
  }
  return { bytes: toBinary(ModelProtoSchema, model), replaced };
}

const secs = (t0: number) => +((performance.now() - t0) / 1000).toFixed(4);
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const stats = (xs: number[]) => ({ medianS: +median(xs).toFixed(4), minS: Math.min(...xs), runsS: xs });

/** The transformer folder: DIR itself, or DIR/transformer (the make-full-weights.ts layout). */
function transformerDir(dir: string): string {
  for (const d of [dir, join(dir, 'transformer')]) if (existsSync(join(d, 'config.json'))) return d;
  throw new Error(`no transformer config.json in ${dir} or ${join(dir, 'transformer')} (run node dist/scripts/make-full-weights.js --out ${dir})`);
}

async function timeVariant(ck: Checkpoint, variant: Variant, o: { ep: ExecutionProvider; precision: Precision; warmup: number; runs: number; latent: { h: number; w: number } }) {
  let t = performance.now();
  const graphs = buildDitGraphs(ck, { precision: o.precision, castWeightsAt: 'load', ...VARIANTS[variant] });
  let ablatedNodes: number | undefined;
  if (ABLATED[variant]) {
    const { bytes, replaced } = ablate(graphs.blocks.bytes, ABLATED[variant]);
    graphs.blocks = { ...graphs.blocks, bytes };
    ablatedNodes = replaced;
  }
  const buildS = secs(t);
  const ops = opCounts(graphs.blocks);
  t = performance.now();
  const dit = await PackedTransformer.create(graphs, { ep: o.ep, precision: o.precision });
  const createS = secs(t);
  try {
    let loraBindS: number | undefined;
    if (variant === 'lora-on') {
      const file = parseLora(randomLora(dit.config, LORA_RANK), {}, dit.config, 'random');
      t = performance.now();
      await dit.setLora(loraFeeds([{ file, weight: 1 }], dit.config));
      loraBindS = secs(t);
    }
    // the blocks session's own run time (the worker's time for the request, copies of inputs and output included)
    const blocks = (dit as any).blocks;
    const run = blocks.run.bind(blocks);
    const blocksS: number[] = [];
    blocks.run = async (...args: unknown[]) => { const t0 = performance.now(); try { return await run(...args); } finally { blocksS.push(secs(t0)); } };
    const inputs = ditInputs(dit.config, o.latent) as unknown as DitInputs;
    dit.beginSection({ steps: o.warmup + o.runs });
    const forwardS: number[] = [];
    let output: HostTensor | null = null;
    for (let i = 0; i < o.warmup + o.runs; i++) {
      t = performance.now();
      output = (await dit.forward(inputs)).output;
      if (i >= o.warmup) forwardS.push(secs(t));
      console.error(`${variant}: forward ${i + 1}/${o.warmup + o.runs} ${secs(t).toFixed(3)} s${i < o.warmup ? ' (warm-up)' : ''}`);
    }
    const data = output!.data as Float32Array;
    const finite = data.every(Number.isFinite);
    return {
      result: {
        variant, buildS, createS, ...(loraBindS === undefined ? {} : { loraRank: LORA_RANK, loraBindS }),
        ...(ablatedNodes === undefined ? {} : { ablated: ABLATED[variant], ablatedNodes }), forward: stats(forwardS), blocks: stats(blocksS.slice(o.warmup)), finite,
        blocksNodes: Object.values(ops).reduce((a, b) => a + b, 0), blocksOps: ops,
      },
      output: data,
    };
  } finally {
    await dit.release();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      weights: { type: 'string', default: 'bench/tmp/full' },
      variant: { type: 'string', default: 'both' },
      runs: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '2' },
      ep: { type: 'string', default: 'cuda' },
      precision: { type: 'string' },
      out: { type: 'string', default: 'bench/tmp/dit-forward.json' },
      latent: { type: 'string' }, // HxW latents instead of the bucket's 80x76 (a quick run on the CPU)
    },
  });
  const variants = (values.variant === 'both' ? ['unfused', 'fused'] : values.variant!.split(',')) as Variant[];
  for (const v of variants) if (!(v in VARIANTS)) throw new Error(`--variant ${v}: use both or some of ${Object.keys(VARIANTS).join(', ')}`);
  const ep = values.ep as ExecutionProvider;
  const precision = (values.precision ?? (ep === 'cpu' ? 'float32' : 'bfloat16')) as Precision;
  const [h, w] = values.latent ? values.latent.split('x').map(Number) : [LATENT.h, LATENT.w];
  const o = { ep, precision, warmup: Number(values.warmup), runs: Number(values.runs), latent: { h, w } };
  if (!(o.runs >= 1) || !(o.warmup >= 0)) throw new Error('--runs must be >= 1 and --warmup >= 0');
  const ck = await Checkpoint.open(transformerDir(resolve(values.weights!)));

  const report: Record<string, unknown> = {
    date: new Date().toISOString(), gpu: ep === 'cuda' ? gpuInfo() : null, ep, precision,
    cudaOptions: ep === 'cuda' ? cudaProviderOptions('dit') : null,
    shapes: { latent: o.latent, latentWindowSize: WINDOW, promptTokens: PROMPT_TOKENS },
    warmup: o.warmup, runs: o.runs, variants: [] as unknown[],
  };
  const results = report.variants as Record<string, unknown>[];
  let first: { variant: Variant; output: Float32Array } | null = null;
  let failed = false;
  for (const v of variants) {
    try {
      const { result, output } = await timeVariant(ck, v, o);
      if (first) (result as Record<string, unknown>).relL2VsFirst = { against: first.variant, value: relL2(output, first.output) };
      else first = { variant: v, output };
      failed ||= !result.finite;
      results.push(result);
    } catch (e) {
      failed = true;
      results.push({ variant: v, error: String((e as Error).stack ?? e) });
      console.error(`${v}: ${(e as Error).message}`);
    }
    mkdirSync(dirname(resolve(values.out!)), { recursive: true });
    writeFileSync(values.out!, JSON.stringify(report, null, 2) + '\n'); // what finished survives a later failure
  }
  // which cuDNN, cuBLAS and NVRTC the sessions actually loaded (the library path alone has misled before)
  report.libraries = loadedLibraries(/lib(cudnn|cublas|nvrtc|onnxruntime)[^/]*\.so/);
  writeFileSync(values.out!, JSON.stringify(report, null, 2) + '\n');
  await terminateWorkers();
  console.log(JSON.stringify(report, (k, val) => (k === 'blocksOps' ? undefined : val), 2));
  if (failed) process.exitCode = 1;
}

/** The shared libraries mapped into this process whose path matches `pattern` (Linux; empty elsewhere). */
function loadedLibraries(pattern: RegExp): string[] {
  try {
    const paths = readFileSync('/proc/self/maps', 'utf8').split('\n').flatMap((line) => {
      const path = line.slice(line.indexOf('/'));
      return line.includes('/') && pattern.test(path) ? [path] : [];
    });
    return [...new Set(paths)].sort();
  } catch {
    return [];
  }
}

await main();
