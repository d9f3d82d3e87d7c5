/**
 * FramePack behind the Predictor seam: `setup()` finds the checkpoints (a `--models` folder or the Hugging
 * Face cache, downloading what is missing) and opens the networks; `predict()` runs one generation
 * (pipeline.ts) and encodes the MP4 (video.ts) into the prediction's temp folder.
 *
 * Options (command line flags / server options):
 *   models   plain folder laid out like the Hub repositories (else FRAMEPACK_MODELS, else the HF cache)
 *   noise    safetensors file with noise_<i> per section: replaces the seeded noise (reproduces a reference)
 *   dump     safetensors file written after the run with the intermediate tensors (fixture names)
 *   deviceId the CUDA device of this instance, when the server runs one per GPU (`devices()` lists them);
 *            it stands for FRAMEPACK_DEVICE_ID, and the placement is chosen for that card
 *
 * FRAMEPACK_F1=first-use|setup: when the F1 transformer (sampling_mode f1) is found (downloaded if missing,
 * 25.7 GB) and its graphs built: at its first request (default; that request pays for it) or during setup.
 * FRAMEPACK_LORA=auto|on|off: whether the DiT graphs have LoRA inputs (`loraSupport`; auto: the CPU, and CUDA
 *   under `high` with 72 GiB free).
 * FRAMEPACK_DIT_FP8=auto|on|off: FP8 linears in the DiT (runtime/fp8-choice.ts; default off).
 * FRAMEPACK_DIT_KERNELS=auto|on|off: the DiT's fused custom kernels (runtime/dit-kernels.ts) on a bfloat16 CUDA
 *   DiT (`ditKernelsChoice`; default auto).
 */
import { join } from 'node:path';
import { appError } from '../errors.js';
import { resolveModels, type ModelDirs } from '../hub/resolve.js';
import { buildSiglipVision } from '../nets/siglip.js';
import { fusedBlocks, type DitGraphs } from '../nets/dit.js';
import type { BuiltModel } from '../onnx/graph.js';
import { Checkpoint, loadTensors, saveTensors, type HostTensor } from '../onnx/safetensors.js';
import type { Predictor, PredictorContext, PredictorOptions, SetupContext } from '../predictor.js';
import { cudaDriverProblem } from '../runtime/cuda-driver.js';
import { cublasLtProblem } from '../runtime/cublas-lt.js';
import { chooseDitFp8 } from '../runtime/fp8-choice.js';
import { gpuPlacements } from '../runtime/gpu-placements.js';
import {
  LORA_GRAPHS_MIN_FREE_MIB, choosePlacement, mapOrtError, samplingPeakGiB, sizeProblem, type Placement,
} from '../runtime/placement.js';
import { Session } from '../runtime/session.js';
import { startSpawner } from '../runtime/spawner.js';
import { findNearestBucket } from './buckets.js';
import { loadImage, loadSigLipPreprocessor, type RgbImage, type SigLipPreprocessor } from './image.js';
import { inputSchema, stepCacheOf, type FramePackInput } from './inputs.js';
import { LiveEvents } from './live.js';
import { randomSeed } from './noise.js';
import {
  generate, type DecodeOrder, type FramePackNets, type GenerateParams, type PromptEmbeddings, type SamplingMode, type SectionInputs,
  type SectionModel, type StepCacheKind,
} from './pipeline.js';
import { combineLoras, fetchLora, type LoraInput } from './lora-files.js';
import { FPS, imageTokens } from './sections.js';
import { provenanceOf } from './provenance.js';
import { encodePrompt, textEncoderLoader, type TextEncoders } from './text.js';
import { buildTransformerGraphs, PackedTransformer, type TransformerOptions } from './transformer.js';
import { Vae, fitGrids, type FrameStream } from './vae-decode.js';
import type { VideoPixels } from './video-pixels.js';
import { FrameQueue, findFfmpeg, writeMp4 } from './video.js';

// ---------------------------------------------------------------------------------------------------------
// The networks behind FramePackNets

const int64Row = (values: number[]): HostTensor =>
  ({ dtype: 'int64', dims: [1, values.length], data: BigInt64Array.from(values, (v) => BigInt(v)) });
const scalar = (v: number): HostTensor => ({ dtype: 'float32', dims: [1], data: Float32Array.of(v) });

const since = (t0: number) => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

/**
 * FRAMEPACK_WARMUP (on | off): one short generation at the end of setup (the warm-up below), so that the
 * first request does not pay the device's first-run costs (arenas growing to a request's shapes, cuBLAS and
 * cuDNN plans). On the H100 in `high` the first request took 65.7 s and the next 62.8 s. Default: on where
 * the DiT stays on a GPU between requests; elsewhere every request creates networks again anyway.
 */
