/**
 * One FramePack generation, start image + prompt -> frames: the original's `worker` (demo_gradio.py, which
 * the Cog predictor repeats; demo_gradio_f1.py's in the F1 mode) over networks reached through the
 * FramePackNets interface.
 *
 * Stages: prompt conditioning (LLaMA + CLIP; zeros for the negative when cfg == 1, which is then never
 * evaluated), bucket resize + centre crop, VAE start latent, SigLIP image embeddings (and the same for an
 * end image, resized to the start image's bucket), then the sections: noise -> UniPC over the window -> add
 * to the latent history -> decode the newest slice -> blend into the pixels (when: FramePackNets.decodeOrder).
 * The caller encodes the frames (video.ts).
 *
 * Sampling orders (sections.ts): `inverted` (FramePackI2V_HY) generates the end of the video first and
 * prepends; `f1` (FramePack_F1_I2V_HY, its own transformer) generates forward and appends.
 *
 * End image (inverted only), as diffusers' HunyuanVideoFramepackPipeline does with `last_image` (from
 * FramePack PR #167): in the first section sampled (the end of the video) its latent takes the place of the
 * clean 1x history frame, which is still empty there; the history itself is unchanged, so later sections see
 * only generated latents. Its SigLIP embedding is averaged with the start image's for every section, the
 * average that pipeline computes (it then passes the start embedding alone to its transformer; the average
 * is what PR #167 fed). `end_image_strength` s scales the latent by s (as FramePack-Studio's end frame
 * strength does) and gives the end embedding the weight s/2; s = 0 leaves the end image out.
 *
 * Everything heavy runs in worker threads: ONNX Runtime's behind FramePackNets, the latent history
 * (history-thread.ts) and the video's pixels (video-pixels.ts), which are handed buffers, not copies. What runs
 * here is element-wise work on one latent window per step, and the loop yields between steps, so the event
 * loop stays responsive.
 */
import { float16ToFloat32 } from '../onnx/half.js';
import type { HostTensor } from '../onnx/safetensors.js';
import { appError } from '../errors.js';
import { RESOLUTION, findNearestBucket } from './buckets.js';
import { prepareStartImage, type RgbImage, type SigLipPreprocessor } from './image.js';
import { NormalGenerator } from './noise.js';
import { SamplingProgress, type StepProgress } from './progress.js';
import { distilledGuidance, sampleUniPC, sectionSigmas, type VelocityFn } from './sampler.js';
import {
  FPS, imageTokens, overlapFrames, planSections, totalPixelFrames, type Conditioning,
  type Float32Tensor, type SamplingMode, type SectionPlan,
} from './sections.js';
import { DEFAULT_BLEND_SECTIONS, distinctPrompts, parseTimedPrompt, sectionPrompts, type SectionPrompt } from './timed-prompts.js';
import { HistoryThread } from './history-thread.js';
import type { FrameStream } from './vae-decode.js';
import { pixelFrames } from './vae-tiling.js';
import { VideoPixels } from './video-pixels.js';

export type { SamplingMode } from './sections.js';

/** Prompt conditioning as the transformer takes it (text.ts encodePrompt). */
export interface PromptEmbeddings {
  llamaVec: HostTensor;   // (1, 512, D) float32, zero-padded after the prompt's L tokens
  llamaMask: HostTensor;  // (1, 512) int64, L ones
  clipPooler: HostTensor; // (1, Dc) float32
}

/** Everything the DiT sees in one section besides the noisy latents and the timestep. */
export interface SectionInputs {
  /** which transformer samples: FramePackI2V_HY (inverted) or FramePack_F1_I2V_HY (f1) */
  mode: SamplingMode;
  plan: SectionPlan;
  steps: number;
  positive: PromptEmbeddings;
  negative: PromptEmbeddings | null;  // null when cfg == 1
  imageEmbeddings: HostTensor;        // (1, 729, Ds)
  guidance: number;                   // distilled guidance value (gs x 1000, bf16-rounded in half precision)
  conditioning: Conditioning;         // clean latents: [start, 1x], 2x, 4x
  latentShape: number[];              // (1, C, lws, h8, w8)
  cache: StepCacheKind;
}

