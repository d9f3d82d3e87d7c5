/**
 * The LLaMA text encoder as FramePack uses it: transformers' `LlamaModel` run with
 * `output_hidden_states=True`, keeping `hidden_states[-3]`, the raw output of decoder layer N-3 (layer 29
 * of LLaVA-LLaMA-3-8B's 32). The graph therefore runs layers 0..N-3 only, with no final norm and no LM
 * head: the last two layers and `norm.weight` are never read.
 *
 * References: transformers `models/llama/modeling_llama.py` (LlamaModel, LlamaDecoderLayer, LlamaAttention,
 * LlamaRMSNorm, LlamaRotaryEmbedding); Su et al., "RoFormer" (2021) for rotary embeddings; Ainslie et al.,
 * "GQA" (2023) for grouped key/value heads.
 *
 * Inputs: input_ids int64 (B, S); attention_mask int64 (B, S), 1 = token, 0 = padding (keys only, as
 * transformers does; positions are always 0..S-1). Output: hidden_states_minus_3 float32 (B, S, D).
 * FramePack feeds the tokenizer's whole padded length (src/framepack/text.ts).
 */
import { Graph, type BuiltModel, type Precision, type Value } from '../onnx/graph.js';
import { Checkpoint, type HostTensor } from '../onnx/safetensors.js';
import { Session } from '../runtime/session.js';
import type { ForwardNet } from './registry.js';

export interface LlamaConfig {
  hidden: number;
  intermediate: number;
  layers: number; // in the checkpoint
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  ropeTheta: number;
  maxPositions: number;
}

export function llamaConfig(c: Record<string, any>): LlamaConfig {
  if (c.rope_scaling) throw new Error(`LLaMA: rope_scaling ${JSON.stringify(c.rope_scaling)} is not supported`);
  if (c.attention_bias || c.mlp_bias) throw new Error('LLaMA: attention/MLP biases are not supported');
  if (c.hidden_act && c.hidden_act !== 'silu') throw new Error(`LLaMA: hidden_act ${c.hidden_act} is not supported`);
  const heads = c.num_attention_heads;
  return {
    hidden: c.hidden_size,
    intermediate: c.intermediate_size,
    layers: c.num_hidden_layers,
    heads,
    kvHeads: c.num_key_value_heads ?? heads,
    headDim: c.head_dim ?? c.hidden_size / heads,
    eps: c.rms_norm_eps ?? 1e-6,
    ropeTheta: c.rope_theta ?? 10000,
    maxPositions: c.max_position_embeddings ?? 2048,
  };
}

/** Which hidden state FramePack takes, counted from the end of transformers' tuple (emb, l0, ..., norm(lN-1)). */
export const HIDDEN_STATE_FROM_END = 3;

export interface LlamaBuildOptions {
  precision: Precision;
  quantize?: { bits: 4 | 8; blockSize?: number; cacheDir?: string };
  castWeightsAt?: 'load' | 'run';
}

/**
 * cos/sin tables (maxPositions, headDim/2) for the half-split rotary embedding. Computed like transformers:
 * inv_freq and angle rounded to float32, cosine of the float32 angle.
 */
