/**
 * VAE decode benchmark on a full-width HunyuanVideo VAE (block_out_channels 128/256/512/512, the real
 * architecture and parameter count) with random float16 weights, written once to a cache folder.
 *
 *   node dist/scripts/bench-vae.js [--frames 18] [--height 80] [--width 76]
 *       [--ep cpu|cuda] [--spatial-tiling] [--dir bench/tmp/vae-full-random]
 *
 * Decodes one FramePack section's latent slice (default 18 latent frames at 80x76, the 640x608 bucket)
 * exactly as the pipeline does: decodeLatents with the temporal tiled decode. Prints the session creation
 * time, the decode time, and the process's peak resident memory (ORT runs in a worker thread of this
 * process, so maxRSS covers it). Random weights: numbers are meaningless, only time and memory count.
 */
import { existsSync } from 'node:fs';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { float32ToFloat16 } from '../src/onnx/half.js';
import { encodeHeader } from '../src/onnx/safetensors.js';
import type { ExecutionProvider } from '../src/runtime/protocol.js';
import { terminateWorkers } from '../src/runtime/session.js';
import { vaeConfig, vaeParameterShapes } from '../src/nets/vae.js';
import { Vae } from '../src/framepack/vae-decode.js';
import { temporalWindows } from '../src/framepack/vae-tiling.js';

const CONFIG = {
  _class_name: 'AutoencoderKLHunyuanVideo',
  act_fn: 'silu',
  block_out_channels: [128, 256, 512, 512],
  down_block_types: Array(4).fill('HunyuanVideoDownBlock3D'),
  up_block_types: Array(4).fill('HunyuanVideoUpBlock3D'),
  in_channels: 3, out_channels: 3, latent_channels: 16,
  layers_per_block: 2, mid_block_add_attention: true, norm_num_groups: 32,
  scaling_factor: 0.476986, spatial_compression_ratio: 8, temporal_compression_ratio: 4,
};

/** xorshift32 uniform in [-1, 1): fast and reproducible. */
function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 2147483648 - 1;
  };
}

/**
 * Random weights of sensible scale: weights uniform with variance 1/fan_in, norm weights near 1, biases
 * near 0, so activations stay O(1) through the GroupNorm-ed blocks. Streamed to disk tensor by tensor.
 */
async function writeRandomCheckpoint(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const shapes = [...vaeParameterShapes(vaeConfig(CONFIG))];
  const specs = shapes.map(([key, shape]) => ({ key, dtype: 'F16' as const, shape }));
  const { header } = encodeHeader(specs, { format: 'pt' });
  const file = join(dir, 'diffusion_pytorch_model.safetensors');
  const fh = await open(`${file}.part`, 'w');
  try {
    await fh.write(header);
    const rnd = uniform(1234);
    for (const [key, shape] of shapes) {
      const n = shape.reduce((a, b) => a * b, 1);
      const v = new Float32Array(n);
      if (shape.length === 1) {
        const isNormWeight = /norm[^.]*\.weight$|group_norm\.weight$/.test(key);
        for (let i = 0; i < n; i++) v[i] = (isNormWeight ? 1 : 0) + 0.05 * rnd();
      } else {
        const fanIn = n / shape[0];
        const a = Math.sqrt(3 / fanIn);
        for (let i = 0; i < n; i++) v[i] = a * rnd();
      }
      const h = float32ToFloat16(v);
      await fh.write(new Uint8Array(h.buffer, h.byteOffset, h.byteLength));
    }
  } finally {
    await fh.close();
  }
  const { rename } = await import('node:fs/promises');
  await rename(`${file}.part`, file);
  await writeFile(join(dir, 'config.json'), JSON.stringify(CONFIG, null, 2));
}

const gib = (kb: number) => (kb / 1024 / 1024).toFixed(2);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      frames: { type: 'string', default: '18' }, height: { type: 'string', default: '80' }, width: { type: 'string', default: '76' },
      ep: { type: 'string', default: 'cpu' }, 'spatial-tiling': { type: 'boolean', default: false },
      dir: { type: 'string', default: 'bench/tmp/vae-full-random' },
    },
  });
  const T = Number(values.frames), h = Number(values.height), w = Number(values.width);
  const ep = values.ep as ExecutionProvider;
  const dir = resolve(values.dir!);
  if (!existsSync(join(dir, 'diffusion_pytorch_model.safetensors'))) {
    const t = performance.now();
    await writeRandomCheckpoint(dir);
    console.log(`wrote random full-width VAE to ${dir} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const precision = ep === 'cpu' ? 'float32' : 'float16';
  const vae = await Vae.load(dir, { ep, precision, spatialTiling: values['spatial-tiling'] });
  const windows = temporalWindows(T);
  console.log(`VAE decode: ${T} latent frames at ${h}x${w} -> ${4 * (T - 1) + 1} frames at ${8 * h}x${8 * w} px, ` +
    `${ep} ${precision}, temporal windows ${windows.map(([a, b]) => b - a).join('+')}, spatial tiling ${values['spatial-tiling'] ? 'on' : 'off'}`);

  // Sessions (weights cast to float32, one attention graph per window length) are created by a tiny decode
  // with the same window lengths, so the timed decode measures compute only.
  let t = performance.now();
  const tiny = { dtype: 'float32' as const, dims: [1, 16, T, 2, 2], data: new Float32Array(16 * T * 4) };
  await vae.decodeLatents(tiny);
  console.log(`sessions created in ${((performance.now() - t) / 1000).toFixed(1)} s; RSS after load ${gib(process.memoryUsage().rss / 1024)} GiB`);

  const n = 16 * T * h * w;
  const z = new Float32Array(n);
  const rnd = uniform(99);
  for (let i = 0; i < n; i++) z[i] = 0.5 * rnd();
  t = performance.now();
  const out = await vae.decodeLatents({ dtype: 'float32', dims: [1, 16, T, h, w], data: z });
  const secs = (performance.now() - t) / 1000;
  const px = out.data as Float32Array;
  let finite = true;
  for (let i = 0; i < px.length; i += 997) if (!Number.isFinite(px[i])) { finite = false; break; }
  console.log(`decoded (${out.dims.join(', ')}) in ${secs.toFixed(1)} s (${(secs / windows.length).toFixed(1)} s per window), values finite: ${finite}`);
  console.log(`peak resident memory (maxRSS, whole process): ${gib(process.resourceUsage().maxRSS)} GiB`);
  await vae.release();
  await terminateWorkers();
}

main().catch((err) => { console.error(err); process.exit(1); });
