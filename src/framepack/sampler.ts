/**
 * Sampling of one FramePack section: flow-matching sigmas with the flux time shift, the velocity -> x0
 * wrapper with distilled guidance, real CFG and guidance rescale, and UniPC (variant bh1, order <= 3, with
 * the corrector). Float32 state, host-side TypeScript; the model is reached through a function argument.
 *
 * References (FramePack, lllyasviel): diffusers_helper/pipelines/k_diffusion_hunyuan.py (sample_hunyuan,
 * calculate_flux_mu, get_flux_sigmas_from_mu, flux_time_shift), diffusers_helper/k_diffusion/wrapper.py
 * (fm_wrapper, rescale_noise_cfg), diffusers_helper/k_diffusion/uni_pc_fm.py (FlowMatchUniPC); UniPC:
 * Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models", 2023.
 *
 * Conventions: x_sigma = (1 - sigma) x0 + sigma noise, the model predicts v = noise - x0, so x0 = x - sigma v.
 * The element-wise work per step is a few passes over one latent window (about 1M floats at 640 px), so it
 * stays on the main thread; the loop yields to the event loop between steps and checks the abort signal
 * before every model call.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { linspace } from './sections.js';

// ---------------------------------------------------------------------------------------------------------
// Sigma schedule

/** The flux shift parameter from the noisy-token count, clamped at ln(expMax) (calculate_flux_mu). */
export function fluxMu(seqLen: number, expMax = 7.0): number {
  const x1 = 256, y1 = 0.5, x2 = 4096, y2 = 1.15;
  const k = (y2 - y1) / (x2 - x1);
  const b = y1 - k * x1;
  return Math.min(k * seqLen + b, Math.log(expMax));
}

/** Noisy tokens of a (T, h8, w8) latent window after the 1x2x2 patchify: the length mu is computed from. */
export function noisySeqLen(frames: number, height8: number, width8: number): number {
  return Math.floor((frames * height8 * width8) / 4);
}

/**
 * steps + 1 sigmas from 1 down to 0: t = linspace(1, 0, steps + 1) in float32, shifted by
 * sigma = e^mu / (e^mu + (1/t - 1)). The last one is exactly 0 (1/0 = inf) and is never evaluated.
 */
export function flowSigmas(steps: number, mu: number): Float32Array {
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`steps must be a positive integer, got ${steps}`);
  const out = new Float32Array(steps + 1);
  // float32 throughout, as torch computes the shift on a float32 tensor (scalar / tensor is
  // reciprocal(tensor) * scalar there).
  const em = Math.fround(Math.exp(mu));
  const t = linspace(1, 0, steps + 1);
  for (let i = 0; i <= steps; i++) {
    if (t[i] === 0) continue; // 1/0 = inf -> sigma 0
    const denom = Math.fround(em + Math.fround(Math.fround(1 / t[i]) - 1));
    out[i] = Math.fround(Math.fround(1 / denom) * em);
  }
  return out;
}

/** The schedule of one section's window (T latent frames of h8 x w8). */
export function sectionSigmas(steps: number, frames: number, height8: number, width8: number): Float32Array {
  return flowSigmas(steps, fluxMu(noisySeqLen(frames, height8, width8)));
}

// ---------------------------------------------------------------------------------------------------------
// bfloat16 rounding (the original casts the latents, timestep and guidance to bf16 before the DiT on the GPU)

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds a number to the nearest bfloat16 (ties to even) and returns it as a number. */
export function toBf16(v: number): number {
  f32[0] = v;
  const bits = u32[0];
  if ((bits & 0x7f800000) === 0x7f800000) return f32[0]; // inf / nan unchanged
  u32[0] = ((bits + 0x7fff + ((bits >>> 16) & 1)) & 0xffff0000) >>> 0;
  return f32[0];
}

export function roundBf16(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = toBf16(x[i]);
  return out;
}

/** The distilled-guidance value the DiT receives: gs * 1000 (bf16-rounded in half precision: 10 -> 9984). */
export function distilledGuidance(gs: number, halfPrecision: boolean): number {
  const g = Math.fround(gs * 1000);
  return halfPrecision ? toBf16(g) : g;
}

// ---------------------------------------------------------------------------------------------------------
// Model wrapper: velocity -> x0 with real CFG and rescale (fm_wrapper)

export type Branch = 'positive' | 'negative';

/** Where a model call sits in the section: TeaCache needs the step and the step count. */
export interface ModelCall {
  step: number;   // 0 .. steps-1
  steps: number;
  branch: Branch;
}

/**
 * The DiT as the sampler sees it: velocity for the window latents `x` (1,16,T,h8,w8) at `timestep`
 * (sigma * 1000) under the branch's conditioning. Must not modify `x`.
 */
