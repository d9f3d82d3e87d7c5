/**
 * The project's own tiny FramePack: the real architectures, key names, config structure, stored dtypes and
 * repository layout, at toy widths with random weights (a few hundred KB, written in well under a second).
 * It is the default model of `npm run demo`, CI and the end-to-end tests; the sizes are those of the
 * reference fixtures (test/fixtures/README.md): LLaMA 4 layers x 64 (GQA 4 q / 2 kv heads), CLIP 2 x 32, SigLIP
 * 2 x 32 at 384 px / patch 14, VAE (8, 8, 16, 16) with 8x / 4x compression and 16 latent channels,
 * transformer 2 dual + 2 single blocks of 2 heads x 16, rope axes (4, 6, 6), 1 refiner layer.
 *
 * Key lists are generated from the architectures (the same module trees transformers / diffusers /
 * FramePack's HunyuanVideoTransformer3DModelPacked build), not copied: test/hub/tiny-model.test.ts checks
 * them against the fixture checkpoints key by key. The tokenizers are small byte-level BPE vocabularies
 * trained here on a built-in text, in the file formats of the real repositories: LLaMA-3 style
 * tokenizer.json with the `<|begin_of_text|>` template post-processor and the header / eot special tokens
 * the HunyuanVideo prompt template uses; CLIP style vocab.json + merges.txt (`</w>` word ends,
 * `<|endoftext|>` the highest id, as the legacy pooling needs).
 *
 * Usage: node dist/scripts/make-tiny-model.js [outDir, default models/tiny of this checkout] [--seed N]
 */
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { float32ToBFloat16, float32ToFloat16 } from '../src/onnx/half.js';
import { saveRaw, type StDType } from '../src/onnx/safetensors.js';
import { folderProblem } from '../src/hub/cache.js';
import { folderDirs, loadManifest } from '../src/hub/manifest.js';

// ---------------------------------------------------------------------------------------------------------
// sizes
// ---------------------------------------------------------------------------------------------------------

const LLAMA = { hidden: 64, intermediate: 144, layers: 4, heads: 4, kvHeads: 2, headDim: 16, maxPositions: 1024 };
const CLIP = { hidden: 32, intermediate: 64, layers: 2, heads: 4, maxPositions: 77 };
const SIGLIP = { hidden: 32, intermediate: 64, layers: 2, heads: 4, imageSize: 384, patch: 14, channels: 3 };
const VAE = { blockOut: [8, 8, 16, 16], layersPerBlock: 1, groups: 4, latent: 16, inChannels: 3, outChannels: 3 };
const DIT = {
  heads: 2, headDim: 16, layers: 2, singleLayers: 2, refinerLayers: 1, mlpRatio: 4, inChannels: 16, outChannels: 16,
  patch: 2, patchT: 1, textDim: LLAMA.hidden, pooledDim: CLIP.hidden, imageProjDim: SIGLIP.hidden, ropeAxes: [4, 6, 6],
};
const LLAMA_MERGES = 1200;
const CLIP_MERGES = 300;

// ---------------------------------------------------------------------------------------------------------
// key lists, generated from the module trees
// ---------------------------------------------------------------------------------------------------------

export interface KeySpec { key: string; shape: number[] }
type Keys = KeySpec[];

const linear = (p: string, out: number, inp: number, bias = true): Keys =>
  [{ key: `${p}.weight`, shape: [out, inp] }, ...(bias ? [{ key: `${p}.bias`, shape: [out] }] : [])];
const norm = (p: string, n: number, bias = true): Keys =>
  [{ key: `${p}.weight`, shape: [n] }, ...(bias ? [{ key: `${p}.bias`, shape: [n] }] : [])];

