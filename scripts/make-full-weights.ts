/**
 * Writes full-size FramePack component checkpoints with random weights, for GPU benchmarks: the real configs
 * and every tensor at its real shape, stored as the Hugging Face repositories store them (float16 encoders
 * and VAE, bfloat16 transformer).
 *
 *   node dist/scripts/make-full-weights.js [--out bench/tmp/full] [--only llama,clip,siglip,vae,dit] [--check]
 *
 * Folders written under --out (each: config.json + one safetensors file):
 *   text_encoder     LLaMA-3 8B as HunyuanVideo ships it (32 layers, 4096 wide, GQA 32/8, vocab 128256)
 *   text_encoder_2   CLIP ViT-L/14 text tower (12 layers, 768 wide)
 *   image_encoder    SigLIP so400m/14 at 384 px (27 layers, 1152 wide), as in flux_redux_bfl
 *   vae              AutoencoderKLHunyuanVideo (block_out_channels 128/256/512/512)
 *   transformer      FramePackI2V_HY (written by make-full-dit.js, which this script runs)
 *
 * Disk: the layers of one stack read one shared region of the file, block i's tensors starting 2 i bytes
 * after block 0's (as make-full-dit.ts does), so every tensor keeps its own offset and a session still
 * uploads every layer's weights, while the file holds about one layer per stack (~3.5 GB in all instead of
 * ~43 GB). Values come from a small random pool per tensor, scaled like torch's Linear init (1/sqrt(fan_in))
 * and, for norm weights, 1 +- 0.1: finite activations through every layer. Only time and memory count.
 *
 * --check compares the key lists and shapes, built from the tiny fixture configs, with the fixture
 * checkpoints (framepack-tiny/models), so the shapes written here are the ones the loaders expect.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, rename, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { float32ToBFloat16, float32ToFloat16 } from '../src/onnx/half.js';
import { Checkpoint, headerAt } from '../src/onnx/safetensors.js';
import { vaeConfig, vaeParameterShapes } from '../src/nets/vae.js';

type Shapes = Array<[string, number[]]>;

/** LLaMA-3 8B text encoder of hunyuanvideo-community/HunyuanVideo (text_encoder/config.json). */
export const LLAMA_CONFIG = {
  architectures: ['LlamaModel'], model_type: 'llama', torch_dtype: 'float16',
  attention_bias: false, mlp_bias: false, hidden_act: 'silu', bos_token_id: 128000, eos_token_id: 128001,
  hidden_size: 4096, intermediate_size: 14336, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128,
  num_hidden_layers: 32, max_position_embeddings: 8192, rms_norm_eps: 1e-5, rope_theta: 500000.0,
  rope_scaling: null, tie_word_embeddings: false, vocab_size: 128320,
};

/** CLIP ViT-L/14 text tower (text_encoder_2/config.json). */
export const CLIP_CONFIG = {
  architectures: ['CLIPTextModel'], model_type: 'clip_text_model', torch_dtype: 'float16',
  hidden_act: 'quick_gelu', hidden_size: 768, intermediate_size: 3072, num_attention_heads: 12,
  num_hidden_layers: 12, max_position_embeddings: 77, layer_norm_eps: 1e-5, projection_dim: 768,
  vocab_size: 49408, bos_token_id: 0, eos_token_id: 2, pad_token_id: 1,
};

/** SigLIP so400m-patch14-384 vision tower (flux_redux_bfl image_encoder/config.json). */
export const SIGLIP_CONFIG = {
  architectures: ['SiglipVisionModel'], model_type: 'siglip_vision_model', torch_dtype: 'float16',
  hidden_act: 'gelu_pytorch_tanh', hidden_size: 1152, intermediate_size: 4304, num_attention_heads: 16,
  num_hidden_layers: 27, image_size: 384, patch_size: 14, num_channels: 3, layer_norm_eps: 1e-6,
};

