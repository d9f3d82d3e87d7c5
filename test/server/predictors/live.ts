/**
 * A predictor that reports live events as FramePack does: per step a progress event and a preview (fake JPEG
 * bytes of `preview_bytes`), per section (only while watched) a file handed over as the video so far.
 * `watchers` makes it wait (up to 10 s) until that many clients listen before its first step, so tests see
 * every event; `fail` throws after the first section.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { Predictor } from '../../../src/predictor.js';

export const inputSchema = z.object({
  prompt: z.string(),
  sections: z.int().min(1).max(20).default(2),
  steps: z.int().min(1).max(1000).default(3),
  step_ms: z.int().min(0).max(10_000).default(5),
  preview_bytes: z.int().min(1).max(10_000_000).default(100),
  watchers: z.int().min(0).max(10).default(0),
  fail: z.boolean().default(false),
});

export default function live(): Predictor<typeof inputSchema> {
  return {
    inputSchema,
    async setup() {},
    async predict(input, ctx) {
      const events = ctx.events;
      if (!events) throw new Error('no live events in this context');
      for (let i = 0; i < 1000 && input.watchers > 0; i++) {
        const streams = (events as unknown as { streams: Set<unknown> }).streams;
        if (streams.size >= input.watchers) break;
        await sleep(10, undefined, { signal: ctx.signal });
      }
      const total = input.sections * input.steps;
      for (let section = 1; section <= input.sections; section++) {
        for (let step = 1; step <= input.steps; step++) {
          await sleep(input.step_ms, undefined, { signal: ctx.signal });
          const done = (section - 1) * input.steps + step;
          events.progress({ section, sections: input.sections, step, steps: input.steps, percent: (100 * done) / total, eta_seconds: null });
          const image = new Uint8Array(input.preview_bytes).fill(section * 16 + step);
          events.preview({ section, step, width: 4, height: 2, mime: 'image/jpeg', image });
        }
        ctx.log(`section ${section} done; watched ${events.watched}`);
        if (events.watched) {
          const path = join(ctx.tmpDir, `part-${section}.mp4`);
          await writeFile(path, `video of ${section} section(s)`);
          await events.section({ section, sections: input.sections, frames: section * 10, path });
        }
        if (input.fail) throw new Error('the model broke after a section');
      }
      const out = join(ctx.tmpDir, 'output.mp4');
      await writeFile(out, `video of ${input.prompt}`);
      return out;
    },
  };
}
