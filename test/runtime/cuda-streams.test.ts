/**
 * The stream-priority option without a GPU: options without it pass through untouched, a bad value is a setting
 * error, and where no CUDA runtime (or no device) is there, asking for a stream is a catalogued error, not a crash.
 * The streams themselves run only on the GPU machine (docs/gpu.md).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { priorityStream, releaseStreams, withStream } from '../../src/runtime/cuda-streams.js';
import { AppError } from '../../src/errors.js';

test('stream_priority: absent passes through, a bad value is refused, no CUDA runtime is a clear error', () => {
  const plain = { device_id: '0', use_tf32: '0' };
  assert.equal(withStream(plain, 0), plain);
  assert.throws(() => withStream({ ...plain, stream_priority: 'urgent' }, 0),
    (e: AppError) => e.code === 'RUNTIME_SETTING_INVALID' && /stream_priority=urgent is not valid: use one of high, low/.test(e.message));
  // this machine has no GPU: either the library is missing or the device is
  assert.throws(() => priorityStream(0, 'high'),
    (e: AppError) => (e.code === 'CUDA_RUNTIME_UNAVAILABLE' && /libcudart\.so\.13/.test(e.message)) || e.code === 'CUDA_CALL_FAILED');
  assert.throws(() => withStream({ ...plain, stream_priority: 'low' }, 0), AppError);
  releaseStreams(); // nothing made: nothing to destroy, no throw
});
