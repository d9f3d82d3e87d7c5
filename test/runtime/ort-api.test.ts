/**
 * The C API binding (src/runtime/ort-api.ts) on the CPU, in this thread: every entry it binds, every error
 * path, use after release, and no leak over 300 create/run/release cycles. Then the session worker on it:
 * bound inputs, tensors kept between runs and sessions, arena shrinkage, and the catalogue codes that cross
 * the thread boundary. (CUDA's entries run on the GPU machine: test/gpu/parity.test.ts.)
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AppError } from '../../src/errors.js';
import { Graph } from '../../src/onnx/graph.js';
import { float16ToFloat32, float32ToFloat16 } from '../../src/onnx/half.js';
import { Checkpoint, saveRaw } from '../../src/onnx/safetensors.js';
import * as capi from '../../src/runtime/ort-api.js';
import { cudaProviderOptions, parseCudaOverrides } from '../../src/runtime/providers.js';
import { DeviceTensor, Session, SessionError, terminateWorkers } from '../../src/runtime/session.js';
import { f32, rand, tempDir } from '../onnx/helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
let ck: Checkpoint;
const W = rand(64, 3);

before(async () => {
  ({ dir, cleanup } = await tempDir());
  await mkdir(join(dir, 'ck'));
  await saveRaw(join(dir, 'ck', 'model.safetensors'), [{ key: 'w', dtype: 'F32', shape: [64], bytes: new Uint8Array(W.buffer) }]);
  ck = await Checkpoint.open(join(dir, 'ck'));
});
after(async () => {
  await terminateWorkers();
  await cleanup();
});

/** y = x + w (w external, in the safetensors file), z = float16(2x) */
function model(name = 'external') {
  const g = new Graph({ name, precision: 'float32' });
  const x = g.input('x', 'float32', [64]);
  g.output(g.add(x, g.param(ck, 'w')), 'y');
  g.output(g.cast(g.mul(x, 2), 'float16'), 'z');
  return g.toModel();
}

const ro2 = () => capi.RunOptions.create({ 'memory.enable_memory_arena_shrinkage': 'cpu:0' });
const rssMiB = () => Number(readFileSync('/proc/self/statm', 'utf8').split(' ')[1]) * 4096 / 2 ** 20;

