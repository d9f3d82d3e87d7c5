/**
 * Writes a ~1 GiB bfloat16 checkpoint (random weights: 32 linear layers of 4096 x 4096 plus biases, two
 * shards and an index json) in both layouts the loader supports:
 *
 *   <out>/plain/                       config.json, model-0000{1,2}-of-00002.safetensors, index json
 *   <out>/hub/models--bench--bf16/     blobs/<sha256> + snapshots/<rev>/ symlinks + refs/main
 *
 * The blobs are hard links to the plain files when the filesystem allows (same bytes, no second GiB).
 * Usage: node dist/scripts/make-bf16-checkpoint.js [out-dir]   (default: $TMPDIR/framepack-bf16-1g)
 * Prints the paths; does nothing when the checkpoint already exists.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, link, mkdir, open, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { float32ToBFloat16 } from '../src/onnx/half.js';
import { encodeHeader, type StSpec } from '../src/onnx/safetensors.js';

export const LAYERS = 32;
export const WIDTH = 4096;
export const REVISION = '0123456789abcdef0123456789abcdef01234567';

export function benchPaths(out: string) {
  const repo = join(out, 'hub', 'models--bench--bf16');
  return { plain: join(out, 'plain'), repo, snapshot: join(repo, 'snapshots', REVISION) };
}

/** Small random bf16 values (|w| < 0.02) from a lookup table: fast to generate, realistic bit patterns. */
function filler(seed: number) {
  const table = float32ToBFloat16(Float32Array.from({ length: 65536 }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.02));
  let s = (seed * 2654435761) >>> 0 || 1;
  return (n: number) => {
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
      out[i] = table[s & 0xffff];
    }
    return out;
  };
}

async function writeShard(file: string, specs: StSpec[], seed: number): Promise<void> {
  const { header } = encodeHeader(specs);
  const fh = await open(file, 'w');
  try {
    await fh.write(header);
    const fill = filler(seed);
    for (const s of specs) {
      const n = s.shape.reduce((a, b) => a * b, 1);
      for (let done = 0; done < n; done += 1 << 22) {
        const chunk = fill(Math.min(1 << 22, n - done));
        await fh.write(new Uint8Array(chunk.buffer));
      }
    }
  } finally {
    await fh.close();
  }
}

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export async function makeBf16Checkpoint(out: string): Promise<ReturnType<typeof benchPaths>> {
  const paths = benchPaths(out);
  const done = join(out, '.complete');
  if (await stat(done).then(() => true, () => false)) return paths;
  await rm(out, { recursive: true, force: true });
  await mkdir(paths.plain, { recursive: true });
  const shards = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const weightMap: Record<string, string> = {};
  const perShard = LAYERS / 2;
  for (let s = 0; s < 2; s++) {
    const specs: StSpec[] = [];
    for (let l = s * perShard; l < (s + 1) * perShard; l++) {
      specs.push({ key: `layers.${l}.weight`, dtype: 'BF16', shape: [WIDTH, WIDTH] });
      specs.push({ key: `layers.${l}.bias`, dtype: 'BF16', shape: [WIDTH] });
    }
    for (const sp of specs) weightMap[sp.key] = shards[s];
    await writeShard(join(paths.plain, shards[s]), specs, s + 1);
  }
  const files: Record<string, string> = {
    'config.json': JSON.stringify({ layers: LAYERS, width: WIDTH }),
    'model.safetensors.index.json': JSON.stringify({ metadata: {}, weight_map: weightMap }),
  };
  for (const [name, text] of Object.entries(files)) await writeFile(join(paths.plain, name), text);

  // Hugging Face cache: content-addressed blobs, a snapshot of relative symlinks, refs/main
  await mkdir(join(paths.repo, 'blobs'), { recursive: true });
  await mkdir(paths.snapshot, { recursive: true });
  await mkdir(join(paths.repo, 'refs'), { recursive: true });
  await writeFile(join(paths.repo, 'refs', 'main'), REVISION);
  for (const name of [...shards, ...Object.keys(files)]) {
    const src = join(paths.plain, name);
    const sha = await sha256(src);
    const blob = join(paths.repo, 'blobs', sha);
    await link(src, blob).catch(() => copyFile(src, blob));
    await symlink(join('..', '..', 'blobs', sha), join(paths.snapshot, name));
  }
  await writeFile(done, new Date().toISOString());
  return paths;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = process.argv[2] ?? join(tmpdir(), 'framepack-bf16-1g');
  const t0 = performance.now();
  const p = await makeBf16Checkpoint(out);
  console.log(`plain folder:      ${p.plain}`);
  console.log(`Hugging Face repo: ${p.repo}`);
  console.log(`snapshot:          ${p.snapshot}`);
  console.log(`(${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}
