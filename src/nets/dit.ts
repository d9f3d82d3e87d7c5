/**
 * FramePack's packed HunyuanVideo transformer (HunyuanVideoTransformer3DModelPacked) as three ONNX graphs,
 * built from config.json and the safetensors checkpoint at any size.
 *
 * References: FramePack (lllyasviel) diffusers_helper/models/hunyuan_video_packed.py; diffusers
 * transformer_hunyuan_video.py / transformer_hunyuan_video_framepack.py (same blocks and keys); the
 * re-implementation spec, sections 5 and 14-15.
 *
 * The split lets TeaCache decide, between graphs, whether the blocks run:
 *   embed   time/guidance/pooled-text embedding, token refiner with its mask, SigLIP projection, the text
 *           crop -> txt, temb, and the first block's modulated image input (TeaCache's measure)
 *   blocks  patch embeddings (noisy; clean 1x, 2x, 4x with replicate padding), dual-stream then
 *           single-stream blocks, then the head on the noisy tokens -> velocity, and residual =
 *           img_out - img_in over the noisy tokens (fetched only when TeaCache is on)
 *   head    (noisy tokens + cached residual) -> final AdaLN, proj_out in float32, unpatchify; run only on
 *           calls TeaCache skips
 * Each graph embeds the latents it needs itself (a few GFLOP) and the head is part of the blocks graph, so
 * the image stream (~200 MB at 640 px) never crosses to the host between sessions: a computed call moves
 * only the text stream and returns the small velocity. Only the noisy tokens reach the head, so only their
 * residual is kept: the original caches the residual of every image token but reads back only these.
 *
 * Conventions: batch 1 (as the original runs; real CFG is two calls). Graph inputs and outputs are float32 or
 * int64; inside, everything but the float32 islands runs in the graph's precision (float32 on the CPU,
 * bfloat16 on CUDA). Float32 islands as in the original: sinusoidal embeddings, the refiner's masked mean,
 * RoPE application (float32 graphs; the fused half-precision graphs rotate in their precision), norm
 * statistics (ORT's LayerNormalization/RMSNormalization/SkipLayerNormalization compute in float32), the
 * TeaCache residual arithmetic and the final projection.
 *
 * Text: encoder_hidden_states (1, L, C) with any L and its mask; the refiner attends with the original's mask
 * rules (valid rows see valid keys, every row sees key 0) and the context is then cropped to 729 + sum(mask)
 * tokens, so the blocks see no padding and need no mask (spec 5.8, trap 33).
 *
 * RoPE: the (tokens, head_dim/2) cos/sin tables are computed on the host (dit-rope.ts) and applied with
 * com.microsoft.RotaryEmbedding (interleaved pairs). Text rows get cos = 1, sin = 0 so that single-stream
 * blocks rotate the whole joint sequence with one op.
 *
 * LoRA (`lora`): every linear layer can take a low-rank update given as session inputs; see the LoRA section.
 *
 * FP8 (`fp8`): the blocks' image-stream linears that fp8Layer names multiply in float8 E4M3FN (graph.ts,
 * linearFp8); a LoRA branch stays in the graph's precision and adds to their output as to any other.
 */
import type { Checkpoint } from '../onnx/safetensors.js';
import { Graph, type BuiltModel, type Dim, type DType, type Fp8Options, type Precision, type Value } from '../onnx/graph.js';
import { ropeConfig, type RopeConfig } from './dit-rope.js';
import { BIAS_CONCAT, BIAS_GELU, DIT_KERNELS_DOMAIN, GATED_RESIDUAL_NORM, LINEAR_GELU, RMS_NORM_ROPE, RMS_NORM_ROPE_JOINT } from '../runtime/dit-kernels.js';

export interface DitConfig {
  inChannels: number;
  outChannels: number;
  heads: number;
  headDim: number;
  dim: number;              // heads * headDim
  dualLayers: number;
  singleLayers: number;
  refinerLayers: number;
  mlpRatio: number;
  patch: number;            // spatial patch (2)
  patchT: number;           // temporal patch (1)
  textDim: number;          // LLaMA width (4096)
  pooledDim: number;        // CLIP pooled width (768)
  imageProjDim: number;     // SigLIP width (1152)
  guidance: boolean;
  rope: RopeConfig;
}

export function ditConfig(cfg: Record<string, any>): DitConfig {
  const heads = cfg.num_attention_heads ?? 24;
  const headDim = cfg.attention_head_dim ?? 128;
  const c: DitConfig = {
    inChannels: cfg.in_channels ?? 16,
    outChannels: cfg.out_channels ?? cfg.in_channels ?? 16,
    heads,
    headDim,
    dim: heads * headDim,
    dualLayers: cfg.num_layers ?? 20,
    singleLayers: cfg.num_single_layers ?? 40,
    refinerLayers: cfg.num_refiner_layers ?? 2,
    mlpRatio: cfg.mlp_ratio ?? 4.0,
    patch: cfg.patch_size ?? 2,
    patchT: cfg.patch_size_t ?? 1,
    textDim: cfg.text_embed_dim ?? 4096,
    pooledDim: cfg.pooled_projection_dim ?? 768,
    imageProjDim: cfg.image_proj_dim ?? 1152,
    guidance: cfg.guidance_embeds ?? true,
    rope: ropeConfig(cfg),
  };
  const ropeWidth = c.rope.axes[0] + c.rope.axes[1] + c.rope.axes[2];
  if (ropeWidth !== headDim) throw new Error(`DiT: rope_axes_dim sums to ${ropeWidth}, attention_head_dim is ${headDim}`);
  if ((cfg.qk_norm ?? 'rms_norm') !== 'rms_norm') throw new Error(`DiT: qk_norm ${cfg.qk_norm} is not supported (only rms_norm)`);
  if (cfg.has_image_proj === false) throw new Error('DiT: checkpoints without image_projection (has_image_proj false) are not supported');
  if (cfg.has_clean_x_embedder === false) throw new Error('DiT: checkpoints without clean_x_embedder are not supported');
  if (c.patchT !== 1) throw new Error(`DiT: patch_size_t ${c.patchT} is not supported (only 1)`);
  return c;
}

