/** A predictor that logs `lines` lines as fast as it can (yielding now and then), then returns. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { Predictor } from '../../../src/predictor.js';

export const inputSchema = z.object({
  lines: z.int().min(0).max(100_000).default(1000),
  spread_ms: z.int().min(0).default(0),
});

export default function chatty(): Predictor<typeof inputSchema> {
  return {
    inputSchema,
    async setup(ctx) {
      for (let i = 0; i < 3; i++) ctx.logger.info('setup line %d', i);
    },
    async predict(input, ctx) {
      const pause = input.lines > 0 ? input.spread_ms / input.lines : 0;
      for (let i = 0; i < input.lines; i++) {
        if (i % 2 === 0) ctx.log(`line ${i}`);
        else ctx.logger.info({ i }, 'line %d', i);
        if (pause > 0) await sleep(pause);
        else if (i % 100 === 0) await yieldToLoop();
      }
      const out = join(ctx.tmpDir, 'log.txt');
      await writeFile(out, `${input.lines} lines`);
      return out;
    },
  };
}