export function warmupWanted(placement: Pick<Placement, 'ep' | 'lifetime'>, env: NodeJS.ProcessEnv = process.env): boolean {
  const v = (env.FRAMEPACK_WARMUP ?? '').trim().toLowerCase();
  if (!v) return placement.ep !== 'cpu' && placement.lifetime.dit === 'resident';
  if (v === 'on' || v === 'off') return v === 'on';
  throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_WARMUP', value: env.FRAMEPACK_WARMUP, allowed: 'on, off' });
}

/**
 * The warm-up: the default request's shapes (the 640 bucket of a 608 x 640 image, latent_window_size 9) for
 * one section of one step, so every network runs once at the sizes most requests use.
 */
export const WARMUP: { params: GenerateParams; width: number; height: number } = {
  params: { prompt: 'warm-up', negativePrompt: '', seed: 0, seconds: 1, latentWindowSize: 9, steps: 1, cfg: 1, distilledCfg: 10, cfgRescale: 0, cache: 'off' },
  width: 608,
  height: 640,
};

/** When the F1 transformer is found and its graphs built (FRAMEPACK_F1). */
export type F1Loading = 'first-use' | 'setup';

export function f1Loading(env: NodeJS.ProcessEnv = process.env): F1Loading {
  const v = (env.FRAMEPACK_F1 ?? '').trim().toLowerCase() || 'first-use';
  if (v === 'first-use' || v === 'setup') return v;
  throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_F1', value: env.FRAMEPACK_F1, allowed: 'first-use, setup' });
}

/**
 * The five networks on the chosen placement, each kept for the lifetime the placement gives it
 * (placement.ts): resident ones from setup on, per-request ones created when a request reaches them and
 * released after, so that per-request encoders and a per-request DiT never exist together. Under `low` a
 * request goes: LLaMA + CLIP (prompt) -> VAE encode -> SigLIP -> encoders released -> DiT created ->
 * sections (sampling, VAE decode) -> DiT released. The VAE encode thus runs before the DiT exists, beside
 * the 8-bit LLaMA (8B parameters) rather than the 8-bit DiT (13B); the VAE's sessions and their arenas are
 * kept whichever the order, so only the large network beside them matters.
 *
 * `request()` scopes one generation and releases the per-request networks when it settles. Callers that run
 * `generate()` on this object directly still get the rule (creating the encoders releases a DiT left from
 * an earlier generation and vice versa), but the DiT then stays until the next encoding or `release()`.
 *
 * Two transformers share the DiT's place: FramePackI2V_HY (inverted sampling) and FramePack_F1_I2V_HY
 * (sampling_mode f1), one at a time, since two 13 B networks do not fit beside each other. The F1 one is
 * found (`f1Dir`, which may download it) and its graphs are built when first needed; creating either
 * releases the other, so alternating modes pays a DiT creation per switch (logged).
 *
 * A request's LoRA weights (`request(..., lora)`, made by `prepareLoras`) are bound to whichever transformer
 * samples, when its first section starts, and unbound when the request ends (a per-request DiT is released).
 */
export class FramePackModels implements FramePackNets {
  readonly halfPrecision: boolean;
  private readonly text: Slot<TextEncoders>;
  private readonly siglip: Slot<Session>;
  private readonly dit: Slot<PackedTransformer>;
  private readonly ditF1: Slot<PackedTransformer>;
  private f1Graphs: Promise<DitGraphs> | null = null;
  /** where per-request creations and releases are logged: the running request's log, else setup's */
  private log: (line: string) => void;
  /** set once setup is done: from then on every creation costs request time and is logged */
  private ready = false;
  /** the LoRA inputs of the running request (null: none), bound to whichever DiT samples */
  private lora: Record<string, HostTensor> | null = null;

  private constructor(
    readonly dirs: ModelDirs,
    readonly placement: Placement,
    readonly sigLip: SigLipPreprocessor,
    private readonly vae: Vae,
    private readonly ditGraphs: DitGraphs,
    private readonly setupLog: (line: string) => void,
    private readonly f1Dir: (log: (line: string) => void) => Promise<string>,
    /** the DiT's options (FP8, kernels, LoRA inputs), chosen once at setup for every DiT of this placement */
    private readonly ditOpts: TransformerOptions,
  ) {
    this.halfPrecision = placement.precision.dit !== 'float32';
    this.log = setupLog;
    const p = placement;
    const encoders = { ep: p.ep, deviceId: p.deviceId, precision: p.precision.encoders };
    // graphs (and tokenizers) are built once: placements that release the encoders recreate only the sessions
    this.text = new Slot(this.timed('text encoders', 'encoders', textEncoderLoader(dirs, {
      ...encoders, quantize: p.quantize.llama ? { bits: p.quantize.llama } : undefined,
    })));
    let siglipGraph: BuiltModel | null = null;
    this.siglip = new Slot(this.timed('SigLIP', 'encoders', async () => {
      siglipGraph ??= buildSiglipVision(await Checkpoint.open(dirs.imageEncoder), encoders);
      return Session.create(siglipGraph, { ep: p.ep, deviceId: p.deviceId });
    }));
    this.dit = new Slot(this.timed('DiT', 'dit', () => PackedTransformer.create(ditGraphs, ditOpts)));
    this.ditF1 = new Slot(this.timed('F1 DiT', 'dit', async () => PackedTransformer.create(await this.f1TransformerGraphs(), ditOpts)));
  }

