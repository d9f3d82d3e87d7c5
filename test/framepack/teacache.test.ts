import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  DEFAULT_TEACACHE_THRESHOLD, TeaCacheBank, TeaCacheState, relativeL1, relativeL1FromSums, rescaleDistance,
} from '../../src/framepack/teacache.js';
import { buildTeaCacheMeasure } from '../../src/nets/dit.js';
import { Session } from '../../src/runtime/session.js';
import { fixture } from '../fixtures.js';

const close = (a: number, b: number, tol: number, what = '') =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tol ${tol})`);

test('rescale polynomial at hand-computed points', () => {
  // f(r) = 733.226126 r^4 - 401.131952 r^3 + 67.5869174 r^2 - 3.149878 r + 0.0961237896
  close(rescaleDistance(0), 0.0961237896, 1e-15, 'f(0)');
  // 733.226126 - 401.131952 + 67.5869174 - 3.149878 + 0.0961237896
  close(rescaleDistance(1), 396.6273371896, 1e-10, 'f(1)');
  // 45.826632875 - 50.141494 + 16.89672935 - 1.574939 + 0.0961237896
  close(rescaleDistance(0.5), 11.1030530146, 1e-10, 'f(0.5)');
  // 0.0733226126 - 0.401131952 + 0.675869174 - 0.3149878 + 0.0961237896
  close(rescaleDistance(0.1), 0.1291958242, 1e-12, 'f(0.1)');
  assert.equal(DEFAULT_TEACACHE_THRESHOLD, 0.15);
});

test('relative L1: mean|cur - prev| / mean|prev|, optionally rounded like bf16 tensors', () => {
  // |1-1| + |2-1| + |3+1| = 5, |1| + |1| + |-1| = 3
  close(relativeL1([1, 2, 3], [1, 1, -1]), 5 / 3, 1e-15, 'float');
  // bf16: mean diff 5/3 -> 1.6640625, mean prev 1 -> 1, quotient 1.6640625
  assert.equal(relativeL1([1, 2, 3], [1, 1, -1], true), 1.6640625);
  assert.throws(() => relativeL1([1, 2], [1]), /2 vs 1/);
});

test('state machine by hand: 6 calls, threshold 0.15', () => {
  const s = new TeaCacheState(6, 0.15);
  s.residual = 'r'; // a residual exists once a call was computed
  const rs = [NaN, 0.1, 0.1, 0.5, 0.1, NaN];
  const seen: Array<[boolean, number | null, number, number]> = [];
  for (const r of rs) {
    const d = s.advance(() => r);
    seen.push([d.compute, d.relL1, d.accumulated, d.cntAfter]);
  }
  const f01 = 0.1291958242;
  const expected: Array<[boolean, number | null, number, number]> = [
    [true, null, 0, 1],            // first call: always computed
    [false, 0.1, f01, 2],          // 0.129 < 0.15: skipped
    [true, 0.1, 0, 3],             // 0.258 >= 0.15: computed, acc reset
    [true, 0.5, 0, 4],             // 11.1 >= 0.15
    [false, 0.1, f01, 5],
    [true, null, 0, 0],            // last call (cnt 5 = steps - 1): computed, counter wraps
  ];
  for (let i = 0; i < rs.length; i++) {
    assert.equal(seen[i][0], expected[i][0], `call ${i} compute`);
    assert.equal(seen[i][1], expected[i][1], `call ${i} relL1`);
    close(seen[i][2], expected[i][2], 1e-9, `call ${i} accumulated`);
    assert.equal(seen[i][3], expected[i][3], `call ${i} cnt`);
  }
});

test('the measure graph sums what relativeL1 sums: the runner\'s device-side distance equals the host\'s', async () => {
  const dim = 16, tokens = 301;
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 4 - 2;
  const cur = Float32Array.from({ length: tokens * dim }, rand);
  const prev = Float32Array.from({ length: tokens * dim }, rand);
  const s = await Session.create(buildTeaCacheMeasure(dim), { ep: 'cpu' });
  try {
    const t = (data: Float32Array) => ({ dtype: 'float32' as const, dims: [1, tokens, dim], data });
    const { sums } = await s.run({ current: t(cur), previous: t(prev) });
    const [absDiff, absPrev] = sums.data as Float32Array;
    for (const bf16 of [false, true]) {
      close(relativeL1FromSums(absDiff, absPrev, cur.length, bf16), relativeL1(cur, prev, bf16), 1e-6, `bf16 ${bf16}`);
    }
  } finally {
    await s.release();
  }
});

test('a call that could skip before any residual was stored computes', () => {
  const s = new TeaCacheState<string>(4, 0.15);
  assert.equal(s.advance(() => 0).compute, true); // the first call computes without measuring
  const d = s.advance(() => 0); // identical input, but the runner recorded no residual: a skip is impossible
  assert.equal(d.relL1, 0);
  assert.equal(d.compute, true);
  s.residual = 'r';
  const e = s.advance(() => 0.05);
  close(e.accumulated, rescaleDistance(0.05), 1e-15, 'acc');
  close(e.accumulated, 0.0620383524, 1e-7, 'acc by hand'); // f(0.05) = 0.0620...
  assert.equal(e.compute, false);
});

test('accumulation matches the original run\'s teacache_trace (teacache_cfg1 case)', () => {
  const params = JSON.parse(readFileSync(fixture('framepack-tiny', 'cases', 'teacache_cfg1', 'params.json'), 'utf8'));
  assert.equal(params.use_teacache, true);
  let calls = 0, skipped = 0;
  for (const section of params.teacache_trace) {
    const s = new TeaCacheState(params.steps, DEFAULT_TEACACHE_THRESHOLD); // reset per section
    s.residual = 'computed';
    for (const [i, call] of section.calls.entries()) {
      const d = s.advance(() => {
        assert.notEqual(call.rel_l1, null, `section ${section.section} call ${i}: we measure where the original did not`);
        return call.rel_l1;
      });
      assert.equal(d.relL1 === null, call.rel_l1 === null, `section ${section.section} call ${i}: measured or forced`);
      close(d.accumulated, call.accumulated, 1e-12, `section ${section.section} call ${i} accumulated`);
      assert.equal(d.cntAfter, call.cnt_after, `section ${section.section} call ${i} cnt`);
      // the trace records the state after the call: a computed call leaves acc at 0
      assert.equal(d.compute, call.accumulated === 0, `section ${section.section} call ${i} decision`);
      calls++;
      if (!d.compute) skipped++;
    }
  }
  assert.equal(calls, params.total_latent_sections * params.steps);
  assert.ok(skipped > 0, 'the trace exercises at least one skip');
});

test('bank: per-branch states are independent; shared mode interleaves like the original', () => {
  const calls = (bank: TeaCacheBank<string>) => {
    const out: string[] = [];
    for (let step = 0; step < 4; step++) {
      for (const branch of ['positive', 'negative']) {
        const st = bank.state(branch);
        const d = st.advance(() => 0); // identical inputs: f(0) = 0.096 per call
        if (d.compute) st.residual = branch;
        out.push(`${branch[0]}${d.compute ? 'C' : 'S'}${d.cntAfter}`);
      }
    }
    return out.join(' ');
  };
  // per branch: calls 0 and 3 computed, 1 skipped (0.096), 2 computed (0.192)
  assert.equal(calls(new TeaCacheBank(4)), 'pC1 nC1 pS2 nS2 pC3 nC3 pC0 nC0');
  // shared: one counter over both branches, wrapping after 4 calls
  assert.equal(calls(new TeaCacheBank(4, { mode: 'shared' })), 'pC1 nS2 pC3 nC0 pC1 nS2 pC3 nC0');
  assert.throws(() => new TeaCacheBank(4, { mode: 'bogus' as 'shared' }), /unknown TeaCache mode/);
});
