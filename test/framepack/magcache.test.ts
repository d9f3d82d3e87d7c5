import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MagCacheState, magRatios, type MagCacheFamily } from '../../src/framepack/magcache.js';
import { stepCacheOf } from '../../src/framepack/inputs.js';

interface Case {
  family: MagCacheFamily; height: number; width: number; steps: number;
  threshold: number; maxConsecutiveSkips: number; retentionRatio: number;
  ratios: number[]; skips: boolean[];
}
// Produced by FramePack-Studio's own MagCache (scripts/references/magcache.py).
const CASES: Case[] = JSON.parse(readFileSync(fileURLToPath(new URL('../../../test/fixtures/magcache/decisions.json', import.meta.url)), 'utf8')).cases;

test('the ratio table chosen for each setting is the one FramePack-Studio chooses (resolution, steps, interpolation)', () => {
  assert.ok(CASES.length >= 10);
  for (const c of CASES) assert.deepEqual(magRatios(c.family, c.height, c.width, c.steps), c.ratios, `${c.family} ${c.height}x${c.width} ${c.steps}`);
});

test('skip decisions equal FramePack-Studio\'s over two sections in a row, for every setting', () => {
  for (const c of CASES) {
    const s = new MagCacheState<string>(c.steps, c.height, c.width, c);
    const skips = c.skips.map(() => {
      const d = s.decide();
      if (d.compute) s.residual = 'r';
      return !d.compute;
    });
    assert.deepEqual(skips, c.skips, `${c.family} ${c.height}x${c.width} ${c.steps} threshold ${c.threshold}`);
  }
});

test('hand-computed: 25 steps at 640 keep the first 6, skip 6 and 7, compute 8 when the error passes 0.1', () => {
  // ratios[6..8] of the Original 640/25 calibration: 1.02344, 1.03906, 1.05469
  const s = new MagCacheState<string>(25, 640, 608);
  s.residual = 'r';
  const d = Array.from({ length: 9 }, () => s.decide());
  assert.deepEqual(d.slice(0, 6).map((x) => x.compute), [true, true, true, true, true, true], 'floor(0.25 * 25) = 6 retained steps');
  assert.equal(d[6].compute, false);
  assert.ok(Math.abs(d[6].accumulatedError - 0.02344) < 1e-12);             // |1 - 1.02344|
  assert.equal(d[7].compute, false);
  assert.ok(Math.abs(d[7].accumulatedError - (0.02344 + (1.02344 * 1.03906 - 1))) < 1e-12);
  assert.equal(d[8].compute, true, '0.0869 + |1 - 1.02344 * 1.03906 * 1.05469| = 0.208 > 0.1');
  assert.equal(d[8].accumulatedError, 0, 'a computed call resets the accumulator');
});

test('a step whose own ratio deviates more than 0.06 always computes; max consecutive skips holds', () => {
  const s = new MagCacheState<string>(25, 640, 608, { threshold: 100, maxConsecutiveSkips: 100, retentionRatio: 0 });
  s.residual = 'r';
  const d = Array.from({ length: 25 }, () => s.decide());
  for (const x of d.slice(1)) assert.equal(x.compute, Math.abs(1 - x.ratio) > 0.06, `step ${x.step} ratio ${x.ratio}`);
  assert.equal(d[0].compute, true, 'step 0 always computes');
  const capped = new MagCacheState<string>(25, 640, 608, { threshold: 100, maxConsecutiveSkips: 1, retentionRatio: 0 });
  capped.residual = 'r';
  const runs = Array.from({ length: 25 }, () => capped.decide().compute).map((c) => (c ? 'C' : 'S')).join('');
  assert.ok(!runs.includes('SS'), runs);
});

test('no residual yet: a would-be skip computes instead', () => {
  const s = new MagCacheState(25, 640, 608, { threshold: 100, maxConsecutiveSkips: 100, retentionRatio: 0 });
  for (let i = 0; i < 25; i++) assert.equal(s.decide().compute, true);
});

test('settings are checked', () => {
  assert.throws(() => new MagCacheState(0, 640, 608), /positive integer/);
  assert.throws(() => new MagCacheState(25, 640, 608, { threshold: -1 }), /threshold/);
  assert.throws(() => new MagCacheState(25, 640, 608, { retentionRatio: 2 }), /retention/);
  assert.throws(() => magRatios('Other' as MagCacheFamily, 640, 608, 25), /no calibration/);
});

test('the cache input: empty follows use_teacache exactly as before; an explicit choice wins', () => {
  assert.equal(stepCacheOf({ cache: null, use_teacache: true }), 'teacache');
  assert.equal(stepCacheOf({ cache: null, use_teacache: false }), 'off');
  assert.equal(stepCacheOf({ cache: 'magcache', use_teacache: true }), 'magcache');
  assert.equal(stepCacheOf({ cache: 'off', use_teacache: true }), 'off');
  assert.equal(stepCacheOf({ cache: 'teacache', use_teacache: false }), 'teacache');
});