export interface DitGraphOptions {
  precision: Precision;
  /**
   * Build every graph for LoRA: each linear layer gets a low-rank branch (x A) B whose A and B are optional
   * inputs (rank 0 by default), the whole body is built twice inside an If on the optional `lora_enabled`
   * input, and a run without LoRA takes the branch without them (LoRA below).
   */
  lora?: boolean;
  /** see Graph: 'run' keeps host RAM near the checkpoint size when the precision differs from bf16 */
  castWeightsAt?: 'load' | 'run';
  quantize?: { bits: 4 | 8; blockSize?: number; cacheDir?: string };
  /**
   * Fewer passes over the image stream in the blocks: a residual add goes into the next AdaLN as one
   * SkipLayerNormalization, the MLP's first bias into FastGelu, and in half precision RoPE rotates q and k in
   * the graph's precision instead of a float32 round trip (see "Fused ops" in docs/transformer.md). Default:
   * on for the half-precision graphs (the GPU's), off for float32, whose graphs then stay node for node the
   * plain formulas and bit for bit what they computed before.
   */
  fuse?: boolean;
  /**
   * The blocks' memory-bound passes as the custom operators of src/runtime/dit-kernels.ts, one pass each instead
   * of several: per-head RMSNorm + RoPE of q and k (the dual blocks' text rows normalized into the same joint
   * tensor, float32 tables as the original), the joint v, the gated residual with the next AdaLN, the MLPs' bias +
   * GELU; each adds the bias of the linear whose output it reads. Their sessions must run on the C API runtime,
   * which registers the kernels (BuiltModel.customDomains). Default off.
   */
  kernels?: boolean;
  /** FP8 linears in the blocks graph: those `layers` names, default fp8Layer of `set` ('attention') */
  fp8?: Fp8Options & { set?: Fp8LayerSet };
}

export interface DitGraphs {
  config: DitConfig;
  /** built with LoRA inputs (DitGraphOptions.lora) */
  lora: boolean;
  embed: BuiltModel;
  blocks: BuiltModel;
  head: BuiltModel;
  /** TeaCache's distance between two calls' modulated inputs, where they stay (buildTeaCacheMeasure) */
  teacacheMeasure: BuiltModel;
}

const EPS = 1e-6;
/** Additive mask value of the refiner's boolean mask: finite in float32 and bfloat16, exp() underflows to 0. */
const MASKED = -1e30;

// ---------------------------------------------------------------------------------------------------------
// Shared pieces

type Ctx = { g: Graph; ck: Checkpoint; c: DitConfig; lora: LoraInputs | null; fuse: boolean; kernels: boolean };

/** Runtime dims [from, to) of x as an int64 (to - from) vector. */
function dims(g: Graph, x: Value, from: number, to: number): Value {
  return g.op('Shape', [x], { start: from, end: to }, { dtype: 'int64', shape: [to - from] })[0];
}

function reshapeDyn(g: Graph, x: Value, target: Value, shape: Dim[]): Value {
  return g.op('Reshape', [x, target], {}, { shape })[0];
}

/** x[:, start:end] along `axis` with runtime bounds (int64 [1] values). */
function sliceDyn(g: Graph, x: Value, start: Value, end: Value, axis: number, shape: Dim[]): Value {
  return g.op('Slice', [x, start, end, g.ints([axis])], {}, { shape })[0];
}

/** The (1, n) conditioning vector -> n chunks of shape (D): batch 1 lets them act as LayerNorm scale/bias. */
function chunks(g: Graph, v: Value, n: number, dim: number): Value[] {
  return g.split(g.reshape(v, [n * dim]), n, 0);
}

/**
 * LN(x) * (1 + scale) + shift as one LayerNormalization (no affine weights of its own, eps 1e-6). In bf16 this
 * rounds once where the original rounds after the norm, the product and the sum.
 */
function modulate(g: Graph, x: Value, shift: Value, scale: Value): Value {
  return g.layerNorm(x, g.add(scale, 1), shift, EPS);
}

/** The bf16 value the original feeds its sinusoid (the sampler casts t and g to bf16 on the GPU). */
function asModelScalar(g: Graph, t: Value): Value {
  return g.precision === 'bfloat16' ? g.cast(g.cast(t, 'bfloat16'), 'float32') : t;
}

/**
 * diffusers Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0): [cos(t f_k), sin(t f_k)],
 * f_k = exp(-ln(10000) k / 128), float32 throughout. f_k is the correctly rounded float32 exponential; torch's
 * vectorised expf can differ by one ulp, and t f_k with t near 1000 (guidance 10000) turns that into the
 * ~1e-5 relative difference the float32 parity tests show.
 */
function sinusoid(g: Graph, t: Value /* (1,) f32 */): Value /* (1, 256) f32 */ {
  const half = 128;
  const freqs = new Float32Array(half);
  const lnMax = Math.fround(-Math.log(10000));
  for (let k = 0; k < half; k++) freqs[k] = Math.exp(Math.fround(Math.fround(k * lnMax) / half));
  const a = g.mul(g.unsqueeze(t, [1]), g.constant(freqs, [1, half])); // (1, 128)
  return g.concat([g.cos(a), g.sin(a)], 1);
}

// ---------------------------------------------------------------------------------------------------------
// LoRA

/**
 * The graph's LoRA inputs, one pair per linear layer: `lora_a:<layer>` (in, r) and `lora_b:<layer>` (r, out),
 * float32, the LoRA's scale folded into B; several LoRAs are stacked along r. Their defaults have r = 0, so a
 * layer that a LoRA does not touch gets an exact zero. Bound per request (Session.bind, unbound after), the 13 B
 * weights of the session stay as they are: switching LoRAs costs neither a new session nor a merge.
 */
type LoraInputs = Map<string, [Value, Value]>;

/** The name of a layer's LoRA input: `lora_a:<layer>` / `lora_b:<layer>`. */
export const loraInputName = (layer: string, which: 'a' | 'b'): string => `lora_${which}:${layer}`;
/** The bool input choosing the LoRA branch of a graph built with `lora`. */
export const LORA_ENABLED = 'lora_enabled';

/** (x A) B of `layer`, in x's dtype; x (..., in) -> (..., out). */
function loraDelta(ctx: Ctx, x: Value, layer: string): Value {
  const { g, ck } = ctx;
  let pair = ctx.lora!.get(layer);
  if (!pair) {
    const [out, inF] = ck.entry(`${layer}.weight`).shape;
    const zero = (dims: number[]) => ({ dtype: 'float32' as const, dims, data: new Float32Array(0) });
    pair = [
      g.optionalInput(loraInputName(layer, 'a'), [inF, `r:${layer}`], zero([inF, 0])),
      g.optionalInput(loraInputName(layer, 'b'), [`r:${layer}`, out], zero([0, out])),
    ];
    ctx.lora!.set(layer, pair);
  }
  return g.matmul(g.matmul(x, g.cast(pair[0], x.dtype)), g.cast(pair[1], x.dtype));
}

/** torch.nn.Linear `layer` of the checkpoint, plus its LoRA branch in the LoRA body of a graph. */
function linear(ctx: Ctx, x: Value, layer: string, opts: { bias?: boolean } = {}): Value {
  const y = ctx.g.linear(x, ctx.ck, layer, opts);
  return ctx.lora ? ctx.g.add(y, loraDelta(ctx, x, layer)) : y;
}

/**
 * linear(x) as [x W^T (+ its LoRA delta), bias] for a kernel of DitGraphOptions.kernels to add the bias where it
 * reads the output: ONNX Runtime's Gemm adds a bias by writing it over its whole output first and reading it back.
 * A layer without a bias gets zeros.
 */
