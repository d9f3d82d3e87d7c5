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
import { Checkpoint, loadTensors, saveTensors, type HostTensor } from '../onnx/safetensors.js';
import type { Predictor, PredictorContext, PredictorOptions, SetupContext } from '../predictor.js';
import { choosePlacement, type Placement } from '../runtime/placement.js';
import { Session } from '../runtime/session.js';
import { loadImage, loadSigLipPreprocessor, type SigLipPreprocessor } from './image.js';
import { inputSchema, type FramePackInput } from './inputs.js';
import { randomSeed } from './noise.js';
import { generate, type FramePackNets, type PromptEmbeddings, type SectionInputs, type SectionModel } from './pipeline.js';
import { encodePrompt, loadTextEncoders, type TextEncoders } from './text.js';
import { PackedTransformer } from './transformer.js';
import { Vae } from './vae-decode.js';
import { findFfmpeg, writeMp4 } from './video.js';

// ---------------------------------------------------------------------------------------------------------
// The networks behind FramePackNets

const int64Row = (values: number[]): HostTensor =>
  ({ dtype: 'int64', dims: [1, values.length], data: BigInt64Array.from(values, (v) => BigInt(v)) });
const scalar = (v: number): HostTensor => ({ dtype: 'float32', dims: [1], data: Float32Array.of(v) });

/**
 * The five networks on the chosen placement. Resident placements keep every session from setup on; the
 * low-memory placement opens the text encoders and SigLIP for the encoding stage only and frees them
 * before sampling, so that the DiT has the device to itself.
 */
export class FramePackModels implements FramePackNets {
  readonly halfPrecision: boolean;
  private text: TextEncoders | null = null;
  private siglip: Session | null = null;

  private constructor(
    readonly dirs: ModelDirs,
    readonly placement: Placement,
    readonly sigLip: SigLipPreprocessor,
    private readonly vae: Vae,
    private readonly dit: PackedTransformer,
  ) {
    this.halfPrecision = placement.precision.dit !== 'float32';
  }

  static async open(dirs: ModelDirs, placement: Placement, log: (line: string) => void): Promise<FramePackModels> {
    const { ep, deviceId } = placement;
    const t0 = performance.now();
    const sigLip = loadSigLipPreprocessor(dirs.featureExtractor);
    const vae = await Vae.load(dirs.vae, { ep, deviceId, precision: placement.precision.vae, spatialTiling: placement.vaeTiling });
    let dit: PackedTransformer;
    try {
      dit = await PackedTransformer.load(dirs.transformer, {
        ep, deviceId, precision: placement.precision.dit, quantize: placement.quantize.dit ? { bits: placement.quantize.dit } : undefined,
      });
    } catch (err) {
      await vae.release();
      throw err;
    }
    const models = new FramePackModels(dirs, placement, sigLip, vae, dit);
    if (placement.resident) {
      try {
        await models.openEncoders();
      } catch (err) {
        await models.release();
        throw err;
      }
    }
    log(`networks ready in ${((performance.now() - t0) / 1000).toFixed(1)} s (${placement.policy}: ${placement.ep}, ` +
      `DiT ${placement.precision.dit}, encoders ${placement.precision.encoders}, VAE ${placement.precision.vae})`);
    return models;
  }

  private async openEncoders(): Promise<void> {
    const p = this.placement;
    if (!this.text) {
      this.text = await loadTextEncoders(this.dirs, {
        ep: p.ep, deviceId: p.deviceId, precision: p.precision.encoders,
        quantize: p.quantize.llama ? { bits: p.quantize.llama } : undefined,
      });
    }
    if (!this.siglip) {
      const model = buildSiglipVision(await Checkpoint.open(this.dirs.imageEncoder), { precision: p.precision.encoders });
      this.siglip = await Session.create(model, { ep: p.ep, deviceId: p.deviceId });
    }
  }

  async encodePrompt(prompt: string, signal: AbortSignal): Promise<PromptEmbeddings> {
    await this.openEncoders();
    return encodePrompt(this.text!, prompt, signal);
  }

  async encodeImage(pixelValues: HostTensor, signal: AbortSignal): Promise<HostTensor> {
    await this.openEncoders();
    const out = await this.siglip!.run({ pixel_values: pixelValues }, { signal });
    return out.last_hidden_state;
  }

  encodeLatent(pixels: HostTensor, signal: AbortSignal): Promise<HostTensor> {
    return this.vae.encodeLatent(pixels, { signal });
  }

  decodeLatents(latents: HostTensor, signal: AbortSignal): Promise<HostTensor> {
    return this.vae.decodeLatents(latents, { signal });
  }

  /** Frees the encoders when the placement does not keep them (called once the conditioning exists). */
  async encodingDone(): Promise<void> {
    if (this.placement.resident) return;
    const text = this.text, siglip = this.siglip;
    this.text = null;
    this.siglip = null;
    await Promise.all([text?.release(), siglip?.release()]);
  }

  async section(s: SectionInputs, signal: AbortSignal): Promise<SectionModel> {
    const dit = this.dit;
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

  async release(): Promise<void> {
    await this.encodingDone();
    const text = this.text, siglip = this.siglip;
    this.text = null;
    this.siglip = null;
    await Promise.all([text?.release(), siglip?.release(), this.vae.release(), this.dit.release()]);
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
      const result = await generate(nets, image, {
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
      }, { signal: ctx.signal, log: (l) => ctx.log(l), progress: ctx.progress?.bind(ctx), noise, dump });

      const out = join(ctx.tmpDir, 'output.mp4');
      ctx.log(`encoding ${result.pixels.frameCount} frames (${result.width}x${result.height}, ${result.fps} fps, crf ${input.mp4_crf})`);
      const t1 = performance.now();
      await writeMp4(out, result.pixels.chunks(), {
        width: result.width, height: result.height, fps: result.fps, crf: input.mp4_crf, signal: ctx.signal, log: (l) => ctx.log(l),
      });
      ctx.log(`video encoded in ${((performance.now() - t1) / 1000).toFixed(1)} s; total ${((performance.now() - t0) / 1000).toFixed(1)} s (seed ${seed})`);
      return out;
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