describe('ort-api (C API binding, CPU)', () => {
  test('loads libonnxruntime 1.29.0 through OrtApi 29', () => {
    assert.deepEqual(capi.bindingStatus(), { ok: true, version: capi.ORT_VERSION });
    assert.equal(capi.ORT_API_VERSION, 29);
  });

  test('a session from bytes with external initializers, session options and config entries; IO binding on host memory', () => {
    const m = model();
    const opts = capi.SessionOptions.create({
      config: { 'session.model_external_initializers_file_folder_path': m.externalFolder! }, intraOpThreads: 1, logSeverityLevel: 3,
    });
    const s = capi.Session.create(m.bytes, opts);
    assert.deepEqual(s.inputs, ['x']);
    assert.deepEqual(s.outputs, ['y', 'z']);
    const host = capi.MemoryInfo.cpu();
    const b = capi.IoBinding.create(s);
    const x = rand(64, 4);
    const input = f32([64], x); // wrapped, not copied: it must outlive the binding's use of it
    const t = capi.Tensor.wrap(input, host);
    b.bindInput('x', t);
    t.release(); // the binding keeps its own reference
    b.bindOutput('y', host);
    b.bindOutput('z', host);
    const ro = capi.RunOptions.create({ 'memory.enable_memory_arena_shrinkage': 'cpu:0' });
    for (let run = 0; run < 2; run++) {                     // inputs stay bound between runs
      const [y, z] = b.run(ro);
      assert.equal(y.location, 'Cpu');
      const yh = y.toHost(), zh = z.toHost();
      y.release(); z.release();
      assert.deepEqual(yh.dims, [64]);
      assert.deepEqual(Array.from(yh.data as Float32Array), Array.from(x, (v, i) => Math.fround(v + W[i])));
      assert.equal(zh.dtype, 'float16');
      assert.deepEqual(Array.from(float16ToFloat32(zh.data as Uint16Array)), Array.from(float16ToFloat32(float32ToFloat16(Array.from(x, (v) => 2 * v)))));
    }
    b.clearOutputs();
    assert.throws(() => b.run(null), /At least one output should be requested/);
    for (const h of [ro, b, s, opts, host]) h.release();
    // without the CPU arena (the VAE's low-memory mode) there is nothing to shrink: ONNX Runtime says so
    const bare = capi.SessionOptions.create({ config: { 'session.model_external_initializers_file_folder_path': m.externalFolder! }, memoryArena: false });
    const s2 = capi.Session.create(m.bytes, bare);
    const b2 = capi.IoBinding.create(s2);
    const t2 = capi.Tensor.wrap(input, capi.MemoryInfo.cpu());
    b2.bindInput('x', t2);
    b2.bindOutput('y', capi.MemoryInfo.cpu());
    assert.throws(() => b2.run(ro2()), /Did not find an arena based allocator/);
    for (const h of [t2, b2, s2, bare]) h.release();
  });

  test('every failure is a catalogued error naming the call and ONNX Runtime code', () => {
    const err = (f: () => unknown, re: RegExp, code = 'ORT_CALL_FAILED') => assert.throws(f, (e: AppError) => e instanceof AppError && e.code === code && re.test(e.message));
    err(() => capi.statusRoundTrip(2, 'made up'), /CreateStatus failed \(INVALID_ARGUMENT\): made up/);
    err(() => capi.Session.create(Uint8Array.of(1, 2, 3), capi.SessionOptions.create({})), /CreateSessionFromArray failed \(INVALID_PROTOBUF\)/);
    const m = model('no-folder');
    err(() => capi.Session.create(m.bytes, capi.SessionOptions.create({ config: { 'session.model_external_initializers_file_folder_path': join(dir, 'absent') } })),
      /CreateSessionFromArray failed \(FAIL\): External data path validation failed for initializer: w/);
    // no CUDA provider library next to the CPU build: a clean error, not a crash
    err(() => capi.CudaProviderOptions.create({ device_id: '0' }), /UpdateCUDAProviderOptions failed|CreateCUDAProviderOptions failed/);
    err(() => capi.SessionOptions.create({ cuda: { device_id: '0' } }), /CUDA/i);
    err(() => capi.Tensor.wrap({ dtype: 'float32', dims: [4], data: new Float32Array(3) }, capi.MemoryInfo.cpu(), 'input "q"'),
      /input "q": 3 values for dims \[4\]/, 'ORT_TENSOR_INVALID');

    const opts = capi.SessionOptions.create({ config: { 'session.model_external_initializers_file_folder_path': m.externalFolder! } });
    const s = capi.Session.create(m.bytes, opts);
    const host = capi.MemoryInfo.cpu();
    let b = capi.IoBinding.create(s);
    const small = f32([2], [1, 2]);
    const t = capi.Tensor.wrap(small, host);
    err(() => b.bindInput('nope', t), /BindInput failed/);
    // ONNX Runtime leaves a binding whose BindInput failed unusable (its name maps disagree); the worker then
    // starts a fresh one
    err(() => b.bindInput('x', t), /BindInput failed .*Size mismatch/);
    b.release();
    b = capi.IoBinding.create(s);
    b.bindInput('x', t);                                       // a wrong shape is found when the session runs
    b.bindOutput('y', host);
    err(() => b.run(null), /RunWithBinding failed \(INVALID_ARGUMENT\): Got invalid dimensions for input: x/);
    t.release();
    // use after release is refused before it reaches ONNX Runtime
    err(() => t.toHost(), /Value was used after it was released/, 'ORT_RELEASED');
    b.release();
    err(() => b.run(null), /IoBinding was used after it was released/, 'ORT_RELEASED');
    s.release();
    s.release(); // idempotent
    err(() => capi.IoBinding.create(s), /Session was used after it was released/, 'ORT_RELEASED');
    opts.release(); host.release();
  });

  test('300 create/run/release cycles leak neither handles nor memory', () => {
    const m = model('cycles');
    const before = capi.liveHandles();
    const cycle = () => {
      const opts = capi.SessionOptions.create({ config: { 'session.model_external_initializers_file_folder_path': m.externalFolder! }, intraOpThreads: 1 });
      const s = capi.Session.create(m.bytes, opts);
      const host = capi.MemoryInfo.cpu();
      const b = capi.IoBinding.create(s);
      const t = capi.Tensor.wrap(f32([64], W), host);
      b.bindInput('x', t);
      b.bindOutput('y', host);
      for (const v of b.run(null)) { v.toHost(); v.release(); }
      for (const h of [t, b, s, host, opts]) h.release();
    };
    for (let i = 0; i < 30; i++) cycle(); // warm-up: allocator pools, lazily created singletons
    global.gc?.();
    const rss0 = rssMiB();
    for (let i = 0; i < 300; i++) cycle();
    global.gc?.();
    const grown = rssMiB() - rss0;
    assert.deepEqual(capi.liveHandles(), before);
    assert.ok(grown < 16, `RSS grew ${grown.toFixed(1)} MiB over 300 cycles`);
  });
});