function linearParts(ctx: Ctx, x: Value, layer: string): [Value, Value] {
  const y = ctx.g.linear(x, ctx.ck, layer, { bias: false });
  return [ctx.lora ? ctx.g.add(y, loraDelta(ctx, x, layer)) : y, biasOf(ctx, layer, x.dtype)];
}

/** The bias of `layer` in `dtype`, zeros where it has none. */
function biasOf({ g, ck }: Ctx, layer: string, dtype: DType): Value {
  const out = ck.entry(`${layer}.weight`).shape[0];
  return ck.has(`${layer}.bias`) ? g.param(ck, `${layer}.bias`, { shape: [out], dtype }) : g.constant(new Array(out).fill(0), [out], dtype);
}

/** DitGraphOptions.fuse with its default: whether the blocks graph is built with the fused ops. */
export const fusedBlocks = (o: Pick<DitGraphOptions, 'fuse' | 'precision'>): boolean => o.fuse ?? o.precision !== 'float32';

/**
 * A graph's outputs from `body`: built once as it always was, and with `lora` also a second time with LoRA
 * branches, the two joined by If(lora_enabled). The weights are the main graph's, read by both bodies.
 */
function withLora(g: Graph, ck: Checkpoint, c: DitConfig, o: DitGraphOptions, body: (ctx: Ctx) => Value[]): Value[] {
  const fuse = fusedBlocks(o);
  const kernels = !!o.kernels;
  if (!o.lora) return body({ g, ck, c, lora: null, fuse, kernels });
  const on = g.optionalInput(LORA_ENABLED, [], { dtype: 'bool', dims: [], data: Uint8Array.of(0) });
  const inputs: LoraInputs = new Map();
  return g.ifElse(on, () => body({ g, ck, c, lora: inputs, fuse, kernels }), () => body({ g, ck, c, lora: null, fuse, kernels }));
}

/** TimestepEmbedding / PixArtAlphaTextProjection: linear_2(silu(linear_1(x))). */
function mlpEmbed(x: Value, ctx: Ctx, prefix: string): Value {
  const { g } = ctx;
  return linear(ctx, g.silu(linear(ctx, x, `${prefix}.linear_1`)), `${prefix}.linear_2`);
}

/** Feed-forward of the refiner blocks: net.2(silu(net.0.proj(x))). (The main blocks': linearGelu, then gatedLinear.) */
function feedForward(x: Value, ctx: Ctx, prefix: string): Value {
  return linear(ctx, ctx.g.silu(linear(ctx, x, `${prefix}.net.0.proj`)), `${prefix}.net.2`);
}

/**
 * gelu_tanh(linear(x)). Fused: the GEMM leaves out its bias and FastGelu adds it, so the (S, 4D) output is not
 * first filled with the broadcast bias and read back by the GEMM. With the kernels: one LinearGelu (bias and GELU
 * in the GEMM's epilogue) where the layer is a plain GEMM, else the GEMM (and its LoRA delta) then BiasGelu.
 */
function linearGelu(ctx: Ctx, x: Value, layer: string): Value {
  const { g, ck } = ctx;
  if (!ctx.fuse && !ctx.kernels) return g.gelu(linear(ctx, x, layer), 'tanh');
  const kernel = (op: string, inputs: Value[], width: number) =>
    g.scope(layer, () => g.op(op, inputs, {}, { domain: DIT_KERNELS_DOMAIN, dtype: x.dtype, shape: [...x.shape.slice(0, -1), width] })[0]);
  if (ctx.kernels && !ctx.lora && g.plainLinear(layer)) {
    const w = g.param(ck, `${layer}.weight`, { dtype: x.dtype });
    return kernel(LINEAR_GELU, [x, w, biasOf(ctx, layer, x.dtype)], ck.entry(`${layer}.weight`).shape[0]);
  }
  const h = linear(ctx, x, layer, { bias: false });
  if (ctx.kernels && ck.has(`${layer}.bias`)) return kernel(BIAS_GELU, [h, g.param(ck, `${layer}.bias`, { dtype: h.dtype })], h.shape[h.shape.length - 1] as number);
  return g.fastGelu(h, ck.has(`${layer}.bias`) ? g.param(ck, `${layer}.bias`, { dtype: h.dtype }) : null);
}

/**
 * A residual stream whose last update is not added yet: its value is x + (h + bias) * gate. The next AdaLN adds
 * it (fused: in the same pass, SkipLayerNormalization or GatedResidualNorm), so the sum is not read back for the
 * norm. The bias is the linear's that made h where a kernel adds it, null where h has it.
 */
type Delta = { h: Value; bias: Value | null; gate: Value };
type Stream = { x: Value; delta: Delta | null };

/** (h + bias) * gate: the update of a gated linear, whose output h is. */
function gatedLinear(ctx: Ctx, x: Value, layer: string, gate: Value): Delta {
  if (!ctx.kernels) return { h: linear(ctx, x, layer), bias: null, gate };
  const [h, bias] = linearParts(ctx, x, layer);
  return { h, bias, gate };
}

function deltaValue(g: Graph, d: Delta): Value {
  return g.mul(d.bias ? g.add(d.h, d.bias) : d.h, d.gate);
}

/** The stream's value. */
function resolve(g: Graph, s: Stream): Value {
  return s.delta ? g.add(s.x, deltaValue(g, s.delta)) : s.x;
}

/** [modulate(value of s), value of s]. */
function modulateStream(ctx: Ctx, s: Stream, shift: Value, scale: Value): [Value, Value] {
  const { g } = ctx;
  const d = s.delta;
  if (d?.bias) { // DitGraphOptions.kernels
    const [y, sum] = g.op(GATED_RESIDUAL_NORM, [s.x, d.h, d.bias, d.gate, scale, shift], { epsilon: EPS },
      { domain: DIT_KERNELS_DOMAIN, dtype: s.x.dtype, shape: [...s.x.shape], outputs: 2 });
    return [y, sum];
  }
  if (ctx.fuse && d) return g.skipLayerNorm(s.x, deltaValue(g, d), g.add(scale, 1), shift, EPS);
  const x = resolve(g, s);
  return [modulate(g, x, shift, scale), x];
}

/** Per-head RMSNorm of (1, S, heads*hd) with weight [hd]. */
function headRmsNorm(x: Value, { g, ck, c }: Ctx, key: string): Value {
  const w = g.param(ck, key, { shape: [c.headDim] });
  const y = g.rmsNorm(g.reshape(x, [0, 0, c.heads, c.headDim]), w, EPS); // (1, S, heads, hd)
  return g.reshape(y, [0, 0, c.dim]);
}

/**
 * rope(headRmsNorm(linear(x))) of the image q or k of `layer`; with DitGraphOptions.kernels one RmsNormRope pass
 * after the GEMM (the linear's bias added there, float32 tables).
 */
