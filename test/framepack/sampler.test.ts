import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  combineGuidance, distilledGuidance, flowSigmas, fluxMu, noisySeqLen, sampleUniPC, sectionSigmas, toBf16,
  unipcCoefficients, type ModelCall,
} from '../../src/framepack/sampler.js';
import { fixture } from '../fixtures.js';
import { samplerThreadCount } from '../../src/framepack/sampler-threads.js';
import type { AppError } from '../../src/errors.js';

const close = (a: number, b: number, tol: number, what = '') =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tol ${tol})`);

// framepack-spec section 7.2: 25 steps, mu = ln 7.
const SPEC_SIGMAS = [1.0, 0.9940828, 0.9877301, 0.9808918, 0.9735099, 0.9655172, 0.9568346, 0.9473684, 0.9370079,
  0.9256198, 0.9130435, 0.8990826, 0.8834952, 0.8659793, 0.8461539, 0.8235294, 0.7974684, 0.7671233, 0.7313433,
  0.6885245, 0.6363636, 0.5714286, 0.4883721, 0.3783784, 0.2258064, 0];
const SPEC_BF16_T = [1000, 996, 988, 980, 972, 964, 956, 948, 936, 924, 912, 900, 884, 864, 848, 824, 796, 768, 732,
  688, 636, 572, 488, 378, 226];

test('flux mu: linear in the token count, clamped at ln 7 (spec 7.2, 12.2)', () => {
  assert.equal(noisySeqLen(9, 80, 76), 13680);
  assert.equal(fluxMu(13680), Math.log(7));
  close(fluxMu(7600), 1.7431, 1e-4, 'lws 5 at 640x608');
  close(fluxMu(256), 0.5, 1e-12, 'x1');
  close(fluxMu(4096), 1.15, 1e-12, 'x2');
  // The clamp starts at seq_len 8798 (spec trap 28).
  assert.ok(fluxMu(8797) < Math.log(7) && fluxMu(8798) === Math.log(7));
});

test('sigma schedule and bf16 timesteps of the worked example (25 steps at the clamp)', () => {
  const s = sectionSigmas(25, 9, 80, 76);
  assert.equal(s.length, 26);
  SPEC_SIGMAS.forEach((v, i) => close(s[i], v, 1e-6, `sigma ${i}`));
  SPEC_BF16_T.forEach((v, i) => assert.equal(toBf16(s[i] * 1000), v, `bf16 timestep ${i}`));
  assert.equal(s[25], 0);
  // At the clamp the shift is the static 7t / (1 + 6t).
  const t = 0.48;
  close(flowSigmas(25, Math.log(7))[13], (7 * t) / (1 + 6 * t), 1e-6, 'closed form');
});

test('schedules of the fixture cases follow from their window and bucket', () => {
  for (const name of ['teacache_cfg1', 'realcfg_rescale']) {
    const p = JSON.parse(readFileSync(fixture('framepack-tiny', 'cases', name, 'params.json'), 'utf8'));
    const [H, W] = p.bucket as [number, number];
    const lws = p.latent_window_size as number;
    const seq = noisySeqLen(lws, H / 8, W / 8);
    const mu = fluxMu(seq);
    assert.ok(mu < Math.log(7), `${name}: small windows are not clamped`);
    const s = sectionSigmas(p.steps, lws, H / 8, W / 8);
    assert.equal(s.length, p.steps + 1);
    assert.equal(s[0], 1);
    assert.equal(s[p.steps], 0);
    const k = 0.65 / 3840;
    for (let i = 1; i < p.steps; i++) {
      const t = 1 - i / p.steps;
      const e = Math.exp(k * seq + 0.5 - 256 * k);
      close(s[i], e / (e + 1 / t - 1), 2e-7, `${name} sigma ${i}`);
    }
  }
});

test('distilled guidance is gs x 1000, bf16-rounded in half precision (10 -> 9984, 6 -> 6016)', () => {
  assert.equal(distilledGuidance(10, true), 9984);
  assert.equal(distilledGuidance(6, true), 6016);
  assert.equal(distilledGuidance(10, false), 10000);
  assert.equal(distilledGuidance(8, false), 8000);
});

test('UniPC bh1 coefficients match the spec table (7.4)', () => {
  // The table was computed in float64: sigma = 7t / (1 + 6t) on t = i / 25.
  const sigmas = Array.from({ length: 26 }, (_, i) => { const t = 1 - i / 25; return (7 * t) / (1 + 6 * t); });
  const order = 3;
  const table: { i: number; p: number; h: number; r: number[]; b: number[]; rhoP: number[]; rhoC: number[] }[] = [
    { i: 1, p: 1, h: 0.005935, r: [], b: [0.499012], rhoP: [], rhoC: [0.5] },
    { i: 2, p: 2, h: 0.006411, r: [-0.925697], b: [0.498933, 0.3328], rhoP: [0.5], rhoC: [0.086272, 0.412661] },
    { i: 3, p: 3, h: 0.006947, r: [-0.92281, -1.777052], b: [0.498844, 0.332755, 0.249653], rhoP: [1.427262, -0.928417], rhoC: [0.230283, -0.099639, 0.3682] },
    { i: 12, p: 3, h: 0.017489, r: [-0.881043, -1.663251], b: [0.497098, 0.331881, 0.249128], rhoP: [1.481293, -0.984195], rhoC: [0.243005, -0.109598, 0.36369] },
    { i: 24, p: 3, h: 0.516216, r: [-0.494333, -0.798589], b: [0.424013, 0.294401, 0.226256], rhoP: [2.080528, -1.656515], rhoC: [0.377538, -0.241609, 0.288084] },
  ];
  for (const row of table) {
    const p = row.i < order ? row.i : order;
    assert.equal(p, row.p);
    const ss = sigmas.slice(Math.max(0, row.i - p), row.i);
    const c = unipcCoefficients(ss, sigmas[row.i], p);
    close(c.h, row.h, 2e-6, `h at ${row.i}`);
    assert.deepEqual(c.rks.length, p);
    row.r.forEach((v, k) => close(c.rks[k], v, 2e-6, `r${k + 1} at ${row.i}`));
    row.b.forEach((v, k) => close(c.b[k], v, 2e-6, `b${k} at ${row.i}`));
    assert.equal(c.rhoP.length, row.rhoP.length);
    row.rhoP.forEach((v, k) => close(c.rhoP[k], v, 2e-4, `rho_p${k} at ${row.i}`));
    row.rhoC.forEach((v, k) => close(c.rhoC[k], v, 2e-4, `rho_c${k} at ${row.i}`));
  }
});

test('real CFG and rescale: v_neg + cfg (v_pos - v_neg), then blended towards the positive std', () => {
  const vPos = new Float32Array([1, 2, 3, 4]);
  const vNeg = new Float32Array([0, 1, 0, 1]);
  assert.equal(combineGuidance(vPos, null, 1, 0.7), vPos);
  const cfg = combineGuidance(vPos, vNeg, 2, 0);
  assert.deepEqual(Array.from(cfg), [2, 3, 6, 7]);
  const r = combineGuidance(vPos, vNeg, 2, 0.5);
  // std (n-1) of v_pos = 1.2909944, of v_cfg = 2.3804761
  const ratio = 1.2909944 / 2.3804761;
  [2, 3, 6, 7].forEach((v, i) => close(r[i], 0.5 * v * ratio + 0.5 * v, 1e-5, `rescaled ${i}`));
});

/** x0 prediction of a per-element N(0, a^2) data distribution under x = (1 - s) x0 + s z: exact velocity. */
function gaussianVelocity(a: number) {
  return (x: Float32Array, timestep: number) => {
    const s = timestep / 1000;
    const v = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const x0 = ((1 - s) * a * a * x[i]) / ((1 - s) ** 2 * a * a + s * s);
      v[i] = (x[i] - x0) / s;
    }
    return Promise.resolve(v);
  };
}

test('UniPC integrates the probability-flow ODE of a Gaussian at order > 2 and returns the last x0 prediction', async () => {
  // For N(0, a^2) data the flow is x_s = z * sd(s), sd(s) = sqrt((1-s)^2 a^2 + s^2).
  const a = 0.5;
  const sd = (s: number) => Math.sqrt((1 - s) ** 2 * a * a + s * s);
  const worst: number[] = [];
  for (const steps of [40, 80]) {
    const sigmas = flowSigmas(steps, Math.log(7));
    const noise = new Float32Array([-2, -0.3, 0.8, 1.7]);
    let err = 0;
    let lastInput: Float32Array | null = null;
    const velocity = gaussianVelocity(a);
    const out = await sampleUniPC({
      noise, sigmas, cfg: 1, rescale: 0, halfPrecision: false,
      velocity: (x, t) => { lastInput = Float32Array.from(x); return velocity(x, t); },
      onStep: (i, _n, { x }) => {
        if (sigmas[i] < 0.2) return;
        noise.forEach((z, j) => { err = Math.max(err, Math.abs(x[j] - z * sd(sigmas[i]))); });
      },
    });
    worst.push(err);
    // The result is the x0 prediction at the last model input (sigma_{steps-1}, the predictor point).
    const s = sigmas[steps - 1];
    const xin = lastInput!;
    out.forEach((v, j) => close(v, ((1 - s) * a * a * xin[j]) / sd(s) ** 2, 1e-5, `last x0 ${j}`));
  }
  assert.ok(worst[0] < 1e-3 && worst[1] < 1.5e-4, `state errors ${worst}`);
  assert.ok(worst[0] / worst[1] > 4, `halving the step should divide the error by more than 4 (order > 2): ${worst}`);
});

test('model calls: one per step, both branches with real CFG, timesteps sigma x 1000, abort between steps', async () => {
  const sigmas = flowSigmas(4, 1.2);
  const calls: (ModelCall & { t: number })[] = [];
  const velocity = (x: Float32Array, t: number, call: ModelCall) => {
    calls.push({ ...call, t });
    return Promise.resolve(new Float32Array(x.length).fill(call.branch === 'positive' ? 1 : 0));
  };
  const noise = new Float32Array(8).fill(0.5);
  const steps: number[] = [];
  await sampleUniPC({ noise, sigmas, cfg: 3, rescale: 0, halfPrecision: false, velocity, onStep: (i) => steps.push(i) });
  assert.deepEqual(calls.map((c) => `${c.step}${c.branch[0]}`), ['0p', '0n', '1p', '1n', '2p', '2n', '3p', '3n']);
  calls.forEach((c) => { assert.equal(c.t, Math.fround(sigmas[c.step] * 1000)); assert.equal(c.steps, 4); });
  assert.deepEqual(steps, [0, 1, 2, 3]);

  // Half precision rounds the model input and the timestep to bf16.
  const seen: number[] = [];
  await sampleUniPC({
    noise: new Float32Array([1.01]), sigmas: flowSigmas(1, 1), cfg: 1, rescale: 0, halfPrecision: true,
    velocity: (x, t) => { seen.push(x[0], t); return Promise.resolve(new Float32Array(1)); },
  });
  assert.deepEqual(seen, [1.0078125, 1000]);

  // steps = 1: one call at sigma 1, result M(noise, 1) = noise - v.
  const one = await sampleUniPC({ noise: new Float32Array([2]), sigmas: flowSigmas(1, 1), cfg: 1, rescale: 0, halfPrecision: false,
    velocity: () => Promise.resolve(new Float32Array([0.5])) });
  assert.deepEqual(Array.from(one), [1.5]);

  const ac = new AbortController();
  let n = 0;
  await assert.rejects(sampleUniPC({ noise, sigmas, cfg: 1, rescale: 0, halfPrecision: false, signal: ac.signal,
    velocity: (x) => { if (++n === 2) ac.abort(); return Promise.resolve(new Float32Array(x.length)); } }), { name: 'AbortError' });
  assert.equal(n, 2);
});

/**
 * UniPC as FlowMatchUniPC writes it, one float32 tensor per operation (uni_pc_fm.py: model_fn, update_fn and
 * sample): the fused passes of sampleUniPC must give the same bits.
 */
async function unipcByTensors(noise: Float32Array, sigmas: Float32Array, velocity: (x: Float32Array, t: number, call: ModelCall) => Promise<Float32Array>,
  g: { cfg: number; rescale: number; halfPrecision: boolean }): Promise<Float32Array> {
  const map = (n: number, f: (j: number) => number) => { const o = new Float32Array(n); for (let j = 0; j < n; j++) o[j] = f(j); return o; };
  const steps = sigmas.length - 1;
  const order = Math.min(3, steps - 1);
  const model = async (x: Float32Array, s: number, step: number) => {
    const xb = g.halfPrecision ? map(x.length, (j) => toBf16(x[j])) : x;
    const t = g.halfPrecision ? toBf16(s * 1000) : Math.fround(s * 1000);
    const vPos = await velocity(xb, t, { step, steps, branch: 'positive' });
    const vNeg = g.cfg === 1 ? null : await velocity(xb, t, { step, steps, branch: 'negative' });
    const v = combineGuidance(vPos, vNeg, g.cfg, g.rescale);
    return map(x.length, (j) => xb[j] - Math.fround(v[j] * s));
  };
  let x = noise;
  let ms: Float32Array[] = [];
  let ss: number[] = [];
  for (let i = 0; i < steps; i++) {
    const s = sigmas[i];
    if (i === 0) { ms = [await model(x, s, i)]; ss = [s]; } else {
      const p = i < order ? i : order;
      const c = unipcCoefficients(ss, s, p);
      const m0 = ms[ms.length - 1], s0 = ss[ss.length - 1], n = x.length;
      const ratio = Math.fround(s / s0), hPhi1 = Math.fround(Math.expm1(-c.h)), Bh = Math.fround(-c.h);
      const Ds: Float32Array[] = [];
      for (let k = 1; k < p; k++) { const mk = ms[ms.length - 1 - k], rk = Math.fround(c.rks[k - 1]); Ds.push(map(n, (j) => (mk[j] - m0[j]) / rk)); }
      const xt0 = x;
      const xBase = map(n, (j) => Math.fround(ratio * xt0[j]) - Math.fround(hPhi1 * m0[j]));
      const xPred = Ds.length ? map(n, (j) => { let a = 0; Ds.forEach((D, k) => { a += c.rhoP[k] * D[j]; }); return xBase[j] - Bh * Math.fround(a); }) : xBase;
      const mNew = await model(xPred, s, i);
      x = map(n, (j) => { let a = 0; Ds.forEach((D, k) => { a += c.rhoC[k] * D[j]; }); a += c.rhoC[p - 1] * (mNew[j] - m0[j]); return xBase[j] - Bh * Math.fround(a); });
      ms.push(mNew);
      ss.push(s);
    }
    if (order > 0) { ms = ms.slice(-order); ss = ss.slice(-order); }
  }
  return ms[ms.length - 1];
}

test('the fused passes give the bits of one tensor per operation (bf16 input, real CFG with rescale, every order)', async () => {
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  const noise = Float32Array.from({ length: 4096 }, rand);
  const w = Float32Array.from({ length: 4096 }, rand);
  // a velocity that depends on the input, the timestep and the branch, so every term of the update matters
  const velocity = (x: Float32Array, t: number, call: ModelCall) =>
    Promise.resolve(Float32Array.from(x, (v, j) => Math.sin(3 * v + w[j]) * (call.branch === 'positive' ? 1 : 0.7) + (t / 1000) * w[j]));
  // on this thread, and split over three sampler threads (uneven ranges: 4096 = 1366 + 1366 + 1364)
  for (const threads of [0, 3]) {
    for (const g of [{ cfg: 1, rescale: 0, halfPrecision: true }, { cfg: 3, rescale: 0.7, halfPrecision: true }, { cfg: 1, rescale: 0, halfPrecision: false }]) {
      for (const steps of [1, 2, 3, 25]) {
        const sigmas = flowSigmas(steps, Math.log(7));
        const ours = await sampleUniPC({ noise, sigmas, velocity, ...g, threads });
        const ref = await unipcByTensors(noise, sigmas, velocity, g);
        assert.deepEqual(new Uint32Array(ours.buffer, ours.byteOffset, ours.length), new Uint32Array(ref.buffer, ref.byteOffset, ref.length),
          `${threads} threads, cfg ${g.cfg}, bf16 ${g.halfPrecision}, ${steps} steps`);
        assert.ok(!(ours.buffer instanceof SharedArrayBuffer), 'the result can be transferred');
      }
    }
  }
  assert.deepEqual(noise, Float32Array.from({ length: 4096 }, (() => { let s = 7; return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1; })()),
    'the caller\'s noise is left unchanged');
});

test('sampler threads: FRAMEPACK_SAMPLER_THREADS, by default 4 from 8 cores and none below; a bad value is a setting error', () => {
  assert.equal(samplerThreadCount({}, 2), 0);
  assert.equal(samplerThreadCount({}, 7), 0);
  assert.equal(samplerThreadCount({}, 8), 4);
  assert.equal(samplerThreadCount({ FRAMEPACK_SAMPLER_THREADS: '' }, 16), 4);
  assert.equal(samplerThreadCount({ FRAMEPACK_SAMPLER_THREADS: '0' }, 16), 0);
  assert.equal(samplerThreadCount({ FRAMEPACK_SAMPLER_THREADS: ' 6 ' }, 2), 6);
  for (const bad of ['-1', '1.5', 'many', '65']) {
    assert.throws(() => samplerThreadCount({ FRAMEPACK_SAMPLER_THREADS: bad }), (e: AppError) => e.code === 'RUNTIME_SETTING_INVALID', bad);
  }
});
