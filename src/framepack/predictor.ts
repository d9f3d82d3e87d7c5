/**
 * FramePack behind the Predictor seam: `setup()` finds the checkpoints (a `--models` folder or the Hugging
 * Face cache, downloading what is missing) and opens the networks; `predict()` runs one generation
 * (pipeline.ts) and encodes the MP4 (video.ts) into the prediction's temp folder.
 *
 * Options (command line flags / server options):
 *   models   plain folder laid out like the Hub repositories (else FRAMEPACK_MODELS, else the HF cache)
 *   noise    safetensors file with noise_<i> per section: replaces the seeded noise (reproduces a reference)
 *   dump     safetensors file written after the run with the intermediate tensors (fixture names)
 */
import { join } from 'node:path';
import { resolveModels, type ModelDirs } from '../hub/resolve.js';
import { buildSiglipVision } from '../nets/siglip.js';
import type { DitGraphs } from '../nets/dit.js';
import { Checkpoint, loadTensors, saveTensors, type HostTensor } from '../onnx/safetensors.js';
import type { Predictor, PredictorContext, PredictorOptions, SetupContext } from '../predictor.js';
import { choosePlacement, mapOrtError, type Placement } from '../runtime/placement.js';
import { Session } from '../runtime/session.js';
import { startSpawner } from '../runtime/spawner.js';
import { loadImage, loadSigLipPreprocessor, type SigLipPreprocessor } from './image.js';
import { inputSchema, type FramePackInput } from './inputs.js';
import { randomSeed } from './noise.js';
import { generate, type FramePackNets, type PromptEmbeddings, type SectionInputs, type SectionModel } from './pipeline.js';
import { encodePrompt, loadTextEncoders, type TextEncoders } from './text.js';
import { buildTransformerGraphs, PackedTransformer, type TransformerOptions } from './transformer.js';
import { Vae } from './vae-decode.js';
import { findFfmpeg, writeMp4 } from './video.js';

// ---------------------------------------------------------------------------------------------------------
// The networks behind FramePackNets

const int64Row = (values: number[]): HostTensor =>
  ({ dtype: 'int64', dims: [1, values.length], data: BigInt64Array.from(values, (v) => BigInt(v)) });
const scalar = (v: number): HostTensor => ({ dtype: 'float32', dims: [1], data: Float32Array.of(v) });

const since = (t0: number) => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

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
 */
export class FramePackModels implements FramePackNets {
  readonly halfPrecision: boolean;
  private readonly text: Slot<TextEncoders>;
  private readonly siglip: Slot<Session>;
  private readonly dit: Slot<PackedTransformer>;
  /** where per-request creations and releases are logged: the running request's log, else setup's */
  private log: (line: string) => void;

  private constructor(
    readonly dirs: ModelDirs,
    readonly placement: Placement,
    readonly sigLip: SigLipPreprocessor,
    private readonly vae: Vae,
    ditGraphs: DitGraphs,
    private readonly setupLog: (line: string) => void,
  ) {
    this.halfPrecision = placement.precision.dit !== 'float32';
    this.log = setupLog;
    const p = placement;
    const encoders = { ep: p.ep, deviceId: p.deviceId, precision: p.precision.encoders };
    this.text = new Slot(this.timed('text encoders', 'encoders', () => loadTextEncoders(dirs, {
      ...encoders, quantize: p.quantize.llama ? { bits: p.quantize.llama } : undefined,
    })));
    this.siglip = new Slot(this.timed('SigLIP', 'encoders', async () =>
      Session.create(buildSiglipVision(await Checkpoint.open(dirs.imageEncoder), encoders), { ep: p.ep, deviceId: p.deviceId })));
    this.dit = new Slot(this.timed('DiT', 'dit', () => PackedTransformer.create(ditGraphs, ditOptions(p))));
  }