function normRope(ctx: Ctx, x: Value, layer: string, key: string, cos: Value, sin: Value): Value {
  const { g, ck, c } = ctx;
  if (!ctx.kernels) return rope(g, headRmsNorm(linear(ctx, x, layer), ctx, key), cos, sin);
  const [y, bias] = linearParts(ctx, x, layer);
  const w = g.param(ck, key, { shape: [c.headDim], dtype: y.dtype });
  return g.op(RMS_NORM_ROPE, [y, bias, w, cos, sin], { epsilon: EPS }, { domain: DIT_KERNELS_DOMAIN, dtype: y.dtype, shape: [...y.shape] })[0];
}

/**
 * [rope(headRmsNorm(img)) ; headRmsNorm(txt)] along the tokens, the dual blocks' joint q or k, from the image and
 * text linears `layers` and the norms' weights `keys`; with DitGraphOptions.kernels one RmsNormRopeJoint pass
 * that writes the joint tensor without a concatenation.
 */
function jointNormRope(ctx: Ctx, img: Value, txt: Value, layers: [string, string], keys: [string, string], cos: Value, sin: Value): Value {
  const { g, ck, c } = ctx;
  if (!ctx.kernels) return g.concat([normRope(ctx, img, layers[0], keys[0], cos, sin), headRmsNorm(linear(ctx, txt, layers[1]), ctx, keys[1])], 1);
  const [[yi, bi], [yt, bt]] = [linearParts(ctx, img, layers[0]), linearParts(ctx, txt, layers[1])];
  const [wi, wt] = keys.map((key) => g.param(ck, key, { shape: [c.headDim], dtype: yi.dtype }));
  return g.op(RMS_NORM_ROPE_JOINT, [yi, bi, wi, cos, sin, yt, bt, wt], { epsilon: EPS },
    { domain: DIT_KERNELS_DOMAIN, dtype: yi.dtype, shape: jointShape(c, yi, yt) })[0];
}

/** [linear(img) ; linear(txt)], the dual blocks' joint v; with DitGraphOptions.kernels the biases added in the copy. */
function jointValue(ctx: Ctx, img: Value, txt: Value, layers: [string, string]): Value {
  const { g, c } = ctx;
  if (!ctx.kernels) return g.concat([linear(ctx, img, layers[0]), linear(ctx, txt, layers[1])], 1);
  const [[yi, bi], [yt, bt]] = [linearParts(ctx, img, layers[0]), linearParts(ctx, txt, layers[1])];
  return g.op(BIAS_CONCAT, [yi, bi, yt, bt], {}, { domain: DIT_KERNELS_DOMAIN, dtype: yi.dtype, shape: jointShape(c, yi, yt) })[0];
}

/** The shape of [img ; txt] along the tokens. */
function jointShape(c: DitConfig, img: Value, txt: Value): Dim[] {
  const [ni, nt] = [img.shape[1], txt.shape[1]];
  return [1, typeof ni === 'number' && typeof nt === 'number' ? ni + nt : 'joint_tokens', c.dim];
}

/**
 * Interleaved-pair rotation in the tables' dtype: float32 tables as the original (which computes it in float32
 * and rounds once), tables in x's dtype for the fused half-precision graphs (no float32 copies of q and k).
 */
function rope(g: Graph, x: Value, cos: Value, sin: Value): Value {
  const pos = g.constant(BigInt64Array.of(0n), [1], 'int64'); // row s uses table row 0 + s
  const y = g.rotary(g.cast(x, cos.dtype), pos, cos, sin, { interleaved: true });
  return g.cast(y, x.dtype);
}

// ---------------------------------------------------------------------------------------------------------
// Embed graph

/**
 * Conv3d with kernel = stride = k as a patchify + Gemm over (c, kt, kh, kw) vectors. With `replicate`, the
 * input is first edge-padded at the end of T, H and W to multiples of k (pad_for_3d_conv).
 * x (1, C, T, H, W) float32 -> (1, T'*H'*W', D) tokens in (t, y, x) order.
 */
function patchEmbed(x: Value, ctx: Ctx, prefix: string, k: [number, number, number], replicate: boolean): Value {
  const { g, ck, c } = ctx;
  return g.scope(prefix, () => {
    const C = c.inChannels;
    const K = C * k[0] * k[1] * k[2];
    const kk = g.ints(k);
    let xp = x;
    if (replicate) {
      const thw = dims(g, x, 2, 5);
      const extra = g.op('Mod', [g.sub(kk, g.op('Mod', [thw, kk])[0]), kk])[0]; // (k - d % k) % k
      const pads = g.concat([g.ints([0, 0, 0, 0, 0, 0, 0]), extra], 0); // begins (5), ends (N, C, T, H, W)
      xp = g.op('Pad', [x, pads], { mode: 'edge' }, { shape: [1, C, 'Tp', 'Hp', 'Wp'] })[0];
    }
    xp = g.cast(xp, g.precision);
    const grid = g.op('Div', [dims(g, xp, 2, 5), kk])[0]; // (T', H', W')
    const at = (i: number) => g.gather(grid, [i]);
    const target = g.concat([g.ints([C]), at(0), g.ints([k[0]]), at(1), g.ints([k[1]]), at(2), g.ints([k[2]])], 0);
    const blocks = reshapeDyn(g, xp, target, [C, 'Tq', k[0], 'Hq', k[1], 'Wq', k[2]]);
    const patches = g.reshape(g.transpose(blocks, [1, 3, 5, 0, 2, 4, 6]), [-1, K]); // (N, C*kt*kh*kw)
    const w = g.reshape(g.param(ck, `${prefix}.weight`, { shape: [c.dim, C, ...k] }), [c.dim, K]);
    const b = g.param(ck, `${prefix}.bias`, { shape: [c.dim] });
    const tokens = g.op('Gemm', [patches, w, b], { transB: 1 })[0]; // (N, D)
    return g.unsqueeze(tokens, [0]); // (1, N, D)
  });
}

/** time_text_embed: timestep + guidance + pooled CLIP -> temb (1, D). */
function conditioning(ctx: Ctx, t: Value, guidance: Value | null, pooled: Value): Value {
  const { g } = ctx;
  return g.scope('time_text_embed', () => {
    let temb = mlpEmbed(g.cast(sinusoid(g, asModelScalar(g, t)), g.precision), ctx, 'time_text_embed.timestep_embedder');
    if (guidance) {
      const gemb = mlpEmbed(g.cast(sinusoid(g, asModelScalar(g, guidance)), g.precision), ctx, 'time_text_embed.guidance_embedder');
      temb = g.add(temb, gemb);
    }
    return g.add(temb, mlpEmbed(g.cast(pooled, g.precision), ctx, 'time_text_embed.text_embedder'));
  });
}

