/**
 * A predictor whose predict() throws; --fatal makes the error fatal (the model "died"); --uncaught throws
 * from a timer instead (an error no promise catches) and then waits to be stopped; --log-errors first logs
 * errors through ctx.logger the ways a model might (as a format argument, as the first argument).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { Predictor, PredictorOptions } from '../../../src/predictor.js';

export const inputSchema = z.object({ prompt: z.string().default('x') });

export default function failing(options: PredictorOptions): Predictor<typeof inputSchema> {
  return {
    inputSchema,
    async setup() {},
    async predict(_input, ctx) {
      ctx.log('about to fail');
      if (options.logErrors) {
        ctx.logger.warn('retrying after %s', new Error('a transient glitch'));
        ctx.logger.error(new Error('an inner failure'), 'step failed');
        ctx.logger.info({ step: 3 }, 'context: %s', new Error('a detail'));
      }
      if (options.uncaught) {
        setTimeout(() => { throw new Error('stray timer error'); }, 10);
        await sleep(60_000, undefined, { signal: ctx.signal });
      }
      await sleep(10);
      const err = Object.assign(new Error('the model exploded'), options.fatal ? { fatal: true } : {});
      throw err;
    },
  };
}
