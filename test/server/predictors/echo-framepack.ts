/** FramePack's input schema with a predictor that writes the input it received (as JSON) as its output. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inputSchema } from '../../../src/framepack/inputs.js';
import type { Predictor } from '../../../src/predictor.js';

export default function echoFramepack(): Predictor<typeof inputSchema> {
  return {
    inputSchema,
    async setup() {},
    async predict(input, ctx) {
      const out = join(ctx.tmpDir, 'input.json');
      await writeFile(out, JSON.stringify(input));
      return out;
    },
  };
}
