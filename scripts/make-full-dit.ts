/**
 * Writes a full-size FramePack transformer checkpoint (the real config of lllyasviel/FramePackI2V_HY, all
 * 1274 tensors at their real shapes, 12.87 B parameters) with random bfloat16 weights, for benchmarks.
 *
 *   node dist/scripts/make-full-dit.js [--out bench/tmp/framepack-dit-full] [--seed 1] [--distinct] [--dual N] [--single N]
 *
 * To save disk, the 20 dual-stream blocks read one shared region of the file and so do the 40 single-stream
 * blocks (about 2 GB on disk instead of 25.75 GB). Block i's tensors start i bf16 elements (2 i bytes) after
 * block 0's inside a region grown by that much, so every tensor still has its own offset: graphs get one
 * initializer per block and sessions load 60 blocks' worth of weights, as with the real checkpoint.
 * (Overlapping tensors are legal for this project's reader and for ONNX Runtime's external data; the
 * reference safetensors library rejects such files.) `--distinct` writes every tensor separately instead.
 *
 * `--dual` / `--single` keep the full width but change the block counts (20 and 40 by default): a reduced
 * checkpoint for quality tests at the real widths.
 *
 * Values: uniform in +-1/sqrt(fan_in) for weights and biases, 1 +- 0.1 for norm weights (torch's Linear init
 * scale, so activations stay finite through 60 blocks). Numbers are meaningless: only time and memory count.
 */
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ditConfig, ditParameterShapes } from '../src/nets/dit.js';
import { headerAt } from '../src/onnx/safetensors.js';

/** config.json of FramePackI2V_HY (spec 1.2). */
export const FULL_DIT_CONFIG = {
  _class_name: 'HunyuanVideoTransformer3DModelPacked',
  _diffusers_version: '0.33.1',
  attention_head_dim: 128,
  guidance_embeds: true,
  has_clean_x_embedder: true,
  has_image_proj: true,
  image_proj_dim: 1152,
  in_channels: 16,
  mlp_ratio: 4.0,
  num_attention_heads: 24,
  num_layers: 20,
  num_refiner_layers: 2,
  num_single_layers: 40,
  out_channels: 16,
  patch_size: 2,
  patch_size_t: 1,
  pooled_projection_dim: 768,
  qk_norm: 'rms_norm',
  rope_axes_dim: [16, 56, 56],
  rope_theta: 256.0,
  text_embed_dim: 4096,
};

/** xorshift32 -> uniform [-1, 1). */
function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 2147483648 - 1;
  };
}

/** Fills `out` with bf16 values of scale * u + offset (truncated: rounding does not matter here). */
function fillBf16(out: Uint16Array, rnd: () => number, scale: number, offset: number): void {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < out.length; i++) {
    f[0] = offset + scale * rnd();
    out[i] = u[0] >>> 16;
  }
}

interface Planned { key: string; shape: number[]; region: number; shift: number }

/**
 * The full-size checkpoint's config and header only, in `dir`: every tensor at its real shape over the zero
 * bytes of a sparse file (no disk used), tensor i starting 2 i bytes in (distinct offsets, as graphs key
 * weights by offset). Enough to build and inspect the full-size graphs; not to run them.
 */