  /** The F1 transformer's graphs, built once (its folder found, or downloaded, first). */
  private f1TransformerGraphs(): Promise<DitGraphs> {
    if (!this.f1Graphs) {
      const made = (async () => {
        const t0 = performance.now();
        const dir = await this.f1Dir(this.log);
        const t1 = performance.now();
        const graphs = await buildTransformerGraphs(dir, this.ditOpts);
        this.log(`F1 transformer found in ${since(t0)} and its graphs built in ${since(t1)} (${dir})`);
        return graphs;
      })();
      this.f1Graphs = made;
      made.catch(() => { if (this.f1Graphs === made) this.f1Graphs = null; }); // a failed download is tried again next time
    }
    return this.f1Graphs;
  }

  /**
   * Builds the graphs and creates every network once, so that a broken checkpoint, a missing provider or a
   * quantized-weight cache that cannot be written fails setup, not the first request. Per-request networks
   * are released again right away (the encoders before the DiT is created): one extra creation of each at
   * setup, and the quantized weights are prepared before the first request.
   */
  static async open(dirs: ModelDirs, placement: Placement, log: (line: string) => void,
    opts: { f1Dir?: (log: (line: string) => void) => Promise<string>; f1?: F1Loading } = {}): Promise<FramePackModels> {
    const { ep, deviceId } = placement;
    const t0 = performance.now();
    const sigLip = loadSigLipPreprocessor(dirs.featureExtractor);
    const fp8 = await chooseDitFp8(placement);
    log(fp8.line);
    const kernels = ditKernelsChoice(placement);
    log(kernels.line);
    const ditOpts = ditOptions(placement, { fp8: fp8.enabled, kernels: kernels.enabled });
    const ditGraphs = await buildTransformerGraphs(dirs.transformer, ditOpts);
    // told through the models' current log: the request's while one runs
    const tell = { log };
    const vae = await Vae.load(dirs.vae, {
      ep, deviceId, precision: placement.precision.vae, spatialTiling: placement.vaeTiling, tiles: placement.vaeTiles, grids: fitGrids(placement.vaeGrid),
      onTiles: (line) => tell.log(line),
      // a decode beside sampling runs at the same time as the DiT, not between its calls
      ...(placement.decodeBesideSampling ? { worker: 'vae' } : {}),
    });
    const f1Dir = opts.f1Dir ?? (async () => {
      if (!dirs.transformerF1) throw appError('MODELS_MISSING', { detail: 'transformerF1: not resolved', hint: 'sampling_mode f1 needs lllyasviel/FramePack_F1_I2V_HY_20250503.' });
      return dirs.transformerF1;
    });
    const models = new FramePackModels(dirs, placement, sigLip, vae, ditGraphs, log, f1Dir, ditOpts);
    tell.log = (line) => models.log(line);
    try {
      await models.textEncoders();
      await models.imageEncoder();
      if (opts.f1 === 'setup') await models.transformer('f1'); // found, built and created once; released below
      await models.transformer('inverted');   // releases per-request encoders (and the F1 DiT) first
      await models.endRequest();
    } catch (err) {
      await models.release();
      throw err;
    }
    const { encoders, dit, vae: vaeLifetime } = placement.lifetime;
    const perRequest = [encoders === 'per-request' ? 'encoders' : '', dit === 'per-request' ? 'DiT' : '', vaeLifetime === 'per-request' ? 'VAE' : '']
      .filter(Boolean);
    log(`networks ready in ${since(t0)} (${placement.policy}: ${placement.ep}, ` +
      `DiT ${placement.precision.dit}${fusedBlocks({ precision: placement.precision.dit }) ? ' with fused blocks' : ''}` +
      `${ditGraphs.lora ? ' and LoRA inputs' : ' without LoRA inputs (FRAMEPACK_LORA)'}, ` +
      `encoders ${placement.precision.encoders}, VAE ${placement.precision.vae}` +
      `${perRequest.length ? `; ${perRequest.join(', ')} created again for each request` : ''}` +
      `; F1 transformer ${opts.f1 === 'setup' ? 'prepared' : 'loaded when first asked for'})`);
    models.ready = true;
    return models;
  }

