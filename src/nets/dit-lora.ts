/**
 * LoRA files for the packed transformer: the key layouts people publish for HunyuanVideo and FramePack, mapped
 * onto the DiT's linear layers, and combined into the per-layer inputs the LoRA branches of dit.ts take.
 *
 * Layouts (each key is `<prefix><module><suffix>`):
 *   diffusers / PEFT   `transformer.` (or none) + the diffusers module (transformer_blocks.0.attn.to_q, ...)
 *                      + `.lora_A.weight` / `.lora_B.weight`; scale 1, or lora_alpha / r from the file's
 *                      `lora_adapter_metadata`, or alpha / r where `.alpha` keys are present.
 *   original names     `diffusion_model.` (or `transformer.`, or none) + HunyuanVideo's own module names
 *                      (double_blocks.0.img_attn_qkv, single_blocks.0.linear1, txt_in..., final_layer.linear),
 *                      converted as diffusers' `_convert_hunyuan_video_lora_to_diffusers` does: fused q/k/v
 *                      (and single-block q/k/v/mlp) share lora_A and split lora_B by rows; the final
 *                      adaLN's (shift, scale) rows become (scale, shift).
 *   kohya / musubi     `lora_unet_` + either naming with `.` written `_` + `.lora_down.weight` /
 *                      `.lora_up.weight` / `.alpha`; scale alpha / r (1 without alpha), as musubi-tuner's
 *                      LoRA network applies it.
 * Two deliberate differences from diffusers' converter, which chunks lora_A along the rank for the refiner's
 * fused self_attn_qkv and the final adaLN (only lora_B's rows belong to the split outputs): here lora_A is
 * shared and only lora_B's rows are split or swapped.
 *
 * A key of any other form (DoRA scales, LoHa/LoKr, LoRA biases, convolution layers, modules the DiT does not
 * have) or a tensor of the wrong shape is a LoraError naming the first such key.
 */
import type { HostTensor } from '../onnx/safetensors.js';
import { ditParameterShapes, loraInputName, type DitConfig } from './dit.js';

export class LoraError extends Error {
  override name = 'LoraError';
}

/** One layer's low-rank update: W' = W + scale x up @ down, down (r, in), up (out, r). */
export interface LoraUpdate {
  down: Float32Array;
  up: Float32Array;
  rank: number;
  scale: number;
}

/** A parsed LoRA file: its updates by DiT layer name. */
export type LoraFile = Map<string, LoraUpdate>;

/** Target of a module name: one DiT layer, or a fused layer whose output rows split over several. */
interface Target {
  layers: string[];
  /** rows of the fused output per layer (one entry per layer) */
  rows: number[];
  /** the fused output's halves are swapped: (shift, scale) rows -> (scale, shift) */
  swapHalves?: boolean;
}

/** The DiT's linear layers and their (out, in) shapes. */
export function ditLinears(c: DitConfig): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  for (const [key, shape] of ditParameterShapes(c)) {
    if (key.endsWith('.weight') && shape.length === 2) out.set(key.slice(0, -'.weight'.length), [shape[0], shape[1]]);
  }
  return out;
}