/** transformers LlamaModel (no `model.` prefix, no lm_head). */
export function llamaKeys(vocab: number): Keys {
  const { hidden: h, intermediate: i, heads, kvHeads, headDim: d } = LLAMA;
  const keys: Keys = [{ key: 'embed_tokens.weight', shape: [vocab, h] }];
  for (let l = 0; l < LLAMA.layers; l++) {
    const p = `layers.${l}`;
    keys.push(
      ...norm(`${p}.input_layernorm`, h, false),
      ...linear(`${p}.self_attn.q_proj`, heads * d, h, false),
      ...linear(`${p}.self_attn.k_proj`, kvHeads * d, h, false),
      ...linear(`${p}.self_attn.v_proj`, kvHeads * d, h, false),
      ...linear(`${p}.self_attn.o_proj`, h, heads * d, false),
      ...norm(`${p}.post_attention_layernorm`, h, false),
      ...linear(`${p}.mlp.gate_proj`, i, h, false),
      ...linear(`${p}.mlp.up_proj`, i, h, false),
      ...linear(`${p}.mlp.down_proj`, h, i, false),
    );
  }
  keys.push(...norm('norm', h, false));
  return keys;
}

/** CLIP / SigLIP pre-LN encoder layer (same module names in both). */
function encoderLayer(p: string, h: number, i: number): Keys {
  return [
    ...norm(`${p}.layer_norm1`, h),
    ...['q_proj', 'k_proj', 'v_proj', 'out_proj'].flatMap((n) => linear(`${p}.self_attn.${n}`, h, h)),
    ...norm(`${p}.layer_norm2`, h),
    ...linear(`${p}.mlp.fc1`, i, h),
    ...linear(`${p}.mlp.fc2`, h, i),
  ];
}

/** transformers CLIPTextModel. */
export function clipKeys(vocab: number): Keys {
  const { hidden: h, intermediate: i } = CLIP;
  const keys: Keys = [
    { key: 'text_model.embeddings.token_embedding.weight', shape: [vocab, h] },
    { key: 'text_model.embeddings.position_embedding.weight', shape: [CLIP.maxPositions, h] },
  ];
  for (let l = 0; l < CLIP.layers; l++) keys.push(...encoderLayer(`text_model.encoder.layers.${l}`, h, i));
  keys.push(...norm('text_model.final_layer_norm', h));
  return keys;
}

/** transformers SiglipVisionModel, with the attention-pooling head FramePack does not use but the file has. */
export function siglipKeys(): Keys {
  const { hidden: h, intermediate: i, patch: p, channels: c } = SIGLIP;
  const v = 'vision_model';
  const keys: Keys = [
    { key: `${v}.embeddings.patch_embedding.weight`, shape: [h, c, p, p] },
    { key: `${v}.embeddings.patch_embedding.bias`, shape: [h] },
    { key: `${v}.embeddings.position_embedding.weight`, shape: [(SIGLIP.imageSize / p | 0) ** 2, h] },
  ];
  for (let l = 0; l < SIGLIP.layers; l++) keys.push(...encoderLayer(`${v}.encoder.layers.${l}`, h, i));
  keys.push(
    ...norm(`${v}.post_layernorm`, h),
    { key: `${v}.head.probe`, shape: [1, 1, h] },
    { key: `${v}.head.attention.in_proj_weight`, shape: [3 * h, h] },
    { key: `${v}.head.attention.in_proj_bias`, shape: [3 * h] },
    ...linear(`${v}.head.attention.out_proj`, h, h),
    ...norm(`${v}.head.layernorm`, h),
    ...linear(`${v}.head.mlp.fc1`, i, h),
    ...linear(`${v}.head.mlp.fc2`, h, i),
  );
  return keys;
}

const conv3d = (p: string, out: number, inp: number, k: number): Keys =>
  [{ key: `${p}.weight`, shape: [out, inp, k, k, k] }, { key: `${p}.bias`, shape: [out] }];

/** HunyuanVideoResnetBlockCausal3D: GroupNorm, causal conv, GroupNorm, causal conv, 1x1x1 shortcut when widths differ. */
function vaeResnet(p: string, cin: number, cout: number): Keys {
  return [
    ...norm(`${p}.norm1`, cin), ...conv3d(`${p}.conv1.conv`, cout, cin, 3),
    ...norm(`${p}.norm2`, cout), ...conv3d(`${p}.conv2.conv`, cout, cout, 3),
    ...(cin !== cout ? conv3d(`${p}.conv_shortcut.conv`, cout, cin, 1) : []),
  ];
}

