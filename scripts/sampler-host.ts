/**
 * Host time per sampler step at the default request's size: one section of 9 latent frames at the 640x608
 * bucket (1 x 16 x 9 x 80 x 76 latents), 25 UniPC steps, bf16 rounding of the model input as on CUDA.
 *
 * Two figures, milliseconds per step (median of the runs after one warm-up):
 *   sampler    the UniPC update alone: the model is a function returning a fixed velocity
 *   + session  the same with the velocity coming from a session worker the way the DiT's does: the latents
 *              are copied to the worker, a run, the velocity comes back; the worker's own time (busyMs)
 *              is taken off, so what remains is what the main thread and the message passing add per step
 * Compare the second figure with a DiT forward (about 1.05 s on an H100) for the share of host overhead.
 *
 * --threads N splits the passes over N sampler threads (sampler-threads.ts; default FRAMEPACK_SAMPLER_THREADS
 * or the machine's default); the figures then include the messages to and from the threads.
 *
 * Usage: node dist/scripts/sampler-host.js [--runs 5] [--cfg 1] [--threads N]
 */
import { parseArgs } from 'node:util';
import { Graph } from '../src/onnx/graph.js';
import { Session, terminateWorkers } from '../src/runtime/session.js';
import { sampleUniPC, sectionSigmas, type VelocityFn } from '../src/framepack/sampler.js';
import { samplerThreadCount } from '../src/framepack/sampler-threads.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, cfg: { type: 'string', default: '1' }, threads: { type: 'string' } } });
const threads = values.threads === undefined ? samplerThreadCount() : Number(values.threads);
const runs = Number(values.runs);
const cfg = Number(values.cfg);
const shape = [1, 16, 9, 80, 76];
const n = shape.reduce((a, b) => a * b, 1);
const steps = 25;
const sigmas = sectionSigmas(steps, shape[2], shape[3], shape[4]);

function gaussian(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  for (let i = 0; i < count; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

const noise = gaussian(n, 1);
const fixedVelocity = gaussian(n, 2);

async function perStep(velocity: VelocityFn, busyMs: () => number): Promise<number> {
  const t0 = performance.now();
  const b0 = busyMs();
  await sampleUniPC({ noise, sigmas, velocity, cfg, rescale: 0, halfPrecision: true, threads });
  return (performance.now() - t0 - (busyMs() - b0)) / steps;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function measure(label: string, velocity: VelocityFn, busyMs: () => number): Promise<void> {
  await perStep(velocity, busyMs); // warm-up
  const ms: number[] = [];
  for (let r = 0; r < runs; r++) ms.push(await perStep(velocity, busyMs));
  console.log(`${label.padEnd(10)} ${median(ms).toFixed(2)} ms per step (median of ${runs}; min ${Math.min(...ms).toFixed(2)}, max ${Math.max(...ms).toFixed(2)})`);
}

console.log(`latents [${shape}] (${n} floats), ${steps} steps, cfg ${cfg}, bf16 model input, ${threads} sampler threads`);
await measure('sampler', () => Promise.resolve(fixedVelocity), () => 0);

// A session whose run costs next to nothing: output = hidden_states * 0.5, on the CPU worker.
const g = new Graph({ name: 'velocity-stand-in', precision: 'float32' });
g.output(g.mul(g.input('hidden_states', 'float32', shape), 0.5), 'output');
const s = await Session.create(g.toModel(), { ep: 'cpu', threads: 1 });
try {
  await measure('+ session', async (x) => {
    const r = await s.run({ hidden_states: { dtype: 'float32', dims: shape, data: x } });
    return r.output.data as Float32Array;
  }, () => s.busyMs);
} finally {
  await s.release();
  await terminateWorkers();
}