/** One refiner block (HunyuanVideoIndividualTokenRefinerBlock), y (1, L, D), bias (1, 1, L, L). */
function refinerBlock(ctx: Ctx, y: Value, temb: Value, bias: Value, i: number): Value {
  const { g, ck, c } = ctx;
  const p = `context_embedder.token_refiner.refiner_blocks.${i}`;
  return g.scope(p, () => {
    const n1 = g.layerNorm(y, g.param(ck, `${p}.norm1.weight`), g.param(ck, `${p}.norm1.bias`), EPS);
    const q = linear(ctx, n1, `${p}.attn.to_q`);
    const k = linear(ctx, n1, `${p}.attn.to_k`);
    const v = linear(ctx, n1, `${p}.attn.to_v`);
    const a = linear(ctx, g.attention(q, k, v, { heads: c.heads, bias }), `${p}.attn.to_out.0`);
    const [gateMsa, gateMlp] = g.split(linear(ctx, g.silu(temb), `${p}.norm_out.linear`), 2, 1); // (1, D) each
    let h = g.add(y, g.mul(a, gateMsa));
    const n2 = g.layerNorm(h, g.param(ck, `${p}.norm2.weight`), g.param(ck, `${p}.norm2.bias`), EPS);
    h = g.add(h, g.mul(feedForward(n2, ctx, `${p}.ff`), gateMlp));
    return h;
  });
}

/**
 * context_embedder (HunyuanVideoTokenRefiner) on the whole padded text, then cropped to its sum(mask) first
 * tokens. text (1, L, textDim) f32, mask (1, L) int64 -> (1, sum(mask), D).
 */
function tokenRefiner(ctx: Ctx, text: Value, mask: Value, t: Value): Value {
  const { g, c } = ctx;
  return g.scope('context_embedder', () => {
    const x = g.cast(text, g.precision); // the original's text is bf16 on the GPU
    const m = g.cast(mask, 'float32'); // (1, L)
    const count = g.reduceSum(m, [1], true); // (1, 1): valid tokens
    // Masked mean in float32, then back to the compute dtype.
    const xs = g.reduceSum(g.mul(g.cast(x, 'float32'), g.unsqueeze(m, [2])), [1], false); // (1, textDim)
    const pooled = g.cast(g.div(xs, count), g.precision);
    const temb = g.add(
      mlpEmbed(g.cast(sinusoid(g, asModelScalar(g, t)), g.precision), ctx, 'context_embedder.time_text_embed.timestep_embedder'),
      mlpEmbed(pooled, ctx, 'context_embedder.time_text_embed.text_embedder'));
    let y = linear(ctx, x, 'context_embedder.proj_in'); // (1, L, D)

    // S[i, j] = m_i and m_j, and every row attends to key 0; as an additive bias (1, 1, L, L).
    const valid = g.cast(mask, 'bool');
    const pair = g.op('And', [g.unsqueeze(valid, [2]), g.unsqueeze(valid, [1])])[0]; // (1, L, L)
    const L = g.reshape(dims(g, mask, 1, 2), []);
    const cols = g.op('Range', [g.constant(BigInt64Array.of(0n), [], 'int64'), L, g.constant(BigInt64Array.of(1n), [], 'int64')], {}, { dtype: 'int64', shape: ['L'] })[0];
    const keyZero = g.op('Equal', [cols, g.constant(BigInt64Array.of(0n), [], 'int64')])[0]; // (L)
    const allowed = g.op('Or', [pair, keyZero])[0];
    const bias = g.cast(g.unsqueeze(g.where(allowed, g.scalar(0, 'float32'), g.scalar(MASKED, 'float32')), [1]), g.precision);

    for (let i = 0; i < c.refinerLayers; i++) y = refinerBlock(ctx, y, temb, bias, i);

    // Batch 1: keep the first sum(mask) tokens (the original crops the [image ; text] context to its mask sum).
    const kept = g.reshape(g.cast(count, 'int64'), [1]);
    return sliceDyn(g, y, g.ints([0]), kept, 1, [1, 'text_kept', c.dim]);
  });
}

/** image_projection: down(silu(up(x))), SigLIP (1, 729, 1152) -> (1, 729, D). */
function imageProjection(ctx: Ctx, image: Value): Value {
  const { g } = ctx;
  return g.scope('image_projection', () =>
    linear(ctx, g.silu(linear(ctx, g.cast(image, g.precision), 'image_projection.up')), 'image_projection.down'));
}

/** The four latent inputs (noisy window, clean 1x, 2x, 4x), float32 (1, C, frames, H, W). */
function latentInputs(g: Graph, c: DitConfig): { x: Value; clean: Value; clean2x: Value; clean4x: Value } {
  const C = c.inChannels;
  return {
    x: g.input('hidden_states', 'float32', [1, C, 'frames', 'height', 'width']),
    clean: g.input('clean_latents', 'float32', [1, C, 'clean_frames', 'height', 'width']),
    clean2x: g.input('clean_latents_2x', 'float32', [1, C, 'frames_2x', 'height', 'width']),
    clean4x: g.input('clean_latents_4x', 'float32', [1, C, 'frames_4x', 'height', 'width']),
  };
}

/** Image-stream tokens (1, N_img, D) in packing order [4x | 2x | clean 1x | noisy]. */
function imageTokens(ctx: Ctx, l: ReturnType<typeof latentInputs>): Value {
  const { g, c } = ctx;
  const p = c.patch;
  return g.concat([
    patchEmbed(l.clean4x, ctx, 'clean_x_embedder.proj_4x', [4 * c.patchT, 4 * p, 4 * p], true),
    patchEmbed(l.clean2x, ctx, 'clean_x_embedder.proj_2x', [2 * c.patchT, 2 * p, 2 * p], true),
    patchEmbed(l.clean, ctx, 'clean_x_embedder.proj', [c.patchT, p, p], false),
    patchEmbed(l.x, ctx, 'x_embedder.proj', [c.patchT, p, p], false),
  ], 1);
}

/**
 * Conditioning and TeaCache's measure. The image tokens are not an output: the blocks graph embeds the
 * latents itself (a few GFLOP), so the ~200 MB of image tokens never cross to the host and back.
 */
function buildEmbed(ck: Checkpoint, c: DitConfig, o: DitGraphOptions): BuiltModel {
  const g = new Graph({ name: 'dit-embed', precision: o.precision, castWeightsAt: o.castWeightsAt, quantize: o.quantize });
  const latents = latentInputs(g, c);
  const t = g.input('timestep', 'float32', [1]);
  const text = g.input('encoder_hidden_states', 'float32', [1, 'text', c.textDim]);
  const mask = g.input('encoder_attention_mask', 'int64', [1, 'text']);
  const pooled = g.input('pooled_projections', 'float32', [1, c.pooledDim]);
  const guidance = c.guidance ? g.input('guidance', 'float32', [1]) : null;
  const image = g.input('image_embeddings', 'float32', [1, 'image_tokens', c.imageProjDim]);

  const [txt, temb, mod] = withLora(g, ck, c, o, (ctx) => {
    const temb = conditioning(ctx, t, guidance, pooled); // (1, D)
    // (1, 729 + sum(mask), D): SigLIP tokens first, then the valid text
    const txt = g.concat([imageProjection(ctx, image), tokenRefiner(ctx, text, mask, t)], 1);

    // TeaCache's measure: block 0's modulated image input (norm1 of transformer_blocks.0).
    const mod = g.scope('teacache', () => {
      const [shift, scale] = chunks(g, linear(ctx, g.silu(temb), 'transformer_blocks.0.norm1.linear'), 6, c.dim);
      return modulate(g, imageTokens(ctx, latents), shift, scale);
    });
    return [g.cast(txt, 'float32'), g.cast(temb, 'float32'), g.cast(mod, 'float32')];
  });
  g.output(txt, 'txt');
  g.output(temb, 'temb');
  g.output(mod, 'modulated');
  return g.toModel();
}

