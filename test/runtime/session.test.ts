/**
 * Sessions in the worker: running, dtypes crossing the thread boundary, errors, release, cancellation,
 * the debug dump switch, and that the event loop stays free while a worker computes.
 */
import assert from 'node:assert/strict';
import { fromBinary } from '@bufbuild/protobuf';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ModelProtoSchema } from 'onnx-buf';
import { Graph } from '../../src/onnx/graph.js';
import { float16ToFloat32, float32ToFloat16 } from '../../src/onnx/half.js';
import { Checkpoint, saveRaw } from '../../src/onnx/safetensors.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';
import { assertClose, f32, rand, tempDir } from '../onnx/helpers.js';
import { loopPauses } from '../event-loop.js';

let dir: string;
let cleanup: () => Promise<void>;
before(async () => ({ dir, cleanup } = await tempDir()));
after(async () => {
  await terminateWorkers();
  await cleanup();
});

function doubler(name = 'doubler') {
  const g = new Graph({ name, precision: 'float32' });
  const x = g.input('x', 'float32', ['n']);
  g.output(g.mul(x, 2), 'y');
  g.output(g.cast(g.add(x, 1), 'float16'), 'half');
  return g.toModel();
}

/** A CPU-heavy model: `layers` chained 512x512 MatMul + Tanh on (rows, 512); time grows with both. */
function heavy(layers = 8) {
  const g = new Graph({ name: 'heavy', precision: 'float32' });
  let h = g.input('x', 'float32', ['rows', 512]);
  const w = g.constant(rand(512 * 512, 5, -0.05, 0.05), [512, 512]);
  for (let i = 0; i < layers; i++) h = g.tanh(g.matmul(h, w));
  g.output(g.reduceMean(h, [0, 1], false), 'y');
  return g.toModel();
}

async function timeRun(s: Session, rows: number): Promise<number> {
  const t = performance.now();
  await s.run({ x: f32([rows, 512], rand(rows * 512, 6)) });
  return performance.now() - t;
}