  /**
   * Runs one generation against these networks and releases the per-request ones when it settles, whether
   * it succeeds, fails or is cancelled. Their creations and releases are logged to `log` meanwhile.
   */
  async request<T>(log: (line: string) => void, run: (nets: FramePackNets) => Promise<T>,
    lora: Record<string, HostTensor> | null = null): Promise<T> {
    this.log = log;
    this.lora = lora;
    try {
      return await run(this);
    } finally {
      try {
        this.lora = null;
        await this.endRequest();
        await this.unbindLora();
      } catch (err) {
        // a failed release must not hide the request's own outcome; the session is dropped either way
        log(`releasing the per-request networks failed: ${(err as Error).message}`);
      } finally {
        this.log = this.setupLog;
      }
    }
  }

  /**
   * Runs the warm-up generation (or `warmup`'s) and drops its frames; returns its seconds and frame count.
   * Its own log lines are not kept: setup logs one line for it.
   */
  async warmUp(signal: AbortSignal, warmup = WARMUP): Promise<{ seconds: number; frames: number }> {
    const image: RgbImage = { width: warmup.width, height: warmup.height, data: new Uint8Array(warmup.width * warmup.height * 3).fill(128) };
    const t0 = performance.now();
    const quiet = () => {};
    const { pixels } = await this.request(quiet, (nets) => generate(nets, image, warmup.params, { signal, log: quiet }));
    const frames = pixels.frameCount;
    await pixels.close();
    return { seconds: (performance.now() - t0) / 1000, frames };
  }

  /** Releases the per-request networks (`request()` does this itself). */
  async endRequest(): Promise<void> {
    if (this.placement.lifetime.encoders === 'per-request') await this.releaseEncoders();
    if (this.placement.lifetime.dit === 'per-request') await this.releaseDit();
    if (this.placement.lifetime.vae === 'per-request') await this.releaseVae();
  }

  /**
   * Refuses, before any work, a video whose estimated sampling memory is above what this placement's device
   * had free (SIZE_DOES_NOT_FIT), and logs what the size costs: image tokens per transformer call, that
   * estimate, and whether the VAE must decode in spatial tiles.
   */
  admit(bucket: [number, number], lws: number, log: (line: string) => void): void {
    const [H, W] = bucket;
    const tokens = imageTokens(H / 8, W / 8, lws);
    const problem = sizeProblem(this.placement, tokens);
    if (problem) throw appError('SIZE_DOES_NOT_FIT', { width: W, height: H, lws, tokens, detail: problem });
    const peak = samplingPeakGiB(this.placement, tokens);
    if (peak !== null) {
      log(`${W}x${H}, latent_window_size ${lws}: ${tokens} image tokens per transformer call, sampling memory estimated at ` +
        `${peak.toFixed(1)} GiB (${this.placement.policy})`);
    }
    if (!this.placement.vaeTiling && this.vae.decodesInTiles(H / 8, W / 8)) {
      log(`the VAE decodes ${W}x${H} in spatial tiles (slower): an untiled window would pass ONNX Runtime's 2^31-element ` +
        'limit on the GPU');
    }
  }

  /** Which of the encoders and a DiT (either) exist now, or are being created (the VAE's sessions: `Vae.active`). */
  created(): { textEncoders: boolean; imageEncoder: boolean; dit: boolean } {
    return { textEncoders: this.text.exists, imageEncoder: this.siglip.exists, dit: this.dit.exists || this.ditF1.exists };
  }

  // A per-request network first releases the per-request networks of the other kind: never both on the device.

  private async textEncoders(): Promise<TextEncoders> {
    if (!this.text.exists && this.placement.lifetime.dit === 'per-request') await this.releaseDit();
    return this.text.get();
  }

  private async imageEncoder(): Promise<Session> {
    if (!this.siglip.exists && this.placement.lifetime.dit === 'per-request') await this.releaseDit();
    return this.siglip.get();
  }

  /**
   * The DiT of `mode`, with the request's LoRA bound to it (or none); the other one is released first (one
   * transformer at a time).
   */
  private async transformer(mode: SamplingMode): Promise<PackedTransformer> {
    const [wanted, other] = mode === 'f1' ? [this.ditF1, this.dit] : [this.dit, this.ditF1];
    if (!wanted.exists) {
      if (this.placement.lifetime.encoders === 'per-request') await this.releaseEncoders();
      if (await other.release()) this.log(`${mode === 'f1' ? 'DiT' : 'F1 DiT'} released for the ${mode === 'f1' ? 'F1' : 'inverted'} transformer`);
    }
    const dit = await wanted.get();
    const t0 = performance.now();
    if (await dit.setLora(this.lora) && this.lora) this.log(`LoRA weights bound to the ${mode === 'f1' ? 'F1 ' : ''}DiT in ${since(t0)}`);
    return dit;
  }

  /** Unbinds the finished request's LoRA from a DiT that stays (its weights' device copies are freed). */
  private async unbindLora(): Promise<void> {
    for (const slot of [this.dit, this.ditF1]) if (slot.exists) await (await slot.get()).setLora(null);
  }

