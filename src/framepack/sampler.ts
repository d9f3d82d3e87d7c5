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
 * The element-wise work per step is two fused passes over one latent window (about 0.9M floats at 640 px,
 * a few milliseconds), so it stays on the main thread; the loop yields to the event loop between steps and
 * checks the abort signal before every model call.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { SamplerThreads, samplerThreadCount, sharedFloat32, sharedFloat64 } from './sampler-threads.js';
import { linspace } from './sections.js';
import { runPass, type Pass } from './unipc-passes.js';

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

/**
 * v_neg + cfg (v_pos - v_neg), then rescaled towards the positive branch's std by `rescale`; written to `out`
 * when given.
 */
export function combineGuidance(
  vPos: Float32Array, vNeg: Float32Array | null, cfg: number, rescale: number, out?: Float32Array,
): Float32Array {
  // Without a negative branch v_cfg is v_pos, and the rescale (std ratio 1) leaves it unchanged.
  if (vNeg === null || cfg === 1) return vPos;
  const v = out ?? new Float32Array(vPos.length);
  for (let i = 0; i < v.length; i++) v[i] = vNeg[i] + cfg * (vPos[i] - vNeg[i]);
  if (rescale === 0) return v;
  const ratio = Math.fround(std(vPos) / std(v));
  for (let i = 0; i < v.length; i++) {
    v[i] = rescale * Math.fround(v[i] * ratio) + (1 - rescale) * v[i];
  }
  return v;
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
//
// The element-wise work between two DiT calls is two fused passes over the window (about 0.9M floats at
// 640 px) into buffers allocated once per section: the predictor pass writes the DDIM base (kept for the
// corrector) and the model input, bf16-rounded in place; the corrector pass turns the velocity into the new
// x0 prediction and corrects the state with it (unipc-passes.ts). Every value is rounded to float32 exactly
// where the reference stores a float32 tensor, so the results equal those of separate tensor operations bit
// for bit. With sampler threads (sampler-threads.ts) each pass is split over them, on shared buffers.

export interface SampleOptions extends GuidanceOptions {
  noise: Float32Array;       // initial latents at sigma = 1, (1,16,T,h8,w8)
  sigmas: Float32Array;      // steps + 1 values (flowSigmas)
  /** Called once per model evaluation; `x` is only valid during the call (its buffer is reused). */
  velocity: VelocityFn;
  signal?: AbortSignal;
  /**
   * Called after each step (0-based) with the sampler state x at sigmas[step] and the latest x0 prediction;
   * both are views of buffers the next step overwrites.
   */
  onStep?: (step: number, steps: number, state: { x: Float32Array; x0: Float32Array }) => void;
  /** threads for the element-wise passes (sampler-threads.ts); default FRAMEPACK_SAMPLER_THREADS */
  threads?: number;
}

/** Rounds every element of `x` to the nearest bfloat16 (ties to even) in place; inf and nan unchanged. */
export function roundBf16InPlace(x: Float32Array): void {
  runPass({ op: 'round', a: x }, 0, x.length);
}

/**
 * Where the passes run: whole on this thread, or split over the sampler's threads on shared buffers
 * (sampler-threads.ts); `f32`/`f64` make the buffers the passes read and write.
 */
interface Passes {
  run(pass: Pass): Promise<void> | void;
  f32(n: number): Float32Array;
  f64(n: number): Float64Array;
  /** whether the passes run on threads, which read only buffers in shared memory */
  shared: boolean;
}

function passesFor(n: number, threads: number): Passes {
  if (threads < 1) {
    return { run: (pass) => runPass(pass, 0, n), f32: (len) => new Float32Array(len), f64: (len) => new Float64Array(len), shared: false };
  }
  const pool = SamplerThreads.get(threads);
  return { run: (pass) => pool.run(pass, n), f32: sharedFloat32, f64: sharedFloat64, shared: true };
}

/**
 * UniPC bh1 over `sigmas` (sample_unipc): one model evaluation (x CFG branches) per step; returns the last x0
 * prediction (the model output at sigmas[steps-1]), which is the window's generated latents.
 */
export async function sampleUniPC(opts: SampleOptions): Promise<Float32Array> {
  const { sigmas, signal } = opts;
  const steps = sigmas.length - 1;
  const order = Math.min(3, steps - 1);
  const n = opts.noise.length;
  const passes = passesFor(n, opts.threads ?? samplerThreadCount());
  const model = new ModelInput(n, opts, passes);
  // x0 predictions, most recent last; `order` of them are kept, plus the one being computed
  const free: Float32Array[] = Array.from({ length: Math.max(order, 1) + 1 }, () => passes.f32(n));
  const ms: Float32Array[] = [];
  const ss: number[] = [];
  // the state starts as a copy of the caller's noise, which is only read
  const state = steps > 1 ? passes.f32(n) : opts.noise;
  if (steps > 1) state.set(opts.noise);
  const partial = passes.f64(order > 1 ? n : 0);

  for (let i = 0; i < steps; i++) {
    signal?.throwIfAborted();
    const s = sigmas[i];
    const m = free.pop()!;
    if (i === 0) {
      model.input.set(opts.noise);
      await model.predictX0(s, i, steps, m);
    } else {
      await unipcStep(state, ms, ss, s, i < order ? i : order, model, i, steps, m, partial);
    }
    ms.push(m);
    ss.push(s);
    // Python's list[-order:] keeps everything when order is 0 (steps = 1).
    while (order > 0 && ms.length > order) {
      free.push(ms.shift()!);
      ss.shift();
    }
    signal?.throwIfAborted(); // a cancel during the model call ends the section without reporting the step
    opts.onStep?.(i, steps, { x: i === 0 ? opts.noise : state, x0: m });
    await yieldToLoop();
  }
  const last = ms[ms.length - 1];
  // the caller may hand the result to another thread (transfer), which a shared buffer cannot be
  return last.buffer instanceof SharedArrayBuffer ? new Float32Array(last) : last;
}

/** The model input buffer and M(x, sigma): one (or, with real CFG, two) DiT calls turned into x0. */
class ModelInput {
  readonly input: Float32Array;
  private readonly guided: Float32Array | null;
  /** the velocity copied where the passes' threads can read it, when the model's buffer is not shared */
  private velocityCopy: Float32Array | null = null;

  constructor(private readonly n: number, private readonly g: GuidanceOptions & { velocity: VelocityFn }, readonly passes: Passes) {
    this.input = passes.f32(n);
    this.guided = g.cfg === 1 ? null : passes.f32(n);
  }

  /** The velocity at `input` (rounded to bf16 here in half precision), guidance combined. */
  async velocity(sigma: number, step: number, steps: number): Promise<Float32Array> {
    const { g, input } = this;
    if (g.halfPrecision) await this.passes.run({ op: 'round', a: input });
    const timestep = g.halfPrecision ? toBf16(sigma * 1000) : Math.fround(sigma * 1000);
    const vPos = await g.velocity(input, timestep, { step, steps, branch: 'positive' });
    const v = this.guided
      ? combineGuidance(vPos, await g.velocity(input, timestep, { step, steps, branch: 'negative' }), g.cfg, g.rescale, this.guided)
      : vPos;
    if (!this.passes.shared || v.buffer instanceof SharedArrayBuffer) return v;
    const copy = (this.velocityCopy ??= this.passes.f32(this.n));
    copy.set(v);
    return copy;
  }

  /** x0 = input - sigma v into `out`; x0 uses the (possibly bf16-rounded) model input, not the state (trap 9). */
  async predictX0(sigma: number, step: number, steps: number, out: Float32Array): Promise<void> {
    const v = await this.velocity(sigma, step, steps);
    await this.passes.run({ op: 'x0', out, xin: this.input, v, sigma });
  }
}

/**
 * One predictor-corrector update from ss[-1] to s of order p: `state` (x) -> the next state in place, the new
 * x0 prediction into `mNew`. `partial` (float64, one per element) carries the corrector's sum over D_1..D_{p-1}
 * from the first pass to the second, so each D_k is computed once.
 */
async function unipcStep(
  state: Float32Array, ms: Float32Array[], ss: number[], s: number, p: number,
  model: ModelInput, step: number, steps: number, mNew: Float32Array, partial: Float64Array,
): Promise<void> {
  const c = unipcCoefficients(ss, s, p);
  const m0 = ms[ms.length - 1];
  const s0 = ss[ss.length - 1];
  const Bh = Math.fround(-c.h);
  const xin = model.input;

  // Predictor: the DDIM base step (kept in `state` for the corrector), then the higher-order correction
  // with D_k = (m_{-(k+1)} - m0) / r_k, k = 1 .. p-1.
  await model.passes.run({
    op: 'predict', p, state, xin, m0, ratio: Math.fround(s / s0), hPhi1: Math.fround(Math.expm1(-c.h)), Bh,
    m1: p > 1 ? ms[ms.length - 2] : null, r1: p > 1 ? Math.fround(c.rks[0]) : 1, pP1: c.rhoP[0] ?? 0, pC1: c.rhoC[0],
    m2: p > 2 ? ms[ms.length - 3] : null, r2: p > 2 ? Math.fround(c.rks[1]) : 1, pP2: p > 2 ? c.rhoP[1] : 0, pC2: p > 2 ? c.rhoC[1] : 0,
    partial: p > 1 ? partial : null,
  });

  const v = await model.velocity(s, step, steps);

  // x0 at the predicted point, and the corrector with D_t = m_new - m0.
  await model.passes.run({ op: 'correct', p, xin, v, mNew, m0, state, partial: p > 1 ? partial : null, s, rhoT: c.rhoC[p - 1], Bh });
}
