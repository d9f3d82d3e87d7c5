/**
 * A predictor that takes its time: `steps` steps of `step_ms` each, one log line per step, honouring cancel.
 * Options: --setup-ms <n> (slow setup), --fail-setup (setup throws), --leave-timer (setup leaves an interval
 * running, as a model's worker threads would), --dispose-marker <file> (dispose() writes that file).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { Predictor, PredictorOptions } from '../../../src/predictor.js';

export const inputSchema = z.object({
  prompt: z.string().describe('Any text; echoed into the output file'),
  steps: z.int().min(1).max(1000).default(3),
  step_ms: z.int().min(0).max(60_000).default(20),
  ratio: z.number().min(0).max(1).default(0.5),
  flag: z.boolean().default(true),
  seed: z.int().nullable().default(null),
});

export default function slow(options: PredictorOptions): Predictor<typeof inputSchema> {
  return {
    inputSchema,
    async setup(ctx) {
      ctx.log('loading the slow model');
      await sleep(Number(options.setupMs ?? 0), undefined, { signal: ctx.signal });
      if (options.failSetup) throw new Error('weights not found in /nowhere');
      if (options.leaveTimer) setInterval(() => undefined, 1000);
      ctx.log('slow model ready');
    },
    async predict(input, ctx) {
      for (let i = 1; i <= input.steps; i++) {
        await sleep(input.step_ms, undefined, { signal: ctx.signal });
        ctx.log(`step ${i}/${input.steps}`);
        ctx.progress?.(i, input.steps, 'steps');
      }
      const out = join(ctx.tmpDir, 'output.mp4');
      await writeFile(out, `fake video for ${input.prompt} ${JSON.stringify(input)}`);
      return out;
    },
    async dispose() {
      if (typeof options.disposeMarker === 'string') await writeFile(options.disposeMarker, 'disposed');
    },
  };
}