  /**
   * Builds the graphs and creates every network once, so that a broken checkpoint, a missing provider or a
   * quantized-weight cache that cannot be written fails setup, not the first request. Per-request networks
   * are released again right away (the encoders before the DiT is created): one extra creation of each at
   * setup, and the quantized weights are prepared before the first request.
   */
  static async open(dirs: ModelDirs, placement: Placement, log: (line: string) => void): Promise<FramePackModels> {
    const { ep, deviceId } = placement;
    const t0 = performance.now();
    const sigLip = loadSigLipPreprocessor(dirs.featureExtractor);
    const ditGraphs = await buildTransformerGraphs(dirs.transformer, ditOptions(placement));
    const vae = await Vae.load(dirs.vae, { ep, deviceId, precision: placement.precision.vae, spatialTiling: placement.vaeTiling });
    const models = new FramePackModels(dirs, placement, sigLip, vae, ditGraphs, log);
    try {
      await models.textEncoders();
      await models.imageEncoder();
      await models.transformer();   // releases per-request encoders first
      await models.endRequest();
    } catch (err) {
      await models.release();
      throw err;
    }
    const { encoders, dit, vae: vaeLifetime } = placement.lifetime;
    const perRequest = [encoders === 'per-request' ? 'encoders' : '', dit === 'per-request' ? 'DiT' : '', vaeLifetime === 'per-request' ? 'VAE' : '']
      .filter(Boolean);
    log(`networks ready in ${since(t0)} (${placement.policy}: ${placement.ep}, ` +
      `DiT ${placement.precision.dit}, encoders ${placement.precision.encoders}, VAE ${placement.precision.vae}` +
      `${perRequest.length ? `; ${perRequest.join(', ')} created again for each request` : ''})`);
    return models;
  }

  /**
   * Runs one generation against these networks and releases the per-request ones when it settles, whether
   * it succeeds, fails or is cancelled. Their creations and releases are logged to `log` meanwhile.
   */
  async request<T>(log: (line: string) => void, run: (nets: FramePackNets) => Promise<T>): Promise<T> {
    this.log = log;
    try {
      return await run(this);
    } finally {
      try {
        await this.endRequest();
      } catch (err) {
        // a failed release must not hide the request's own outcome; the session is dropped either way
        log(`releasing the per-request networks failed: ${(err as Error).message}`);
      } finally {
        this.log = this.setupLog;
      }
    }
  }

  /** Releases the per-request networks (`request()` does this itself). */
  async endRequest(): Promise<void> {
    if (this.placement.lifetime.encoders === 'per-request') await this.releaseEncoders();
    if (this.placement.lifetime.dit === 'per-request') await this.releaseDit();
    if (this.placement.lifetime.vae === 'per-request') await this.releaseVae();
  }

  /** Which of the encoders and the DiT exist now, or are being created (the VAE's sessions: `Vae.active`). */
  created(): { textEncoders: boolean; imageEncoder: boolean; dit: boolean } {
    return { textEncoders: this.text.exists, imageEncoder: this.siglip.exists, dit: this.dit.exists };
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

  private async transformer(): Promise<PackedTransformer> {
    if (!this.dit.exists && this.placement.lifetime.encoders === 'per-request') await this.releaseEncoders();
    return this.dit.get();
  }

  /** `make`, logging its time when the network is per-request (that time is paid again on every request). */
  private timed<T>(name: string, kind: keyof Placement['lifetime'], make: () => Promise<T>): () => Promise<T> {
    return async () => {
      const t0 = performance.now();
      const made = await make();
      if (this.placement.lifetime[kind] === 'per-request') this.log(`${name} created in ${since(t0)}`);
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
    if (await this.dit.release() && this.placement.lifetime.dit === 'per-request') this.log('DiT released');
  }

  async encodePrompt(prompt: string, signal: AbortSignal): Promise<PromptEmbeddings> {
    return encodePrompt(await this.textEncoders(), prompt, signal);
  }

  async encodeImage(pixelValues: HostTensor, signal: AbortSignal): Promise<HostTensor> {
    const out = await (await this.imageEncoder()).run({ pixel_values: pixelValues }, { signal });
    return out.last_hidden_state;
  }

  encodeLatent(pixels: HostTensor, signal: AbortSignal): Promise<HostTensor> {
    return this.vae.encodeLatent(pixels, { signal });
  }

  decodeLatents(latents: HostTensor, signal: AbortSignal): Promise<HostTensor> {
    return this.vae.decodeLatents(latents, { signal });
  }

  /** Frees the encoders when they are per-request (called once the conditioning exists). */
  async encodingDone(): Promise<void> {
    if (this.placement.lifetime.encoders === 'per-request') await this.releaseEncoders();
    if (this.placement.lifetime.vae === 'per-request') await this.releaseVae();
  }

  /** A per-request DiT is freed before the VAE decodes, which then has the device to itself. */
  get decodeAfterSampling(): boolean {
    return this.placement.lifetime.dit === 'per-request';
  }

  async samplingDone(): Promise<void> {
    if (this.placement.lifetime.dit === 'per-request') await this.releaseDit();
  }

  async section(s: SectionInputs, signal: AbortSignal): Promise<SectionModel> {
    signal.throwIfAborted();
    const dit = await this.transformer();
    dit.beginSection({ steps: s.steps, teacache: { enabled: s.teacache } });
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
        if (r.teacache && !r.teacache.compute) skipped++;
        else computed++;
        return r.output.data as Float32Array;
      },
      close: async () => {
        dit.beginSection({ steps: s.steps, teacache: { enabled: false } }); // drops the cached residuals
      },
      summary: () => (s.teacache ? `TeaCache: ${computed} computed, ${skipped} skipped` : undefined),
    };
  }