function rotaryTables(cfg: LlamaConfig): { cos: Float32Array; sin: Float32Array } {
  const half = cfg.headDim / 2;
  const f = Math.fround;
  const invFreq = Array.from({ length: half }, (_, k) => f(1 / f(cfg.ropeTheta ** f((2 * k) / cfg.headDim))));
  const cos = new Float32Array(cfg.maxPositions * half);
  const sin = new Float32Array(cfg.maxPositions * half);
  for (let p = 0; p < cfg.maxPositions; p++) {
    for (let k = 0; k < half; k++) {
      const angle = f(p * invFreq[k]);
      cos[p * half + k] = Math.cos(angle);
      sin[p * half + k] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

export function buildLlama(ckpt: Checkpoint, opts: LlamaBuildOptions): BuiltModel {
  const cfg = llamaConfig(ckpt.config);
  const runLayers = cfg.layers - (HIDDEN_STATE_FROM_END - 1);
  if (runLayers < 1) throw new Error(`LLaMA: ${cfg.layers} layers, hidden_states[-${HIDDEN_STATE_FROM_END}] needs at least 2`);
  const pre = ckpt.has('embed_tokens.weight') ? '' : 'model.';
  const g = new Graph({ name: 'llama', precision: opts.precision, quantize: opts.quantize, castWeightsAt: opts.castWeightsAt });
  const { hidden: D, heads: H, kvHeads: KV, headDim: hd } = cfg;
  const p = (key: string, shape?: number[]) => g.param(ckpt, pre + key, { shape });

  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const attentionMask = g.input('attention_mask', 'int64', ['batch', 'seq']);

  // positions 0..S-1, shared by every row of the batch
  const seqLen = g.op('Shape', [ids], { start: 1, end: 2 }, { dtype: 'int64', shape: [1] })[0];
  const seqScalar = g.squeeze(seqLen, [0]);
  const range = g.op('Range', [g.constant(BigInt64Array.of(0n), [], 'int64'), seqScalar, g.constant(BigInt64Array.of(1n), [], 'int64')],
    {}, { dtype: 'int64', shape: ['seq'] })[0];
  const positions = g.op('Expand', [g.unsqueeze(range, [0]), g.op('Shape', [ids], {}, { dtype: 'int64', shape: [2] })[0]],
    {}, { dtype: 'int64', shape: ['batch', 'seq'] })[0]; // (B, S)

  // additive attention bias (B, 1, S, S): key j visible from query i when j <= i and mask[j] = 1
  const bias = g.scope('mask', () => {
    const qi = g.unsqueeze(range, [1]); // (S, 1)
    const kj = g.unsqueeze(range, [0]); // (1, S)
    const causal = g.op('LessOrEqual', [kj, qi], {}, { dtype: 'bool', shape: ['seq', 'seq'] })[0];
    const keep = g.op('Equal', [attentionMask, g.constant(BigInt64Array.of(1n), [], 'int64')], {},
      { dtype: 'bool', shape: ['batch', 'seq'] })[0];
    const keepKeys = g.unsqueeze(keep, [1, 2]); // (B, 1, 1, S)
    const allowed = g.op('And', [causal, keepKeys], {}, { dtype: 'bool', shape: ['batch', 1, 'seq', 'seq'] })[0];
    const min = opts.precision === 'float32' ? -3.4028234663852886e38 : opts.precision === 'float16' ? -65504 : -3.3895313892515355e38;
    return g.where(allowed, g.scalar(0), g.scalar(min)); // (B, 1, S, S)
  });

  const { cos, sin } = rotaryTables(cfg);
  const cosT = g.cast(g.constant(cos, [cfg.maxPositions, hd / 2]));
  const sinT = g.cast(g.constant(sin, [cfg.maxPositions, hd / 2]));

  function attention(x: Value, i: number): Value {
    return g.scope('self_attn', () => {
      const q = g.linear(x, ckpt, `${pre}layers.${i}.self_attn.q_proj`); // (B, S, H*hd)
      const k = g.linear(x, ckpt, `${pre}layers.${i}.self_attn.k_proj`); // (B, S, KV*hd)
      const v = g.linear(x, ckpt, `${pre}layers.${i}.self_attn.v_proj`); // (B, S, KV*hd)
      const qr = g.rotary(q, positions, cosT, sinT, { interleaved: false, heads: H, rotaryDim: hd });
      const kr = g.rotary(k, positions, cosT, sinT, { interleaved: false, heads: KV, rotaryDim: hd });
      // GQA: key/value head j serves query heads j*rep .. j*rep+rep-1
      const repeatKv = (t: Value) => {
        if (KV === H) return t;
        const t5 = g.reshape(t, [0, 0, KV, 1, hd]); // (B, S, KV, 1, hd)
        const e = g.op('Expand', [t5, g.ints([1, 1, 1, H / KV, 1])], {}, { shape: ['batch', 'seq', KV, H / KV, hd] })[0];
        return g.reshape(e, [0, 0, H * hd]); // (B, S, H*hd)
      };
      const y = g.attention(qr, repeatKv(kr), repeatKv(v), { heads: H, scale: 1 / Math.sqrt(hd), bias }); // (B, S, H*hd)
      return g.linear(y, ckpt, `${pre}layers.${i}.self_attn.o_proj`); // (B, S, D)
    });
  }

  function mlp(x: Value, i: number): Value {
    return g.scope('mlp', () => {
      const gate = g.silu(g.linear(x, ckpt, `${pre}layers.${i}.mlp.gate_proj`)); // (B, S, I)
      const up = g.linear(x, ckpt, `${pre}layers.${i}.mlp.up_proj`); // (B, S, I)
      return g.linear(g.mul(gate, up), ckpt, `${pre}layers.${i}.mlp.down_proj`); // (B, S, D)
    });
  }

  function block(x: Value, i: number): Value {
    return g.scope(`layers.${i}`, () => {
      const h = g.add(x, attention(g.rmsNorm(x, p(`layers.${i}.input_layernorm.weight`, [D]), cfg.eps), i));
      return g.add(h, mlp(g.rmsNorm(h, p(`layers.${i}.post_attention_layernorm.weight`, [D]), cfg.eps), i));
    });
  }

  let x = g.gather(p('embed_tokens.weight'), ids, 0); // (B, S, D)
  for (let i = 0; i < runLayers; i++) x = block(x, i);
  g.output(g.cast(x, 'float32'), 'hidden_states_minus_3');
  return g.toModel();
}

/** `framepack forward llama`: input_ids (+ attention_mask, ones when absent) -> hidden_states_minus_3. */
export const llamaNet: ForwardNet = {
  inputs: ['input_ids', 'attention_mask'],
  outputs: ['hidden_states_minus_3'],
  async forward(dir, feeds, opts) {
    const ids = feeds.input_ids;
    const ones: HostTensor = { dtype: 'int64', dims: [...ids.dims], data: new BigInt64Array(ids.data.length).fill(1n) };
    const session = await Session.create(buildLlama(await Checkpoint.open(dir), opts), { ep: opts.ep });
    try {
      return await session.run({ input_ids: ids, attention_mask: feeds.attention_mask ?? ones });
    } finally {
      await session.release();
    }
  },
};
