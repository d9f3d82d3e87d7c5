import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseDitFp8, FP8_MEASURED_FASTER } from '../../src/runtime/fp8-choice.js';
import { choosePlacement, type Placement } from '../../src/runtime/placement.js';

const cpu = await choosePlacement({ env: { FRAMEPACK_PLACEMENT: 'cpu' } });
const gpu = { index: 0, name: 'NVIDIA H100 80GB HBM3', totalMiB: 81559, usedMiB: 0, freeMiB: 81000, driver: '580' };
const cuda: Placement = { ...cpu, policy: 'high', ep: 'cuda', gpu, quantize: {}, precision: { dit: 'bfloat16', encoders: 'float16', vae: 'float16' } };
const cap = (c: number | null) => async () => c;
const choose = (p: Placement, value: string | undefined, c: number | null = 9.0) =>
  chooseDitFp8(p, value === undefined ? {} : { FRAMEPACK_DIT_FP8: value }, cap(c));

test('off by default and when asked; a bad value is a setting error', async () => {
  assert.deepEqual(await choose(cuda, undefined), { enabled: false, line: 'DiT linears: bfloat16 (FRAMEPACK_DIT_FP8=off)' });
  assert.equal((await choose(cuda, ' OFF ')).enabled, false);
  await assert.rejects(choose(cuda, 'yes'), (e: any) => e.code === 'RUNTIME_SETTING_INVALID' && /auto, on, off/.test(e.message));
});

test('on: FP8 on an sm89+ CUDA placement, refused anywhere else', async () => {
  const on = await choose(cuda, 'on');
  assert.equal(on.enabled, true);
  assert.match(on.line, /^DiT linears: fp8 \(GemmFloat8.*compute capability 9/);
  assert.equal((await choose(cuda, 'on', null)).enabled, true, 'an unknown capability is taken at its word');
  await assert.rejects(choose(cuda, 'on', 8.6), (e: any) => e.code === 'FP8_UNAVAILABLE' && /compute capability 8.6/.test(e.message));
  await assert.rejects(choose(cpu, 'on'), (e: any) => e.code === 'FP8_UNAVAILABLE' && /runs on cpu/.test(e.message));
  await assert.rejects(choose({ ...cuda, policy: 'low', quantize: { dit: 8 } }, 'on'), (e: any) => /8-bit DiT/.test(e.message));
});

test('auto: bfloat16 with the reason wherever on would be refused, and while FP8 is measured slower', async () => {
  assert.match((await choose(cpu, 'auto')).line, /^DiT linears: float32 \(FRAMEPACK_DIT_FP8=auto: the DiT runs on cpu\)/);
  assert.match((await choose(cuda, 'auto', 8.0)).line, /compute capability 8/);
  const auto = await choose(cuda, 'auto');
  assert.equal(auto.enabled, FP8_MEASURED_FASTER);
  if (!FP8_MEASURED_FASTER) assert.match(auto.line, /measured slower than bfloat16/);
});
