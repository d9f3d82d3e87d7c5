/**
 * `framepack demo` (`npm run demo`): the whole pipeline on the project's tiny random-weight FramePack, no
 * download and no GPU needed. Makes models/tiny when it is missing, draws a start image, generates a short
 * video and writes output.mp4. The weights are random, so the video is coloured noise in motion: the point
 * is to see every stage run (prompt, image, sections, decode, encode) on a laptop within a minute.
 *
 *   --models <dir>      use these weights instead of models/tiny (a folder laid out like the Hub repositories)
 *   --image <file>      start image (default: a generated gradient)
 *   --output <file>     where to write the video (default output.mp4)
 *   --prompt, --seconds, --steps, --seed, --window   generation inputs (defaults: 1 s, window 5 -> 2 sections and
 *                       41 frames, 8 steps, seed 31337: about a minute on two CPU cores)
 */
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { makeTinyModel } from '../../scripts/make-tiny-model.js';
import { createLogger } from '../log.js';
import { inputSchema } from '../framepack/inputs.js';
import createPredictor from '../framepack/predictor.js';
import { parseArgs } from './flags.js';

/** dist/src/cli/demo.js -> the repository root. */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const TINY_MODELS = join(repoRoot, 'models', 'tiny');

/** Makes the tiny model unless it is already there. */
export async function ensureTinyModel(dir = TINY_MODELS, log: (l: string) => void = () => {}): Promise<string> {
  if (!existsSync(join(dir, 'lllyasviel', 'FramePack_F1_I2V_HY_20250503', 'config.json'))) { // written last
    log(`making the tiny random FramePack in ${dir}`);
    await makeTinyModel(dir);
  }
  return dir;
}

/** A 640x512 start image: smooth colour gradients with a disc, so the bucket resize and crop have work. */
export async function demoImage(path: string): Promise<void> {
  const W = 640, H = 512;
  const px = Buffer.alloc(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const o = (y * W + x) * 3;
      const inDisc = (x - 400) ** 2 + (y - 220) ** 2 < 90 ** 2;
      px[o] = inDisc ? 250 : Math.round((255 * x) / W);
      px[o + 1] = inDisc ? 210 : Math.round((255 * y) / H);
      px[o + 2] = inDisc ? 40 : 160;
    }
  }
  await sharp(px, { raw: { width: W, height: H, channels: 3 } }).png().toFile(path);
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const str = (k: string) => { const v = args.flags.get(k); return typeof v === 'string' ? v : undefined; };
  const num = (k: string, d: number) => (str(k) === undefined ? d : Number(str(k)));
  const logger = createLogger({ fd: 2 });
  const say = (l: string) => process.stderr.write(`${l}\n`);

  const models = resolve(str('models') ?? (await ensureTinyModel(TINY_MODELS, say)));
  const output = resolve(str('output') ?? 'output.mp4');
  const tmp = await mkdtemp(join(tmpdir(), 'framepack-demo-'));
  try {
    const image = str('image') ? resolve(str('image')!) : join(tmp, 'start.png');
    if (!str('image')) await demoImage(image);
    const input = inputSchema.parse({
      input_image: image,
      prompt: str('prompt') ?? 'A paper boat drifts across a sunlit pond, ripples spreading.',
      seed: num('seed', 31337),
      total_video_length_seconds: num('seconds', 1),
      latent_window_size: num('window', 5),
      steps: num('steps', 8),
    });
    const predictor = createPredictor({ models });
    const t0 = performance.now();
    await predictor.setup({ log: say, logger });
    const out = await predictor.predict(input, {
      log: say, logger, signal: new AbortController().signal, tmpDir: tmp,
    });
    await copyFile(out, output);
    say(`wrote ${output} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return 0;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