  /**
   * The `loras` of a request as the DiT's LoRA inputs: each file fetched (or found in the cache), read and
   * combined off the main thread. Null for none. A file whose keys this loader cannot map fails the
   * request, naming the first such key.
   */
  async prepareLoras(loras: LoraInput[], ctx: Pick<PredictorContext, 'download' | 'log'>): Promise<Record<string, HostTensor> | null> {
    if (loras.length === 0) return null;
    if (!this.ditGraphs.lora) throw appError('LORA_NOT_ENABLED', {
      placement: `the ${this.placement.policy} placement`, minFreeGiB: LORA_GRAPHS_MIN_FREE_MIB / 1024,
    });
    const t0 = performance.now();
    const files = [];
    for (const [i, l] of loras.entries()) files.push({ path: await fetchLora(l.url, i, ctx), name: l.url, weight: l.scale });
    const { feeds, lines } = await combineLoras({ files, config: this.ditGraphs.config });
    for (const line of lines) ctx.log(`LoRA ${line}`);
    ctx.log(`LoRAs ready in ${since(t0)}`);
    return feeds;
  }

  /**
   * `make`, logging its time when that time is paid by a request: per-request networks, and anything created
   * after setup (a DiT swapped in for the other sampling mode).
   */
  private timed<T>(name: string, kind: keyof Placement['lifetime'], make: () => Promise<T>): () => Promise<T> {
    return async () => {
      const t0 = performance.now();
      const made = await make();
      if (this.ready || this.placement.lifetime[kind] === 'per-request') this.log(`${name} created in ${since(t0)}`);
      return made;
    };
  }

  private async releaseEncoders(): Promise<void> {
    const released = await Promise.all([this.text.release(), this.siglip.release()]);
    if (released.some(Boolean) && this.placement.lifetime.encoders === 'per-request') this.log('encoders released');
  }

  private async releaseVae(): Promise<void> {
    if (!this.vae.active) return;
    await this.vae.release();
    this.log('VAE released');
  }

  private async releaseDit(): Promise<void> {
    const released = await Promise.all([this.dit.release(), this.ditF1.release()]);
    if (released.some(Boolean) && this.placement.lifetime.dit === 'per-request') this.log('DiT released');
  }

  async encodePrompt(prompt: string, signal: AbortSignal): Promise<PromptEmbeddings> {
    return encodePrompt(await this.textEncoders(), prompt, signal);
  }

  async encodeImage(pixelValues: HostTensor, signal: AbortSignal): Promise<HostTensor> {
    const out = await (await this.imageEncoder()).run({ pixel_values: pixelValues }, { signal });
    return out.last_hidden_state;
  }

  encodeLatent(pixels: HostTensor, signal: AbortSignal): Promise<HostTensor> {
    return this.vae.encodeLatent(pixels, { signal, consume: true });
  }

  decodeLatents(latents: HostTensor, signal: AbortSignal, opts: { stream?: FrameStream } = {}): Promise<HostTensor> {
    return this.vae.decodeLatents(latents, { signal, stream: opts.stream });
  }

  /** Frees the encoders when they are per-request (called once the conditioning exists). */
  async encodingDone(): Promise<void> {
    if (this.placement.lifetime.encoders === 'per-request') await this.releaseEncoders();
    if (this.placement.lifetime.vae === 'per-request') await this.releaseVae();
  }

  /**
   * A per-request DiT is freed before the VAE decodes, which then has the device to itself; with room for
   * both, a section decodes while the next samples.
   */
  get decodeOrder(): DecodeOrder {
    if (this.placement.lifetime.dit === 'per-request') return 'after-sampling';
    return this.placement.decodeBesideSampling ? 'beside-sampling' : 'inline';
  }

  async samplingDone(): Promise<void> {
    if (this.placement.lifetime.dit === 'per-request') await this.releaseDit();
  }

