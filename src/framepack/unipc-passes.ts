/**
 * The UniPC sampler's element-wise passes (sampler.ts), each over a range [j0, j1) of the window, so that
 * they run either whole on the calling thread or split over the sampler's threads (sampler-threads.ts).
 * Every element is computed by the same expression on either path, so the results are bit for bit the same.
 *
 *   round    a := bf16(a) in place (ties to even; inf and nan unchanged)
 *   x0       out := xin - f32(v sigma)                                   (the first step's x0 prediction)
 *   predict  state := f32(f32(ratio state) - f32(hPhi1 m0)) in place, the DDIM base step; with p > 1 also
 *            the predictor's correction from D_k = (m_k - m0) / r_k into xin, and the corrector's
 *            D_1..D_{p-1} sum into partial
 *   correct  mNew := f32(xin - f32(v s)); state -= Bh f32(partial + rhoT (mNew - m0))
 */

export type Pass =
  | { op: 'round'; a: Float32Array }
  | { op: 'x0'; out: Float32Array; xin: Float32Array; v: Float32Array; sigma: number }
  | {
    op: 'predict'; p: number; state: Float32Array; xin: Float32Array; m0: Float32Array;
    ratio: number; hPhi1: number; Bh: number;
    /** p > 1: D_1's buffer and weights; p > 2: D_2's; `partial` carries the corrector's sum */
    m1: Float32Array | null; r1: number; pP1: number; pC1: number;
    m2: Float32Array | null; r2: number; pP2: number; pC2: number;
    partial: Float64Array | null;
  }
  | {
    op: 'correct'; p: number; xin: Float32Array; v: Float32Array; mNew: Float32Array; m0: Float32Array;
    state: Float32Array; partial: Float64Array | null; s: number; rhoT: number; Bh: number;
  };

export function runPass(pass: Pass, j0: number, j1: number): void {
  switch (pass.op) {
    case 'round': return roundBf16(pass.a, j0, j1);
    case 'x0': return x0(pass, j0, j1);
    case 'predict': return predict(pass, j0, j1);
    case 'correct': return correct(pass, j0, j1);
  }
}

function roundBf16(x: Float32Array, j0: number, j1: number): void {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = j0; i < j1; i++) {
    const bits = u[i];
    if ((bits & 0x7f800000) !== 0x7f800000) u[i] = ((bits + 0x7fff + ((bits >>> 16) & 1)) & 0xffff0000) >>> 0;
  }
}

function x0({ out, xin, v, sigma }: Extract<Pass, { op: 'x0' }>, j0: number, j1: number): void {
  for (let j = j0; j < j1; j++) out[j] = xin[j] - Math.fround(v[j] * sigma);
}

function predict(a: Extract<Pass, { op: 'predict' }>, j0: number, j1: number): void {
  const { p, state, xin, m0, ratio, hPhi1, Bh } = a;
  if (p === 1) {
    for (let j = j0; j < j1; j++) xin[j] = state[j] = Math.fround(ratio * state[j]) - Math.fround(hPhi1 * m0[j]);
    return;
  }
  const { m1, r1, pP1, pC1, r2, pP2, pC2 } = a;
  const m2 = a.m2 ?? m0;
  const partial = a.partial!;
  for (let j = j0; j < j1; j++) {
    const base = Math.fround(Math.fround(ratio * state[j]) - Math.fround(hPhi1 * m0[j]));
    state[j] = base;
    const d1 = Math.fround((m1![j] - m0[j]) / r1);
    // sums start at 0 as the reference's do (0 + -0 is +0)
    let pred = 0 + pP1 * d1;
    let corr = 0 + pC1 * d1;
    if (p > 2) {
      const d2 = Math.fround((m2[j] - m0[j]) / r2);
      pred += pP2 * d2;
      corr += pC2 * d2;
    }
    partial[j] = corr;
    xin[j] = base - Bh * Math.fround(pred);
  }
}

function correct(a: Extract<Pass, { op: 'correct' }>, j0: number, j1: number): void {
  const { p, xin, v, mNew, m0, state, partial, s, rhoT, Bh } = a;
  for (let j = j0; j < j1; j++) {
    const m = Math.fround(xin[j] - Math.fround(v[j] * s));
    mNew[j] = m;
    const acc = (p > 1 ? partial![j] : 0) + rhoT * (m - m0[j]);
    state[j] = state[j] - Bh * Math.fround(acc);
  }
}