/** AutoencoderKLHunyuanVideo (vae/config.json). */
export const VAE_CONFIG = {
  _class_name: 'AutoencoderKLHunyuanVideo', act_fn: 'silu', block_out_channels: [128, 256, 512, 512],
  down_block_types: Array(4).fill('HunyuanVideoDownBlock3D'), up_block_types: Array(4).fill('HunyuanVideoUpBlock3D'),
  in_channels: 3, out_channels: 3, latent_channels: 16, layers_per_block: 2, mid_block_add_attention: true,
  norm_num_groups: 32, scaling_factor: 0.476986, spatial_compression_ratio: 8, temporal_compression_ratio: 4,
};

// ---------------------------------------------------------------------------------------------------------
// Parameter lists (transformers' key names, no prefix beyond what the repositories store)

export function llamaShapes(c: Record<string, any>): Shapes {
  const D = c.hidden_size, F = c.intermediate_size, hd = c.head_dim ?? D / c.num_attention_heads;
  const kv = (c.num_key_value_heads ?? c.num_attention_heads) * hd;
  const out: Shapes = [['embed_tokens.weight', [c.vocab_size, D]]];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `layers.${i}`;
    out.push(
      [`${p}.input_layernorm.weight`, [D]], [`${p}.post_attention_layernorm.weight`, [D]],
      [`${p}.self_attn.q_proj.weight`, [c.num_attention_heads * hd, D]], [`${p}.self_attn.k_proj.weight`, [kv, D]],
      [`${p}.self_attn.v_proj.weight`, [kv, D]], [`${p}.self_attn.o_proj.weight`, [D, c.num_attention_heads * hd]],
      [`${p}.mlp.gate_proj.weight`, [F, D]], [`${p}.mlp.up_proj.weight`, [F, D]], [`${p}.mlp.down_proj.weight`, [D, F]],
    );
  }
  out.push(['norm.weight', [D]]);
  return out;
}

/** One pre-LN encoder layer of CLIP / SigLIP (q, k, v, out projections with biases; fc1, fc2). */
function encoderLayer(out: Shapes, p: string, D: number, F: number): void {
  const lin = (k: string, o: number, i: number) => out.push([`${k}.weight`, [o, i]], [`${k}.bias`, [o]]);
  out.push([`${p}.layer_norm1.weight`, [D]], [`${p}.layer_norm1.bias`, [D]], [`${p}.layer_norm2.weight`, [D]], [`${p}.layer_norm2.bias`, [D]]);
  for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) lin(`${p}.self_attn.${n}`, D, D);
  lin(`${p}.mlp.fc1`, F, D);
  lin(`${p}.mlp.fc2`, D, F);
}

export function clipShapes(c: Record<string, any>): Shapes {
  const D = c.hidden_size;
  const out: Shapes = [
    ['text_model.embeddings.position_embedding.weight', [c.max_position_embeddings, D]],
    ['text_model.embeddings.token_embedding.weight', [c.vocab_size, D]],
  ];
  for (let i = 0; i < c.num_hidden_layers; i++) encoderLayer(out, `text_model.encoder.layers.${i}`, D, c.intermediate_size);
  out.push(['text_model.final_layer_norm.weight', [D]], ['text_model.final_layer_norm.bias', [D]]);
  return out;
}