  async section(s: SectionInputs, signal: AbortSignal): Promise<SectionModel> {
    signal.throwIfAborted();
    const dit = await this.transformer(s.mode);
    const [, , , h8, w8] = s.latentShape;
    dit.beginSection({
      steps: s.steps,
      teacache: { enabled: s.cache === 'teacache' },
      magcache: { enabled: s.cache === 'magcache', height: h8 * 8, width: w8 * 8, family: s.mode === 'f1' ? 'F1' : 'Original' },
      handOver: true, // the pipeline's conditioning is made for this section alone
    });
    const fixed = {
      image_embeddings: s.imageEmbeddings,
      latent_indices: int64Row(s.plan.latentIndices),
      clean_latents: s.conditioning.cleanLatents,
      clean_latent_indices: int64Row(s.plan.cleanLatentIndices),
      clean_latents_2x: s.conditioning.cleanLatents2x,
      clean_latent_2x_indices: int64Row(s.plan.clean2xIndices),
      clean_latents_4x: s.conditioning.cleanLatents4x,
      clean_latent_4x_indices: int64Row(s.plan.clean4xIndices),
      guidance: scalar(s.guidance),
    };
    let computed = 0, skipped = 0;
    const busy0 = dit.sessionSeconds;
    return {
      velocity: async (x, timestep, call) => {
        const text = call.branch === 'positive' ? s.positive : s.negative;
        if (!text) throw new Error('the negative branch was called without negative conditioning');
        const r = await dit.forward({
          ...fixed,
          hidden_states: { dtype: 'float32', dims: s.latentShape, data: x },
          timestep: scalar(timestep),
          encoder_hidden_states: text.llamaVec,
          encoder_attention_mask: text.llamaMask,
          pooled_projections: text.clipPooler,
        }, { branch: call.branch, signal });
        if ((r.teacache ?? r.magcache)?.compute === false) skipped++;
        else computed++;
        return r.output.data as Float32Array;
      },
      close: async () => {
        dit.beginSection({ steps: s.steps, teacache: { enabled: false } }); // drops the cached residuals
      },
      summary: () => {
        const inSessions = dit.sessionSeconds - busy0;
        const calls = computed + skipped;
        const timing = `DiT sessions ${inSessions.toFixed(2)} s, ${(inSessions / Math.max(calls, 1)).toFixed(3)} s per call`;
        return s.cache === 'off' ? timing : `${timing}; ${CACHE_NAMES[s.cache]}: ${computed} computed, ${skipped} skipped`;
      },
    };
  }

  /** Frees every network (shutdown). */
  async release(): Promise<void> {
    await Promise.all([this.releaseEncoders(), this.releaseDit(), this.vae.release()]);
  }
}

const CACHE_NAMES: Record<Exclude<StepCacheKind, 'off'>, string> = { teacache: 'TeaCache', magcache: 'MagCache' };

/**
 * Whether the DiT is built with LoRA inputs (FRAMEPACK_LORA): `on`, `off`, or `auto` (default) = on for the
 * CPU, and on CUDA under `high` with LORA_GRAPHS_MIN_FREE_MIB free. On the H100 the LoRA graphs without a LoRA
 * bound gave the plain graphs' output bit for bit at the same speed, but held 3.8 GiB more and took twice as
 * long to create (docs/gpu.md, twelfth round): worth it where the DiT is resident and memory is ample, not
 * where a per-request DiT would pay the creation each time.
 */
export function loraSupport(p: Pick<Placement, 'ep' | 'policy' | 'gpu'>, env: NodeJS.ProcessEnv = process.env): boolean {
  const v = (env.FRAMEPACK_LORA ?? '').trim().toLowerCase() || 'auto';
  if (v === 'on' || v === 'off') return v === 'on';
  if (v === 'auto') return p.ep === 'cpu' || (p.policy === 'high' && (p.gpu?.freeMiB ?? 0) >= LORA_GRAPHS_MIN_FREE_MIB);
  throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_LORA', value: env.FRAMEPACK_LORA, allowed: 'auto, on, off' });
}

/**
 * Whether the DiT's blocks use the fused custom kernels (FRAMEPACK_DIT_KERNELS=auto|on|off, default auto): the
 * blocks' memory-bound passes (docs/transformer.md, "Custom kernels") as NVRTC-compiled CUDA kernels and the FFNs'
 * first linear with its GELU in cuBLASLt's epilogue. They are written for a bfloat16 DiT on CUDA and need NVRTC
 * and cuBLASLt: `auto` uses them where all hold, `on` too but fails setup where a library is missing, and
 * elsewhere (the CPU, an 8-bit DiT) ONNX Runtime's operators stay; the line says which and why. On the H100 they
 * took the default request from 0.85 to 0.74 of the original's time, as close to the float32 forward as ONNX
 * Runtime's own bfloat16 operators (docs/gpu.md, thirteenth to fifteenth rounds): hence `auto` by default.
 */
export function ditKernelsChoice(p: Pick<Placement, 'ep' | 'precision' | 'quantize'>, env: NodeJS.ProcessEnv = process.env,
  driverProblem: () => string | null = () => cudaDriverProblem() ?? cublasLtProblem()): { enabled: boolean; line: string } {
  const v = (env.FRAMEPACK_DIT_KERNELS ?? '').trim().toLowerCase() || 'auto';
  if (v !== 'auto' && v !== 'on' && v !== 'off') throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_DIT_KERNELS', value: env.FRAMEPACK_DIT_KERNELS, allowed: 'auto, on, off' });
  const off = (why: string) => ({ enabled: false, line: `DiT kernels: ONNX Runtime's (FRAMEPACK_DIT_KERNELS=${v}${why})` });
  if (v === 'off') return off('');
  const problem = p.ep !== 'cuda' ? `the DiT runs on ${p.ep}` : p.quantize.dit ? `the DiT is ${p.quantize.dit}-bit`
    : p.precision.dit !== 'bfloat16' ? `the DiT is ${p.precision.dit}` : null;
  if (problem) return off(`, but ${problem}`);
  const missing = driverProblem();
  if (missing && v === 'on') throw appError('DIT_KERNELS_UNAVAILABLE', { detail: missing });
  if (missing) return off(`, but ${missing}`);
  return { enabled: true, line: `DiT kernels: q/k RMSNorm + RoPE, joint v, gated residual + AdaLN (CUDA, NVRTC), FFN linear + bias + GELU (cuBLASLt); FRAMEPACK_DIT_KERNELS=${v}` };
}

