/**
 * The pre-LayerNorm transformer encoder layer shared by CLIP's text tower and SigLIP's vision tower
 * (transformers `CLIPEncoderLayer` / `SiglipEncoderLayer`: same keys, same arithmetic):
 *
 *   h = x + out_proj(MHA(LN1(x)))          q_proj, k_proj, v_proj, out_proj with biases
 *   y = h + fc2(act(fc1(LN2(h))))
 *
 * Keys under `<prefix>`: layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2.
 */
import type { Graph, Value } from '../onnx/graph.js';
import type { Checkpoint } from '../onnx/safetensors.js';

export interface EncoderLayerOptions {
  heads: number;
  eps: number;
  /** the MLP's activation */
  act: (h: Value) => Value;
  /** additive attention bias, (1, 1, S, S) (CLIP's causal mask) */
  bias?: Value;
}

/** x (B, S, D) -> (B, S, D) */
export function encoderLayer(g: Graph, ckpt: Checkpoint, prefix: string, x: Value, o: EncoderLayerOptions): Value {
  const D = Number(x.shape[x.shape.length - 1]);
  const layerNorm = (v: Value, name: string) => g.layerNorm(v,
    g.param(ckpt, `${prefix}.${name}.weight`, { shape: [D] }), g.param(ckpt, `${prefix}.${name}.bias`, { shape: [D] }), o.eps);

  const attention = (v: Value) => g.scope('self_attn', () => {
    const q = g.linear(v, ckpt, `${prefix}.self_attn.q_proj`); // (B, S, D)
    const k = g.linear(v, ckpt, `${prefix}.self_attn.k_proj`);
    const w = g.linear(v, ckpt, `${prefix}.self_attn.v_proj`);
    const y = g.attention(q, k, w, { heads: o.heads, scale: 1 / Math.sqrt(D / o.heads), bias: o.bias }); // (B, S, D)
    return g.linear(y, ckpt, `${prefix}.self_attn.out_proj`);
  });

  const mlp = (v: Value) => g.scope('mlp', () => {
    const h = g.linear(v, ckpt, `${prefix}.mlp.fc1`); // (B, S, I)
    return g.linear(o.act(h), ckpt, `${prefix}.mlp.fc2`); // (B, S, D)
  });

  const h = g.add(x, attention(layerNorm(x, 'layer_norm1')));
  return g.add(h, mlp(layerNorm(h, 'layer_norm2')));
}
