/**
 * Session creation time and resident memory for the 1 GiB bfloat16 checkpoint of make-bf16-checkpoint.ts,
 * opened through both layouts (plain folder, Hugging Face cache) with both weight-cast policies
 * (castWeightsAt 'load' folds the bf16 -> float32 casts at creation, 'run' casts during each run).
 *
 * The graph is the checkpoint's 32 layers as a chain of linear + tanh on a (1, 4096) float32 input, on the
 * CPU execution provider. Each configuration runs in a fresh process so the figures do not mix.
 * Memory is read from /proc/self/status: RssAnon (heap, arenas, folded weights), RssFile (mapped pages of
 * the checkpoint) and VmHWM (peak resident).
 *
 * Usage (heavy: up to ~4 GB RAM):
 *   node dist/scripts/bench-session.js [checkpoint-dir]
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Graph } from '../src/onnx/graph.js';
import { Checkpoint } from '../src/onnx/safetensors.js';
import { Session, terminateWorkers } from '../src/runtime/session.js';
import { benchPaths, LAYERS, makeBf16Checkpoint, WIDTH } from './make-bf16-checkpoint.js';

const MiB = 1024 * 1024;

function memory() {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), peak: kb('VmHWM') };
}

const fmt = (b: number) => `${(b / MiB).toFixed(0)} MiB`;

async function child(dir: string, castWeightsAt: 'load' | 'run') {
  const base = memory();
  let t = performance.now();
  const ck = await Checkpoint.open(dir);
  const openMs = performance.now() - t;

  t = performance.now();
  const g = new Graph({ name: 'bench-bf16', precision: 'float32', castWeightsAt });
  let h = g.input('x', 'float32', [1, WIDTH]);
  for (let l = 0; l < LAYERS; l++) h = g.scope(`layer${l}`, () => g.tanh(g.linear(h, ck, `layers.${l}`)));
  g.output(h, 'y');
  const model = g.toModel();
  const buildMs = performance.now() - t;

  t = performance.now();
  const s = await Session.create(model, { ep: 'cpu' });
  const createMs = performance.now() - t;
  const afterCreate = memory();

  const x = { dtype: 'float32' as const, dims: [1, WIDTH], data: new Float32Array(WIDTH).fill(0.1) };
  t = performance.now();
  await s.run({ x });
  const run1Ms = performance.now() - t;
  t = performance.now();
  await s.run({ x });
  const run2Ms = performance.now() - t;
  const afterRun = memory();
  await s.release();
  const afterRelease = memory();
  await terminateWorkers();
  return { openMs, buildMs, createMs, run1Ms, run2Ms, modelBytes: model.bytes.length, externalFolder: model.externalFolder, base, afterCreate, afterRun, afterRelease };
}

async function mainBench() {
  const out = process.argv[2] ?? join(tmpdir(), 'framepack-bf16-1g');
  await makeBf16Checkpoint(out);
  const p = benchPaths(out);
  const layouts = { 'plain folder': p.plain, 'HF cache': p.snapshot };
  console.log(`checkpoint: ${LAYERS} x bf16 [${WIDTH}, ${WIDTH}] + biases (${((LAYERS * (WIDTH * WIDTH + WIDTH) * 2) / MiB).toFixed(0)} MiB), CPU EP, float32 compute`);
  for (const [name, dir] of Object.entries(layouts)) {
    for (const cast of ['load', 'run'] as const) {
      const json = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--child', dir, cast], { encoding: 'utf8', maxBuffer: 1 << 20 });
      const r = JSON.parse(json.trim().split('\n').pop()!);
      console.log(`\n${name}, castWeightsAt '${cast}'  (folder ${r.externalFolder})`);
      console.log(`  open headers ${r.openMs.toFixed(1)} ms, build graph ${r.buildMs.toFixed(1)} ms (${(r.modelBytes / 1024).toFixed(1)} KiB proto), create session ${r.createMs.toFixed(0)} ms`);
      console.log(`  run 1 ${r.run1Ms.toFixed(0)} ms, run 2 ${r.run2Ms.toFixed(0)} ms`);
      for (const k of ['base', 'afterCreate', 'afterRun', 'afterRelease'] as const) {
        const m = r[k];
        console.log(`  ${k.padEnd(12)} rss ${fmt(m.rss).padStart(9)}  anon ${fmt(m.anon).padStart(9)}  file ${fmt(m.file).padStart(9)}  peak ${fmt(m.peak).padStart(9)}`);
      }
    }
  }
}

if (process.argv[2] === '--child') {
  const r = await child(process.argv[3], process.argv[4] as 'load' | 'run');
  console.log(JSON.stringify(r));
} else {
  await mainBench();
}
