/**
 * The DiT's attention alone on the CUDA EP: com.microsoft.MultiHeadAttention in bfloat16 at the default
 * request's shape (one joint sequence of image + text tokens, 24 heads of 128), with each attention kernel
 * the provider can be told to use (its `sdpa_kernel` option, a bit mask: 1 flash, 2 memory-efficient,
 * 8 cuDNN flash attention, 16 the unfused math path; unset lets ONNX Runtime choose).
 *
 *   node dist/scripts/gpu/attention.js [--tokens 19544] [--heads 24] [--head-dim 128] [--chain 8]
 *       [--kernels default,1,2,8] [--runs 5] [--out attention.json]
 *
 * Inputs are drawn on the device (RandomNormal), and one graph chains `--chain` attentions (each output is the
 * next query) so that a run is dominated by attention: the time per attention is the difference between the
 * chained graph and a graph with none, divided by the chain's length. TFLOP/s counts 4 * S^2 * heads * dim
 * per attention (QK^T and PV), as PyTorch's benchmarks do. scripts/gpu/attention_torch.py measures PyTorch's
 * scaled_dot_product_attention backends on the same shape for comparison.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Graph, type Value } from '../../src/onnx/graph.js';
import { cudaProviderOptions } from '../../src/runtime/providers.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '19544' }, heads: { type: 'string', default: '24' }, 'head-dim': { type: 'string', default: '128' },
    chain: { type: 'string', default: '8' }, kernels: { type: 'string', default: 'default,1,2,8' }, runs: { type: 'string', default: '5' },
    out: { type: 'string' },
  },
});
const S = Number(values.tokens), H = Number(values.heads), D = Number(values['head-dim']);
const chain = Number(values.chain), runs = Number(values.runs);

function normal(g: Graph, seed: number): Value {
  return g.cast(g.op('RandomNormal', [], { shape: [1, S, H * D], dtype: 1, seed }, { dtype: 'float32', shape: [1, S, H * D] })[0], 'bfloat16');
}

/** `n` chained attentions over device-drawn q, k, v; outputs one float32 scalar so nothing large comes back. */
function build(n: number): ReturnType<Graph['toModel']> {
  const g = new Graph({ name: `attention_x${n}`, precision: 'bfloat16' });
  const scale = g.input('scale', 'float32', [1]); // keeps the graph from being folded at load
  let q = g.mul(normal(g, 1), g.cast(scale, 'bfloat16'));
  const k = normal(g, 2), v = normal(g, 3);
  for (let i = 0; i < n; i++) q = g.attention(q, k, v, { heads: H });
  g.output(g.op('ReduceMean', [g.cast(q, 'float32')], { keepdims: 0 }, { shape: [] })[0], 'mean');
  return g.toModel();
}

async function median(s: Session): Promise<number> {
  const feeds = { scale: { dtype: 'float32' as const, dims: [1], data: new Float32Array([1]) } };
  await s.run(feeds); // warm-up: kernel choice, workspaces
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await s.run(feeds);
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[Math.floor(runs / 2)];
}

async function main(): Promise<void> {
  const flop = 4 * S * S * H * D;
  const results: Record<string, unknown>[] = [];
  for (const kernel of values.kernels!.split(',')) {
    const cuda = { ...cudaProviderOptions('dit'), ...(kernel === 'default' ? {} : { sdpa_kernel: kernel }) };
    const r: Record<string, unknown> = { kernel, tokens: S, heads: H, headDim: D, chain };
    try {
      const times: number[] = [];
      for (const n of [0, chain]) {
        const s = await Session.create(build(n), { ep: 'cuda', cuda, allowCpuFallback: false });
        try { times.push(await median(s)); } finally { await s.release(); }
      }
      const ms = (times[1] - times[0]) / chain;
      Object.assign(r, { baseMs: +times[0].toFixed(2), chainMs: +times[1].toFixed(2), attentionMs: +ms.toFixed(3), tflops: +(flop / (ms / 1000) / 1e12).toFixed(1) });
    } catch (err) {
      r.error = (err as Error).message.split('\n')[0].slice(0, 300);
    }
    console.log(JSON.stringify(r));
    results.push(r);
  }
  if (values.out) writeFileSync(values.out, JSON.stringify(results, null, 1));
  await terminateWorkers();
}

main().catch((err) => { console.error(err); process.exit(1); });
