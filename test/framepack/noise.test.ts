import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NormalGenerator, philox4x32, randomSeed } from '../../src/framepack/noise.js';

const hex = (a: Uint32Array) => Array.from(a, (v) => v.toString(16).padStart(8, '0'));

test('Philox4x32-10 matches the Random123 known-answer vectors', () => {
  assert.deepEqual(hex(philox4x32([0, 0, 0, 0], [0, 0])), ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']);
  assert.deepEqual(
    hex(philox4x32([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])),
    ['408f276d', '41c83b0e', 'a20bc7c6', '6d5451fd'],
  );
  assert.deepEqual(
    hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
    ['d16cfe09', '94fdcceb', '5001e420', '24126ea1'],
  );
});

test('the documented stream layout: first normals of seed 31337 and of a seed above 2^32', () => {
  // Values from an independent float64 implementation of the layout described in noise.ts.
  const expected = [0.16453061403542418, 0.6013243771664403, -0.5528879765965373, -0.9850061112343453,
    0.5688195734644552, -0.6035096299919251, -1.3000891233601632, -1.1336421706880928];
  const got = new NormalGenerator(31337).normal(8);
  got.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6, `value ${i}: ${v} vs ${expected[i]}`));
  const high = new NormalGenerator(2 ** 40 + 5).normal(4);
  [0.9259703384719625, 1.067108592012324, 1.7554758270510191, 0.4833485343875515]
    .forEach((e, i) => assert.ok(Math.abs(high[i] - e) < 1e-6));
});

test('same seed, same stream; draws continue the stream and start on block boundaries', () => {
  const a = new NormalGenerator(7);
  const b = new NormalGenerator(7);
  assert.deepEqual(a.normal(1001), b.normal(1001));
  assert.equal(a.position, 251);
  const next = a.normal(8);
  const fresh = new NormalGenerator(7);
  fresh.normal(1004); // 251 blocks
  assert.deepEqual(next, fresh.normal(8));
  assert.notDeepEqual(new NormalGenerator(8).normal(16), new NormalGenerator(7).normal(16));
});

test('drawing in slices with yields gives the same values and stream position as one draw', async () => {
  const whole = new NormalGenerator(11);
  const sliced = new NormalGenerator(11);
  assert.deepEqual(await sliced.normalYielding(1001, 64), whole.normal(1001));
  assert.equal(sliced.position, whole.position);
  assert.deepEqual(sliced.normal(8), whole.normal(8));
});

test('the values are standard normal', () => {
  const x = new NormalGenerator(123).normal(200_000);
  let mean = 0, m2 = 0, m4 = 0, tail = 0;
  for (const v of x) mean += v;
  mean /= x.length;
  for (const v of x) {
    const d = v - mean;
    m2 += d * d; m4 += d ** 4;
    if (Math.abs(v) > 1.959964) tail++;
  }
  m2 /= x.length; m4 /= x.length;
  assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(m2 - 1) < 0.015, `variance ${m2}`);
  assert.ok(Math.abs(m4 / (m2 * m2) - 3) < 0.06, `kurtosis ${m4 / (m2 * m2)}`);
  assert.ok(Math.abs(tail / x.length - 0.05) < 0.003, `two-sided 5% tail ${tail / x.length}`);
  assert.ok(x.every(Number.isFinite));
});

test('seeds are validated; negative seeds are their 64-bit two\'s complement; random seeds are 32-bit', () => {
  assert.notDeepEqual(new NormalGenerator(-1).normal(4), new NormalGenerator(1).normal(4));
  assert.ok(new NormalGenerator(-1).normal(1000).every(Number.isFinite));
  assert.throws(() => new NormalGenerator(1.5), RangeError);
  assert.throws(() => new NormalGenerator(2 ** 53), RangeError);
  const s = randomSeed();
  assert.ok(Number.isInteger(s) && s >= 0 && s < 2 ** 32);
});