// ---------------------------------------------------------------------------------------------------------
// Blocks graph

/** Dual-stream block (HunyuanVideoTransformerBlock): img (1, Ni, D), txt (1, Nt, D). */
function dualBlock(ctx: Ctx, i: number, imgIn: Stream, txtIn: Stream, temb: Value, cos: Value, sin: Value, nImg: Value): [Stream, Stream] {
  const { g, c } = ctx;
  const p = `transformer_blocks.${i}`;
  return g.scope(p, () => {
    const act = g.silu(temb);
    const [sh1, sc1, g1, sh2, sc2, g2] = chunks(g, linear(ctx, act, `${p}.norm1.linear`), 6, c.dim);
    const [csh1, csc1, cg1, csh2, csc2, cg2] = chunks(g, linear(ctx, act, `${p}.norm1_context.linear`), 6, c.dim);
    const [nImg1, img] = modulateStream(ctx, imgIn, sh1, sc1);
    const [nTxt1, txt] = modulateStream(ctx, txtIn, csh1, csc1);

    // Joint attention over [image ; text]; RoPE on the image queries and keys only.
    const joint = (kind: 'q' | 'k') => jointNormRope(ctx, nImg1, nTxt1, [`${p}.attn.to_${kind}`, `${p}.attn.add_${kind}_proj`],
      [`${p}.attn.norm_${kind}.weight`, `${p}.attn.norm_added_${kind}.weight`], cos, sin);
    const v = jointValue(ctx, nImg1, nTxt1, [`${p}.attn.to_v`, `${p}.attn.add_v_proj`]);
    const a = g.attention(joint('q'), joint('k'), v, { heads: c.heads }); // (1, Ni+Nt, D)
    const aImg = sliceDyn(g, a, g.ints([0]), nImg, 1, img.shape);
    const aTxt = sliceDyn(g, a, nImg, g.ints([Number.MAX_SAFE_INTEGER]), 1, txt.shape);

    const [nImg2, hImg] = modulateStream(ctx, { x: img, delta: gatedLinear(ctx, aImg, `${p}.attn.to_out.0`, g1) }, sh2, sc2);
    const [nTxt2, hTxt] = modulateStream(ctx, { x: txt, delta: gatedLinear(ctx, aTxt, `${p}.attn.to_add_out`, cg1) }, csh2, csc2);
    return [
      { x: hImg, delta: gatedLinear(ctx, linearGelu(ctx, nImg2, `${p}.ff.net.0.proj`), `${p}.ff.net.2`, g2) },
      { x: hTxt, delta: gatedLinear(ctx, linearGelu(ctx, nTxt2, `${p}.ff_context.net.0.proj`), `${p}.ff_context.net.2`, cg2) },
    ];
  });
}

/** Single-stream block (HunyuanVideoSingleTransformerBlock) on z = [img ; txt] (1, N, D). */
function singleBlock(ctx: Ctx, i: number, zIn: Stream, temb: Value, cos: Value, sin: Value): Stream {
  const { g, c } = ctx;
  const p = `single_transformer_blocks.${i}`;
  return g.scope(p, () => {
    const [shift, scale, gate] = chunks(g, linear(ctx, g.silu(temb), `${p}.norm.linear`), 3, c.dim);
    const [n, z] = modulateStream(ctx, zIn, shift, scale);
    const mlp = linearGelu(ctx, n, `${p}.proj_mlp`); // (1, N, mlp)
    // Text rows of cos/sin are (1, 0): the rotation touches the image rows only.
    const q = normRope(ctx, n, `${p}.attn.to_q`, `${p}.attn.norm_q.weight`, cos, sin);
    const k = normRope(ctx, n, `${p}.attn.to_k`, `${p}.attn.norm_k.weight`, cos, sin);
    // With the kernels v's bias moves past the attention, whose weights sum to 1 over the keys: attn(q, k, v + b)
    // = attn(q, k, v) + b, so it joins proj_out's bias (projOut) and the v GEMM does not broadcast it.
    const toV = `${p}.attn.to_v`;
    const fold = ctx.kernels && splitProjOut(ctx, `${p}.proj_out`) && ctx.ck.has(`${toV}.bias`);
    const v = fold ? g.linear(n, ctx.ck, toV, { bias: false }) : linear(ctx, n, toV);
    const a = g.attention(q, k, v, { heads: c.heads }); // no output projection (pre_only)
    return { x: z, delta: projOut(ctx, a, mlp, `${p}.proj_out`, gate, fold ? toV : null) };
  });
}

/** Whether projOut splits proj_out over its column blocks: fused graphs with plain weights, outside LoRA bodies. */
const splitProjOut = (ctx: Ctx, layer: string): boolean => ctx.fuse && !ctx.lora && ctx.g.plainLinear(layer);

/**
 * The gated update proj_out(cat(a, mlp)) * gate, a (1, N, D) and mlp (1, N, mlp). Fused: proj_out as two GEMMs
 * over the weight's column blocks, the second adding onto the first through its C input, so the (N, D + mlp)
 * concatenation is never written (on the H100 at 640 px its Concat took 0.8 ms of every single block); with
 * DitGraphOptions.kernels the bias is left to GatedResidualNorm, and with `valueBias` (the v linear whose bias the
 * attention output lacks) it is b_out + b_v W[:, :D]^T. LoRA bodies, 8-bit and FP8 weights keep the concatenation.
 */
function projOut(ctx: Ctx, a: Value, mlp: Value, layer: string, gate: Value, valueBias: string | null): Delta {
  const { g, ck, c } = ctx;
  if (!splitProjOut(ctx, layer)) return gatedLinear(ctx, g.concat([a, mlp], 2), layer, gate);
  const inF = ck.entry(`${layer}.weight`).shape[1];
  let bias: Value | null = null;
  if (valueBias) {
    const bv = g.reshape(g.param(ck, `${valueBias}.bias`, { dtype: mlp.dtype }), [1, c.dim]);
    bias = g.reshape(g.linear(bv, ck, layer, { columns: [0, c.dim] }), [c.dim]); // (D): one row through the GEMM
  } else if (ctx.kernels) {
    bias = biasOf(ctx, layer, mlp.dtype);
  }
  const y = g.linear(g.reshape(a, [-1, c.dim]), ck, layer, { columns: [0, c.dim], bias: !bias }); // (N, D): no shape plumbing
  return { h: g.linear(mlp, ck, layer, { columns: [c.dim, inF], bias: false, accumulate: y }), bias, gate };
}