export type DecodeOrder = 'inline' | 'after-sampling' | 'beside-sampling';

/** Which calls may re-use the blocks' cached residual: TeaCache (measured), MagCache (calibrated) or none. */
export type StepCacheKind = 'teacache' | 'magcache' | 'off';

/** A transformer prepared for one section (its TeaCache state lives and dies with it). */
export interface SectionModel {
  velocity: VelocityFn;
  /** Frees per-section state (cached residuals). Always called, also after a failure or a cancel. */
  close(): Promise<void>;
  /** Optional one-line summary logged after the section (e.g. TeaCache skips). */
  summary?(): string | undefined;
}

/** The networks, as the pipeline needs them. */
export interface FramePackNets {
  /** Whether the DiT computes in half precision: then x, timestep and guidance are bf16-rounded as on the GPU. */
  readonly halfPrecision: boolean;
  readonly sigLip: SigLipPreprocessor;
  encodePrompt(prompt: string, signal: AbortSignal): Promise<PromptEmbeddings>;
  /** SigLIP last_hidden_state of the preprocessed bucket image. */
  encodeImage(pixelValues: HostTensor, signal: AbortSignal): Promise<HostTensor>;
  /** VAE posterior mean x scaling factor of (1, 3, 1, H, W) pixels in [-1, 1]; `pixels` are handed over (may be transferred). */
  encodeLatent(pixels: HostTensor, signal: AbortSignal): Promise<HostTensor>;
  /**
   * Scaled latents (1, C, T, h, w) -> pixels (1, 3, 4(T-1)+1, 8h, 8w) float32. `stream`: the output's first
   * frames as uint8 video frames as the decode completes them (vae-decode.ts FrameStream; a decode may hand over
   * none).
   */
  decodeLatents(latents: HostTensor, signal: AbortSignal, opts?: { stream?: FrameStream }): Promise<HostTensor>;
  section(inputs: SectionInputs, signal: AbortSignal): Promise<SectionModel>;
  /** Called once the prompt and image conditioning exist: a low-memory placement frees the encoders here. */
  encodingDone?(): Promise<void>;
  /**
   * When a section's latents are decoded (default 'inline'). The frames are the same in every order (a decode
   * reads only its own copy of the latents and sections are blended in order); only when the work happens
   * changes:
   *   inline           each section is decoded before the next is sampled;
   *   after-sampling   every section is sampled first, then samplingDone(), then the decodes, so that a
   *                    low-memory placement frees the DiT before the VAE decodes;
   *   beside-sampling  a section's decode starts and the next section samples meanwhile (the decodes still run
   *                    one at a time, in order), so only the last decode is on the critical path.
   */
  readonly decodeOrder?: DecodeOrder;
  samplingDone?(): Promise<void>;
}

export interface GenerateParams {
  /** a plain prompt, or timestamped prompts (timed-prompts.ts) */
  prompt: string;
  /** timestamped prompts: sections over which a prompt change is blended (0: none); default 4 */
  promptBlendSections?: number;
  negativePrompt: string;
  /** bucket class of the start image (buckets.ts RESOLUTION); default 640, FramePack's own */
  resolution?: number;
  seed: number;
  seconds: number;
  latentWindowSize: number;
  steps: number;
  cfg: number;
  distilledCfg: number;
  cfgRescale: number;
  cache: StepCacheKind;
  /** default 'inverted' */
  samplingMode?: SamplingMode;
  /** the image the video should end on (inverted only) */
  endImage?: RgbImage | null;
  /** 0..1, default 1 */
  endImageStrength?: number;
}