describe('session worker on the C API', () => {
  test('bound inputs, tensors kept between runs and sessions, shrinkage, and their errors', async () => {
    const a = await Session.create(model('a'), { ep: 'cpu' });
    assert.equal(a.runtime, 'c-api');
    const g = new Graph({ name: 'b', precision: 'float32' });
    g.output(g.mul(g.input('y', 'float32', [64]), g.input('k', 'float32', [1])), 'out');
    const b = await Session.create(g.toModel(), { ep: 'cpu' });

    const x = rand(64, 5);
    const r = await a.run({ x: f32([64], x) }, { outputs: ['y'], keep: ['y'], shrink: true });
    const y = r.y;
    assert.ok(y instanceof DeviceTensor);
    assert.deepEqual([y.dtype, y.dims], ['float32', [64]]);
    await b.bind({ k: f32([1], [3]) });                          // bound once
    for (const k of [3, 3]) {
      const out = (await b.run({ y })).out.data as Float32Array;
      assert.deepEqual(Array.from(out), Array.from(x, (v, i) => Math.fround(Math.fround(v + W[i]) * k)));
    }
    await assert.rejects(b.run({}), /missing inputs: y/);       // a run's feeds are not kept
    await assert.rejects(b.bind({ q: f32([1], [1]) }), /unknown inputs: q/);
    await assert.rejects(a.run({ x: f32([64], x) }, { outputs: ['z'], keep: ['y'] }), /cannot keep y: not among the computed outputs/);
    await y.release();
    await y.release(); // idempotent
    await assert.rejects(b.run({ y }), (e: AppError) => e.code === 'DEVICE_TENSOR_RELEASED');
    const bad = await b.run({ y: f32([3], [1, 2, 3]) }).catch((e) => e);
    assert.ok(bad instanceof SessionError && bad.code === 'ORT_CALL_FAILED', String(bad));
    assert.ok(a.busyMs > 0);
    await a.release();
    await b.release();
  });

  test('FRAMEPACK_ORT_RUNTIME=onnxruntime-node runs CPU sessions on onnxruntime-node behind the same interface', async () => {
    await terminateWorkers();
    process.env.FRAMEPACK_ORT_RUNTIME = 'onnxruntime-node';
    try {
      const a = await Session.create(model('node'), { ep: 'cpu' });
      assert.equal(a.runtime, 'onnxruntime-node');
      const x = rand(64, 6);
      const { y } = await a.run({ x: f32([64], x) }, { outputs: ['y'], keep: ['y'] });
      const g = new Graph({ name: 'node-b', precision: 'float32' });
      g.output(g.neg(g.input('y', 'float32', [64])), 'out');
      const b = await Session.create(g.toModel(), { ep: 'cpu' });
      assert.deepEqual(Array.from((await b.run({ y })).out.data as Float32Array), Array.from(x, (v, i) => -Math.fround(v + W[i])));
      await y.release();
      await Promise.all([a.release(), b.release()]);
    } finally {
      delete process.env.FRAMEPACK_ORT_RUNTIME;
      await terminateWorkers();
    }
  });

  test('CUDA provider options: defaults per network and FRAMEPACK_CUDA_OPTIONS overrides', () => {
    assert.deepEqual(cudaProviderOptions('vae', {}), { arena_extend_strategy: 'kSameAsRequested', use_tf32: '0', cudnn_conv_algo_search: 'HEURISTIC' });
    const env = { FRAMEPACK_CUDA_OPTIONS: 'vae:cudnn_conv_algo_search=EXHAUSTIVE; use_tf32=1, dit:sdpa_kernel=8' };
    assert.equal(cudaProviderOptions('vae', env).cudnn_conv_algo_search, 'EXHAUSTIVE');
    assert.equal(cudaProviderOptions('dit', env).cudnn_conv_algo_search, 'HEURISTIC');
    assert.equal(cudaProviderOptions('dit', env).sdpa_kernel, '8');
    assert.equal(cudaProviderOptions('encoders', env).use_tf32, '1');
    assert.throws(() => parseCudaOverrides('vae:=1'), (e: AppError) => e.code === 'RUNTIME_SETTING_INVALID');
  });
});
