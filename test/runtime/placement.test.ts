/**
 * Placement from what a (fake) nvidia-smi on PATH reports, the environment overrides, the CUDA provider
 * check, and the mapping of ORT out-of-memory errors.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppError } from '../../src/errors.js';
import {
  choosePlacement, describePlacement, HIGH_MIN_FREE_MIB, LOW_MIN_FREE_MIB, mapOrtError, MEDIUM_MIN_FREE_MIB,
  samplingPeakGiB, sizeProblem, UNTILED_VAE_MIN_FREE_MIB,
} from '../../src/runtime/placement.js';
import { CUDA_PROVIDER_LIB, cudaProviderStatus, ortLibDir } from '../../src/runtime/providers.js';
import { cudaVisible, parseNvidiaSmi, probeVram } from '../../src/runtime/vram.js';
import { gpuLine, installFakeSmi, type FakeSmi } from '../fake-gpus.js';

let smi: FakeSmi;
const cudaOk = { available: true, detail: '/fake/libonnxruntime_providers_cuda.so' };

before(async () => { smi = await installFakeSmi(); });
after(() => smi.remove());

const env = (extra: Record<string, string> = {}) => smi.env(extra);

test('nvidia-smi output is parsed into MiB figures; [N/A] devices are skipped', () => {
  const gpus = parseNvidiaSmi('0, NVIDIA H100 80GB HBM3, 81559, 600, 80959, 580.159.04\n1, GRID vGPU, [N/A], [N/A], [N/A], 580\n');
  assert.deepEqual(gpus, [{ index: 0, name: 'NVIDIA H100 80GB HBM3', totalMiB: 81559, usedMiB: 600, freeMiB: 80959, driver: '580.159.04' }]);
});

test('a 141 GB GPU with the CUDA provider: high, bf16 DiT, named in the log line', async () => {
  const p = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 143771, 143000, 'NVIDIA H200') }), cuda: cudaOk });
  assert.equal(p.policy, 'high');
  assert.equal(p.ep, 'cuda');
  assert.equal(p.deviceId, 0);
  assert.deepEqual(p.lifetime, { encoders: 'resident', dit: 'resident', vae: 'resident' });
  assert.deepEqual(p.quantize, {});
  assert.equal(p.precision.dit, 'bfloat16');
  assert.equal(p.precision.vae, 'float16');
  assert.equal(p.vaeTiling, false);
  assert.equal(p.shrinkDitAfterSection, true);
  assert.match(describePlacement(p), /^placement: high on cuda:0 .*VAE untiled.*NVIDIA H200/);
});

test('an 80 GB GPU: high with the VAE tiled; 40-48 GB: medium; 24 GB: low', async () => {
  assert.ok(80959 >= HIGH_MIN_FREE_MIB && 80959 < UNTILED_VAE_MIN_FREE_MIB);
  const h100 = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 81559, 80959, 'NVIDIA H100 80GB HBM3') }), cuda: cudaOk });
  assert.equal(h100.policy, 'high');
  assert.deepEqual(h100.lifetime, { encoders: 'resident', dit: 'resident', vae: 'resident' });
  assert.equal(h100.vaeTiling, true);
  assert.equal(h100.vaeTiles, 'fit');
  assert.equal(h100.decodeBesideSampling, true);
  assert.match(describePlacement(h100), /placement: high on cuda:0 \(every session resident; VAE decode in 2 x 2 tiles \(smaller on out of memory\), encode untiled, decoding beside sampling/);
  assert.deepEqual(h100.vaeGrid, [2, 2]);
  const wide = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 81559, 80959, 'NVIDIA H100 80GB HBM3'), FRAMEPACK_VAE_GRID: '1x2' }), cuda: cudaOk });
  assert.deepEqual(wide.vaeGrid, [1, 2]);
  assert.match(describePlacement(wide), /VAE decode in 1 x 2 tiles \(smaller on out of memory\).*FRAMEPACK_VAE_GRID=1x2/);
  for (const bad of ['2', '0x2', '2x2x2', 'two']) {
    await assert.rejects(choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 81559, 80959, 'NVIDIA H100 80GB HBM3'), FRAMEPACK_VAE_GRID: bad }), cuda: cudaOk }),
      (err: AppError) => err.code === 'RUNTIME_SETTING_INVALID' && err.message.includes('FRAMEPACK_VAE_GRID'));
  }
  for (const [total, free] of [[49140, 48000], [40960, MEDIUM_MIN_FREE_MIB]]) {
    const p = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, total, free, 'NVIDIA L40S') }), cuda: cudaOk });
    assert.equal(p.policy, 'medium');
    assert.deepEqual(p.lifetime, { encoders: 'per-request', dit: 'resident', vae: 'resident' });
    assert.deepEqual(p.quantize, {});
    assert.equal(p.vaeTiling, true);
    assert.equal(p.vaeTiles, 'fit');
    assert.equal(p.shrinkDitAfterSection, true);
    assert.equal(p.decodeBesideSampling, false);
    assert.match(describePlacement(p), /placement: medium on cuda:0 \(DiT and VAE resident, encoders created per request/);
  }
  assert.ok(23000 < MEDIUM_MIN_FREE_MIB && 23000 >= LOW_MIN_FREE_MIB);
  const p = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 24564, 23000, 'NVIDIA RTX 4090') }), cuda: cudaOk });
  assert.equal(p.policy, 'low');
  assert.equal(p.ep, 'cuda');
  assert.deepEqual(p.lifetime, { encoders: 'per-request', dit: 'per-request', vae: 'per-request' });
  assert.deepEqual(p.quantize, { dit: 8, llama: 8 });
  assert.equal(p.vaeTiling, true);
  assert.equal(p.vaeTiles, 'diffusers'); // the original's low-VRAM tiles
  assert.equal(p.shrinkDitAfterSection, false);
  assert.equal(p.decodeBesideSampling, false);
  assert.match(describePlacement(p), /placement: low on cuda:0/);
});

test('FRAMEPACK_DECODE_BESIDE_SAMPLING overrides the placement; other values fail clearly', async () => {
  const smi = gpuLine(0, 81559, 80959, 'NVIDIA H100 80GB HBM3');
  const off = await choosePlacement({ env: env({ FAKE_SMI_OUT: smi, FRAMEPACK_DECODE_BESIDE_SAMPLING: 'off' }), cuda: cudaOk });
  assert.equal(off.policy, 'high');
  assert.equal(off.decodeBesideSampling, false);
  assert.match(off.reason, /FRAMEPACK_DECODE_BESIDE_SAMPLING=off/);
  const on = await choosePlacement({ env: env({ FAKE_SMI_OUT: smi, FRAMEPACK_PLACEMENT: 'medium', FRAMEPACK_DECODE_BESIDE_SAMPLING: 'on' }), cuda: cudaOk });
  assert.equal(on.policy, 'medium');
  assert.equal(on.decodeBesideSampling, true);
  await assert.rejects(choosePlacement({ env: env({ FAKE_SMI_OUT: smi, FRAMEPACK_DECODE_BESIDE_SAMPLING: '1' }), cuda: cudaOk }),
    (err: AppError) => err.code === 'RUNTIME_SETTING_INVALID' && /FRAMEPACK_DECODE_BESIDE_SAMPLING/.test(err.message));
});

test('FRAMEPACK_VAE_TILING turns the VAE tiling on or off over the policy default; other values fail clearly', async () => {
  const smi = gpuLine(0, 81559, 80959, 'NVIDIA H100 80GB HBM3');
  const off = await choosePlacement({ env: env({ FAKE_SMI_OUT: smi, FRAMEPACK_VAE_TILING: 'off' }), cuda: cudaOk });
  assert.equal(off.policy, 'high');
  assert.equal(off.vaeTiling, false);
  assert.match(off.reason, /FRAMEPACK_VAE_TILING=off/);
  const on = await choosePlacement({ env: env({ FAKE_SMI_OUT: smi, FRAMEPACK_PLACEMENT: 'high', FRAMEPACK_VAE_TILING: 'on' }), cuda: cudaOk });
  assert.equal(on.policy, 'high');
  assert.equal(on.vaeTiling, true);
  const auto = await choosePlacement({ env: env({ FAKE_SMI_OUT: smi, FRAMEPACK_VAE_TILING: 'auto' }), cuda: cudaOk });
  assert.equal(auto.vaeTiling, true);
  await assert.rejects(choosePlacement({ env: env({ FAKE_SMI_OUT: smi, FRAMEPACK_VAE_TILING: 'yes' }), cuda: cudaOk }),
    (err: AppError) => err.code === 'RUNTIME_SETTING_INVALID' && /FRAMEPACK_VAE_TILING/.test(err.message));
});

test('a busy or small GPU: cpu', async () => {
  const p = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 24564, LOW_MIN_FREE_MIB - 1, 'NVIDIA RTX 4090') }), cuda: cudaOk });
  assert.equal(p.policy, 'cpu');
  assert.equal(p.ep, 'cpu');
  assert.equal(p.precision.dit, 'float32');
  assert.deepEqual(p.lifetime, { encoders: 'resident', dit: 'resident', vae: 'per-request' });
  assert.match(p.reason, /too little/);
});

test('no nvidia-smi, or a failing one: cpu, saying why', async () => {
  const none = await choosePlacement({ env: { PATH: '/nonexistent' }, cuda: cudaOk });
  assert.equal(none.policy, 'cpu');
  assert.match(none.reason, /nvidia-smi not found/);
  const broken = await choosePlacement({ env: env({ FAKE_SMI_FAIL: '1' }), cuda: cudaOk });
  assert.equal(broken.policy, 'cpu');
  assert.match(broken.reason, /couldn't communicate with the NVIDIA driver/);
  assert.deepEqual((await probeVram({ env: env({ FAKE_SMI_FAIL: '1' }) })).gpus, []);
});

test('a GPU without the CUDA provider library: cpu; FRAMEPACK_EP=cuda then fails clearly', async () => {
  const cudaMissing = { available: false, detail: `${CUDA_PROVIDER_LIB} is not installed` };
  const e = env({ FAKE_SMI_OUT: gpuLine(0, 81559, 80959) });
  const p = await choosePlacement({ env: e, cuda: cudaMissing });
  assert.equal(p.policy, 'cpu');
  assert.match(p.reason, /not installed/);
  await assert.rejects(choosePlacement({ env: { ...e, FRAMEPACK_EP: 'cuda' }, cuda: cudaMissing }),
    (err: AppError) => err.code === 'EP_UNAVAILABLE' && /FRAMEPACK_EP=cuda/.test(err.message));
  await assert.rejects(choosePlacement({ env: { ...e, FRAMEPACK_PLACEMENT: 'high' }, cuda: cudaMissing }),
    (err: AppError) => err.code === 'EP_UNAVAILABLE');
});

test('environment overrides: placement, provider, device id (after CUDA_VISIBLE_DEVICES)', async () => {
  const two = gpuLine(0, 143771, 10000, 'NVIDIA H200') + gpuLine(1, 143771, 140000, 'NVIDIA H200');
  const forcedLow = await choosePlacement({ env: env({ FAKE_SMI_OUT: two, FRAMEPACK_PLACEMENT: 'low', FRAMEPACK_DEVICE_ID: '1' }), cuda: cudaOk });
  assert.equal(forcedLow.policy, 'low');
  assert.equal(forcedLow.deviceId, 1);
  assert.match(forcedLow.reason, /FRAMEPACK_PLACEMENT=low/);

  const second = await choosePlacement({ env: env({ FAKE_SMI_OUT: two, FRAMEPACK_DEVICE_ID: '1' }), cuda: cudaOk });
  assert.equal(second.policy, 'high');          // GPU 1 has 140000 MiB free, GPU 0 only 10000
  const first = await choosePlacement({ env: env({ FAKE_SMI_OUT: two }), cuda: cudaOk });
  assert.equal(first.policy, 'cpu');

  const visible = await choosePlacement({ env: env({ FAKE_SMI_OUT: two, CUDA_VISIBLE_DEVICES: '1' }), cuda: cudaOk });
  assert.equal(visible.deviceId, 0);            // CUDA renumbers physical GPU 1 as device 0
  assert.equal(visible.policy, 'high');
  assert.deepEqual(cudaVisible(parseNvidiaSmi(two.replace(/\\n/g, '\n')), '1,0').map((g) => g.index), [1, 0]);

  const cpu = await choosePlacement({ env: env({ FAKE_SMI_OUT: two, FRAMEPACK_EP: 'cpu' }), cuda: cudaOk });
  assert.equal(cpu.policy, 'cpu');
  const webgpu = await choosePlacement({ env: env({ FAKE_SMI_OUT: two, FRAMEPACK_EP: 'webgpu', FRAMEPACK_DEVICE_ID: '1' }) });
  assert.equal(webgpu.ep, 'webgpu');
  assert.equal(webgpu.precision.dit, 'float32');  // no bf16 on WebGPU, and fp16 DiT gives NaN

  for (const [name, value] of [['FRAMEPACK_PLACEMENT', 'huge'], ['FRAMEPACK_EP', 'tpu'], ['FRAMEPACK_DEVICE_ID', '-1'], ['FRAMEPACK_DEVICE_ID', '5']]) {
    await assert.rejects(choosePlacement({ env: env({ FAKE_SMI_OUT: two, [name]: value }), cuda: cudaOk }),
      (err: AppError) => err.code === 'RUNTIME_SETTING_INVALID' && err.message.includes(name));
  }
});

test('CUDA provider check: absent, present but unloadable, loadable', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ort-lib-'));
  try {
    const absent = await cudaProviderStatus({ libDir: dir });
    assert.equal(absent.available, false);
    assert.match(absent.detail, /not installed next to libonnxruntime\.so\.1/);

    await writeFile(join(dir, CUDA_PROVIDER_LIB), 'not a shared library');
    const broken = await cudaProviderStatus({ libDir: dir });
    assert.equal(broken.available, false);
    assert.match(broken.detail, /does not load: .*(ELF|too short)/);

    // any real shared library stands in for one whose dependencies all resolve
    await rm(join(dir, CUDA_PROVIDER_LIB));
    await symlink(join(ortLibDir(), 'libonnxruntime.so.1'), join(dir, CUDA_PROVIDER_LIB));
    const loads = await cudaProviderStatus({ libDir: dir });
    assert.equal(loads.available, true, loads.detail);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('ORT out-of-memory on the GPU maps to GPU_OUT_OF_MEMORY; other errors and CPU ones pass through', () => {
  const oom = new Error('Non-zero status code returned while running MatMul node. Name:\'dit/blocks.3/matmul\' Status Message: ' +
    '/onnxruntime/core/framework/bfc_arena.cc:359 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, ' +
    'onnxruntime::Stream*) Failed to allocate memory for requested buffer of size 4294967296');
  const mapped = mapOrtError(oom, 'cuda');
  assert.ok(mapped instanceof AppError);
  assert.equal(mapped.code, 'GPU_OUT_OF_MEMORY');
  assert.equal(mapped.fatal, false);
  assert.match(mapped.message, /FRAMEPACK_PLACEMENT=low/);
  assert.equal((mapOrtError(new Error('CUDA failure 2: out of memory ; GPU=0'), 'cuda') as AppError).code, 'GPU_OUT_OF_MEMORY');
  const other = new Error('Invalid input name: foo');
  assert.equal(mapOrtError(other, 'cuda'), other);
  assert.equal(mapOrtError(oom, 'cpu'), oom);
});

test('sampling memory is estimated from the 640 measurements and refuses what the device cannot hold', async () => {
  const low20 = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 24576, 20480, 'NVIDIA L4') }), cuda: cudaOk });
  const h100 = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 81559, 80959) }), cuda: cudaOk });
  const medium = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 49152, 45056, 'NVIDIA L40S') }), cuda: cudaOk });
  assert.equal(medium.policy, 'medium');
  const high = await choosePlacement({ env: env({ FAKE_SMI_OUT: gpuLine(0, 143771, 143000, 'NVIDIA H200') }), cuda: cudaOk });
  const cpu = await choosePlacement({ env: { FRAMEPACK_PLACEMENT: 'cpu' } });
  // the measured points themselves: 640x608, lws 9
  assert.equal(samplingPeakGiB(low20, 17_500), 17.9);
  assert.equal(samplingPeakGiB(high, 17_500), 48.1);
  assert.equal(samplingPeakGiB(medium, 17_500), 33.4);
  assert.equal(samplingPeakGiB(cpu, 17_500), null);
  assert.equal(sizeProblem(low20, 17_500), null);
  // 960 class, square image (960x912, lws 9): about 2.25x the tokens
  const big = 9 * 57 * 60 + 2 * 57 * 60 + 30 * 29 + 4 * 15 * 15;
  assert.match(sizeProblem(low20, big) ?? '', /^sampling needs an estimated 2\d\.\d GiB on the low placement and 20\.0 GiB of NVIDIA L4 were free at setup$/);
  assert.equal(sizeProblem(h100, big), null);
  assert.match(sizeProblem(medium, big) ?? '', /^sampling needs an estimated 4\d\.\d GiB on the medium placement and 44\.0 GiB of NVIDIA L40S/);
  assert.equal(sizeProblem(medium, 17_500), null);
  assert.equal(sizeProblem(high, big), null);
  assert.equal(sizeProblem(cpu, 10 * big), null, 'the CPU is not refused');
});