export function siglipShapes(c: Record<string, any>): Shapes {
  const D = c.hidden_size, F = c.intermediate_size, P = c.patch_size;
  const grid = Math.floor(c.image_size / P);
  const out: Shapes = [
    ['vision_model.embeddings.patch_embedding.weight', [D, c.num_channels ?? 3, P, P]],
    ['vision_model.embeddings.patch_embedding.bias', [D]],
    ['vision_model.embeddings.position_embedding.weight', [grid * grid, D]],
  ];
  for (let i = 0; i < c.num_hidden_layers; i++) encoderLayer(out, `vision_model.encoder.layers.${i}`, D, F);
  out.push(
    ['vision_model.post_layernorm.weight', [D]], ['vision_model.post_layernorm.bias', [D]],
    ['vision_model.head.probe', [1, 1, D]],
    ['vision_model.head.attention.in_proj_weight', [3 * D, D]], ['vision_model.head.attention.in_proj_bias', [3 * D]],
    ['vision_model.head.attention.out_proj.weight', [D, D]], ['vision_model.head.attention.out_proj.bias', [D]],
    ['vision_model.head.layernorm.weight', [D]], ['vision_model.head.layernorm.bias', [D]],
    ['vision_model.head.mlp.fc1.weight', [F, D]], ['vision_model.head.mlp.fc1.bias', [F]],
    ['vision_model.head.mlp.fc2.weight', [D, F]], ['vision_model.head.mlp.fc2.bias', [D]],
  );
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Writer

/** xorshift32 -> uniform [-1, 1). */
function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 2147483648 - 1;
  };
}

const LAYER = /^(.*?layers)\.(\d+)\.(.*)$/;
const POOL = 1 << 20; // distinct random values per tensor; larger tensors repeat the pool

/**
 * Writes `shapes` to dir/file as one safetensors file of `dtype`, layers of a stack sharing one region
 * (see the file comment). Returns the bytes of data written.
 */
export async function writeShared(dir: string, file: string, config: object, shapes: Shapes, dtype: 'F16' | 'BF16', seed = 1): Promise<number> {
  const layersOf = new Map<string, number>();
  for (const [key] of shapes) {
    const m = LAYER.exec(key);
    if (m) layersOf.set(m[1], Math.max(layersOf.get(m[1]) ?? 0, Number(m[2]) + 1));
  }
  const shapeOf = new Map(shapes);
  const regions: { numel: number; scale: number; offset: number }[] = [];
  const regionOf = new Map<string, number>();
  const planned: { key: string; shape: number[]; region: number; shift: number }[] = [];
  for (const [key, shape] of shapes) {
    const numel = shape.reduce((a, b) => a * b, 1);
    const m = LAYER.exec(key);
    const share = m ? `${m[1]}.*.${m[3]}` : key;
    let region = regionOf.get(share);
    if (region === undefined) {
      region = regions.length;
      regionOf.set(share, region);
      const isNorm = shape.length === 1 && /norm[^.]*\.weight$/.test(key);
      const w = shapeOf.get(key.replace(/bias$/, 'weight')) ?? shape;
      const fanIn = w.length > 1 ? w.slice(1).reduce((a, b) => a * b, 1) : 100;
      regions.push({ numel: numel + (m ? layersOf.get(m[1])! - 1 : 0), scale: isNorm ? 0.1 : 1 / Math.sqrt(fanIn), offset: isNorm ? 1 : 0 });
    }
    planned.push({ key, shape, region, shift: m ? Number(m[2]) : 0 });
  }
  const starts: number[] = [];
  let pos = 0;
  for (const r of regions) { starts.push(pos); pos += r.numel * 2; }

  const head = headerAt(planned.map((p) => ({ key: p.key, dtype, shape: p.shape, begin: starts[p.region] + 2 * p.shift })),
    { format: 'pt', note: 'random weights for benchmarks; layers share data' });

  await mkdir(dir, { recursive: true });
  const path = join(dir, file);
  const fh = await open(`${path}.part`, 'w');
  try {
    await fh.write(head, 0, head.length, 0);
    let at = head.length;
    const rnd = uniform(seed);
    const CHUNK = 1 << 24; // elements per write (32 MB)
    const buf = new Uint16Array(CHUNK);
    for (const r of regions) {
      const pool = new Float32Array(Math.min(POOL, r.numel));
      for (let i = 0; i < pool.length; i++) pool[i] = r.offset + r.scale * rnd();
      const bits = dtype === 'F16' ? float32ToFloat16(pool) : float32ToBFloat16(pool);
      for (let done = 0; done < r.numel; done += CHUNK) {
        const n = Math.min(CHUNK, r.numel - done);
        for (let i = 0; i < n; i += bits.length) buf.set(bits.subarray(0, Math.min(bits.length, n - i)), i);
        await fh.write(new Uint8Array(buf.buffer, 0, n * 2), 0, n * 2, at);
        at += n * 2;
      }
    }
  } finally {
    await fh.close();
  }
  await rename(`${path}.part`, path);
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  return pos;
}