export type VelocityFn = (x: Float32Array, timestep: number, call: ModelCall) => Promise<Float32Array>;

export interface GuidanceOptions {
  cfg: number;            // real classifier-free guidance; 1 = no negative branch at all
  rescale: number;        // guidance rescale phi (0 = off)
  halfPrecision: boolean; // round x and the timestep to bf16 as the original does on the GPU
}

/** Unbiased standard deviation over all elements (torch.std over the non-batch dims, batch 1). */
function std(a: Float32Array): number {
  let mean = 0;
  for (let i = 0; i < a.length; i++) mean += a[i];
  mean /= a.length;
  let ss = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - mean;
    ss += d * d;
  }
  return Math.sqrt(ss / (a.length - 1));
}

/** v_neg + cfg (v_pos - v_neg), then rescaled towards the positive branch's std by `rescale`. */
export function combineGuidance(vPos: Float32Array, vNeg: Float32Array | null, cfg: number, rescale: number): Float32Array {
  // Without a negative branch v_cfg is v_pos, and the rescale (std ratio 1) leaves it unchanged.
  if (vNeg === null || cfg === 1) return vPos;
  const v = new Float32Array(vPos.length);
  for (let i = 0; i < v.length; i++) v[i] = vNeg[i] + cfg * (vPos[i] - vNeg[i]);
  if (rescale === 0) return v;
  const ratio = Math.fround(std(vPos) / std(v));
  for (let i = 0; i < v.length; i++) {
    v[i] = rescale * Math.fround(v[i] * ratio) + (1 - rescale) * v[i];
  }
  return v;
}

/** M(x, sigma): one (or, with real CFG, two) DiT calls turned into an x0 prediction. */
export async function predictX0(
  velocity: VelocityFn, x: Float32Array, sigma: number, step: number, steps: number, g: GuidanceOptions,
): Promise<Float32Array> {
  const xb = g.halfPrecision ? roundBf16(x) : x;
  const timestep = g.halfPrecision ? toBf16(sigma * 1000) : Math.fround(sigma * 1000);
  const vPos = await velocity(xb, timestep, { step, steps, branch: 'positive' });
  const vNeg = g.cfg === 1 ? null : await velocity(xb, timestep, { step, steps, branch: 'negative' });
  const v = combineGuidance(vPos, vNeg, g.cfg, g.rescale);
  const x0 = new Float32Array(x.length);
  // x0 uses the (possibly bf16-rounded) model input, not the float32 state (trap 9).
  for (let i = 0; i < x0.length; i++) x0[i] = xb[i] - Math.fround(v[i] * sigma);
  return x0;
}

// ---------------------------------------------------------------------------------------------------------
// UniPC bh1 coefficients

export interface UniPCCoefficients {
  h: number;          // lambda(s) - lambda(s0), lambda = -ln sigma
  rks: number[];      // [r_1 .. r_{p-1}, 1]
  b: number[];        // p entries
  rhoP: number[];     // predictor weights of D_1 .. D_{p-1} (empty for p = 1)
  rhoC: number[];     // corrector weights of D_1 .. D_{p-1}, D_t (p entries)
}

/** Solves the small dense system A x = y (Gaussian elimination with partial pivoting). */
function solve(A: number[][], y: number[]): number[] {
  const n = y.length;
  const M = A.map((row, i) => [...row.slice(0, n), y[i]]);
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r][c]) > Math.abs(M[piv][c])) piv = r;
    [M[c], M[piv]] = [M[piv], M[c]];
    for (let r = c + 1; r < n; r++) {
      const f = M[r][c] / M[c][c];
      for (let k = c; k <= n; k++) M[r][k] -= f * M[c][k];
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let acc = M[r][n];
    for (let k = r + 1; k < n; k++) acc -= M[r][k] * x[k];
    x[r] = acc / M[r][r];
  }
  return x;
}

/**
 * Coefficients of one UniPC update of order p from the previous sigmas `ss` (most recent last) to `s`.
 * Computed in float64 from the float32 sigmas.
 */
export function unipcCoefficients(ss: ArrayLike<number>, s: number, p: number): UniPCCoefficients {
  const lambda = (v: number) => -Math.log(v);
  const s0 = ss[ss.length - 1];
  const h = lambda(s) - lambda(s0);
  const rks: number[] = [];
  for (let i = 1; i < p; i++) rks.push((lambda(ss[ss.length - 1 - i]) - lambda(s0)) / h);
  rks.push(1);
  const hh = -h;
  const hPhi1 = Math.expm1(hh);
  const Bh = hh; // bh1
  const R: number[][] = [];
  const b: number[] = [];
  let hPhiK = hPhi1 / hh - 1;
  let fact = 1;
  for (let k = 1; k <= p; k++) {
    R.push(rks.map((r) => r ** (k - 1)));
    b.push((hPhiK * fact) / Bh);
    fact *= k + 1;
    hPhiK = hPhiK / hh - 1 / fact;
  }
  let rhoP: number[] = [];
  if (p === 2) rhoP = [0.5];
  else if (p >= 3) rhoP = solve(R.slice(0, p - 1).map((row) => row.slice(0, p - 1)), b.slice(0, p - 1));
  const rhoC = p === 1 ? [0.5] : solve(R, b);
  return { h, rks, b, rhoP, rhoC };
}

