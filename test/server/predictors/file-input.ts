/**
 * A predictor with a file input: checks that it is a PNG (as an image model would) and returns a copy.
 * `hold_ms` keeps the prediction running (to look at its temp files while it runs).
 */
import { copyFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { fileInput, type Predictor } from '../../../src/predictor.js';

export const inputSchema = z.object({
  input_image: fileInput().describe('A PNG image'),
  hold_ms: z.int().min(0).default(0),
});

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export default function fileInputPredictor(): Predictor<typeof inputSchema> {
  return {
    inputSchema,
    async setup() {},
    async predict(input, ctx) {
      ctx.log(`got ${input.input_image}`);
      const fh = await open(input.input_image, 'r');
      const head = Buffer.alloc(8);
      await fh.read(head, 0, 8, 0);
      await fh.close();
      if (!head.equals(PNG)) throw new Error('input_image is not a PNG image');
      if (input.hold_ms > 0) await sleep(input.hold_ms, undefined, { signal: ctx.signal });
      const out = join(ctx.tmpDir, 'output.png');
      await copyFile(input.input_image, out);
      return out;
    },
  };
}
