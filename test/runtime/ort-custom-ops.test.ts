/**
 * Custom operators with JavaScript kernels (src/runtime/ort-custom-ops.ts) on the CPU, in this thread: the
 * struct and its callbacks as ONNX Runtime reads them (types, attributes, outputs, many runs), a kernel's error
 * as the Run's error, release with no leak. Then the DiT's kernels (src/runtime/dit-kernels.ts) in the tiny
 * transformer through the session worker, against the upstream reference forward. (Their CUDA twins run on the
 * GPU machine: scripts/gpu/dit-forward.ts --variant kernels.)
 */
import assert from 'node:assert/strict';
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { AppError } from '../../src/errors.js';
import { Graph } from '../../src/onnx/graph.js';
import { Checkpoint, loadTensors } from '../../src/onnx/safetensors.js';
import { buildDitGraphs } from '../../src/nets/dit.js';
import { PackedTransformer, type DitInputs } from '../../src/framepack/transformer.js';
import { BIAS_CONCAT, BIAS_GELU, DIT_KERNELS_DOMAIN, GATED_RESIDUAL_NORM, LINEAR_GELU, RMS_NORM_ROPE, RMS_NORM_ROPE_JOINT, ditKernels } from '../../src/runtime/dit-kernels.js';
import * as capi from '../../src/runtime/ort-api.js';
import { CustomOpDomain, hostArray, type CustomKernel } from '../../src/runtime/ort-custom-ops.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { opCounts } from '../../src/onnx/graph.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

after(() => terminateWorkers());

const DOMAIN = 'framepack.test';

/** y = Scale(x; alpha) + 1 over float32 [n], Scale a custom operator */
function scaleModel(n: number) {
  const g = new Graph({ name: 'scale', precision: 'float32' });
  const x = g.input('x', 'float32', [n]);
  const y = g.op('Scale', [x], { alpha: 2.5 }, { domain: DOMAIN, dtype: 'float32', shape: [n] })[0];
  g.output(g.add(y, 1), 'y');
  return g.toModel();
}

function scaleKernel(calls: { n: number }, fail = false): CustomKernel {
  return {
    name: 'Scale', provider: 'cpu', inputs: ['float32'], outputs: ['float32'], attributes: { alpha: 1, beta: 7 },
    compute(ctx, { alpha, beta }) {
      calls.n++;
      if (fail) throw new Error('the kernel refuses');
      assert.equal(beta, 7, 'an absent attribute takes its default');
      const x = ctx.input(0);
      const y = ctx.output(0, x.dims);
      const xs = hostArray(x, Float32Array), ys = hostArray(y, Float32Array);
      for (let i = 0; i < xs.length; i++) ys[i] = xs[i] * alpha;
    },
  };
}

/** Runs `model` once per entry of `runs` with a session given `domain`; the outputs. */
function runWith(domain: CustomOpDomain, model: ReturnType<typeof scaleModel>, runs: Float32Array[]): Float32Array[] {
  const opts = capi.SessionOptions.create({ intraOpThreads: 1, logSeverityLevel: 3 });
  const cpu = capi.MemoryInfo.cpu();
  let session: capi.Session | null = null;
  let binding: capi.IoBinding | null = null;
  try {
    domain.addTo(opts);
    session = capi.Session.create(model.bytes, opts);
    binding = capi.IoBinding.create(session);
    binding.bindOutput('y', cpu);
    const outs: Float32Array[] = [];
    for (const data of runs) {
      const x = capi.Tensor.wrap({ dtype: 'float32', dims: [data.length], data }, cpu);
      try {
        binding.bindInput('x', x);
        const [y] = binding.run(null);
        outs.push(y.toHost().data as Float32Array);
        y.release();
      } finally {
        x.release();
      }
    }
    return outs;
  } finally {
    binding?.release();
    session?.release();
    opts.release();
    cpu.release();
  }
}

