/**
 * Quantized weight files prepared over threads: the same bytes as one thread writes, each file once, and a
 * failure named. The files are a small network's four linears (bf16, 8-bit and 4-bit, one FP8).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Graph } from '../../src/onnx/graph.js';
import { float32ToBFloat16 } from '../../src/onnx/half.js';
import type { QuantJob } from '../../src/onnx/quantize.js';
import { Checkpoint, saveRaw } from '../../src/onnx/safetensors.js';
import { prepareAll, quantizeThreadCount } from '../../src/runtime/quantize-threads.js';
import { bytesOf, rand, tempDir } from '../onnx/helpers.js';

const K = 64;
const rows = [48, 16, 80, 32];
let dir: string;
let cleanup: () => Promise<void>;
let ckpt: Checkpoint;
before(async () => {
  ({ dir, cleanup } = await tempDir());
  await saveRaw(join(dir, 'model.safetensors'), rows.map((n, i) => (
    { key: `l${i}.weight`, dtype: 'BF16' as const, shape: [n, K], bytes: bytesOf(float32ToBFloat16(rand(n * K, 60 + i))) })));
  ckpt = await Checkpoint.open(dir);
});
after(() => cleanup());

function jobs(cacheDir: string, bits: 4 | 8): QuantJob[] {
  const g = new Graph({ name: 'q', precision: 'float32', quantize: { bits, blockSize: 32, cacheDir } });
  const x = g.input('x', 'float32', ['batch', K]);
  rows.forEach((_, i) => g.output(g.linear(x, ckpt, `l${i}`, { bias: false }), `y${i}`));
  return g.toModel().prepare!;
}

for (const bits of [8, 4] as const) {
  test(`${bits}-bit files prepared on 3 threads equal those of the calling thread`, async () => {
    const serial = jobs(join(dir, `serial-${bits}`), bits);
    const threaded = jobs(join(dir, `threads-${bits}`), bits);
    assert.equal(threaded.length, rows.length);
    assert.deepEqual((await prepareAll(serial, 0)).map((p) => p.status), ['written', 'written', 'written', 'written']);
    const done = await prepareAll(threaded, 3);
    assert.deepEqual(done.map((p) => p.file), threaded.map((j) => j.file));
    assert.deepEqual(done.map((p) => p.status), ['written', 'written', 'written', 'written']);
    for (let i = 0; i < rows.length; i++) {
      assert.deepEqual(await readFile(threaded[i].file), await readFile(serial[i].file), `file ${i}`);
    }
    assert.deepEqual((await prepareAll(threaded, 3)).map((p) => p.status), ['cached', 'cached', 'cached', 'cached']);
  });
}

test('a file that cannot be prepared fails the whole set, named', async () => {
  const bad = jobs(join(dir, 'bad'), 8);
  bad[2] = { ...bad[2], source: { ...bad[2].source, file: join(dir, 'missing.safetensors') } };
  await assert.rejects(prepareAll(bad, 2), /quantizing weights: .*missing\.safetensors/);
});

test('threads: one fewer than the cores, at most 8; none on two cores', () => {
  assert.equal(quantizeThreadCount(2), 1);
  assert.equal(quantizeThreadCount(4), 3);
  assert.equal(quantizeThreadCount(16), 8);
});