export interface GenerateHooks {
  signal: AbortSignal;
  log(line: string): void;
  progress?(done: number, total: number, label?: string): void;
  /**
   * After every sampling step: where sampling stands and the step's x0 prediction (1, C, lws, h8, w8). The
   * sampler keeps using that buffer: copy it to keep it beyond the call.
   */
  onStep?(progress: StepProgress, denoised: Float32Tensor): void;
  /** After each section's frames are blended in (`section` from 1): the video so far. */
  onSection?(section: number, sections: number, pixels: VideoPixels): void;
  /**
   * The video's first frames as (F, H, W, 3) uint8 buffers, earliest first, as soon as nothing can change them,
   * before generate() returns: in the inverted order, the frames of the last decode that no blend touches, while
   * that decode runs. GenerateResult.streamed counts them; `pixels.chunks(streamed)` gives the rest.
   */
  onFrames?(frames: Uint8Array, size: { width: number; height: number }): void;
  /** Initial noise per section (`noise_<i>`), replacing the seeded generator: reproduces a reference run. */
  noise?: Record<string, HostTensor>;
  /** Filled with the intermediate tensors, named as in the reference fixtures. */
  dump?: Record<string, HostTensor>;
}

export interface GenerateResult {
  /** the caller closes it */
  pixels: VideoPixels;
  width: number;
  height: number;
  fps: number;
  bucket: [number, number];
  sections: number;
  /** frames already handed to GenerateHooks.onFrames (the video's first ones) */
  streamed: number;
}

const f32 = (dims: number[], data: Float32Array): Float32Tensor => ({ dtype: 'float32', dims, data });

function asFloat32(t: HostTensor, what: string): Float32Tensor {
  if (t.dtype !== 'float32') throw new Error(`${what}: expected float32, got ${t.dtype}`);
  return t as Float32Tensor;
}

/** The negative conditioning when cfg == 1: zeros shaped like the positive (the original's zeros_like). */
function zerosLike(p: PromptEmbeddings): PromptEmbeddings {
  return {
    llamaVec: f32(p.llamaVec.dims, new Float32Array(p.llamaVec.data.length)),
    llamaMask: { ...p.llamaMask, data: p.llamaMask.data.slice() } as HostTensor,
    clipPooler: f32(p.clipPooler.dims, new Float32Array(p.clipPooler.data.length)),
  };
}

/** x * s (x itself when s is 1). */
function scaled(x: Float32Tensor, s: number): Float32Tensor {
  return s === 1 ? x : f32(x.dims, x.data.map((v) => Math.fround(v * s)));
}

/**
 * (1 - s/2) start + (s/2) end in float32: at s = 1 exactly the (start + end) / 2 of the reference (halving
 * is exact, so both round the same sum once).
 */
export function mixEmbeddings(start: HostTensor, end: HostTensor, s: number): HostTensor {
  const a = asFloat32(start, 'start image embeddings'), b = asFloat32(end, 'end image embeddings');
  if (a.dims.join() !== b.dims.join()) throw new Error(`image embeddings (${a.dims}) and (${b.dims}) differ in shape`);
  const wa = Math.fround(1 - s / 2), wb = Math.fround(s / 2);
  return f32(a.dims, a.data.map((v, i) => Math.fround(wa * v) + Math.fround(wb * b.data[i])));
}

/** The injected noise of one section (float32 or float16), checked against the window's shape. */
function injectedNoise(noise: Record<string, HostTensor>, index: number, shape: number[]): Float32Array {
  const t = noise[`noise_${index}`];
  if (!t) throw new Error(`noise file has no noise_${index} (keys: ${Object.keys(noise).join(', ')})`);
  if (t.dims.join() !== shape.join()) {
    throw new Error(`noise_${index} has shape (${t.dims.join(', ')}), the section needs (${shape.join(', ')})`);
  }
  if (t.dtype === 'float32') return t.data as Float32Array;
  if (t.dtype === 'float16') return float16ToFloat32(t.data as Uint16Array);
  throw new Error(`noise_${index}: expected float32 or float16 data, got ${t.dtype}`);
}