function ditOptions(p: Placement, { fp8, kernels }: { fp8: boolean; kernels: boolean }): TransformerOptions {
  return {
    ep: p.ep, deviceId: p.deviceId, precision: p.precision.dit, quantize: p.quantize.dit ? { bits: p.quantize.dit } : undefined,
    shrinkAfterSection: p.shrinkDitAfterSection, lora: loraSupport(p), kernels,
    ...(fp8 ? { fp8: { mode: 'gemm' as const } } : {}),
  };
}

/** A network created on demand and released on request; its creation may be running while it is released. */
class Slot<T extends { release(): Promise<void> }> {
  private made: Promise<T> | null = null;

  constructor(private readonly make: () => Promise<T>) {}

  get exists(): boolean { return this.made !== null; }

  get(): Promise<T> {
    if (!this.made) {
      const made = this.make();
      this.made = made;
      made.catch(() => { if (this.made === made) this.made = null; }); // a failed creation is tried again next time
    }
    return this.made;
  }

  /** Frees the network; true when one existed. */
  async release(): Promise<boolean> {
    const made = this.made;
    this.made = null;
    if (!made) return false;
    let net: T;
    try {
      net = await made;
    } catch {
      return false; // its creation failed: nothing to free
    }
    await net.release();
    return true;
  }
}

async function openNets(opts: { models?: unknown; deviceId?: number; log: (line: string) => void; signal?: AbortSignal }): Promise<FramePackModels> {
  const f1 = f1Loading();
  const models = typeof opts.models === 'string' ? opts.models : undefined;
  const dirs = await resolveModels({ models, log: opts.log, signal: opts.signal, optional: f1 === 'setup' ? ['transformerF1'] : [] });
  const env = opts.deviceId === undefined ? process.env : { ...process.env, FRAMEPACK_DEVICE_ID: String(opts.deviceId) };
  const placement = await choosePlacement({ log: opts.log, env });
  opts.log(`placement: ${placement.policy} on ${placement.ep} (${placement.reason})`);
  // At first use the F1 folder is resolved then, downloading into the cache if needed (logged to that request).
  const f1Dir = async (log: (line: string) => void) => dirs.transformerF1
    ?? (await resolveModels({ models, log, optional: ['transformerF1'] })).transformerF1!;
  const warm = warmupWanted(placement);
  const nets = await FramePackModels.open(dirs, placement, opts.log, { f1, f1Dir });
  if (warm) {
    try {
      const { seconds, frames } = await nets.warmUp(opts.signal ?? new AbortController().signal);
      opts.log(`warm-up generation (${WARMUP.width}x${WARMUP.height}, ${WARMUP.params.steps} step, ${frames} frames) in ${seconds.toFixed(1)} s ` +
        '(FRAMEPACK_WARMUP=off skips it)');
    } catch (err) {
      await nets.release();
      throw err;
    }
  }
  return nets;
}

export class FramePackPredictor implements Predictor<typeof inputSchema> {
  readonly inputSchema = inputSchema;
  private nets: FramePackModels | null = null;

  constructor(private readonly options: PredictorOptions) {}

  async setup(ctx: SetupContext): Promise<void> {
    findFfmpeg(); // a missing encoder is a setup failure, not a failure after minutes of sampling
    startSpawner(); // forked while this process is small: ffmpeg is spawned from it (see runtime/spawner.ts)
    this.nets = await openNets({ models: this.options.models, deviceId: this.options.deviceId, log: (l) => ctx.log(l), signal: ctx.signal });
  }

  /** The GPUs that can each hold the networks on their own (gpu-placements.ts). */
  async devices(log: (line: string) => void): Promise<number[]> {
    const { placements, skipped } = await gpuPlacements();
    for (const s of skipped) log(`cuda:${s.deviceId} left out: ${s.reason}`);
    return placements.map((p) => p.deviceId);
  }