// ---------------------------------------------------------------------------------------------------------
// The sampler

export interface SampleOptions extends GuidanceOptions {
  noise: Float32Array;       // initial latents at sigma = 1, (1,16,T,h8,w8)
  sigmas: Float32Array;      // steps + 1 values (flowSigmas)
  velocity: VelocityFn;
  signal?: AbortSignal;
  /** Called after each step (0-based) with the sampler state x at sigmas[step] and the latest x0 prediction. */
  onStep?: (step: number, steps: number, state: { x: Float32Array; x0: Float32Array }) => void;
}

/**
 * UniPC bh1 over `sigmas` (sample_unipc): one model evaluation (x CFG branches) per step; returns the last x0
 * prediction (the model output at sigmas[steps-1]), which is the window's generated latents.
 */
export async function sampleUniPC(opts: SampleOptions): Promise<Float32Array> {
  const { sigmas, velocity, signal } = opts;
  const steps = sigmas.length - 1;
  const order = Math.min(3, steps - 1);
  const guidance: GuidanceOptions = { cfg: opts.cfg, rescale: opts.rescale, halfPrecision: opts.halfPrecision };
  let x = opts.noise;
  let ms: Float32Array[] = [];
  let ss: number[] = [];

  for (let i = 0; i < steps; i++) {
    signal?.throwIfAborted();
    const s = sigmas[i];
    if (i === 0) {
      ms = [await predictX0(velocity, x, s, i, steps, guidance)];
      ss = [s];
    } else {
      const p = i < order ? i : order;
      const [xNew, mNew] = await unipcUpdate(x, ms, ss, s, p, (xp) => predictX0(velocity, xp, s, i, steps, guidance));
      x = xNew;
      ms.push(mNew);
      ss.push(s);
    }
    // Python's list[-order:] keeps everything when order is 0 (steps = 1).
    if (order > 0) {
      ms = ms.slice(-order);
      ss = ss.slice(-order);
    }
    signal?.throwIfAborted(); // a cancel during the model call ends the section without reporting the step
    opts.onStep?.(i, steps, { x, x0: ms[ms.length - 1] });
    await yieldToLoop();
  }
  return ms[ms.length - 1];
}

/** One predictor-corrector update from ss[-1] to s; `model` evaluates x0 at the predicted point. */
async function unipcUpdate(
  x: Float32Array, ms: Float32Array[], ss: number[], s: number, p: number,
  model: (x: Float32Array) => Promise<Float32Array>,
): Promise<[Float32Array, Float32Array]> {
  const c = unipcCoefficients(ss, s, p);
  const n = x.length;
  const m0 = ms[ms.length - 1];
  const s0 = ss[ss.length - 1];
  const ratio = Math.fround(s / s0);
  const hPhi1 = Math.fround(Math.expm1(-c.h));
  const Bh = Math.fround(-c.h);

  // D_k = (m_{-(k+1)} - m0) / r_k, k = 1 .. p-1
  const Ds: Float32Array[] = [];
  for (let k = 1; k < p; k++) {
    const mk = ms[ms.length - 1 - k];
    const rk = Math.fround(c.rks[k - 1]);
    const D = new Float32Array(n);
    for (let j = 0; j < n; j++) D[j] = (mk[j] - m0[j]) / rk;
    Ds.push(D);
  }

  // DDIM base step, then the predictor's higher-order correction.
  const xBase = new Float32Array(n);
  for (let j = 0; j < n; j++) xBase[j] = Math.fround(ratio * x[j]) - Math.fround(hPhi1 * m0[j]);
  let xPred = xBase;
  if (Ds.length > 0) {
    xPred = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let k = 0; k < Ds.length; k++) acc += c.rhoP[k] * Ds[k][j];
      xPred[j] = xBase[j] - Bh * Math.fround(acc);
    }
  }

  const mNew = await model(xPred);

  // Corrector: uses the new evaluation as D_t = m_new - m0.
  const rhoT = c.rhoC[p - 1];
  const xNew = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    let acc = 0;
    for (let k = 0; k < Ds.length; k++) acc += c.rhoC[k] * Ds[k][j];
    acc += rhoT * (mNew[j] - m0[j]);
    xNew[j] = xBase[j] - Bh * Math.fround(acc);
  }
  return [xNew, mNew];
}