const seconds = (t0: number) => ((performance.now() - t0) / 1000).toFixed(1);

/** (1 - alpha) a + alpha b in float32, as torch computes it on float32 tensors; `a`'s mask. */
function blendEmbeddings(a: PromptEmbeddings, b: PromptEmbeddings, alpha: number): PromptEmbeddings {
  const wa = Math.fround(1 - alpha), wb = Math.fround(alpha);
  const mix = (x: HostTensor, y: HostTensor): HostTensor => {
    const xd = x.data as Float32Array, yd = y.data as Float32Array;
    const out = new Float32Array(xd.length);
    for (let i = 0; i < out.length; i++) out[i] = Math.fround(wa * xd[i]) + Math.fround(wb * yd[i]);
    return f32(x.dims, out);
  };
  return { llamaVec: mix(a.llamaVec, b.llamaVec), llamaMask: a.llamaMask, clipPooler: mix(a.clipPooler, b.clipPooler) };
}

const short = (s: string) => JSON.stringify(s.length > 40 ? `${s.slice(0, 37)}...` : s);

/**
 * The positive conditioning of every section: one encoding of a plain prompt for all of them, or for
 * timestamped prompts each distinct prompt encoded once and each section given its own (or a blend).
 */
async function encodeSectionPrompts(nets: FramePackNets, p: GenerateParams, plans: SectionPlan[], signal: AbortSignal,
  log: (line: string) => void): Promise<PromptEmbeddings[]> {
  const lws = p.latentWindowSize;
  const forward = p.samplingMode === 'f1';
  const schedule = parseTimedPrompt(p.prompt, { seconds: p.seconds, latentWindowSize: lws, inverted: !forward });
  if (!schedule) {
    const positive = await nets.encodePrompt(p.prompt, signal);
    return plans.map(() => positive);
  }
  // latent frames generated before section k: the inverted sampler has k windows (the start latent joins after
  // the last), F1 the start latent and k windows
  const before = plans.map((plan) => (forward ? 1 : 0) + plan.index * lws);
  const sections = sectionPrompts(schedule, before, p.promptBlendSections ?? DEFAULT_BLEND_SECTIONS);
  const encoded = new Map<string, PromptEmbeddings>();
  for (const prompt of distinctPrompts(sections)) encoded.set(prompt, await nets.encodePrompt(prompt, signal));
  const unused = schedule.filter((t) => !encoded.has(t.prompt)).map((t) => short(t.prompt));
  const what = (s: SectionPrompt) => (s.blend
    ? `${short(s.blend.from)} x ${1 - s.blend.alpha} + ${short(s.blend.to)} x ${s.blend.alpha}` : short(s.prompt));
  log(`timestamped prompt: ${schedule.length} tag(s), ${encoded.size} prompt(s) used; by section ` +
    `(${forward ? 'start' : 'end'} of the video first): ` +
    sections.map((s, k) => `${k + 1}: ${what(s)}`).join(', ') + (unused.length ? `; covering no section: ${unused.join(', ')}` : ''));
  return sections.map((s) => (s.blend
    ? blendEmbeddings(encoded.get(s.blend.from)!, encoded.get(s.blend.to)!, s.blend.alpha) : encoded.get(s.prompt)!));
}

/**
 * Runs a whole generation; returns the assembled pixels (earliest frame first), which live in a worker thread
 * until the caller closes them (a failure closes them here).
 */
export async function generate(nets: FramePackNets, image: RgbImage, p: GenerateParams, hooks: GenerateHooks): Promise<GenerateResult> {
  const pixels = new VideoPixels(overlapFrames(p.latentWindowSize), p.samplingMode === 'f1' ? 'forward' : 'backward');
  try {
    return await generateInto(pixels, nets, image, p, hooks);
  } catch (err) {
    await pixels.close();
    throw err;
  }
}

