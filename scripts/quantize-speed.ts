/**
 * How fast the quantized weight files are written: a folder of bf16 linears at the DiT's MLP shape (12288 x
 * 3072), prepared to 8-bit MatMulNBits files by one thread and by N (quantize-threads.ts), in weights per
 * second. `low` writes 21 billion of them at its first setup (the DiT's and LLaMA's linears).
 *
 * Usage: node dist/scripts/quantize-speed.js [--tensors 8] [--threads N (default: the machine's)] [--dir DIR]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Graph } from '../src/onnx/graph.js';
import { Checkpoint, saveRaw } from '../src/onnx/safetensors.js';
import { prepareAll, quantizeThreadCount } from '../src/runtime/quantize-threads.js';

const { values } = parseArgs({ options: { tensors: { type: 'string', default: '8' }, threads: { type: 'string' }, dir: { type: 'string' } } });
const count = Number(values.tensors);
const threads = values.threads === undefined ? quantizeThreadCount() : Number(values.threads);
const [N, K] = [12288, 3072];
const dir = values.dir ?? await mkdtemp(join(tmpdir(), 'quantize-speed-'));

// random bf16 bits with a sane exponent: the packing loop does not care what the values mean
const bytes = new Uint8Array(N * K * 2);
const bits = new Uint16Array(bytes.buffer);
for (let i = 0; i < bits.length; i++) bits[i] = 0x3c00 | ((i * 2654435761) >>> 20 & 0x3ff) | (i & 1) << 15;
await saveRaw(join(dir, 'model.safetensors'), Array.from({ length: count }, (_, i) => ({ key: `l${i}.weight`, dtype: 'BF16' as const, shape: [N, K], bytes })));
const ck = await Checkpoint.open(dir);

function jobs(cacheDir: string) {
  const g = new Graph({ name: 'q', precision: 'bfloat16', quantize: { bits: 8, blockSize: 64, cacheDir } });
  const x = g.input('x', 'bfloat16', ['m', K]);
  for (let i = 0; i < count; i++) g.output(g.linear(x, ck, `l${i}`, { bias: false }), `y${i}`);
  return g.toModel().prepare!;
}

const weights = count * N * K;
for (const t of new Set([0, threads])) {
  const t0 = performance.now();
  await prepareAll(jobs(join(dir, `q${t}`)), t);
  const s = (performance.now() - t0) / 1000;
  console.log(`${t === 0 ? 'calling thread' : `${t} threads`.padEnd(14)}  ${count} files, ${(weights / 1e6).toFixed(0)}M weights in ${s.toFixed(2)} s: ${(weights / s / 1e6).toFixed(0)}M weights/s`);
}
if (!values.dir) await rm(dir, { recursive: true, force: true });
