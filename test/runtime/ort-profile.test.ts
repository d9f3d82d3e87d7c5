/**
 * ONNX Runtime's profiler through the C API (FRAMEPACK_ORT_PROFILE, session.ts; EnableProfiling and
 * SessionEndProfiling in ort-api.ts) and its summary (src/runtime/ort-profile.ts): a real profile of a small
 * CPU session, summed per operator, provider and graph place.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Graph, opCounts } from '../../src/onnx/graph.js';
import { place, summarizeProfile } from '../../src/runtime/ort-profile.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';
import { f32, rand, tempDir } from '../onnx/helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
before(async () => { ({ dir, cleanup } = await tempDir()); });
after(async () => {
  await terminateWorkers();
  await cleanup();
});

/** three "blocks" of x -> relu(x @ x^T-ish) + 1, each in its scope, as the DiT's blocks are */
function model() {
  const g = new Graph({ name: 'profiled blocks', precision: 'float32' });
  let x = g.input('x', 'float32', [32, 32]);
  for (let i = 0; i < 3; i++) {
    x = g.scope(`blocks.${i}.mlp`, () => g.add(g.relu(g.op('MatMul', [x, x])[0]), 1));
  }
  g.output(x, 'y');
  return g.toModel();
}

test('place folds block indices and ONNX Runtime suffixes', () => {
  assert.equal(place('transformer_blocks.12.attn.to_q/Gemm_4711_kernel_time'), 'transformer_blocks.*.attn.to_q/Gemm');
  assert.equal(place('single_transformer_blocks.3.proj_out/Gemm_7:1_kernel_time'), 'single_transformer_blocks.*.proj_out/Gemm');
  assert.equal(place('final/Add'), 'final/Add');
});

test('a profiled session writes its file on release; the summary counts every node of the kept runs', async () => {
  const m = model();
  const profileDir = join(dir, 'prof');
  process.env.FRAMEPACK_ORT_PROFILE = profileDir;
  let s: Session;
  try {
    s = await Session.create(m, { ep: 'cpu', threads: 1 });
  } finally {
    delete process.env.FRAMEPACK_ORT_PROFILE;
  }
  const x = f32([32, 32], rand(32 * 32, 3));
  for (let run = 0; run < 3; run++) await s.run({ x });
  await s.release();

  const files = (await readdir(profileDir)).filter((f) => f.startsWith('profiled_blocks') && f.endsWith('.json'));
  assert.equal(files.length, 1, `one profile file: ${files}`);
  const events = JSON.parse(await readFile(join(profileDir, files[0]), 'utf8'));

  const all = summarizeProfile(events, { skip: 0 });
  assert.equal(all.runs, 3);
  const kept = summarizeProfile(events, { skip: 1 });
  assert.equal(kept.runs, 2);
  assert.ok(kept.runMs > 0 && kept.nodeMs > 0 && kept.nodeMs <= kept.runMs * 1.05, JSON.stringify(kept));

  // every op of the graph as optimized is there once per run; ORT may fuse (MatMul+Add), so compare with
  // what the profile says ran, per op, against the built graph's totals
  const ops = Object.fromEntries(kept.byOp.map((l) => [l.key, l.nodes]));
  const built = opCounts(m);
  assert.equal(ops.MatMul ?? ops.FusedMatMul ?? 0, built.MatMul, JSON.stringify(ops));
  assert.ok(Object.values(ops).every((n) => Number.isInteger(n)), 'whole nodes per run');
  assert.deepEqual(kept.byProvider.map((l) => l.key), ['CPUExecutionProvider']);
  const shares = kept.byOp.reduce((a, l) => a + l.share, 0);
  assert.ok(Math.abs(shares - 1) < 1e-9, `shares sum to 1: ${shares}`);
  // the three blocks' nodes fold into one line per op
  const mlp = kept.byPlace.find((l) => l.key === 'blocks.*.mlp/MatMul');
  assert.equal(mlp?.nodes, 3, JSON.stringify(kept.byPlace));
  assert.deepEqual(kept.byKernel, [], 'the CPU provider writes no device kernel events');
});

test('device kernel events are summed by name within the kept runs', () => {
  const events = [
    { cat: 'Session', name: 'model_run', ts: 0, dur: 100 },
    { cat: 'Kernel', name: 'warm_up_kernel', ts: 10, dur: 50 },
    { cat: 'Session', name: 'model_run', ts: 200, dur: 100 },
    { cat: 'Node', name: 'a/Gemm_1_kernel_time', ts: 205, dur: 60, args: { op_name: 'Gemm', provider: 'CUDAExecutionProvider' } },
    { cat: 'Kernel', name: 'sm90_gemm', ts: 210, dur: 30 },
    { cat: 'Kernel', name: 'sm90_gemm', ts: 250, dur: 10 },
    { cat: 'Kernel', name: 'elementwise', ts: 270, dur: 20 },
    { cat: 'Kernel', name: 'after_the_runs', ts: 400, dur: 99 },
  ];
  const s = summarizeProfile(events, { skip: 1 });
  assert.equal(s.runs, 1);
  assert.deepEqual(s.byKernel.map((l) => [l.key, l.ms, l.nodes]), [['sm90_gemm', 0.04, 2], ['elementwise', 0.02, 1]]);
  assert.ok(Math.abs(s.byKernel[0].share - 2 / 3) < 1e-12);
  assert.equal(s.nodeMs, 0.06);
  assert.deepEqual(s.byOp.map((l) => [l.key, l.share]), [['Gemm', 1]]);
});