describe('ort-custom-ops (JavaScript kernels, CPU)', () => {
  test('a custom operator runs inside the graph: its attribute read, its output shaped and written, every run', () => {
    const calls = { n: 0 };
    const domain = CustomOpDomain.create(DOMAIN, [scaleKernel(calls)]);
    try {
      const inputs = [Float32Array.of(1, 2, 3, 4), Float32Array.of(-2, 0, 0.5, 8)];
      const outs = runWith(domain, scaleModel(4), inputs);
      inputs.forEach((x, r) => assert.deepEqual(Array.from(outs[r]), Array.from(x, (v) => v * 2.5 + 1)));
      assert.equal(calls.n, 2);
    } finally {
      domain.release();
    }
  });

  test('a kernel that throws fails its Run with the message, and the next session runs', () => {
    const domain = CustomOpDomain.create(DOMAIN, [scaleKernel({ n: 0 }, true)]);
    try {
      assert.throws(() => runWith(domain, scaleModel(4), [new Float32Array(4)]),
        (e: unknown) => e instanceof AppError && e.code === 'ORT_CALL_FAILED' && /RunWithBinding/.test(e.message) && /the kernel refuses/.test(e.message));
    } finally {
      domain.release();
    }
    const ok = CustomOpDomain.create(DOMAIN, [scaleKernel({ n: 0 })]);
    try {
      assert.deepEqual(Array.from(runWith(ok, scaleModel(2), [Float32Array.of(2, 4)])[0]), [6, 11]);
    } finally {
      ok.release();
    }
  });

  test('a model whose custom domain is not given fails to load; a released domain refuses use', () => {
    const opts = capi.SessionOptions.create({ logSeverityLevel: 4 });
    try {
      assert.throws(() => capi.Session.create(scaleModel(4).bytes, opts), (e: unknown) => e instanceof AppError && e.code === 'ORT_CALL_FAILED');
      const domain = CustomOpDomain.create(DOMAIN, [scaleKernel({ n: 0 })]);
      domain.release();
      domain.release(); // idempotent
      assert.throws(() => domain.addTo(opts), (e: unknown) => e instanceof AppError && e.code === 'ORT_RELEASED');
    } finally {
      opts.release();
    }
  });

  test('no leak over 300 create/run/release cycles', () => {
    const before = capi.liveHandles();
    for (let i = 0; i < 300; i++) {
      const domain = CustomOpDomain.create(DOMAIN, [scaleKernel({ n: 0 })]);
      try {
        runWith(domain, scaleModel(8), [new Float32Array(8).fill(i)]);
      } finally {
        domain.release();
      }
    }
    assert.deepEqual(capi.liveHandles(), before);
  });
});

/** y = LinearGelu(x (2, 3, k), w (n, wk), b (n)) over float32 (x fed flat), w and b constants */
function linearGeluModel(k: number, n: number, wk: number, w: Float32Array, b: Float32Array) {
  const g = new Graph({ name: 'linear-gelu', precision: 'float32' });
  const x = g.reshape(g.input('x', 'float32', [6 * k]), [2, 3, k]);
  const y = g.op(LINEAR_GELU, [x, g.constant(w, [n, wk]), g.constant(b, [n])], {}, { domain: DIT_KERNELS_DOMAIN, dtype: 'float32', shape: [2, 3, n] })[0];
  g.output(y, 'y');
  return g.toModel();
}

