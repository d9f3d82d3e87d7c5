/**
 * The host copy of a session's output (ort-api Tensor.toHost) at a VAE tile's size: a CPU session through the C
 * API multiplies a 24 MB float32 input by 2, and each run's output is copied to the host as the session worker
 * does after every run (two copies alive at a time, the rest garbage, as tiles move on to the stitcher); then the
 * same allocation and copy from a JS source, without ONNX Runtime.
 * Prints the median and minimum of each batch of 40. Run it several times: whether the copy finds memory the
 * allocator reuses (a few ms) or new pages (tens of ms on a virtual machine whose page faults are slow) changes
 * from process to process.
 *
 *   npm run build && node dist/scripts/to-host.js [--mb 24] [--batches 3]
 */
import { parseArgs } from 'node:util';
import { Graph } from '../src/onnx/graph.js';
import * as capi from '../src/runtime/ort-api.js';
import type { HostTensor } from '../src/onnx/safetensors.js';

const { values } = parseArgs({ options: { mb: { type: 'string', default: '24' }, batches: { type: 'string', default: '3' } } });
const n = (Number(values.mb) * 2 ** 20) / 4;
const g = new Graph({ name: 'to-host', precision: 'float32' });
g.output(g.mul(g.input('x', 'float32', [n]), 2), 'y');
const model = g.toModel();
const options = capi.SessionOptions.create({ config: {}, intraOpThreads: 1, logSeverityLevel: 3 });
const session = capi.Session.create(model.bytes, options);
const host = capi.MemoryInfo.cpu();
const binding = capi.IoBinding.create(session);
// ORT reads it in place: it stays alive with the module
const input: HostTensor = { dtype: 'float32', dims: [n], data: new Float32Array(n).fill(0.5) };
const wrapped = capi.Tensor.wrap(input, host);
binding.bindInput('x', wrapped);
wrapped.release();
for (let b = 0; b < Number(values.batches); b++) {
  const ms: number[] = [];
  const alive: HostTensor[] = [];
  for (let i = 0; i < 40; i++) {
    binding.clearOutputs();
    binding.bindOutput('y', host);
    const [y] = binding.run(null);
    const t0 = performance.now();
    alive.push(y.toHost());
    ms.push(performance.now() - t0);
    y.release();
    if (alive.length > 2) alive.shift();
  }
  ms.sort((a, c) => a - c);
  console.log(`toHost of ${values.mb} MB: median ${ms[ms.length >> 1].toFixed(2)} ms, min ${ms[0].toFixed(2)} ms, max ${ms.at(-1)!.toFixed(2)} ms`);
}
// the same allocation and copy without ONNX Runtime, from a JS source, as many times
const source = new Uint8Array(n * 4).fill(3);
const bare: number[] = [];
const kept: ArrayBuffer[] = [];
for (let i = 0; i < 40; i++) {
  const t0 = performance.now();
  const copy = new ArrayBuffer(n * 4);
  new Uint8Array(copy).set(source);
  bare.push(performance.now() - t0);
  kept.push(copy);
  if (kept.length > 2) kept.shift();
}
bare.sort((a, c) => a - c);
console.log(`new ArrayBuffer + set of ${values.mb} MB: median ${bare[bare.length >> 1].toFixed(2)} ms, min ${bare[0].toFixed(2)} ms, max ${bare.at(-1)!.toFixed(2)} ms`);
binding.release();
session.release();
options.release();
host.release();
