/**
 * SigLIP's vision tower (transformers `SiglipVisionModel`, so400m-patch14-384 from FLUX.1-Redux in
 * FramePack), computing the post-layernormed `last_hidden_state` FramePack feeds to its image projection.
 * The attention-pooling head (`vision_model.head.*`) is not used and not built.
 *
 * References: transformers `models/siglip/modeling_siglip.py` (SiglipVisionEmbeddings, SiglipEncoderLayer,
 * SiglipAttention, SiglipMLP); Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (2023);
 * Dosovitskiy et al., "An Image is Worth 16x16 Words" (2020) for patch embeddings.
 *
 * Input: pixel_values float32 (B, 3, image_size, image_size) in [-1, 1]. Output: last_hidden_state float32
 * (B, P, D) with P = (image_size // patch)^2 patches, row-major, no class token (729 x 1152 for the real
 * model; the last 384 - 27*14 = 6 pixel rows and columns are never seen by the stride-14 convolution).
 */
import { Graph, type BuiltModel, type Precision, type Value } from '../onnx/graph.js';
import { Checkpoint } from '../onnx/safetensors.js';
import { Session } from '../runtime/session.js';
import { encoderLayer } from './encoder-layer.js';
import type { ForwardNet } from './registry.js';

export interface SiglipVisionConfig {
  hidden: number;
  heads: number;
  layers: number;
  eps: number;
  act: 'gelu_pytorch_tanh' | 'gelu';
  imageSize: number;
  patch: number;
  channels: number;
}

export function siglipVisionConfig(c: Record<string, any>): SiglipVisionConfig {
  const v = c.vision_config ?? c; // a full SiglipModel config nests the vision tower
  const act = v.hidden_act ?? 'gelu_pytorch_tanh';
  if (act !== 'gelu_pytorch_tanh' && act !== 'gelu') throw new Error(`SigLIP: hidden_act ${act} is not supported`);
  return {
    hidden: v.hidden_size,
    heads: v.num_attention_heads,
    layers: v.num_hidden_layers,
    eps: v.layer_norm_eps ?? 1e-6,
    act,
    imageSize: v.image_size ?? 224,
    patch: v.patch_size ?? 16,
    channels: v.num_channels ?? 3,
  };
}

export interface SiglipBuildOptions {
  precision: Precision;
  quantize?: { bits: 4 | 8; blockSize?: number; cacheDir?: string };
}

export function buildSiglipVision(ckpt: Checkpoint, opts: SiglipBuildOptions): BuiltModel {
  const cfg = siglipVisionConfig(ckpt.config);
  const pre = ckpt.has('vision_model.post_layernorm.weight') ? 'vision_model.' : '';
  const g = new Graph({ name: 'siglip', precision: opts.precision, quantize: opts.quantize });
  const { hidden: D, heads: H, patch: P } = cfg;
  const grid = Math.floor(cfg.imageSize / P);
  const patches = grid * grid;
  const p = (key: string, shape?: number[]) => g.param(ckpt, pre + key, { shape });
  const layerNorm = (x: Value, prefix: string) => g.layerNorm(x, p(`${prefix}.weight`, [D]), p(`${prefix}.bias`, [D]), cfg.eps);

  const pixels = g.input('pixel_values', 'float32', ['batch', cfg.channels, cfg.imageSize, cfg.imageSize]);

  function embeddings(x: Value): Value {
    return g.scope('embeddings', () => {
      const w = p('embeddings.patch_embedding.weight', [D, cfg.channels, P, P]);
      const b = p('embeddings.patch_embedding.bias', [D]);
      const conv = g.conv2d(g.cast(x), w, b, { stride: P }); // (B, D, grid, grid)
      const seq = g.transpose(g.reshape(conv, [0, D, patches]), [0, 2, 1]); // (B, P, D)
      return g.add(seq, p('embeddings.position_embedding.weight', [patches, D])); // (B, P, D)
    });
  }

  const act = (h: Value) => g.gelu(h, cfg.act === 'gelu_pytorch_tanh' ? 'tanh' : 'none');
  const block = (x: Value, i: number) => g.scope(`layers.${i}`, () =>
    encoderLayer(g, ckpt, `${pre}encoder.layers.${i}`, x, { heads: H, eps: cfg.eps, act }));

  let x = embeddings(pixels);
  for (let i = 0; i < cfg.layers; i++) x = block(x, i);
  g.output(g.cast(layerNorm(x, 'post_layernorm'), 'float32'), 'last_hidden_state');
  return g.toModel();
}

/** `framepack forward siglip`: pixel_values -> last_hidden_state. */
export const siglipNet: ForwardNet = {
  inputs: ['pixel_values'],
  outputs: ['last_hidden_state'],
  async forward(dir, feeds, opts) {
    const session = await Session.create(buildSiglipVision(await Checkpoint.open(dir), opts), { ep: opts.ep });
    try {
      return await session.run({ pixel_values: feeds.pixel_values });
    } finally {
      await session.release();
    }
  },
};