describe('DiT kernels (RmsNormRope, RmsNormRopeJoint, BiasConcat, GatedResidualNorm, LinearGelu) on the CPU', () => {
  test('LinearGelu: gelu_tanh(x w^T + b) per row; a weight of another width fails the Run naming the operator and the shapes', () => {
    const [k, n] = [4, 5];
    const w = Float32Array.from({ length: n * k }, (_, i) => Math.sin(i + 1) / 2), b = Float32Array.from({ length: n }, (_, i) => i / 10 - 0.2);
    const x = Float32Array.from({ length: 6 * k }, (_, i) => Math.cos(3 * i) * 2);
    const domain = CustomOpDomain.create(DIT_KERNELS_DOMAIN, ditKernels('cpu'));
    try {
      const [y] = runWith(domain, linearGeluModel(k, n, k, w, b), [x]);
      const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
      for (let r = 0; r < 6; r++) {
        for (let j = 0; j < n; j++) {
          let acc = b[j];
          for (let i = 0; i < k; i++) acc += x[r * k + i] * w[j * k + i];
          assert.ok(Math.abs(y[r * n + j] - gelu(acc)) <= 1e-6 * (1 + Math.abs(gelu(acc))), `row ${r}, column ${j}: ${y[r * n + j]} against ${gelu(acc)}`);
        }
      }
      assert.throws(() => runWith(domain, linearGeluModel(k, n, k + 1, new Float32Array(n * (k + 1)), b), [x]),
        (e: unknown) => e instanceof AppError && e.code === 'ORT_CALL_FAILED' && /LinearGelu: x \[2,3,4\], weight \[5,5\]/.test(e.message));
    } finally {
      domain.release();
    }
  });

  test('the tiny transformer with the kernels (fused graphs) matches the upstream reference forward (float32, 1e-4)', async () => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'transformer.safetensors'));
    const { output: expected, masked_output, masked_encoder_hidden_states, masked_encoder_attention_mask, ...plain } = ref;
    const ck = await Checkpoint.open(join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY'));
    // fused as on the GPU: proj_out split over its columns, with the single blocks' v bias folded into its bias
    const graphs = buildDitGraphs(ck, { precision: 'float32', kernels: true, fuse: true });
    const ops = opCounts(graphs.blocks);
    // q and k of every block: joint (image rotated, text appended) in the dual blocks, over z in the single ones
    assert.equal(ops[`${DIT_KERNELS_DOMAIN}.${RMS_NORM_ROPE_JOINT}`], 2 * (ck.config.num_layers as number));
    assert.equal(ops[`${DIT_KERNELS_DOMAIN}.${RMS_NORM_ROPE}`], 2 * (ck.config.num_single_layers as number));
    const [dual, single] = [ck.config.num_layers as number, ck.config.num_single_layers as number];
    // the FFNs' first linear with its bias and GELU (image and text in the dual blocks): no GEMM + BiasGelu left
    assert.equal(ops[`${DIT_KERNELS_DOMAIN}.${LINEAR_GELU}`], 2 * dual + single);
    assert.equal(ops[`${DIT_KERNELS_DOMAIN}.${BIAS_GELU}`] ?? 0, 0);
    assert.equal(ops[`${DIT_KERNELS_DOMAIN}.${BIAS_CONCAT}`], dual); // the dual blocks' joint v
    // every gated residual but the last dual block's two (resolved into z) and the last single block's (into the head)
    assert.equal(ops[`${DIT_KERNELS_DOMAIN}.${GATED_RESIDUAL_NORM}`], 4 * dual - 2 + single - 1);
    for (const op of ['com.microsoft.RotaryEmbedding', 'com.microsoft.FastGelu', 'RMSNormalization', 'com.microsoft.SkipLayerNormalization']) assert.equal(ops[op] ?? 0, 0, op);
    assert.deepEqual(graphs.blocks.customDomains, [DIT_KERNELS_DOMAIN]);
    // the kernels add the biases of q, k, v and the output projections: those GEMMs broadcast none (the single
    // blocks' v bias joins proj_out's)
    const biased = (fromBinary(ModelProtoSchema, graphs.blocks.bytes).graph?.node ?? []).filter((n) => n.opType === 'Gemm' &&
      /\.(attn\.(to_[qkv]|add_[qkv]_proj|to_out\.0|to_add_out)|ff(_context)?\.net\.2)\/Gemm/.test(n.name) && (n.input[2] ?? '') !== '');
    assert.deepEqual(biased.map((n) => n.name), []);
    const dit = await PackedTransformer.create(graphs, { ep: 'cpu', precision: 'float32' });
    try {
      dit.beginSection({ steps: 2 });
      const out = (await dit.forward(plain as unknown as DitInputs)).output.data as Float32Array;
      const masked = (await dit.forward({ ...plain, encoder_hidden_states: masked_encoder_hidden_states, encoder_attention_mask: masked_encoder_attention_mask } as unknown as DitInputs)).output.data as Float32Array;
      const err = relL2(out, expected.data as Float32Array), errMasked = relL2(masked, masked_output.data as Float32Array);
      console.log(`# kernels vs upstream: relative L2 ${err.toExponential(3)} (masked text ${errMasked.toExponential(3)})`);
      assert.ok(err <= 1e-4 && errMasked <= 1e-4);
    } finally {
      await dit.release();
    }
  });
});