// ---------------------------------------------------------------------------------------------------------

const here = dirname(fileURLToPath(import.meta.url));

/** Tiny fixture config + checkpoint vs the lists above: keys and shapes must be identical. */
async function check(): Promise<void> {
  const { tinyModels } = await import('../test/fixtures.js');
  const m = tinyModels();
  const cases: Array<[string, string, (c: Record<string, any>) => Shapes]> = [
    ['llama', join(m, 'hunyuanvideo-community/HunyuanVideo/text_encoder'), llamaShapes],
    ['clip', join(m, 'hunyuanvideo-community/HunyuanVideo/text_encoder_2'), clipShapes],
    ['siglip', join(m, 'lllyasviel/flux_redux_bfl/image_encoder'), siglipShapes],
  ];
  for (const [name, dir, fn] of cases) {
    const ck = await Checkpoint.open(dir);
    const mine = new Map(fn(ck.config).map(([k, s]) => [k, JSON.stringify(s)]));
    const theirs = new Map(ck.keys().map((k) => [k, JSON.stringify(ck.entry(k).shape)]));
    const bad = [...new Set([...mine.keys(), ...theirs.keys()])].filter((k) => mine.get(k) !== theirs.get(k));
    if (bad.length) throw new Error(`${name}: ${bad.length} keys differ from the fixture, e.g. ${bad.slice(0, 3).map((k) => `${k} ${mine.get(k)} vs ${theirs.get(k)}`).join('; ')}`);
    console.log(`${name}: ${mine.size} tensors match the fixture checkpoint`);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string', default: 'bench/tmp/full' },
      only: { type: 'string', default: 'llama,clip,siglip,vae,dit' },
      check: { type: 'boolean', default: false },
    },
  });
  if (values.check) return check();
  const out = resolve(values.out!);
  const want = new Set(values.only!.split(','));
  const jobs: Array<[string, string, object, () => Shapes, 'F16' | 'BF16', string]> = [
    ['llama', 'text_encoder', LLAMA_CONFIG, () => llamaShapes(LLAMA_CONFIG), 'F16', 'model.safetensors'],
    ['clip', 'text_encoder_2', CLIP_CONFIG, () => clipShapes(CLIP_CONFIG), 'F16', 'model.safetensors'],
    ['siglip', 'image_encoder', SIGLIP_CONFIG, () => siglipShapes(SIGLIP_CONFIG), 'F16', 'model.safetensors'],
    ['vae', 'vae', VAE_CONFIG, () => [...vaeParameterShapes(vaeConfig(VAE_CONFIG))], 'F16', 'diffusion_pytorch_model.safetensors'],
  ];
  for (const [name, folder, config, shapes, dtype, file] of jobs) {
    if (!want.has(name)) continue;
    const dir = join(out, folder);
    if (existsSync(join(dir, file))) { console.log(`${name}: ${dir} exists`); continue; }
    const t = performance.now();
    const bytes = await writeShared(dir, file, config, shapes(), dtype);
    const params = shapes().reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0);
    console.log(`${name}: ${dir}, ${(params / 1e9).toFixed(3)} B params, ${(bytes / 2 ** 30).toFixed(2)} GiB on disk, ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  if (want.has('dit')) {
    const dir = join(out, 'transformer');
    if (existsSync(join(dir, 'diffusion_pytorch_model.safetensors'))) console.log(`dit: ${dir} exists`);
    else execFileSync(process.execPath, [join(here, 'make-full-dit.js'), '--out', dir], { stdio: 'inherit' });
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
