/**
 * A model on fake GPUs. `devices()` asks the same discovery FramePack does (gpu-placements.ts: the nvidia-smi
 * on PATH, CUDA_VISIBLE_DEVICES, a placement per card) with the CUDA provider taken as present; each instance
 * chooses its placement for `options.deviceId` at setup and writes `device=<n> policy=<p> prompt=<prompt>`
 * as its output after `steps` steps of `step_ms`.
 *
 * Input `fail` makes a prediction on device `fail_on` fail the way ONNX Runtime does: `lost` with CUDA's
 * illegal-address error, `oom` with its out-of-memory error (both through the project's mapping), `plain`
 * with an error that is not the device's. Option --fail-setup-on <n>[,<m>...]: setup on those devices throws.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { Predictor, PredictorOptions } from '../../../src/predictor.js';
import { gpuPlacements } from '../../../src/runtime/gpu-placements.js';
import { choosePlacement, mapOrtError } from '../../../src/runtime/placement.js';

export const inputSchema = z.object({
  prompt: z.string().default('x'),
  steps: z.int().min(1).max(1000).default(3),
  step_ms: z.int().min(0).max(60_000).default(20),
  fail: z.enum(['none', 'lost', 'oom', 'plain']).default('none'),
  fail_on: z.int().min(0).default(0),
});

const cuda = { available: true, detail: 'fake CUDA provider' };

const FAILURES = {
  lost: (d: number) => `CUDA failure 700: an illegal memory access was encountered ; GPU=${d} ; hostname=test ; expr=cudaStreamSynchronize(stream);`,
  oom: (d: number) => `CUDA failure 2: out of memory ; GPU=${d} ; hostname=test ; expr=cudaMalloc((void**)&p, size);`,
  plain: () => 'Invalid input name: foo',
};

export default function gpus(options: PredictorOptions): Predictor<typeof inputSchema> {
  const device = options.deviceId ?? 0; // without a device list the model runs where CUDA puts it: device 0
  let policy = '';
  return {
    inputSchema,
    async devices(log) {
      const { placements, skipped } = await gpuPlacements({ cuda });
      for (const s of skipped) log(`cuda:${s.deviceId} left out: ${s.reason}`);
      return placements.map((p) => p.deviceId);
    },
    async setup(ctx) {
      if (options.failSetupOn !== undefined && String(options.failSetupOn).split(',').map(Number).includes(device)) throw new Error(`no response from GPU ${device}`);
      const env = { ...process.env, FRAMEPACK_DEVICE_ID: String(device) };
      policy = (await choosePlacement({ env, cuda })).policy;
      ctx.log(`placement ${policy} on cuda:${device}`);
    },
    async predict(input, ctx) {
      for (let i = 1; i <= input.steps; i++) {
        await sleep(input.step_ms, undefined, { signal: ctx.signal });
        ctx.log(`step ${i}/${input.steps} on cuda:${device}`);
      }
      if (input.fail !== 'none' && input.fail_on === device) throw mapOrtError(new Error(FAILURES[input.fail](device)), 'cuda');
      const out = join(ctx.tmpDir, 'output.txt');
      await writeFile(out, `device=${device} policy=${policy} prompt=${input.prompt}`);
      return out;
    },
  };
}
