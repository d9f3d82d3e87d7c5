/**
 * A predictor that keeps a CPU core fully busy for `ms` milliseconds in a worker thread, the way ORT
 * sessions run: the event loop stays free for health checks and cancels. Cancel terminates the worker.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { z } from 'zod';
import type { Predictor } from '../../../src/predictor.js';

export const inputSchema = z.object({ ms: z.int().min(0).max(600_000).default(2000) });

const BUSY = `
const { parentPort, workerData } = require('node:worker_threads');
const until = Date.now() + workerData.ms;
let x = 0;
while (Date.now() < until) { for (let i = 0; i < 1e5; i++) x += Math.sqrt(i); }
parentPort.postMessage(x);
`;

function busy(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(BUSY, { eval: true, workerData: { ms } });
    const onAbort = () => void worker.terminate();
    signal.addEventListener('abort', onAbort, { once: true });
    worker.once('message', () => resolve());
    worker.once('error', reject);
    worker.once('exit', () => {
      signal.removeEventListener('abort', onAbort);
      if (signal.aborted) reject(signal.reason);
      else resolve();
    });
  });
}

export default function cpuBusy(): Predictor<typeof inputSchema> {
  return {
    inputSchema,
    async setup() {},
    async predict(input, ctx) {
      ctx.log(`busy for ${input.ms} ms`);
      await busy(input.ms, ctx.signal);
      const out = join(ctx.tmpDir, 'output.mp4');
      await writeFile(out, 'busy');
      return out;
    },
  };
}
