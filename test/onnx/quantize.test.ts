/**
 * Weight-only quantization: the packing against its own definition, and MatMulNBits graphs against float
 * math. Stated tolerances (uniform random weights, block 32): the kernel matches x·dequant(W)^T to 1e-4
 * relative; against the float weights the relative L2 error of the output is below 1% at 8 bits and
 * below 10% at 4 bits.
 */
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Graph, sourceHash } from '../../src/onnx/graph.js';
import { bfloat16ToFloat32, float32ToBFloat16 } from '../../src/onnx/half.js';
import { dequantizeRows, quantizeRows, quantizedLayout, Scratch } from '../../src/onnx/quantize.js';
import type { Checkpoint } from '../../src/onnx/safetensors.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';
import { assertClose, bytesOf, f32, linearCheckpoint, rand, relL2, tempDir } from './helpers.js';
import * as ref from './reference.js';

const N = 16, K = 40; // K is not a multiple of the block: the last block is zero-padded
const W = bfloat16ToFloat32(float32ToBFloat16(rand(N * K, 41)));
const Bias = rand(N, 42);

let dir: string;
let cleanup: () => Promise<void>;
let ckpt: Checkpoint;
before(async () => {
  ({ dir, cleanup } = await tempDir());
  ckpt = await linearCheckpoint(dir, { dtype: 'BF16', shape: [N, K], bytes: bytesOf(float32ToBFloat16(W)) }, Bias);
});
after(async () => {
  await terminateWorkers();
  await cleanup();
});

describe('block quantization', () => {
  for (const bits of [8, 4] as const) {
    test(`${bits}-bit: every weight within half a step of its block's grid, zeros exact`, () => {
      const w = Float32Array.from(W);
      w[3] = 0;
      const q = quantizeRows(w, N, K, bits, 16);
      const L = quantizedLayout(N, K, bits, 16);
      assert.equal(q.B.length, L.bBytes);
      const back = dequantizeRows(q.B, q.scales, q.zps, N, K, bits, 16);
      for (let i = 0; i < w.length; i++) {
        const scale = q.scales[Math.floor(i / K) * L.blocks + Math.floor((i % K) / 16)];
        assert.ok(Math.abs(back[i] - w[i]) <= scale / 2 + 1e-6, `weight ${i}: ${back[i]} vs ${w[i]} (scale ${scale})`);
      }
      assert.equal(back[3], 0);
    });
  }

  test('packing into reused scratch memory gives the fresh-memory result, whatever the memory held', () => {
    for (const bits of [8, 4] as const) {
      const scratch = new Scratch();
      scratch.take('packed', 4096).fill(0xa5);
      const reused = quantizeRows(W, N, K, bits, 16, scratch);
      const fresh = quantizeRows(W, N, K, bits, 16);
      assert.deepEqual(reused.B, fresh.B, `${bits}-bit codes`);
      assert.deepEqual(reused.scales, fresh.scales);
      assert.deepEqual(reused.zps, fresh.zps);
    }
  });

  test('layout rejects block sizes MatMulNBits does not take', () => {
    assert.throws(() => quantizedLayout(4, 32, 4, 24), /power of two >= 16/);
    assert.throws(() => quantizedLayout(4, 32, 4, 8), /power of two >= 16/);
  });

  test('a Hugging Face blob is keyed by its sha256 name', () => {
    assert.equal(sourceHash(`/x/models--a--b/blobs/${'f'.repeat(64)}`), 'f'.repeat(64));
  });
});

describe('MatMulNBits linear', () => {
  const x = rand(3 * K, 43);
  for (const [bits, blockSize, tol] of [[8, 32, 0.01], [4, 32, 0.1], [4, 16, 0.1]] as const) {
    test(`${bits}-bit, block ${blockSize}: exact against dequantized weights, within ${tol} of float math`, async () => {
      const cacheDir = join(dir, `cache-${bits}-${blockSize}`);
      const g = new Graph({ name: 'q', precision: 'float32', quantize: { bits, blockSize, cacheDir } });
      const y = g.linear(g.input('x', 'float32', ['batch', K]), ckpt, 'proj');
      assert.deepEqual(y.shape, ['batch', N]);
      g.output(y, 'y');
      const model = g.toModel();
      assert.equal(model.prepare?.length, 1);
      const s = await Session.create(model, { ep: 'cpu' });
      assert.deepEqual(s.prepared.map((p) => p.status), ['written']);
      const out = (await s.run({ x: f32([3, K], x) })).y.data as Float32Array;
      await s.release();

      // what the kernel should compute: the packed file's weights, read back by our own decoder
      const q = quantizeRows(W, N, K, bits, blockSize);
      const wq = dequantizeRows(q.B, q.scales, q.zps, N, K, bits, blockSize);
      assertClose(out, ref.linear(x, wq, Bias, 3, K, N), 1e-5, 1e-4, 'vs dequantized');
      const err = relL2(out, ref.linear(x, W, Bias, 3, K, N));
      assert.ok(err < tol, `relative L2 vs float weights ${err}`);
      assert.ok(err > 0, 'quantization changed nothing: the float path ran instead');

      // the prepared file is reused, not rewritten
      const file = s.prepared[0].file;
      assert.ok(file.startsWith(join(cacheDir, sourceHash(ckpt.entry('proj.weight').file))));
      const before = (await stat(file)).mtimeMs;
      const again = await Session.create(g.toModel(), { ep: 'cpu' });
      assert.deepEqual(again.prepared.map((p) => p.status), ['cached']);
      assert.equal((await stat(file)).mtimeMs, before);
      assertClose((await again.run({ x: f32([3, K], x) })).y.data as Float32Array, out, 0, 0);
      await again.release();
    });
  }
});