  /** Frees every network (shutdown). */
  async release(): Promise<void> {
    await Promise.all([this.releaseEncoders(), this.releaseDit(), this.vae.release()]);
  }
}

function ditOptions(p: Placement): TransformerOptions {
  return { ep: p.ep, deviceId: p.deviceId, precision: p.precision.dit, quantize: p.quantize.dit ? { bits: p.quantize.dit } : undefined };
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

async function openNets(opts: { models?: unknown; log: (line: string) => void; signal?: AbortSignal }): Promise<FramePackModels> {
  const dirs = await resolveModels({ models: typeof opts.models === 'string' ? opts.models : undefined, log: opts.log, signal: opts.signal });
  const placement = await choosePlacement({ log: opts.log });
  opts.log(`placement: ${placement.policy} on ${placement.ep} (${placement.reason})`);
  return FramePackModels.open(dirs, placement, opts.log);
}

export class FramePackPredictor implements Predictor<typeof inputSchema> {
  readonly inputSchema = inputSchema;
  private nets: FramePackModels | null = null;

  constructor(private readonly options: PredictorOptions) {}

  async setup(ctx: SetupContext): Promise<void> {
    findFfmpeg(); // a missing encoder is a setup failure, not a failure after minutes of sampling
    startSpawner(); // forked while this process is small: ffmpeg is spawned from it (see runtime/spawner.ts)
    this.nets = await openNets({ models: this.options.models, log: (l) => ctx.log(l), signal: ctx.signal });
  }

  async predict(input: FramePackInput, ctx: PredictorContext): Promise<string> {
    const nets = this.nets;
    if (!nets) throw new Error('predict() called before setup()');
    const seed = input.seed ?? randomSeed();
    const image = await loadImage(input.input_image, 'input_image');
    const noise = typeof this.options.noise === 'string' ? await readNoise(this.options.noise) : undefined;
    const dump: Record<string, HostTensor> | undefined = typeof this.options.dump === 'string' ? {} : undefined;
    const t0 = performance.now();
    try {
      // per-request networks are released when the generation settles, before the MP4 is written
      const result = await nets.request((l) => ctx.log(l), (n) => generate(n, image, {
        prompt: input.prompt,
        negativePrompt: input.negative_prompt,
        seed,
        seconds: input.total_video_length_seconds,
        latentWindowSize: input.latent_window_size,
        steps: input.steps,
        cfg: input.cfg_scale,
        distilledCfg: input.distilled_cfg_scale,
        cfgRescale: input.cfg_rescale,
        teacache: input.use_teacache,
      }, { signal: ctx.signal, log: (l) => ctx.log(l), progress: ctx.progress?.bind(ctx), noise, dump }));

      const out = join(ctx.tmpDir, 'output.mp4');
      ctx.log(`encoding ${result.pixels.frameCount} frames (${result.width}x${result.height}, ${result.fps} fps, crf ${input.mp4_crf})`);
      const t1 = performance.now();
      await writeMp4(out, result.pixels.chunks(), {
        width: result.width, height: result.height, fps: result.fps, crf: input.mp4_crf, signal: ctx.signal, log: (l) => ctx.log(l),
      });
      ctx.log(`video encoded in ${((performance.now() - t1) / 1000).toFixed(1)} s; total ${((performance.now() - t0) / 1000).toFixed(1)} s (seed ${seed})`);
      return out;
    } catch (err) {
      throw mapOrtError(err, nets.placement.ep); // a GPU out-of-memory failure becomes its catalogue error
    } finally {
      if (dump && typeof this.options.dump === 'string' && Object.keys(dump).length) {
        await saveTensors(this.options.dump, dump);
        ctx.log(`dumped ${Object.keys(dump).length} tensors to ${this.options.dump}`);
      }
    }
  }
}

async function readNoise(file: string): Promise<Record<string, HostTensor>> {
  const t = await loadTensors(file);
  if (!Object.keys(t).some((k) => /^noise_\d+$/.test(k))) throw new Error(`--noise ${file} has no noise_<i> tensors`);
  return t;
}

export default function createPredictor(options: PredictorOptions): FramePackPredictor {
  return new FramePackPredictor(options);
}