/**
 * Which linears go FP8, chosen by measured error (test/nets/dit-fp8.test.ts, emulated on the tiny fixtures,
 * relative L2 of one forward to the float32 reference): 'attention' = q, k, v of every block's image stream and
 * the dual blocks' output projection, 1.2e-2; 'all' adds the MLPs (dual ff, single proj_mlp / proj_out),
 * 3.0e-2, above the 2e-2 bound. The text stream (~750 tokens: too few for FP8 to pay for its per-call
 * overhead), the one-token modulation linears, the embedders, the refiner and the float32 final projection
 * stay in the graph's precision, as does every linear of the embed and head graphs.
 */
export type Fp8LayerSet = 'attention' | 'all';

export function fp8Layer(layer: string, set: Fp8LayerSet = 'attention'): boolean {
  if (/^(single_)?transformer_blocks\.\d+\.attn\.to_[qkv]$/.test(layer) || /^transformer_blocks\.\d+\.attn\.to_out\.0$/.test(layer)) return true;
  return set === 'all' && (/^transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)$/.test(layer)
    || /^single_transformer_blocks\.\d+\.(proj_mlp|proj_out)$/.test(layer));
}

function buildBlocks(ck: Checkpoint, c: DitConfig, o: DitGraphOptions): BuiltModel {
  const fp8 = o.fp8 ? { ...o.fp8, layers: o.fp8.layers ?? ((layer: string) => fp8Layer(layer, o.fp8!.set)) } : undefined;
  const g = new Graph({ name: 'dit-blocks', precision: o.precision, castWeightsAt: o.castWeightsAt, quantize: o.quantize, fp8 });
  const half = c.headDim / 2;
  const latents = latentInputs(g, c);
  const txt32 = g.input('txt', 'float32', [1, 'txt_tokens', c.dim]);
  const temb32 = g.input('temb', 'float32', [1, c.dim]);
  const cos = g.input('rope_cos', 'float32', ['img_tokens', half]);
  const sin = g.input('rope_sin', 'float32', ['img_tokens', half]);
  const grid = g.input('latent_grid', 'int64', [3]); // noisy tokens per axis (T, h, w)

  const [output, residual] = withLora(g, ck, c, o, (ctx) => blocksBody(ctx, latents, txt32, temb32, cos, sin, grid));
  g.output(output, 'output');
  g.output(residual, 'residual');
  return g.toModel();
}

/** Patch embeddings, the dual and single blocks, the head: [velocity, residual of the noisy tokens]. */
function blocksBody(ctx: Ctx, latents: ReturnType<typeof latentInputs>, txt32: Value, temb32: Value, cos: Value, sin: Value,
  grid: Value): Value[] {
  const { g, c } = ctx;
  const half = c.headDim / 2;
  const temb = g.cast(temb32, g.precision);
  const img0 = imageTokens(ctx, latents); // (1, N_img, D)
  let img: Stream = { x: img0, delta: null };
  let txt: Stream = { x: g.cast(txt32, g.precision), delta: null };
  const nImg = dims(g, img0, 1, 2);
  // Rotary tables in the precision q and k have when fused (half precision only: float32 graphs keep float32).
  // (The kernels of DitGraphOptions.kernels read float32 tables.)
  const [cosT, sinT] = ctx.fuse && !ctx.kernels ? [g.cast(cos), g.cast(sin)] : [cos, sin];
  for (let i = 0; i < c.dualLayers; i++) [img, txt] = dualBlock(ctx, i, img, txt, temb, cosT, sinT, nImg);

  // Identity rotation for the text rows of the joint sequence.
  const nTxt = dims(g, txt32, 1, 2);
  const ones = g.op('Expand', [g.constant(new Array(half).fill(1), [1, half], cosT.dtype), g.concat([nTxt, g.ints([half])], 0)], {}, { shape: ['txt_tokens', half] })[0];
  const zeros = g.sub(ones, 1);
  const cosZ = g.concat([cosT, ones], 0);
  const sinZ = g.concat([sinT, zeros], 0);
  let zs: Stream = { x: g.concat([resolve(g, img), resolve(g, txt)], 1), delta: null };
  for (let i = 0; i < c.singleLayers; i++) zs = singleBlock(ctx, i, zs, temb, cosZ, sinZ);
  const z = resolve(g, zs);

  // The noisy tokens (the last T*h*w image rows) go through the head directly, as in the original; their
  // residual img_out - img_in (float32) is what TeaCache re-uses on skipped calls.
  const nNoisy = g.mul(g.mul(g.gather(grid, [0]), g.gather(grid, [1])), g.gather(grid, [2])); // (1)
  const start = g.sub(nImg, nNoisy);
  const noisy = sliceDyn(g, z, start, nImg, 1, [1, 'noisy_tokens', c.dim]);
  const inp = g.cast(sliceDyn(g, img0, start, nImg, 1, [1, 'noisy_tokens', c.dim]), 'float32');
  return [outputHead(ctx, noisy, temb, grid), g.sub(g.cast(noisy, 'float32'), inp)];
}

// ---------------------------------------------------------------------------------------------------------
// Output head

/**
 * norm_out (AdaLayerNormContinuous), proj_out in float32 with the stored weights up-cast (the original's
 * high_quality_fp32_output_for_inference), unpatchify. x (1, T*h*w, D) -> (1, C, T*pt, h*p, w*p) float32.
 */
function outputHead(ctx: Ctx, x: Value, temb: Value, grid: Value): Value {
  const { g, ck, c } = ctx;
  return g.scope('head', () => {
    // (scale, shift): scale first, unlike the blocks' AdaLN-Zero chunks.
    const [scale, shift] = chunks(g, linear(ctx, g.silu(temb), 'norm_out.linear'), 2, c.dim);
    const out = modulate(g, x, shift, scale);
    const w = g.param(ck, 'proj_out.weight', { dtype: 'float32' });
    const b = g.param(ck, 'proj_out.bias', { dtype: 'float32' });
    const x2 = g.reshape(g.cast(out, 'float32'), [-1, c.dim]);
    let tokens = g.op('Gemm', [x2, w, b], { transB: 1 })[0]; // (N, C*pt*p*p)
    if (ctx.lora) tokens = g.add(tokens, loraDelta(ctx, x2, 'proj_out')); // in float32 too

    // Token (t, y, x) with channels (c, pt, ph, pw) -> output[c, t*pt + pt_, y*p + ph, x*p + pw].
    const k = [c.patchT, c.patch, c.patch];
    const t7 = reshapeDyn(g, tokens, g.concat([grid, g.ints([c.outChannels, ...k])], 0), ['T', 'h', 'w', c.outChannels, ...k]);
    const perm = g.transpose(t7, [3, 0, 4, 1, 5, 2, 6]); // (C, T, pt, h, p, w, p)
    const size = g.mul(grid, g.ints(k));
    return reshapeDyn(g, perm, g.concat([g.ints([1, c.outChannels]), size], 0), [1, c.outChannels, 'frames', 'height', 'width']);
  });
}