export async function writeShapeOnlyDit(dir: string): Promise<void> {
  const shapes = ditParameterShapes(ditConfig(FULL_DIT_CONFIG));
  const head = headerAt(shapes.map(([key, shape], i) => ({ key, dtype: 'BF16' as const, shape, begin: 2 * i })), { format: 'pt', note: 'shapes only' });
  const longest = Math.max(...shapes.map(([, s], i) => 2 * i + 2 * s.reduce((a, b) => a * b, 1)));
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(FULL_DIT_CONFIG, null, 2) + '\n');
  const fh = await open(join(dir, 'diffusion_pytorch_model.safetensors'), 'w');
  try {
    await fh.write(head, 0, head.length, 0);
    await fh.truncate(head.length + longest);
  } finally {
    await fh.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string', default: 'bench/tmp/framepack-dit-full' },
      seed: { type: 'string', default: '1' },
      distinct: { type: 'boolean', default: false },
      dual: { type: 'string' },
      single: { type: 'string' },
    },
  });
  const out = resolve(values.out!);
  const config = {
    ...FULL_DIT_CONFIG,
    ...(values.dual ? { num_layers: Number(values.dual) } : {}),
    ...(values.single ? { num_single_layers: Number(values.single) } : {}),
  };
  const cfg = ditConfig(config);
  const shapes = ditParameterShapes(cfg);

  // Regions of data actually written. Shared blocks: the tensors of block i map to block 0's region + 2 i bytes.
  const blockOf = (key: string): [string, number, string] | null => {
    const m = /^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.*)$/.exec(key);
    return m ? [m[1], Number(m[2]), m[3]] : null;
  };
  const count = { transformer_blocks: cfg.dualLayers, single_transformer_blocks: cfg.singleLayers } as Record<string, number>;
  // Scale of each tensor's values: 1/sqrt(fan_in) of its layer (a bias takes its weight's).
  const shapeOf = new Map(shapes);
  const fanIn = (key: string): number => {
    const w = shapeOf.get(key.replace(/\.bias$/, '.weight'))!;
    return w.length > 1 ? w.slice(1).reduce((a, b) => a * b, 1) : 100; // norm biases: +-0.1
  };
  const regions: { numel: number; scale: number; offset: number }[] = [];
  const regionOf = new Map<string, number>();
  const planned: Planned[] = [];
  for (const [key, shape] of shapes) {
    const numel = shape.reduce((a, b) => a * b, 1);
    const b = values.distinct ? null : blockOf(key);
    const shareKey = b ? `${b[0]}.*.${b[2]}` : key;
    let region = regionOf.get(shareKey);
    if (region === undefined) {
      region = regions.length;
      regionOf.set(shareKey, region);
      const norm = /norm[^.]*\.weight$/.test(key) && shape.length === 1;
      regions.push({ numel: numel + (b ? count[b[0]] - 1 : 0), scale: norm ? 0.1 : 1 / Math.sqrt(fanIn(key)), offset: norm ? 1 : 0 });
    }
    planned.push({ key, shape, region, shift: b ? b[1] : 0 });
  }

  // Region offsets (bytes, relative to the data block).
  const regionStart: number[] = [];
  let pos = 0;
  for (const r of regions) {
    regionStart.push(pos);
    pos += r.numel * 2;
  }
  const dataBytes = pos;

  const head = headerAt(planned.map((p) => ({ key: p.key, dtype: 'BF16' as const, shape: p.shape, begin: regionStart[p.region] + 2 * p.shift })),
    { format: 'pt', note: 'random weights for benchmarks; blocks share data' });

  await mkdir(out, { recursive: true });
  await writeFile(join(out, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  const file = join(out, 'diffusion_pytorch_model.safetensors');
  const fh = await open(file, 'w');
  const t0 = performance.now();
  try {
    await fh.write(head, 0, head.length, 0);
    const rnd = uniform(Number(values.seed));
    let at = head.length;
    const CHUNK = 1 << 24; // elements per write (32 MB)
    const buf = new Uint16Array(CHUNK);
    for (const r of regions) {
      for (let done = 0; done < r.numel; done += CHUNK) {
        const n = Math.min(CHUNK, r.numel - done);
        const view = buf.subarray(0, n);
        fillBf16(view, rnd, r.scale, r.offset);
        await fh.write(new Uint8Array(view.buffer, 0, n * 2), 0, n * 2, at);
        at += n * 2;
      }
    }
  } finally {
    await fh.close();
  }
  const params = shapes.reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0);
  console.log(JSON.stringify({
    dir: out, tensors: shapes.length, params, dataGiB: +(dataBytes / 2 ** 30).toFixed(2),
    sharedBlocks: !values.distinct, seconds: +((performance.now() - t0) / 1000).toFixed(1),
  }));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
