/**
 * A random LoRA for a FramePack transformer: diffusers / PEFT keys (`transformer.<layer>.lora_A.weight` (r, in),
 * `.lora_B.weight` (out, r)), float16, on every linear layer the graphs have, for timing LoRA requests where
 * no real LoRA can be fetched (the GPU machine has no network). Values are scaled so that the update moves
 * the output without overflowing it; only time and memory count.
 *
 *   node dist/scripts/make-random-lora.js --transformer bench/tmp/full/transformer --out lora.safetensors [--rank 32]
 *   node dist/scripts/make-random-lora.js --transformer DIR --cache-for http://127.0.0.1/style.safetensors
 *       # written where the server's LoRA cache (FRAMEPACK_LORA_CACHE) keeps a download of that URL, so a
 *       # request naming it runs offline
 */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ditConfig, type DitConfig } from '../src/nets/dit.js';
import { ditLinears } from '../src/nets/dit-lora.js';
import { loraCacheFile } from '../src/framepack/lora-files.js';
import { float32ToFloat16 } from '../src/onnx/half.js';
import { Checkpoint, saveTensors, type HostTensor } from '../src/onnx/safetensors.js';
import { rand } from '../test/onnx/helpers.js';

/**
 * Rank-`rank` A and B for every linear layer of `c`, float32 as the server's reader returns a file's tensors:
 * A ~ U(+-1/sqrt(in)), B ~ U(+-0.02/sqrt(rank)).
 */
export function randomLora(c: DitConfig, rank: number, seed = 7): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  let s = seed;
  for (const [layer, [outF, inF]] of ditLinears(c)) {
    const a = rand(rank * inF, s++, -1 / Math.sqrt(inF), 1 / Math.sqrt(inF));
    const b = rand(outF * rank, s++, -0.02 / Math.sqrt(rank), 0.02 / Math.sqrt(rank));
    out[`transformer.${layer}.lora_A.weight`] = { dtype: 'float32', dims: [rank, inF], data: a };
    out[`transformer.${layer}.lora_B.weight`] = { dtype: 'float32', dims: [outF, rank], data: b };
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      transformer: { type: 'string', default: 'bench/tmp/full/transformer' },
      out: { type: 'string' },
      'cache-for': { type: 'string' },
      rank: { type: 'string', default: '32' },
    },
  });
  const rank = Number(values.rank);
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`--rank ${values.rank}: a positive integer`);
  const file = values.out ?? (values['cache-for'] ? loraCacheFile(values['cache-for']) : null);
  if (!file) throw new Error('give --out FILE or --cache-for URL');
  const config = ditConfig((await Checkpoint.open(values.transformer!)).config);
  const tensors = randomLora(config, rank);
  const half = Object.fromEntries(Object.entries(tensors).map(([k, t]) =>
    [k, { dtype: 'float16', dims: t.dims, data: float32ToFloat16(t.data as Float32Array) } satisfies HostTensor]));
  await mkdir(dirname(file), { recursive: true });
  await saveTensors(file, half);
  console.log(`${file}: rank ${rank} on ${Object.keys(tensors).length / 2} layers`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