/** HunyuanVideo's original module names -> the DiT's layers (diffusers' conversion, with lora_A shared on splits). */
function originalNames(c: DitConfig, linears: Map<string, [number, number]>): Map<string, Target> {
  const D = c.dim, F = Math.round(D * c.mlpRatio);
  const t = new Map<string, Target>();
  const one = (name: string, layer: string) => t.set(name, { layers: [layer], rows: [linears.get(layer)?.[0] ?? 0] });
  for (let i = 0; i < c.dualLayers; i++) {
    const d = `double_blocks.${i}`, b = `transformer_blocks.${i}`;
    t.set(`${d}.img_attn_qkv`, { layers: ['to_q', 'to_k', 'to_v'].map((n) => `${b}.attn.${n}`), rows: [D, D, D] });
    t.set(`${d}.txt_attn_qkv`, { layers: ['add_q_proj', 'add_k_proj', 'add_v_proj'].map((n) => `${b}.attn.${n}`), rows: [D, D, D] });
    one(`${d}.img_attn_proj`, `${b}.attn.to_out.0`);
    one(`${d}.txt_attn_proj`, `${b}.attn.to_add_out`);
    one(`${d}.img_mlp.fc1`, `${b}.ff.net.0.proj`);
    one(`${d}.img_mlp.fc2`, `${b}.ff.net.2`);
    one(`${d}.txt_mlp.fc1`, `${b}.ff_context.net.0.proj`);
    one(`${d}.txt_mlp.fc2`, `${b}.ff_context.net.2`);
    one(`${d}.img_mod.linear`, `${b}.norm1.linear`);
    one(`${d}.txt_mod.linear`, `${b}.norm1_context.linear`);
  }
  for (let i = 0; i < c.singleLayers; i++) {
    const s = `single_blocks.${i}`, b = `single_transformer_blocks.${i}`;
    t.set(`${s}.linear1`, { layers: [`${b}.attn.to_q`, `${b}.attn.to_k`, `${b}.attn.to_v`, `${b}.proj_mlp`], rows: [D, D, D, F] });
    one(`${s}.linear2`, `${b}.proj_out`);
    one(`${s}.modulation.linear`, `${b}.norm.linear`);
  }
  for (let i = 0; i < c.refinerLayers; i++) {
    const r = `txt_in.individual_token_refiner.blocks.${i}`, b = `context_embedder.token_refiner.refiner_blocks.${i}`;
    t.set(`${r}.self_attn_qkv`, { layers: ['to_q', 'to_k', 'to_v'].map((n) => `${b}.attn.${n}`), rows: [D, D, D] });
    one(`${r}.self_attn_proj`, `${b}.attn.to_out.0`);
    one(`${r}.mlp.fc1`, `${b}.ff.net.0.proj`);
    one(`${r}.mlp.fc2`, `${b}.ff.net.2`);
    one(`${r}.adaLN_modulation.1`, `${b}.norm_out.linear`);
  }
  one('txt_in.input_embedder', 'context_embedder.proj_in');
  one('txt_in.t_embedder.mlp.0', 'context_embedder.time_text_embed.timestep_embedder.linear_1');
  one('txt_in.t_embedder.mlp.2', 'context_embedder.time_text_embed.timestep_embedder.linear_2');
  one('txt_in.c_embedder.linear_1', 'context_embedder.time_text_embed.text_embedder.linear_1');
  one('txt_in.c_embedder.linear_2', 'context_embedder.time_text_embed.text_embedder.linear_2');
  one('time_in.mlp.0', 'time_text_embed.timestep_embedder.linear_1');
  one('time_in.mlp.2', 'time_text_embed.timestep_embedder.linear_2');
  if (c.guidance) {
    one('guidance_in.mlp.0', 'time_text_embed.guidance_embedder.linear_1');
    one('guidance_in.mlp.2', 'time_text_embed.guidance_embedder.linear_2');
  }
  one('vector_in.in_layer', 'time_text_embed.text_embedder.linear_1');
  one('vector_in.out_layer', 'time_text_embed.text_embedder.linear_2');
  one('final_layer.linear', 'proj_out');
  t.set('final_layer.adaLN_modulation.1', { layers: ['norm_out.linear'], rows: [2 * D], swapHalves: true });
  return t;
}

/** Every module name a LoRA may address (both namings), with its target. */
function moduleTable(c: DitConfig): Map<string, Target> {
  const linears = ditLinears(c);
  const table = originalNames(c, linears);
  for (const [layer, [out]] of linears) table.set(layer, { layers: [layer], rows: [out] });
  return table;
}

type Part = 'down' | 'up' | 'alpha';

/** `<module>` and its part, or why the key is not a LoRA key this loader reads. */
function splitKey(key: string, kohya: Map<string, string>): { module: string; part: Part } | string {
  const m = /^(.*?)\.(lora_A|lora_down|lora_B|lora_up)\.weight$/.exec(key) ?? /^(.*?)\.(alpha)$/.exec(key);
  if (!m) {
    if (/dora_scale|lora_magnitude_vector/.test(key)) return 'DoRA is not supported';
    if (/hada_|lokr_/.test(key)) return 'LoHa / LoKr are not supported';
    if (/\.lora_B\.bias$|\.lora_up\.bias$/.test(key)) return 'LoRA biases are not supported';
    if (/\.(diff|diff_b)$/.test(key)) return 'full weight differences are not supported';
    return 'not a lora_A/lora_B, lora_down/lora_up or alpha key';
  }
  const part: Part = m[2] === 'alpha' ? 'alpha' : m[2] === 'lora_A' || m[2] === 'lora_down' ? 'down' : 'up';
  let module = m[1];
  if (module.startsWith('lora_unet_')) {
    const dotted = kohya.get(module.slice('lora_unet_'.length));
    if (!dotted) return 'no layer of the FramePack transformer has this kohya name';
    return { module: dotted, part };
  }
  for (const prefix of ['transformer.', 'diffusion_model.']) if (module.startsWith(prefix)) module = module.slice(prefix.length);
  return { module, part };
}

const toFloat32 = (t: HostTensor): Float32Array => {
  if (t.dtype !== 'float32') throw new Error(`expected a float tensor, got ${t.dtype}`);
  return t.data as Float32Array;
};

/** Per-module alphas from diffusers' `lora_adapter_metadata` (lora_alpha and alpha_pattern), if the file has them. */
function metadataAlpha(metadata: Record<string, string>): ((module: string) => number | undefined) | null {
  const raw = metadata.lora_adapter_metadata;
  if (!raw) return null;
  let meta: { lora_alpha?: number; alpha_pattern?: Record<string, number> };
  try {
    meta = JSON.parse(raw);
  } catch {
    throw new LoraError('lora_adapter_metadata is not JSON');
  }
  if (typeof meta.lora_alpha !== 'number') return null;
  const patterns = Object.entries(meta.alpha_pattern ?? {}).map(([k, v]) => [k.replace(/^\^/, '').replace(/^transformer\./, ''), v] as const);
  return (module) => patterns.find(([k]) => module === k || module.endsWith(`.${k}`))?.[1] ?? meta.lora_alpha;
}