describe('Session', () => {
  test('runs, reports its names, passes int64/float16/bool and releases', async () => {
    const s = await Session.create(doubler(), { ep: 'cpu' });
    assert.deepEqual(s.inputs, ['x']);
    assert.deepEqual(s.outputs, ['y', 'half']);
    const r = await s.run({ x: f32([3], [1, -2, 0.5]) });
    assert.deepEqual(r.y, f32([3], [2, -4, 1]));
    assert.equal(r.half.dtype, 'float16');
    assert.deepEqual(Array.from(float16ToFloat32(r.half.data as Uint16Array)), [2, -1, 1.5]);
    const only = await s.run({ x: f32([1], [4]) }, { outputs: ['y'] });
    assert.deepEqual(Object.keys(only), ['y']);
    await s.release();
    await s.release(); // idempotent
    await assert.rejects(s.run({ x: f32([1], [1]) }), /session "doubler" was released/);

    const g = new Graph({ name: 'types', precision: 'float32' });
    const ids = g.input('ids', 'int64', [2]);
    const h = g.input('h', 'float16', [2]);
    const m = g.input('m', 'bool', [2]);
    g.output(g.add(ids, g.constant(BigInt64Array.of(10n), [1], 'int64')), 'ids_out');
    g.output(g.cast(h, 'float32'), 'h_out');
    g.output(g.op('Not', [m])[0], 'm_out');
    const t = await Session.create(g.toModel(), { ep: 'cpu' });
    const r2 = await t.run({
      ids: { dtype: 'int64', dims: [2], data: BigInt64Array.of(1n, 1n << 40n) },
      h: { dtype: 'float16', dims: [2], data: float32ToFloat16([0.5, -2]) },
      m: { dtype: 'bool', dims: [2], data: Uint8Array.of(1, 0) },
    });
    assert.deepEqual(Array.from(r2.ids_out.data as BigInt64Array), [11n, (1n << 40n) + 10n]);
    assert.deepEqual(Array.from(r2.h_out.data as Float32Array), [0.5, -2]);
    assert.deepEqual(r2.m_out, { dtype: 'bool', dims: [2], data: Uint8Array.of(0, 1) });
    await t.release();
  });

  test('clear errors for missing, unknown and malformed inputs, and for an EP that is absent', async () => {
    const s = await Session.create(doubler('errs'), { ep: 'cpu' });
    await assert.rejects(s.run({}), /missing inputs: x \(the model takes x\)/);
    await assert.rejects(s.run({ x: f32([1], [1]), z: f32([1], [1]) }), /unknown inputs: z/);
    await assert.rejects(s.run({ x: { dtype: 'float32', dims: [4], data: new Float32Array(2) } }), /input "x": 2 values for dims \[4\]/);
    assert.deepEqual((await s.run({ x: f32([1], [3]) })).y.data, Float32Array.of(6)); // still usable
    await s.release();
    await assert.rejects(Session.create(doubler('gpu'), { ep: 'cuda', logSeverityLevel: 4 }), /cannot create session "gpu" on cuda/);
  });

  test('transfer hands input buffers to the worker without copying', async () => {
    const s = await Session.create(doubler('transfer'), { ep: 'cpu' });
    const x = f32([2], [1, 2]);
    const r = await s.run({ x }, { transfer: true });
    assert.equal(x.data.byteLength, 0); // detached here: the worker owns it now
    assert.deepEqual(Array.from(r.y.data as Float32Array), [2, 4]);
    await s.release();
  });

  test('into: outputs are copied into the buffers handed over when those are large enough', async () => {
    const s = await Session.create(doubler('into'), { ep: 'cpu' });
    const big = new ArrayBuffer(64), small = new ArrayBuffer(4);
    new Float32Array(big).fill(NaN);
    const r = await s.run({ x: f32([3], [1, 2, 3]) }, { into: { y: big, half: small } });
    assert.equal(big.byteLength, 0); // handed to the worker
    assert.deepEqual(r.y.dims, [3]);
    assert.deepEqual(Array.from(r.y.data as Float32Array), [2, 4, 6]);
    assert.deepEqual([r.y.data.byteOffset, r.y.data.buffer.byteLength], [0, 64]); // a view of the buffer handed in
    assert.equal(r.half.data.buffer.byteLength, 6); // 3 float16 values do not fit 4 bytes: a buffer of their own
    assert.deepEqual(Array.from(float16ToFloat32(r.half.data as Uint16Array)), [2, 3, 4]);
    await s.release();
  });

  test('a queued run is cancelled before it starts; a running one rejects at once; the session stays usable', async () => {
    const s = await Session.create(heavy(), { ep: 'cpu', threads: 1 });
    let rows = 64;
    while ((await timeRun(s, rows)) < 150 && rows < 1 << 16) rows *= 2;

    const already = new AbortController();
    already.abort();
    await assert.rejects(s.run({ x: f32([1, 512], new Float32Array(512)) }, { signal: already.signal }), { name: 'AbortError' });

    const first = s.run({ x: f32([rows, 512], rand(rows * 512, 7)) });
    const ac = new AbortController();
    const queued = s.run({ x: f32([rows, 512], rand(rows * 512, 8)) }, { signal: ac.signal });
    const t0 = performance.now();
    ac.abort();
    await assert.rejects(queued, { name: 'AbortError' });
    assert.ok(performance.now() - t0 < 50, 'abort of a queued run is immediate');
    await first;

    const ac2 = new AbortController();
    const running = s.run({ x: f32([rows, 512], rand(rows * 512, 9)) }, { signal: ac2.signal });
    await new Promise((r) => setTimeout(r, 20));
    const t1 = performance.now();
    ac2.abort();
    await assert.rejects(running, { name: 'AbortError' });
    assert.ok(performance.now() - t1 < 50, 'abort of a running run does not wait for it');
    const y = await s.run({ x: f32([1, 512], new Float32Array(512)) });
    assert.deepEqual(Array.from(y.y.data as Float32Array), [0]); // tanh(0 @ W) = 0
    await s.release();
  });

  test('terminateWorkers with a grace period waits for a cancelled run that is still inside ONNX Runtime', async () => {
    const s = await Session.create(heavy(), { ep: 'cpu', threads: 1 });
    let rows = 64;
    while ((await timeRun(s, rows)) < 300 && rows < 1 << 16) rows *= 2;
    const ac = new AbortController();
    const running = s.run({ x: f32([rows, 512], rand(rows * 512, 11)) }, { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    await assert.rejects(running, { name: 'AbortError' });
    const t0 = performance.now();
    await terminateWorkers({ graceMs: 30_000 });
    // the worker was stopped only once the run returned, not at once (nor after the whole grace period)
    const waited = performance.now() - t0;
    assert.ok(waited > 100 && waited < 30_000, `terminateWorkers returned after ${waited.toFixed(0)} ms`);
    await assert.rejects(s.run({ x: f32([1, 512], new Float32Array(512)) }), /terminated|lost|released/);
  });

  test('a session in a named worker runs while the shared worker is busy; device tensors stay in their worker', async () => {
    const slow = await Session.create(heavy(), { ep: 'cpu', threads: 1 });
    const own = await Session.create(doubler('own'), { ep: 'cpu', worker: 'second' });
    const shared = await Session.create(doubler('shared'), { ep: 'cpu' });
    try {
      let rows = 64;
      while ((await timeRun(slow, rows)) < 300 && rows < 1 << 16) rows *= 2;
      const order: string[] = [];
      const long = slow.run({ x: f32([rows, 512], rand(rows * 512, 12)) }).then(() => order.push('slow'));
      const beside = own.run({ x: f32([1], [3]) }).then(() => order.push('own worker'));
      const behind = shared.run({ x: f32([1], [3]) }).then(() => order.push('shared worker'));
      await Promise.all([long, beside, behind]);
      // the shared worker takes one request at a time: its small run waits for the slow one, the other worker's not
      assert.deepEqual(order, ['own worker', 'slow', 'shared worker']);

      const kept = (await own.run({ x: f32([2], [1, 2]) }, { keep: ['y'] })).y;
      await assert.rejects(shared.run({ x: kept }), /belongs to another session worker/);
      await kept.release();
    } finally {
      await Promise.all([slow.release(), own.release(), shared.release()]);
    }
  });

  test('the event loop keeps running while a worker computes', async (t) => {
    // Were the run on this thread, no timer could fire until it returned: the longest gap between ticks
    // would span the whole run. The assertions compare the gap with the run itself, whatever this
    // machine's speed: the loop ticked all along, and its longest pause is well short of the run.
    const s = await Session.create(heavy(8), { ep: 'cpu', threads: 1 });
    let rows = 64;
    for (;;) {
      const x = f32([rows, 512], rand(rows * 512, 10)); // made before the clock starts: it is JavaScript work
      const { ticks, worst, took } = await loopPauses(() => s.run({ x }));
      // A run that short says nothing against timer granularity and scheduling noise: make it longer.
      if (took < 250 && rows < 1 << 16) {
        rows *= 2;
        continue;
      }
      await s.release();
      t.diagnostic(`${ticks} ticks, longest pause ${worst.toFixed(1)} ms during a ${took.toFixed(0)} ms run`);
      assert.ok(ticks >= 10, `${ticks} timer ticks during a ${took.toFixed(0)} ms run`);
      assert.ok(worst < took / 2, `longest event-loop pause ${worst.toFixed(1)} ms during a ${took.toFixed(0)} ms run`);
      return;
    }
  });

  test('leaves no telemetry log of ONNX Runtime in the temp directory', async () => {
    const s = await Session.create(doubler('telemetry'), { ep: 'cpu' });
    await s.release();
    assert.equal(existsSync(join(tmpdir(), `mat-debug-${process.pid}.log`)), false);
  });

  test('FRAMEPACK_DUMP_ONNX writes the graph without weights', async () => {
    const dump = join(dir, 'dump');
    const ckDir = join(dir, 'ck');
    await mkdir(ckDir);
    await saveRaw(join(ckDir, 'model.safetensors'), [{ key: 'w', dtype: 'F32', shape: [256], bytes: new Uint8Array(1024) }]);
    const ck = await Checkpoint.open(ckDir);
    const g = new Graph({ name: 'dumped/model', precision: 'float32' });
    g.output(g.add(g.input('x', 'float32', [256]), g.param(ck, 'w')), 'y');
    process.env.FRAMEPACK_DUMP_ONNX = dump;
    try {
      const s = await Session.create(g.toModel(), { ep: 'cpu' });
      assertClose((await s.run({ x: f32([256], rand(256)) })).y.data as Float32Array, rand(256));
      await s.release();
    } finally {
      delete process.env.FRAMEPACK_DUMP_ONNX;
    }
    assert.deepEqual(await readdir(dump), ['dumped_model.onnx']);
    const m = fromBinary(ModelProtoSchema, await readFile(join(dump, 'dumped_model.onnx')));
    const w = m.graph!.initializer.find((t) => t.name === 'w')!;
    assert.equal(w.rawData.length, 0);
    assert.deepEqual(w.externalData.find((e) => e.key === 'location')?.value, 'model.safetensors');
  });
});
