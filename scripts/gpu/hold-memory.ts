/**
 * Holds device memory until killed, so that a benchmark on a large GPU runs inside the budget of a smaller
 * one. cuDNN's exhaustive convolution search sizes its workspace from the device's free memory (90% of
 * cudaMemGetInfo) and ONNX Runtime's CUDA arena keeps what it grew to, so the VAE takes more memory the more
 * is free: peaks seen on an 80 GB card say what it took, not what it needs. Holding the difference measures
 * whether a placement works within a given budget.
 *
 *   node dist/scripts/gpu/hold-memory.js --gib <n> [--device-id 0]
 *
 * One ONNX Runtime session runs a graph whose 1 GiB float16 intermediates are all alive at once (inputs of
 * one Sum); its arena keeps them after the run. Prints `holding <n> GiB` when done, then waits for SIGTERM.
 */
import { parseArgs } from 'node:util';
import { Graph } from '../../src/onnx/graph.js';
import { Session } from '../../src/runtime/session.js';

const GIB_ELEMENTS = 2 ** 29; // float16 elements per GiB

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { gib: { type: 'string' }, 'device-id': { type: 'string', default: '0' } } });
  const gib = Math.floor(Number(values.gib));
  if (!Number.isFinite(gib) || gib < 1) throw new Error('--gib must be a number >= 1');
  const g = new Graph({ name: 'hold_memory', precision: 'float16' });
  const s = g.cast(g.input('s', 'float32', [1]));
  // distinct inputs: identical Expand nodes would be merged into one by common-subexpression elimination
  const parts = Array.from({ length: Math.max(1, gib - 1) }, (_, i) => g.op('Expand', [g.add(s, i), g.ints([GIB_ELEMENTS])], {}, { shape: [GIB_ELEMENTS] })[0]);
  const total = g.op('Sum', parts, {}, { shape: [GIB_ELEMENTS] })[0]; // (1 GiB) alive with its inputs
  g.output(g.op('ReduceMax', [g.cast(total, 'float32')], { keepdims: 0 }, { shape: [] })[0], 'max');
  const session = await Session.create(g.toModel(), { ep: 'cuda', deviceId: Number(values['device-id']) });
  await session.run({ s: { dtype: 'float32', dims: [1], data: Float32Array.of(1) } });
  console.log(`holding ${gib} GiB`);
  process.on('SIGTERM', () => process.exit(0));
  setInterval(() => {}, 1 << 30);
}

main().catch((err) => { console.error(err); process.exit(1); });