async function generateInto(pixels: VideoPixels, nets: FramePackNets, image: RgbImage, p: GenerateParams,
  hooks: GenerateHooks): Promise<GenerateResult> {
  const { signal, log } = hooks;
  const dump = hooks.dump;
  const mode = p.samplingMode ?? 'inverted';
  const strength = p.endImageStrength ?? 1;
  if (p.endImage && mode !== 'inverted') throw appError('END_IMAGE_NEEDS_INVERTED', { mode });
  const endImage = p.endImage && strength > 0 ? p.endImage : null;
  if (p.endImage && !endImage) log('end_image_strength is 0: the end image is left out');
  const plans = planSections(p.seconds, p.latentWindowSize, mode);
  const lws = p.latentWindowSize;
  const totalFrames = totalPixelFrames(plans.length, lws);
  const order = mode === 'f1' ? 'forward order, F1 transformer' : `paddings ${plans.map((s) => s.padding).join(', ')}`;
  log(`seed ${p.seed}; ${plans.length} section(s) of ${lws} latent frames (${order}), ${totalFrames} frames at ${FPS} fps`);

  // The bucket, Lanczos resize and SigLIP pixels run in a worker (a large upload is ~0.1 s of JavaScript per
  // megapixel) while the prompt is encoded; a failure there is raised where the image is awaited.
  const resolution = p.resolution ?? RESOLUTION.default;
  const preparing = prepareStartImage(image, nets.sigLip, findNearestBucket(image.height, image.width, resolution));
  preparing.catch(() => {});

  // ---- text
  let t0 = performance.now();
  log('encoding the prompt');
  const positives = await encodeSectionPrompts(nets, p, plans, signal, log);
  const positive = positives[0];
  const negative = p.cfg === 1 ? null : await nets.encodePrompt(p.negativePrompt, signal);
  log(`prompt encoded in ${seconds(t0)} s`);
  if (dump) {
    const n = negative ?? zerosLike(positive);
    Object.assign(dump, {
      llama_vec: positive.llamaVec, llama_attention_mask: positive.llamaMask, clip_l_pooler: positive.clipPooler,
      llama_vec_n: n.llamaVec, clip_l_pooler_n: n.clipPooler,
    });
  }

  // ---- image
  signal.throwIfAborted();
  const { bucket: [H, W], pixelValues, vaeInput } = await preparing;
  log(`input ${image.width}x${image.height} -> bucket ${W}x${H}`);
  if (resolution !== RESOLUTION.default) {
    const [h640, w640] = findNearestBucket(image.height, image.width);
    const tokens = imageTokens(H / 8, W / 8, lws), base = imageTokens(h640 / 8, w640 / 8, lws);
    log(`resolution ${resolution}: ${tokens} image tokens per transformer call, ${(tokens / base).toFixed(2)}x the ${w640}x${h640} ` +
      'bucket of class 640: sampling time and activation memory grow about as much (attention somewhat faster), ' +
      `the VAE's time with the ${((W * H) / (w640 * h640)).toFixed(2)}x pixels`);
  }
  t0 = performance.now();
  log('encoding the start image (VAE)');
  const start = asFloat32(await nets.encodeLatent(vaeInput, signal), 'start latent');
  log(`start latent in ${seconds(t0)} s`);
  t0 = performance.now();
  log('encoding the start image (SigLIP)');
  let imageEmbeddings = await nets.encodeImage(pixelValues, signal);
  log(`image embeddings in ${seconds(t0)} s`);
  if (dump) dump.start_latent = start;
  let endLatent: Float32Tensor | undefined;
  if (endImage) {
    signal.throwIfAborted();
    const end = await prepareStartImage(endImage, nets.sigLip, [H, W]);
    t0 = performance.now();
    log(`encoding the end image (${endImage.width}x${endImage.height} -> ${W}x${H}; strength ${strength})`);
    endLatent = scaled(asFloat32(await nets.encodeLatent(end.vaeInput, signal), 'end latent'), strength);
    imageEmbeddings = mixEmbeddings(imageEmbeddings, await nets.encodeImage(end.pixelValues, signal), strength);
    log(`end image encoded in ${seconds(t0)} s`);
    if (dump) dump.end_latent = endLatent;
  }
  if (dump) dump.image_embeddings = imageEmbeddings;
  await nets.encodingDone?.();

  // ---- sections
  const [, C, , h8, w8] = start.dims;
  const latentShape = [1, C, lws, h8, w8];
  const sigmas = sectionSigmas(p.steps, lws, h8, w8);
  const guidance = distilledGuidance(p.distilledCfg, nets.halfPrecision);
  const generator = new NormalGenerator(p.seed);
  const history = new HistoryThread(mode, start);
  const progress = new SamplingProgress({ sections: plans.length, steps: p.steps, log, progress: hooks.progress });
  type Slice = { section: number; label: string; latents: HostTensor };
  const decodeOrder = nets.decodeOrder ?? 'inline';
  const pending: Slice[] = [];
  const beside = new DecodeQueue();
  let streamed = 0;
  /**
   * The last decode in the inverted order makes the video's first frames: all but its last `overlap` (which
   * blend into the frames after them) are final as they come. Those blend into the video as they come too
   * (`ahead`), and go to the encoder then: less is left to do after the last window.
   */
  const blendingAhead: Promise<void>[] = [];
  const streamOf = (section: number, latents: HostTensor): FrameStream | undefined => {
    const onFrames = hooks.onFrames;
    if (!onFrames || mode !== 'inverted' || section !== plans.length) return undefined;
    const [, , T, h, w] = latents.dims;
    const size = { width: 8 * w, height: 8 * h }, frameBytes = 3 * size.width * size.height;
    const frames = pixelFrames(T) - (pixels.frameCount ? overlapFrames(lws) : 0);
    if (frames <= 0) return undefined;
    const take = (f: Uint8Array) => { streamed += f.length / frameBytes; onFrames(f, size); };
    if (!pixels.frameCount) return { frames, take };
    const ahead = (f: HostTensor, from: number) => {
      const done = pixels.ahead(asFloat32(f, 'decoded pixels'), from, pixelFrames(T)).then((r) => {
        // in order, after the frames before them; a decode repeated in smaller tiles hands some over again.
        // Frames not taken here are read from the pixels after the decode (GenerateResult.streamed).
        if (!r || r.from > streamed) return;
        const skip = (streamed - r.from) * frameBytes;
        if (skip < r.frames.length) take(r.frames.subarray(skip));
      });
      done.catch(() => {}); // observed now, thrown where the decode awaits it
      blendingAhead.push(done);
    };
    return { frames, take, ahead };
  };
  const decode = async ({ section, label, latents }: Slice) => {
    signal.throwIfAborted();
    const t = performance.now();
    const stream = streamOf(section, latents);
    let decoded: Float32Tensor;
    try {
      decoded = asFloat32(await nets.decodeLatents(latents, signal, { stream }), 'decoded pixels');
    } catch (err) {
      await Promise.allSettled(blendingAhead.splice(0)); // none left running or failing unobserved
      throw err;
    }
    // the pixel worker handles them in order, before the add below
    await Promise.all(blendingAhead.splice(0));
    const tBlend = performance.now();
    // the streamed frames are converted already: the rest of the video must not wait for them again
    await pixels.add(decoded, stream?.frames);
    const [vae, blend] = [tBlend - t, performance.now() - tBlend].map((ms) => (ms / 1000).toFixed(2));
    log(`${label} decoded ${latents.dims[2]} latents to ${decoded.dims[2]} frames in ${seconds(t)} s ` +
      `(VAE ${vae} s, into the video ${blend} s); ${pixels.frameCount}/${totalFrames} frames`);
    hooks.onSection?.(section, plans.length, pixels);
  };

  try {
    for (const plan of plans) {
      signal.throwIfAborted();
      beside.throwIfFailed();
      const label = `section ${plan.index + 1}/${plans.length}`;
      const count = latentShape.reduce((a, b) => a * b, 1);
      // The generator advances even when noise is injected, so a partial injection keeps later sections' noise.
      const drawn = await generator.normalYielding(count);
      const noise = hooks.noise ? injectedNoise(hooks.noise, plan.index, latentShape) : drawn;
      if (dump) dump[`noise_${plan.index}`] = f32(latentShape, noise);

      t0 = performance.now();
      progress.startSection(plan.index + 1);
      const conditioning = await history.conditioning(plan.index === 0 ? endLatent : undefined);
      const model = await nets.section({
        mode, plan, steps: p.steps, positive: positives[plan.index], negative, imageEmbeddings, guidance, latentShape, cache: p.cache,
        conditioning,
      }, signal);
      let generated: Float32Array;
      try {
        generated = await sampleUniPC({
          noise, sigmas, velocity: model.velocity, cfg: p.cfg, rescale: p.cfgRescale, halfPrecision: nets.halfPrecision, signal,
          onStep: (i, _n, state) => {
            const at = progress.step(i + 1);
            hooks.onStep?.(at, f32(latentShape, state.x0));
          },
        });
      } finally {
        await model.close();
      }
      const summary = model.summary?.();
      log(`${label} sampled in ${seconds(t0)} s${summary ? ` (${summary})` : ''}`);

      const chunk = await history.push(f32(latentShape, generated), plan, { chunk: !!dump });
      if (dump) dump[`section_${plan.index}_generated_latents`] = chunk!;
      // a copy: later sections do not change it
      const slice: Slice = { section: plan.index + 1, label, latents: await history.decodeSlice(plan, lws) };
      if (decodeOrder === 'after-sampling') pending.push(slice);
      else if (decodeOrder === 'beside-sampling') beside.add(() => decode(slice));
      else await decode(slice);
    }
  } finally {
    // a decode still running when sampling failed or was cancelled must finish before the caller frees its sessions
    await beside.settled();
    await history.close();
  }
  beside.throwIfFailed();
  await nets.samplingDone?.();
  for (const slice of pending) await decode(slice);
  if (pixels.frameCount !== totalFrames) {
    throw new Error(`assembled ${pixels.frameCount} frames, expected ${totalFrames}`);
  }
  return { pixels, width: pixels.width, height: pixels.height, fps: FPS, bucket: [H, W], sections: plans.length, streamed };
}

