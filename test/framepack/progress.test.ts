/**
 * Progress lines in tqdm's format (what Replicate draws as a progress bar) and the numbers watchers get.
 * The expected lines were printed by tqdm 4.64.1 itself: `tqdm.format_meter(n, total, elapsed, ascii=True,
 * postfix='section 1/2')`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatInterval, SamplingProgress, tqdmLine } from '../../src/framepack/progress.js';

const TQDM: Array<[number, number, number, string]> = [
  [0, 25, 0, '  0%|          | 0/25 [00:00<?, ?it/s, section 1/2]'],
  [10, 25, 11, ' 40%|####      | 10/25 [00:11<00:16,  1.10s/it, section 1/2]'],
  [1, 3, 0.5, ' 33%|###3      | 1/3 [00:00<00:01,  2.00it/s, section 1/2]'],
  [3, 3, 2.4, '100%|##########| 3/3 [00:02<00:00,  1.25it/s, section 1/2]'],
  [7, 9, 3725.3, ' 78%|#######7  | 7/9 [1:02:05<17:44, 532.19s/it, section 1/2]'],
  [12, 50, 1.234, ' 24%|##4       | 12/50 [00:01<00:03,  9.72it/s, section 1/2]'],
  [1, 3, 1.34, ' 33%|###3      | 1/3 [00:01<00:02,  1.34s/it, section 1/2]'],
];

/** The pattern Replicate's JavaScript client (parseProgressFromLogs) reads a bar with, newest line first. */
const REPLICATE = /^\s*(\d+)%\s*\|.+?\|\s*(\d+)\/(\d+)/;

test('tqdmLine prints what tqdm prints', () => {
  for (const [n, total, elapsed, line] of TQDM) assert.equal(tqdmLine(n, total, elapsed, 'section 1/2'), line);
  assert.equal(tqdmLine(10, 25, 11), ' 40%|####      | 10/25 [00:11<00:16,  1.10s/it]');
  assert.equal(formatInterval(59.9), '00:59');
  assert.equal(formatInterval(3600), '1:00:00');
});

test('every line parses as a progress bar in Replicate\'s client', () => {
  for (const [n, total, elapsed] of TQDM) {
    const m = REPLICATE.exec(tqdmLine(n, total, elapsed, 'section 1/2'));
    assert.ok(m);
    assert.deepEqual([Number(m[2]), Number(m[3])], [n, total]);
    assert.equal(Number(m[1]), Math.round((100 * n) / total));
  }
});

test('SamplingProgress: a bar per section, overall percent and the time the remaining steps take', () => {
  let now = 100;
  const lines: string[] = [];
  const calls: Array<[number, number]> = [];
  const p = new SamplingProgress({
    sections: 2, steps: 4, log: (l) => lines.push(l), progress: (d, t) => calls.push([d, t]), now: () => now,
  });
  const seen = [];
  for (const section of [1, 2]) {
    now += 30; // decoding between sections is not sampling time
    p.startSection(section);
    for (let step = 1; step <= 4; step++) {
      now += section; // 1 s steps in section 1, 2 s steps in section 2
      seen.push(p.step(step));
    }
  }
  assert.deepEqual(calls, [1, 2, 3, 4, 5, 6, 7, 8].map((d) => [d, 8]));
  assert.equal(lines.length, 10);
  assert.equal(lines[0], '  0%|          | 0/4 [00:00<?, ?it/s, section 1/2]');
  assert.equal(lines[4], '100%|##########| 4/4 [00:04<00:00,  1.00it/s, section 1/2]');
  assert.equal(lines[9], '100%|##########| 4/4 [00:08<00:00,  2.00s/it, section 2/2]');
  assert.deepEqual(seen.map((s) => s.percent), [12.5, 25, 37.5, 50, 62.5, 75, 87.5, 100]);
  assert.deepEqual(seen.map((s) => `${s.section}:${s.step}/${s.steps}`), ['1:1/4', '1:2/4', '1:3/4', '1:4/4', '2:1/4', '2:2/4', '2:3/4', '2:4/4']);
  // the mean step time so far times the steps left
  assert.deepEqual(seen.map((s) => s.eta_seconds), [7, 6, 5, 4, 3.6, 2.7, 1.4, 0]);
});