/**
 * The updates of one LoRA file's tensors (and header metadata) for the transformer of config `c`. `name`
 * names the file in errors. Throws LoraError at the first key it cannot use.
 */
export function parseLora(tensors: Record<string, HostTensor>, metadata: Record<string, string>, c: DitConfig, name: string): LoraFile {
  const table = moduleTable(c);
  const kohya = new Map([...table.keys()].map((k) => [k.replace(/\./g, '_'), k]));
  const linears = ditLinears(c);
  const fromMetadata = metadataAlpha(metadata);
  const modules = new Map<string, Partial<Record<Part, HostTensor>> & { kohya: boolean; firstKey: string }>();
  const fail = (key: string, why: string) => new LoraError(`LoRA ${name}: key "${key}": ${why}`);

  for (const key of Object.keys(tensors).sort()) {
    const k = splitKey(key, kohya);
    if (typeof k === 'string') throw fail(key, k);
    if (!table.has(k.module)) throw fail(key, `no linear layer of the FramePack transformer is called "${k.module}"`);
    const entry = modules.get(k.module) ?? { kohya: false, firstKey: key };
    if (entry[k.part]) throw fail(key, `a second ${k.part} tensor for "${k.module}"`);
    entry[k.part] = tensors[key];
    entry.kohya ||= /lora_down|lora_up|^lora_unet_/.test(key);
    modules.set(k.module, entry);
  }
  if (modules.size === 0) throw new LoraError(`LoRA ${name}: no tensors`);

  const out: LoraFile = new Map();
  for (const [module, e] of modules) {
    if (!e.down || !e.up) throw fail(e.firstKey, `"${module}" has ${e.down ? 'no lora_B / lora_up' : 'no lora_A / lora_down'} tensor`);
    const target = table.get(module)!;
    const [r, inF] = e.down.dims;
    const [outF, r2] = e.up.dims;
    const wantIn = linears.get(target.layers[0])![1];
    const wantOut = target.rows.reduce((a, b) => a + b, 0);
    if (e.down.dims.length !== 2 || e.up.dims.length !== 2 || r2 !== r) {
      throw fail(e.firstKey, `lora_A [${e.down.dims}] and lora_B [${e.up.dims}] are not (r, in) and (out, r) of one rank`);
    }
    if (inF !== wantIn || outF !== wantOut) {
      throw fail(e.firstKey, `"${module}" is [${wantOut}, ${wantIn}] in this transformer, the LoRA is for [${outF}, ${inF}]`);
    }
    let scale = 1;
    if (e.alpha) scale = toFloat32(e.alpha)[0] / r;
    else if (!e.kohya && fromMetadata) scale = (fromMetadata(module) ?? r) / r;
    const down = toFloat32(e.down), up = toFloat32(e.up);
    let row = 0;
    target.layers.forEach((layer, i) => {
      const rows = target.rows[i];
      let part = up.slice(row * r, (row + rows) * r);
      if (target.swapHalves) part = Float32Array.from([...part.subarray((rows / 2) * r), ...part.subarray(0, (rows / 2) * r)]);
      row += rows;
      if (out.has(layer)) throw fail(e.firstKey, `layer "${layer}" is addressed by two of the file's modules`);
      out.set(layer, { down, up: part, rank: r, scale });
    });
  }
  return out;
}

/**
 * The LoRA inputs of the DiT graphs for LoRAs applied together, each at its weight: per layer, A = the
 * downs stacked (in, sum r) and B = the ups x weight x scale stacked (sum r, out), so that (x A) B is the sum
 * of every LoRA's update. Layers no LoRA touches are left out (their inputs keep rank 0).
 */
export function loraFeeds(loras: Array<{ file: LoraFile; weight: number }>, c: DitConfig): Record<string, HostTensor> {
  const linears = ditLinears(c);
  const byLayer = new Map<string, Array<{ u: LoraUpdate; weight: number }>>();
  for (const { file, weight } of loras) {
    for (const [layer, u] of file) byLayer.set(layer, [...(byLayer.get(layer) ?? []), { u, weight }]);
  }
  const feeds: Record<string, HostTensor> = {};
  for (const [layer, parts] of byLayer) {
    const [outF, inF] = linears.get(layer)!;
    const R = parts.reduce((a, p) => a + p.u.rank, 0);
    const a = new Float32Array(inF * R), b = new Float32Array(R * outF);
    let r0 = 0;
    for (const { u, weight } of parts) {
      const s = Math.fround(weight * u.scale);
      for (let r = 0; r < u.rank; r++) {
        for (let k = 0; k < inF; k++) a[k * R + r0 + r] = u.down[r * inF + k];
        for (let o = 0; o < outF; o++) b[(r0 + r) * outF + o] = Math.fround(u.up[o * u.rank + r] * s);
      }
      r0 += u.rank;
    }
    feeds[loraInputName(layer, 'a')] = { dtype: 'float32', dims: [inF, R], data: a };
    feeds[loraInputName(layer, 'b')] = { dtype: 'float32', dims: [R, outF], data: b };
  }
  return feeds;
}