/** Mean and (population) standard deviation of every frame's uint8 values. */
export function frameStats(frames: Uint8Array, frameBytes: number): { mean: Float32Array; std: Float32Array } {
  const n = frames.length / frameBytes;
  const mean = new Float32Array(n);
  const std = new Float32Array(n);
  for (let f = 0; f < n; f++) {
    let s = 0, ss = 0;
    for (let i = f * frameBytes; i < (f + 1) * frameBytes; i++) { s += frames[i]; ss += frames[i] * frames[i]; }
    const m = s / frameBytes;
    mean[f] = m;
    std[f] = Math.sqrt(Math.max(ss / frameBytes - m * m, 0));
  }
  return { mean, std };
}

/**
 * Decodes that run beside sampling: one at a time, in the order added. A failure is kept (not thrown into
 * the void as an unhandled rejection) and raised by throwIfFailed at the next section or at the end.
 */
class DecodeQueue {
  private tail: Promise<void> = Promise.resolve();
  private error: { cause: unknown } | null = null;

  add(task: () => Promise<void>): void {
    this.tail = this.tail.then(() => (this.error ? undefined : task())).catch((cause: unknown) => { this.error ??= { cause }; });
  }

  /** Resolves once every decode added so far has finished or failed; never rejects. */
  settled(): Promise<void> { return this.tail; }

  throwIfFailed(): void {
    if (this.error) throw this.error.cause;
  }
}
