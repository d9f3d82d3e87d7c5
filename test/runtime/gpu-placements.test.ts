/**
 * GPU discovery for one worker per GPU, on a fake nvidia-smi: CUDA's numbering under CUDA_VISIBLE_DEVICES,
 * a placement per card (mixed hosts, cards too full to serve), the settings that keep the model off CUDA,
 * and the failures after which a GPU leaves rotation.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError, deviceFailure } from '../../src/errors.js';
import { gpuPlacements } from '../../src/runtime/gpu-placements.js';
import { isGpuLost, mapOrtError } from '../../src/runtime/placement.js';
import { cudaVisible, parseNvidiaSmi } from '../../src/runtime/vram.js';
import { gpuLine, gpuUuid, installFakeSmi, type FakeSmi } from '../fake-gpus.js';

let smi: FakeSmi;
before(async () => { smi = await installFakeSmi(); });
after(() => smi.remove());

const cuda = { available: true, detail: 'fake' };
// 0: A100 40GB with 39 GiB free (low), 1: H200 with 137 GiB free (high), 2: H100 with 9.8 GiB free (another process holds it)
const MIXED = gpuLine(0, 40960, 40000, 'NVIDIA A100-SXM4-40GB') + gpuLine(1, 143771, 140000, 'NVIDIA H200') + gpuLine(2, 81559, 10000);
const rows = parseNvidiaSmi(MIXED.replace(/\\n/g, '\n'));
const indices = (visible: string | undefined) => cudaVisible(rows, visible).map((g) => g.index);

test('nvidia-smi rows carry the uuid CUDA_VISIBLE_DEVICES may name', () => {
  assert.deepEqual(rows.map((g) => g.uuid), [gpuUuid(0), gpuUuid(1), gpuUuid(2)]);
});

test('CUDA numbering: CUDA_VISIBLE_DEVICES order, uuids and their prefixes, stop at the first bad entry', () => {
  assert.deepEqual(indices(undefined), [0, 1, 2]);
  assert.deepEqual(indices('2,0'), [2, 0]);
  assert.deepEqual(indices(` ${gpuUuid(1)}, 0`), [1, 0]);
  assert.deepEqual(indices('GPU-00000002'), [2]);             // a unique prefix
  assert.deepEqual(indices('GPU-0000000'), []);               // ambiguous prefix: CUDA sees nothing
  assert.deepEqual(indices(''), []);
  assert.deepEqual(indices('-1'), []);
  assert.deepEqual(indices('1,7,0'), [1]);                    // 7 names no GPU: 0 is not seen either
  assert.deepEqual(indices('0,0,1'), [0]);                    // a repeat ends the list too
  assert.deepEqual(indices('MIG-4d4c1a2b-0000-1111-2222-333344445555'), [0, 1, 2]); // cannot be matched: unchanged
});

test('a mixed host gets a placement per card; a card too full to serve is left out with the reason', async () => {
  const { placements, skipped } = await gpuPlacements({ env: smi.env({ FAKE_SMI_OUT: MIXED }), cuda });
  assert.deepEqual(placements.map((p) => [p.deviceId, p.policy, p.ep, p.gpu?.name]),
    [[0, 'low', 'cuda', 'NVIDIA A100-SXM4-40GB'], [1, 'high', 'cuda', 'NVIDIA H200']]);
  assert.deepEqual(placements.map((p) => p.quantize), [{ dit: 8, llama: 8 }, {}]);
  assert.equal(skipped.length, 1);
  assert.equal(skipped[0]!.deviceId, 2);
  assert.match(skipped[0]!.reason, /9\.8 GiB free .*too little/);
});

test('CUDA_VISIBLE_DEVICES renumbers the cards the placements name', async () => {
  const { placements, skipped } = await gpuPlacements({ env: smi.env({ FAKE_SMI_OUT: MIXED, CUDA_VISIBLE_DEVICES: '2,1' }), cuda });
  assert.deepEqual(placements.map((p) => [p.deviceId, p.policy, p.gpu?.index]), [[1, 'high', 1]]);
  assert.deepEqual(skipped.map((s) => s.deviceId), [0]);
});

test('settings and hosts that keep the model off CUDA list no GPU (the one worker chooses as always)', async () => {
  const none = { placements: [], skipped: [] };
  const e = (extra: Record<string, string>) => smi.env({ FAKE_SMI_OUT: MIXED, ...extra });
  assert.deepEqual(await gpuPlacements({ env: e({ FRAMEPACK_EP: 'cpu' }), cuda }), none);
  assert.deepEqual(await gpuPlacements({ env: e({ FRAMEPACK_PLACEMENT: 'cpu' }), cuda }), none);
  assert.deepEqual(await gpuPlacements({ env: e({ FRAMEPACK_EP: 'webgpu' }), cuda }), none);
  assert.deepEqual(await gpuPlacements({ env: e({}), cuda: { available: false, detail: 'not installed' } }), none);
  assert.deepEqual(await gpuPlacements({ env: e({ CUDA_VISIBLE_DEVICES: 'MIG-4d4c1a2b-0000-1111-2222-333344445555' }), cuda }), none);
  assert.deepEqual(await gpuPlacements({ env: smi.env({ FAKE_SMI_FAIL: '1' }), cuda }), none);
  // pinned to one card: that card alone
  const pinned = await gpuPlacements({ env: e({ FRAMEPACK_DEVICE_ID: '1' }), cuda });
  assert.deepEqual(pinned.placements.map((p) => [p.deviceId, p.policy]), [[1, 'high']]);
  // forced policy: every card gets it, full or not
  const forced = await gpuPlacements({ env: e({ FRAMEPACK_PLACEMENT: 'low' }), cuda });
  assert.deepEqual(forced.placements.map((p) => [p.deviceId, p.policy]), [[0, 'low'], [1, 'low'], [2, 'low']]);
});

test('a lost GPU maps to GPU_LOST; out of memory to GPU_OUT_OF_MEMORY; both name how the device failed', () => {
  const lost = [
    'CUDA failure 700: an illegal memory access was encountered ; GPU=1 ; hostname=h ; expr=cudaStreamSynchronize(s);',
    'CUDA failure 999: unknown error ; GPU=0 ; hostname=h ; expr=cudaSetDevice(0);',
    'CUDA error 719: unspecified launch failure',
    'CUDNN failure 8: CUDNN_STATUS_EXECUTION_FAILED ; GPU=3 ; ... uncorrectable ECC error encountered',
    'session worker cuda:2 exited with code 1',
    'session "dit_blocks" was lost: its worker exited',
  ];
  for (const message of lost) {
    assert.ok(isGpuLost(new Error(message)), message);
    const mapped = mapOrtError(new Error(message), 'cuda') as AppError;
    assert.equal(mapped.code, 'GPU_LOST', message);
    assert.equal(deviceFailure(mapped), 'lost');
    assert.equal(mapped.fatal, false);
  }
  const oom = mapOrtError(new Error('CUDA failure 2: out of memory ; GPU=0'), 'cuda') as AppError;
  assert.equal(deviceFailure(oom), 'out-of-memory');
  for (const message of ['CUDA failure 1: invalid argument ; GPU=0', 'Invalid input name: foo', 'session worker cpu exited with code 1',
    'CUDA failure 20: ...', 'session worker cuda:0 was terminated']) {
    assert.equal(isGpuLost(new Error(message)), false, message);
  }
  const onCpu = new Error('session worker cuda:2 exited with code 1');
  assert.equal(mapOrtError(onCpu, 'cpu'), onCpu);
  assert.equal(deviceFailure(new Error('x')), undefined);
  assert.equal(deviceFailure(Object.assign(new Error('x'), { device: 'lost' })), 'lost');
});