/** The head alone, for calls TeaCache skips: (noisy tokens + cached residual) -> velocity. */
function buildHead(ck: Checkpoint, c: DitConfig, o: DitGraphOptions): BuiltModel {
  const g = new Graph({ name: 'dit-head', precision: o.precision, castWeightsAt: o.castWeightsAt });
  const x0 = g.input('hidden_states', 'float32', [1, c.inChannels, 'frames', 'height', 'width']);
  const img = g.cast(patchEmbed(x0, { g, ck, c, lora: null, fuse: fusedBlocks(o), kernels: false }, 'x_embedder.proj', [c.patchT, c.patch, c.patch], false), 'float32'); // (1, T*h*w, D)
  const residual = g.input('residual', 'float32', [1, 'noisy_tokens', c.dim]);
  const temb = g.input('temb', 'float32', [1, c.dim]);
  const grid = g.input('latent_grid', 'int64', [3]);
  const x = g.cast(g.add(img, residual), g.precision); // what the blocks would have returned
  const [output] = withLora(g, ck, c, o, (ctx) => [outputHead(ctx, x, g.cast(temb, g.precision), grid)]);
  g.output(output, 'output');
  return g.toModel();
}

// ---------------------------------------------------------------------------------------------------------

/** Every checkpoint tensor the graphs read, with its shape (spec 5.13): checks loaders and writes test checkpoints. */
export function ditParameterShapes(c: DitConfig): Array<[string, number[]]> {
  const D = c.dim, F = Math.round(D * c.mlpRatio), hd = c.headDim, p = c.patch, C = c.inChannels;
  const out: Array<[string, number[]]> = [];
  const lin = (k: string, o: number, i: number) => out.push([`${k}.weight`, [o, i]], [`${k}.bias`, [o]]);
  const mlp = (k: string, i: number) => { lin(`${k}.linear_1`, D, i); lin(`${k}.linear_2`, D, D); };
  out.push(['x_embedder.proj.weight', [D, C, c.patchT, p, p]], ['x_embedder.proj.bias', [D]]);
  out.push(['clean_x_embedder.proj.weight', [D, C, c.patchT, p, p]], ['clean_x_embedder.proj.bias', [D]]);
  out.push(['clean_x_embedder.proj_2x.weight', [D, C, 2 * c.patchT, 2 * p, 2 * p]], ['clean_x_embedder.proj_2x.bias', [D]]);
  out.push(['clean_x_embedder.proj_4x.weight', [D, C, 4 * c.patchT, 4 * p, 4 * p]], ['clean_x_embedder.proj_4x.bias', [D]]);
  lin('image_projection.up', 3 * D, c.imageProjDim);
  lin('image_projection.down', D, 3 * D);
  mlp('time_text_embed.timestep_embedder', 256);
  if (c.guidance) mlp('time_text_embed.guidance_embedder', 256);
  mlp('time_text_embed.text_embedder', c.pooledDim);
  mlp('context_embedder.time_text_embed.timestep_embedder', 256);
  mlp('context_embedder.time_text_embed.text_embedder', c.textDim);
  lin('context_embedder.proj_in', D, c.textDim);
  for (let i = 0; i < c.refinerLayers; i++) {
    const b = `context_embedder.token_refiner.refiner_blocks.${i}`;
    out.push([`${b}.norm1.weight`, [D]], [`${b}.norm1.bias`, [D]]);
    for (const n of ['to_q', 'to_k', 'to_v', 'to_out.0']) lin(`${b}.attn.${n}`, D, D);
    out.push([`${b}.norm2.weight`, [D]], [`${b}.norm2.bias`, [D]]);
    lin(`${b}.ff.net.0.proj`, F, D);
    lin(`${b}.ff.net.2`, D, F);
    lin(`${b}.norm_out.linear`, 2 * D, D);
  }
  for (let i = 0; i < c.dualLayers; i++) {
    const b = `transformer_blocks.${i}`;
    lin(`${b}.norm1.linear`, 6 * D, D);
    lin(`${b}.norm1_context.linear`, 6 * D, D);
    for (const n of ['to_q', 'to_k', 'to_v', 'add_q_proj', 'add_k_proj', 'add_v_proj', 'to_out.0', 'to_add_out']) lin(`${b}.attn.${n}`, D, D);
    for (const n of ['norm_q', 'norm_k', 'norm_added_q', 'norm_added_k']) out.push([`${b}.attn.${n}.weight`, [hd]]);
    for (const ff of ['ff', 'ff_context']) { lin(`${b}.${ff}.net.0.proj`, F, D); lin(`${b}.${ff}.net.2`, D, F); }
  }
  for (let i = 0; i < c.singleLayers; i++) {
    const b = `single_transformer_blocks.${i}`;
    for (const n of ['to_q', 'to_k', 'to_v']) lin(`${b}.attn.${n}`, D, D);
    out.push([`${b}.attn.norm_q.weight`, [hd]], [`${b}.attn.norm_k.weight`, [hd]]);
    lin(`${b}.norm.linear`, 3 * D, D);
    lin(`${b}.proj_mlp`, F, D);
    lin(`${b}.proj_out`, D, D + F);
  }
  lin('norm_out.linear', 2 * D, D);
  lin('proj_out', c.outChannels * c.patchT * p * p, D);
  return out;
}

/** The three graphs of a transformer checkpoint folder (config.json + safetensors). */
export function buildDitGraphs(ck: Checkpoint, opts: DitGraphOptions): DitGraphs {
  const config = ditConfig(ck.config);
  return {
    config,
    lora: opts.lora === true,
    embed: buildEmbed(ck, config, opts),
    blocks: buildBlocks(ck, config, opts),
    head: buildHead(ck, config, opts),
    teacacheMeasure: buildTeaCacheMeasure(config.dim),
  };
}

/**
 * TeaCache's measure without bringing the modulated inputs to the host (~220 MB a call at 640 px):
 * current, previous (1, tokens, D) float32 -> sums (2,) float32 = [sum |current - previous|, sum |previous|].
 * The host divides (teacache.ts relativeL1FromSums); float32 sums, the original's bf16 means are rounded there.
 */
export function buildTeaCacheMeasure(dim: number): BuiltModel {
  const g = new Graph({ name: 'dit-teacache-measure', precision: 'float32' });
  const cur = g.input('current', 'float32', [1, 'tokens', dim]);
  const prev = g.input('previous', 'float32', [1, 'tokens', dim]);
  const sum = (x: Value) => g.op('ReduceSum', [g.op('Abs', [x])[0]], { keepdims: 0 }, { shape: [] })[0];
  g.output(g.concat([g.unsqueeze(sum(g.sub(cur, prev)), [0]), g.unsqueeze(sum(prev), [0])], 0), 'sums');
  return g.toModel();
}