function vaeMid(p: string, c: number): Keys {
  return [
    ...vaeResnet(`${p}.resnets.0`, c, c),
    ...norm(`${p}.attentions.0.group_norm`, c),
    ...['to_q', 'to_k', 'to_v', 'to_out.0'].flatMap((n) => linear(`${p}.attentions.0.${n}`, c, c)),
    ...vaeResnet(`${p}.resnets.1`, c, c),
  ];
}

/** diffusers AutoencoderKLHunyuanVideo (encoder blocks: layers_per_block resnets, decoder: one more). */
export function vaeKeys(): Keys {
  const b = VAE.blockOut;
  const n = b.length;
  const keys: Keys = [...conv3d('encoder.conv_in.conv', b[0], VAE.inChannels, 3)];
  for (let i = 0; i < n; i++) {
    const cin = i === 0 ? b[0] : b[i - 1];
    for (let j = 0; j < VAE.layersPerBlock; j++) keys.push(...vaeResnet(`encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : b[i], b[i]));
    if (i < n - 1) keys.push(...conv3d(`encoder.down_blocks.${i}.downsamplers.0.conv.conv`, b[i], b[i], 3));
  }
  keys.push(...vaeMid('encoder.mid_block', b[n - 1]), ...norm('encoder.conv_norm_out', b[n - 1]),
    ...conv3d('encoder.conv_out.conv', 2 * VAE.latent, b[n - 1], 3));

  const r = [...b].reverse();
  keys.push(...conv3d('decoder.conv_in.conv', r[0], VAE.latent, 3), ...vaeMid('decoder.mid_block', r[0]));
  for (let i = 0; i < n; i++) {
    const cin = i === 0 ? r[0] : r[i - 1];
    for (let j = 0; j < VAE.layersPerBlock + 1; j++) keys.push(...vaeResnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? cin : r[i], r[i]));
    if (i < n - 1) keys.push(...conv3d(`decoder.up_blocks.${i}.upsamplers.0.conv.conv`, r[i], r[i], 3));
  }
  keys.push(...norm('decoder.conv_norm_out', r[n - 1]), ...conv3d('decoder.conv_out.conv', VAE.outChannels, r[n - 1], 3));
  keys.push(...conv3d('quant_conv', 2 * VAE.latent, 2 * VAE.latent, 1), ...conv3d('post_quant_conv', VAE.latent, VAE.latent, 1));
  return keys;
}

/** FramePack's HunyuanVideoTransformer3DModelPacked (has_image_proj, has_clean_x_embedder, guidance_embeds). */
export function ditKeys(): Keys {
  const D = DIT.heads * DIT.headDim;
  const mlp = D * DIT.mlpRatio;
  const d = DIT.headDim;
  const patch = (p: string, kt: number, k: number): Keys =>
    [{ key: `${p}.weight`, shape: [D, DIT.inChannels, kt, k, k] }, { key: `${p}.bias`, shape: [D] }];
  const timeEmbed = (p: string): Keys => [...linear(`${p}.linear_1`, D, 256), ...linear(`${p}.linear_2`, D, D)];
  const ff = (p: string, hidden: number): Keys => [...linear(`${p}.net.0.proj`, hidden, D), ...linear(`${p}.net.2`, D, hidden)];

  const keys: Keys = [
    ...patch('x_embedder.proj', DIT.patchT, DIT.patch),
    ...patch('clean_x_embedder.proj', 1, 2), ...patch('clean_x_embedder.proj_2x', 2, 4), ...patch('clean_x_embedder.proj_4x', 4, 8),
    ...linear('image_projection.up', 3 * D, DIT.imageProjDim), ...linear('image_projection.down', D, 3 * D),
    ...linear('context_embedder.proj_in', D, DIT.textDim),
    ...timeEmbed('context_embedder.time_text_embed.timestep_embedder'),
    ...linear('context_embedder.time_text_embed.text_embedder.linear_1', D, DIT.textDim),
    ...linear('context_embedder.time_text_embed.text_embedder.linear_2', D, D),
    ...timeEmbed('time_text_embed.timestep_embedder'), ...timeEmbed('time_text_embed.guidance_embedder'),
    ...linear('time_text_embed.text_embedder.linear_1', D, DIT.pooledDim), ...linear('time_text_embed.text_embedder.linear_2', D, D),
  ];
  for (let i = 0; i < DIT.refinerLayers; i++) {
    const p = `context_embedder.token_refiner.refiner_blocks.${i}`;
    keys.push(...norm(`${p}.norm1`, D), ...['to_q', 'to_k', 'to_v', 'to_out.0'].flatMap((n) => linear(`${p}.attn.${n}`, D, D)),
      ...norm(`${p}.norm2`, D), ...ff(`${p}.ff`, D * 4), ...linear(`${p}.norm_out.linear`, 2 * D, D));
  }
  for (let i = 0; i < DIT.layers; i++) {
    const p = `transformer_blocks.${i}`;
    keys.push(
      ...linear(`${p}.norm1.linear`, 6 * D, D), ...linear(`${p}.norm1_context.linear`, 6 * D, D),
      ...['to_q', 'to_k', 'to_v', 'add_q_proj', 'add_k_proj', 'add_v_proj', 'to_out.0', 'to_add_out'].flatMap((n) => linear(`${p}.attn.${n}`, D, D)),
      ...['norm_q', 'norm_k', 'norm_added_q', 'norm_added_k'].flatMap((n) => norm(`${p}.attn.${n}`, d, false)),
      ...ff(`${p}.ff`, mlp), ...ff(`${p}.ff_context`, mlp),
    );
  }
  for (let i = 0; i < DIT.singleLayers; i++) {
    const p = `single_transformer_blocks.${i}`;
    keys.push(
      ...linear(`${p}.norm.linear`, 3 * D, D),
      ...['to_q', 'to_k', 'to_v'].flatMap((n) => linear(`${p}.attn.${n}`, D, D)),
      ...['norm_q', 'norm_k'].flatMap((n) => norm(`${p}.attn.${n}`, d, false)),
      ...linear(`${p}.proj_mlp`, mlp, D), ...linear(`${p}.proj_out`, D, D + mlp),
    );
  }
  keys.push(...linear('norm_out.linear', 2 * D, D), ...linear('proj_out', DIT.outChannels * DIT.patchT * DIT.patch ** 2, D));
  return keys;
}

// ---------------------------------------------------------------------------------------------------------
// random weights and safetensors files
// ---------------------------------------------------------------------------------------------------------

/** mulberry32 + Box-Muller: a seeded normal generator (weights must be the same on every machine). */
function normalSource(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

/**
 * Values like the fixtures': norm scales around 1, small biases, other weights N(0, 1/fan_in) so that
 * activations keep unit scale through the layers (nothing zero, so every path is exercised).
 */
function randomValues(spec: KeySpec, normal: () => number): Float32Array {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const isNormScale = spec.shape.length === 1 && spec.key.endsWith('.weight');
  const isBias = spec.key.endsWith('bias');
  const fanIn = spec.shape.slice(1).reduce((a, b) => a * b, 1);
  const std = isBias ? 0.05 : isNormScale ? 0.1 : 1 / Math.sqrt(fanIn);
  for (let i = 0; i < n; i++) out[i] = (isNormScale ? 1 : 0) + std * normal();
  return out;
}

function encode(values: Float32Array, dtype: StDType): Uint8Array {
  const half = dtype === 'BF16' ? float32ToBFloat16(values) : float32ToFloat16(values);
  return new Uint8Array(half.buffer, half.byteOffset, half.byteLength);
}

/**
 * Writes `keys` as one file, or as `shards` files plus the index json, splitting the alphabetical key
 * order into parts of about equal size as transformers' / diffusers' save_pretrained does.
 */
async function writeCheckpoint(dir: string, stem: string, keys: Keys, dtype: StDType, normal: () => number, shards = 1): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tensors = [...keys].sort((a, b) => (a.key < b.key ? -1 : 1)).map((k) => ({ ...k, dtype, bytes: encode(randomValues(k, normal), dtype) }));
  const metadata = { format: 'pt' };
  if (shards === 1) {
    await saveRaw(join(dir, `${stem}.safetensors`), tensors, metadata);
    return;
  }
  const total = tensors.reduce((s, t) => s + t.bytes.byteLength, 0);
  const parts: (typeof tensors)[] = [[]];
  let size = 0;
  for (const t of tensors) {
    if (size >= total / shards && parts.length < shards) { parts.push([]); size = 0; }
    parts[parts.length - 1].push(t);
    size += t.bytes.byteLength;
  }
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const name = `${stem}-${String(i + 1).padStart(5, '0')}-of-${String(parts.length).padStart(5, '0')}.safetensors`;
    await saveRaw(join(dir, name), parts[i], metadata);
    for (const t of parts[i]) weightMap[t.key] = name;
  }
  await writeJson(join(dir, `${stem}.safetensors.index.json`), { metadata: { total_size: total }, weight_map: weightMap });
}

async function writeJson(file: string, value: unknown): Promise<void> {
  await writeFile(file, JSON.stringify(value, null, 2) + '\n');
}

// ---------------------------------------------------------------------------------------------------------
// tokenizers: byte-level BPE trained on a built-in text
// ---------------------------------------------------------------------------------------------------------

/** HunyuanVideo's prompt template (the text the LLaMA branch always sees) and prompts like the users'. */
const TEMPLATE =
  'Describe the video by detailing the following aspects: 1. The main content and theme of the video.2. The color, ' +
  'shape, size, texture, quantity, text, and spatial relationships of the objects.3. Actions, events, behaviors ' +
  'temporal relationships, physical movement changes of the objects.4. background environment, light, style and ' +
  'atmosphere.5. camera angles, movements, and transitions used in the video:';
const CORPUS = [
  TEMPLATE, 'system', 'user',
  'The girl dances gracefully, with clear movements, full of charm.',
  'A character doing some simple body movements.',
  'The man walks slowly along the beach at sunset while the waves roll in and the camera follows him.',
  'A cat jumps onto the table, looks around, then sits down and washes its face.',
  'The camera slowly zooms in on a red car parked in the rain; reflections shimmer on the wet street.',
  'An old woman smiles and waves at the camera, her hair moving in the wind.',
  'Two dogs run across a green field, chasing a ball thrown by a child.',
  'A robot turns its head, raises its arm and points at the sky full of stars.',
  'Leaves fall from the trees in the autumn park as people walk by with umbrellas.',
  'The dancer spins quickly, her dress flowing, stage lights changing from blue to purple.',
  'A boy rides a bicycle down the hill, laughing, while birds fly over the city.',
  'Smoke rises from the chimney of a small wooden house covered in snow, at night, 4k, cinematic.',
  "It's a bright day; they're playing music, we'll dance and I'd sing: 123 456 7890!",
].join('\n');

/** GPT-2's byte -> printable character table, which byte-level BPE vocabularies are written in. */
function byteChars(): string[] {
  const printable = [...range(33, 126), ...range(161, 172), ...range(174, 255)];
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return table;
}
function range(a: number, b: number): number[] { return Array.from({ length: b - a + 1 }, (_, i) => a + i); }

/** The base alphabet in the order byte-level vocabularies list it: printable bytes first. */
function alphabet(): string[] {
  const t = byteChars();
  return [...t].sort((x, y) => x.codePointAt(0)! - y.codePointAt(0)!);
}

// LLaMA-3's split pattern without the inline (?i:) group JavaScript lacks (only used for training here).
const LLAMA_SPLIT = /'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;
const CLIP_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/gu;

/** Learns `count` merges from word frequencies (each word a list of symbols); returns them in order. */
function trainBpe(words: Map<string, number>, split: (w: string) => string[], count: number): [string, string][] {
  const seqs = [...words].map(([w, n]) => ({ syms: split(w), n }));
  const merges: [string, string][] = [];
  while (merges.length < count) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of seqs) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = syms[i] + '\u0000' + syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + n);
      }
    }
    let best = '';
    let bestN = 0;
    for (const [k, n] of pairs) if (n > bestN || (n === bestN && k < best)) { best = k; bestN = n; }
    if (bestN < 1) break;
    const [a, b] = best.split('\u0000') as [string, string];
    merges.push([a, b]);
    for (const s of seqs) {
      const out: string[] = [];
      for (let i = 0; i < s.syms.length; i++) {
        if (i + 1 < s.syms.length && s.syms[i] === a && s.syms[i + 1] === b) { out.push(a + b); i++; } else out.push(s.syms[i]);
      }
      s.syms = out;
    }
  }
  return merges;
}

function wordCounts(text: string, re: RegExp, transform: (w: string) => string): Map<string, number> {
  const table = byteChars();
  const counts = new Map<string, number>();
  for (const m of text.matchAll(re)) {
    const w = [...Buffer.from(transform(m[0]), 'utf8')].map((b) => table[b]).join('');
    counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  return counts;
}

const special = (id: number, content: string) =>
  ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

export const LLAMA_SPECIALS = ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'];

/** LLaMA-3 style tokenizer.json; returns the vocabulary size including the special tokens. */
async function writeLlamaTokenizer(dir: string): Promise<{ vocabSize: number; bos: number; eos: number }> {
  const merges = trainBpe(wordCounts(CORPUS, LLAMA_SPLIT, (w) => w), (w) => [...w], LLAMA_MERGES);
  const vocab: Record<string, number> = {};
  for (const s of alphabet()) vocab[s] = Object.keys(vocab).length;
  for (const [a, b] of merges) vocab[a + b] ??= Object.keys(vocab).length;
  const base = Object.keys(vocab).length;
  const bos = base;
  const tokenizer = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: LLAMA_SPECIALS.map((t, i) => special(base + i, t)),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split', behavior: 'Isolated', invert: false,
          pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" },
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'B', type_id: 0 } },
      ],
      special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [bos], tokens: ['<|begin_of_text|>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges,
    },
  };
  await mkdir(dir, { recursive: true });
  await writeJson(join(dir, 'tokenizer.json'), tokenizer);
  await writeJson(join(dir, 'tokenizer_config.json'), {
    bos_token: '<|begin_of_text|>', eos_token: '<|end_of_text|>', pad_token: '<|end_of_text|>',
    model_max_length: 1048576, tokenizer_class: 'PreTrainedTokenizerFast', clean_up_tokenization_spaces: true,
  });
  await writeJson(join(dir, 'special_tokens_map.json'), {
    bos_token: '<|begin_of_text|>', eos_token: '<|end_of_text|>', pad_token: '<|end_of_text|>',
  });
  return { vocabSize: base + LLAMA_SPECIALS.length, bos, eos: base + 1 };
}

/** CLIP style vocab.json + merges.txt, as the real tokenizer_2 folder has them (no tokenizer.json). */
async function writeClipTokenizer(dir: string): Promise<{ vocabSize: number; bos: number }> {
  const counts = wordCounts(CORPUS.replace(/\s+/g, ' ').toLowerCase(), CLIP_SPLIT, (w) => w);
  const merges = trainBpe(counts, (w) => { const s = [...w]; s[s.length - 1] += '</w>'; return s; }, CLIP_MERGES);
  const vocab: Record<string, number> = {};
  const letters = alphabet();
  for (const s of letters) vocab[s] = Object.keys(vocab).length;
  for (const s of letters) vocab[s + '</w>'] = Object.keys(vocab).length;
  for (const [a, b] of merges) vocab[a + b] ??= Object.keys(vocab).length;
  const bos = Object.keys(vocab).length;
  vocab['<|startoftext|>'] = bos;
  vocab['<|endoftext|>'] = bos + 1;   // the highest id: CLIPTextModel pools at argmax(input_ids)
  await mkdir(dir, { recursive: true });
  await writeJson(join(dir, 'vocab.json'), vocab);
  await writeFile(join(dir, 'merges.txt'), '#version: 0.2\n' + merges.map(([a, b]) => `${a} ${b}`).join('\n') + '\n');
  await writeJson(join(dir, 'tokenizer_config.json'), {
    bos_token: '<|startoftext|>', eos_token: '<|endoftext|>', pad_token: '<|endoftext|>', unk_token: '<|endoftext|>',
    model_max_length: 77, do_lower_case: true, tokenizer_class: 'CLIPTokenizer', clean_up_tokenization_spaces: true,
  });
  await writeJson(join(dir, 'special_tokens_map.json'), {
    bos_token: '<|startoftext|>', eos_token: '<|endoftext|>', pad_token: '<|endoftext|>', unk_token: '<|endoftext|>',
  });
  return { vocabSize: bos + 2, bos };
}

// ---------------------------------------------------------------------------------------------------------
// the model folder
// ---------------------------------------------------------------------------------------------------------

export interface TinyModelOptions { seed?: number }

/** Writes the tiny FramePack under `outDir` in the layout of the Hub repositories; returns `outDir`. */
export async function makeTinyModel(outDir: string, opts: TinyModelOptions = {}): Promise<string> {
  const normal = normalSource(opts.seed ?? 20250417);
  const hv = join(outDir, 'hunyuanvideo-community', 'HunyuanVideo');
  const redux = join(outDir, 'lllyasviel', 'flux_redux_bfl');
  const fp = join(outDir, 'lllyasviel', 'FramePackI2V_HY');

  const llamaTok = await writeLlamaTokenizer(join(hv, 'tokenizer'));
  const clipTok = await writeClipTokenizer(join(hv, 'tokenizer_2'));

  await writeCheckpoint(join(hv, 'text_encoder'), 'model', llamaKeys(llamaTok.vocabSize), 'F16', normal, 2);
  await writeJson(join(hv, 'text_encoder', 'config.json'), {
    architectures: ['LlamaModel'], model_type: 'llama', attention_bias: false, attention_dropout: 0.0,
    bos_token_id: llamaTok.bos, eos_token_id: llamaTok.eos, pad_token_id: llamaTok.eos, head_dim: LLAMA.headDim,
    hidden_act: 'silu', hidden_size: LLAMA.hidden, initializer_range: 0.02, intermediate_size: LLAMA.intermediate,
    max_position_embeddings: LLAMA.maxPositions, mlp_bias: false, num_attention_heads: LLAMA.heads,
    num_hidden_layers: LLAMA.layers, num_key_value_heads: LLAMA.kvHeads, pretraining_tp: 1, rms_norm_eps: 1e-5,
    rope_scaling: null, rope_theta: 500000.0, tie_word_embeddings: false, torch_dtype: 'float16',
    transformers_version: '4.46.2', use_cache: true, vocab_size: llamaTok.vocabSize,
  });

  await writeCheckpoint(join(hv, 'text_encoder_2'), 'model', clipKeys(clipTok.vocabSize), 'F16', normal);
  await writeJson(join(hv, 'text_encoder_2', 'config.json'), {
    architectures: ['CLIPTextModel'], model_type: 'clip_text_model', attention_dropout: 0.0,
    // eos_token_id 2 as in the real config: transformers then pools at argmax(input_ids) (the legacy path)
    bos_token_id: clipTok.bos, eos_token_id: 2, pad_token_id: 1, hidden_act: 'quick_gelu', hidden_size: CLIP.hidden,
    initializer_factor: 1.0, initializer_range: 0.02, intermediate_size: CLIP.intermediate, layer_norm_eps: 1e-5,
    max_position_embeddings: CLIP.maxPositions, num_attention_heads: CLIP.heads, num_hidden_layers: CLIP.layers,
    projection_dim: CLIP.hidden, torch_dtype: 'float16', transformers_version: '4.46.2', vocab_size: clipTok.vocabSize,
  });

  await writeCheckpoint(join(hv, 'vae'), 'diffusion_pytorch_model', vaeKeys(), 'F16', normal);
  await writeJson(join(hv, 'vae', 'config.json'), {
    _class_name: 'AutoencoderKLHunyuanVideo', _diffusers_version: '0.33.1', act_fn: 'silu',
    block_out_channels: VAE.blockOut, down_block_types: VAE.blockOut.map(() => 'HunyuanVideoDownBlock3D'),
    in_channels: VAE.inChannels, latent_channels: VAE.latent, layers_per_block: VAE.layersPerBlock,
    mid_block_add_attention: true, norm_num_groups: VAE.groups, out_channels: VAE.outChannels, scaling_factor: 0.476986,
    spatial_compression_ratio: 8, temporal_compression_ratio: 4, up_block_types: VAE.blockOut.map(() => 'HunyuanVideoUpBlock3D'),
  });

  await mkdir(join(redux, 'feature_extractor'), { recursive: true });
  await writeJson(join(redux, 'feature_extractor', 'preprocessor_config.json'), {
    do_convert_rgb: null, do_normalize: true, do_rescale: true, do_resize: true, image_mean: [0.5, 0.5, 0.5],
    image_processor_type: 'SiglipImageProcessor', image_std: [0.5, 0.5, 0.5], processor_class: 'SiglipProcessor',
    resample: 3, rescale_factor: 0.00392156862745098, size: { height: SIGLIP.imageSize, width: SIGLIP.imageSize },
  });
  await writeCheckpoint(join(redux, 'image_encoder'), 'model', siglipKeys(), 'F16', normal);
  await writeJson(join(redux, 'image_encoder', 'config.json'), {
    architectures: ['SiglipVisionModel'], model_type: 'siglip_vision_model', attention_dropout: 0.0,
    hidden_act: 'gelu_pytorch_tanh', hidden_size: SIGLIP.hidden, image_size: SIGLIP.imageSize,
    intermediate_size: SIGLIP.intermediate, layer_norm_eps: 1e-6, num_attention_heads: SIGLIP.heads,
    num_channels: SIGLIP.channels, num_hidden_layers: SIGLIP.layers, patch_size: SIGLIP.patch,
    torch_dtype: 'float16', transformers_version: '4.46.2',
  });

  await writeCheckpoint(fp, 'diffusion_pytorch_model', ditKeys(), 'BF16', normal, 2);
  await writeJson(join(fp, 'config.json'), {
    _class_name: 'HunyuanVideoTransformer3DModelPacked', _diffusers_version: '0.33.1',
    attention_head_dim: DIT.headDim, guidance_embeds: true, has_clean_x_embedder: true, has_image_proj: true,
    image_proj_dim: DIT.imageProjDim, in_channels: DIT.inChannels, mlp_ratio: DIT.mlpRatio, num_attention_heads: DIT.heads,
    num_layers: DIT.layers, num_refiner_layers: DIT.refinerLayers, num_single_layers: DIT.singleLayers,
    out_channels: DIT.outChannels, patch_size: DIT.patch, patch_size_t: DIT.patchT, pooled_projection_dim: DIT.pooledDim,
    qk_norm: 'rms_norm', rope_axes_dim: DIT.ropeAxes, rope_theta: 256.0, text_embed_dim: DIT.textDim,
  });
  // FramePack-F1's transformer has the same architecture and key names: the tiny one shares the weights
  await cp(fp, join(outDir, 'lllyasviel', 'FramePack_F1_I2V_HY_20250503'), { recursive: true });
  return outDir;
}

/** models/tiny of this checkout (git-ignored): the default model of the demo and the end-to-end tests. */
export const TINY_MODEL_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'tiny');

/** Writes the tiny model into `dir` unless a complete one is already there; returns `dir`. */
export async function ensureTinyModel(dir = TINY_MODEL_DIR): Promise<string> {
  const complete = Object.values(folderDirs(loadManifest(), dir)).every((d) => folderProblem(d) === null);
  return complete ? dir : makeTinyModel(dir);
}

async function main(argv: string[]): Promise<void> {
  let seed: number | undefined;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--seed') seed = Number(argv[++i]);
    else rest.push(argv[i]);
  }
  const out = rest[0] ? resolve(rest[0]) : TINY_MODEL_DIR;
  const t0 = performance.now();
  await makeTinyModel(out, { seed });
  console.log(`tiny FramePack written to ${out} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err) => { console.error(err); process.exit(1); });
}
