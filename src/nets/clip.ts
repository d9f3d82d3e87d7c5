/**
 * CLIP's text tower (transformers `CLIPTextModel`, OpenAI ViT-L/14's text encoder in FramePack), computing
 * `last_hidden_state` and the `pooler_output` FramePack uses: the final-layer-normed state at the end-of-text
 * token. No text projection.
 *
 * References: transformers `models/clip/modeling_clip.py` (CLIPTextTransformer, CLIPEncoderLayer,
 * CLIPAttention, quick_gelu); Radford et al., "Learning Transferable Visual Models From Natural Language
 * Supervision" (2021).
 *
 * Pooling follows transformers: with the legacy config value eos_token_id == 2 (the real checkpoint's) the
 * position is the argmax of the ids (the first `<|endoftext|>`, the highest id in the vocabulary);
 * otherwise the first position holding eos_token_id. Attention is causal and unmasked, as FramePack calls
 * the model without an attention mask.
 *
 * Input: input_ids int64 (B, S), S <= max_position_embeddings (77). Outputs float32:
 * last_hidden_state (B, S, D), pooler_output (B, D).
 */
import { Graph, type BuiltModel, type Precision, type Value } from '../onnx/graph.js';
import { Checkpoint } from '../onnx/safetensors.js';
import { Session } from '../runtime/session.js';
import { encoderLayer } from './encoder-layer.js';
import type { ForwardNet } from './registry.js';

export interface ClipTextConfig {
  hidden: number;
  heads: number;
  layers: number;
  eps: number;
  act: 'quick_gelu' | 'gelu';
  maxPositions: number;
  eosTokenId: number;
}

export function clipTextConfig(c: Record<string, any>): ClipTextConfig {
  // a full CLIPModel config nests the text tower
  const t = c.text_config ?? c;
  const act = t.hidden_act ?? 'quick_gelu';
  if (act !== 'quick_gelu' && act !== 'gelu') throw new Error(`CLIP: hidden_act ${act} is not supported`);
  return {
    hidden: t.hidden_size,
    heads: t.num_attention_heads,
    layers: t.num_hidden_layers,
    eps: t.layer_norm_eps ?? 1e-5,
    act,
    maxPositions: t.max_position_embeddings ?? 77,
    eosTokenId: t.eos_token_id ?? 2,
  };
}

export interface ClipBuildOptions {
  precision: Precision;
  quantize?: { bits: 4 | 8; blockSize?: number; cacheDir?: string };
}

export function buildClipText(ckpt: Checkpoint, opts: ClipBuildOptions): BuiltModel {
  const cfg = clipTextConfig(ckpt.config);
  const pre = ckpt.has('text_model.final_layer_norm.weight') ? 'text_model.' : '';
  const g = new Graph({ name: 'clip', precision: opts.precision, quantize: opts.quantize });
  const { hidden: D, heads: H } = cfg;
  const p = (key: string, shape?: number[]) => g.param(ckpt, pre + key, { shape });
  const layerNorm = (x: Value, prefix: string) => g.layerNorm(x, p(`${prefix}.weight`, [D]), p(`${prefix}.bias`, [D]), cfg.eps);

  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);

  const seqLen = g.op('Shape', [ids], { start: 1, end: 2 }, { dtype: 'int64', shape: [1] })[0];
  const range = g.op('Range', [g.constant(BigInt64Array.of(0n), [], 'int64'), g.squeeze(seqLen, [0]),
    g.constant(BigInt64Array.of(1n), [], 'int64')], {}, { dtype: 'int64', shape: ['seq'] })[0]; // (S)

  // causal additive bias (1, 1, S, S): 0 on and below the diagonal, the dtype's minimum above
  const causal = g.scope('causal_mask', () => {
    const allowed = g.op('LessOrEqual', [g.unsqueeze(range, [0]), g.unsqueeze(range, [1])], {},
      { dtype: 'bool', shape: ['seq', 'seq'] })[0];
    const min = opts.precision === 'float32' ? -3.4028234663852886e38 : opts.precision === 'float16' ? -65504 : -3.3895313892515355e38;
    return g.unsqueeze(g.where(allowed, g.scalar(0), g.scalar(min)), [0, 1]);
  });

  // quick_gelu: x * sigmoid(1.702 x)
  const act = (h: Value) => cfg.act === 'quick_gelu' ? g.mul(h, g.sigmoid(g.mul(h, 1.702))) : g.gelu(h);
  const block = (x: Value, i: number) => g.scope(`layers.${i}`, () =>
    encoderLayer(g, ckpt, `${pre}encoder.layers.${i}`, x, { heads: H, eps: cfg.eps, act, bias: causal }));

  const tokens = g.gather(p('embeddings.token_embedding.weight'), ids, 0); // (B, S, D)
  const pos = g.gather(p('embeddings.position_embedding.weight', [cfg.maxPositions, D]), range, 0); // (S, D)
  let x = g.add(tokens, pos);
  for (let i = 0; i < cfg.layers; i++) x = block(x, i);
  const last = layerNorm(x, 'final_layer_norm'); // (B, S, D)

  const pooled = g.scope('pool', () => {
    const ids32 = g.cast(ids, 'int32');
    const key = cfg.eosTokenId === 2 ? ids32
      : g.cast(g.op('Equal', [ids32, g.constant(Int32Array.of(cfg.eosTokenId), [], 'int32')], {}, { dtype: 'bool' })[0], 'int32');
    // ArgMax returns the first index of the maximum
    const at = g.op('ArgMax', [key], { axis: 1, keepdims: 1, select_last_index: 0 }, { dtype: 'int64', shape: ['batch', 1] })[0];
    return g.op('GatherND', [last, at], { batch_dims: 1 }, { shape: ['batch', D] })[0]; // (B, D)
  });

  g.output(g.cast(last, 'float32'), 'last_hidden_state');
  g.output(g.cast(pooled, 'float32'), 'pooler_output');
  return g.toModel();
}

/** `framepack forward clip`: input_ids -> last_hidden_state, pooler_output. */
export const clipNet: ForwardNet = {
  inputs: ['input_ids'],
  outputs: ['last_hidden_state', 'pooler_output'],
  async forward(dir, feeds, opts) {
    const session = await Session.create(buildClipText(await Checkpoint.open(dir), opts), { ep: opts.ep });
    try {
      return await session.run({ input_ids: feeds.input_ids });
    } finally {
      await session.release();
    }
  },
};