  async predict(input: FramePackInput, ctx: PredictorContext): Promise<string> {
    const nets = this.nets;
    if (!nets) throw new Error('predict() called before setup()');
    const seed = input.seed ?? randomSeed();
    const image = await loadImage(input.input_image, 'input_image');
    nets.admit(findNearestBucket(image.height, image.width, input.resolution), input.latent_window_size, (l) => ctx.log(l));
    const endImage = input.end_image === null ? null : await loadImage(input.end_image, 'end_image');
    const noise = typeof this.options.noise === 'string' ? await readNoise(this.options.noise) : undefined;
    const dump: Record<string, HostTensor> | undefined = typeof this.options.dump === 'string' ? {} : undefined;
    const live = ctx.events && new LiveEvents(ctx.events, { tmpDir: ctx.tmpDir, crf: input.mp4_crf, signal: ctx.signal, log: (l) => ctx.log(l) });
    const t0 = performance.now();
    const out = join(ctx.tmpDir, 'output.mp4');
    const provenance = JSON.stringify(await provenanceOf(input, seed, nets.placement));
    const encode = (frames: AsyncIterable<Uint8Array>, size: { width: number; height: number }) => writeMp4(out, frames, {
      ...size, fps: FPS, crf: input.mp4_crf, signal: ctx.signal, log: (l) => ctx.log(l), metadata: { comment: provenance },
    });
    // The video's first frames are final while the last section still decodes: ffmpeg starts on them then.
    const early: { encode?: { queue: FrameQueue; encoded: Promise<number>; since: number } } = {};
    const onFrames = (frames: Uint8Array, size: { width: number; height: number }) => {
      if (!early.encode) {
        ctx.log('encoding the video from its first frames while the last section decodes');
        const queue = new FrameQueue();
        early.encode = { queue, encoded: encode(queue, size), since: performance.now() };
        early.encode.encoded.catch(() => {}); // awaited below; a failure now must not go unhandled meanwhile
      }
      early.encode.queue.push(frames);
    };
    let pixels: VideoPixels | undefined;
    try {
      // per-request networks are released when the generation settles, before the MP4 is finished
      const lora = await nets.prepareLoras(input.loras, ctx);
      const result = await nets.request((l) => ctx.log(l), (n) => generate(n, image, generateParams(input, seed, endImage), {
        signal: ctx.signal, log: (l) => ctx.log(l), progress: ctx.progress?.bind(ctx), noise, dump, onFrames,
        onStep: live && ((at, denoised) => live.step(at, denoised)),
        onSection: live && ((section, sections, pixels) => live.section(section, sections, pixels)),
      }), lora);
      pixels = result.pixels;
      await live?.sectionsDone();

      ctx.log(`encoding ${result.pixels.frameCount} frames (${result.width}x${result.height}, ${result.fps} fps, crf ${input.mp4_crf})` +
        (result.streamed ? `, the first ${result.streamed} already with the encoder` : ''));
      const t1 = performance.now();
      const begun = early.encode;
      if (begun) {
        begun.queue.end(result.pixels.chunks(result.streamed));
        await begun.encoded;
      } else await encode(result.pixels.chunks(), result);
      const took = (since: number) => ((performance.now() - since) / 1000).toFixed(1);
      ctx.log(`video encoded in ${took(t1)} s${begun ? ` after the last frame (begun ${took(begun.since)} s ago)` : ''}; total ${took(t0)} s; ` +
        `seed ${seed}; provenance ${provenance}`);
      return out;
    } catch (err) {
      if (early.encode) {
        early.encode.queue.fail(err);
        await early.encode.encoded.catch(() => {}); // ffmpeg stopped and the partial file removed
      }
      throw mapOrtError(err, nets.placement.ep); // a GPU out-of-memory failure becomes its catalogue error
    } finally {
      await live?.close();
      await pixels?.close();
      if (dump && typeof this.options.dump === 'string' && Object.keys(dump).length) {
        await saveTensors(this.options.dump, dump);
        ctx.log(`dumped ${Object.keys(dump).length} tensors to ${this.options.dump}`);
      }
    }
  }
}

/**
 * The generation a request asks for (the seed drawn by the caller when the request has none; the end image
 * decoded by the caller, null when there is none).
 */
export function generateParams(input: FramePackInput, seed: number, endImage: RgbImage | null): GenerateParams {
  return {
    prompt: input.prompt,
    promptBlendSections: input.prompt_blend_sections,
    negativePrompt: input.negative_prompt,
    resolution: input.resolution,
    seed,
    seconds: input.total_video_length_seconds,
    latentWindowSize: input.latent_window_size,
    steps: input.steps,
    cfg: input.cfg_scale,
    distilledCfg: input.distilled_cfg_scale,
    cfgRescale: input.cfg_rescale,
    cache: stepCacheOf(input),
    samplingMode: input.sampling_mode,
    endImage,
    endImageStrength: input.end_image_strength,
  };
}

async function readNoise(file: string): Promise<Record<string, HostTensor>> {
  const t = await loadTensors(file);
  if (!Object.keys(t).some((k) => /^noise_\d+$/.test(k))) throw new Error(`--noise ${file} has no noise_<i> tensors`);
  return t;
}

export default function createPredictor(options: PredictorOptions): FramePackPredictor {
  return new FramePackPredictor(options);
}
