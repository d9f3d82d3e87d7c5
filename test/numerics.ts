/** Error measures shared by the parity suites (the fixtures' README states its tolerances in these terms). */
import assert from 'node:assert/strict';
import type { HostTensor } from '../src/onnx/safetensors.js';

/**
 * Relative L2 error ||a - b|| / ||b|| of a result against a reference, after checking that the shapes agree.
 * NaN anywhere counts as an infinite error, so a broken kernel can never pass a `<=` check.
 */
export function relL2(a: HostTensor | ArrayLike<number>, b: HostTensor | ArrayLike<number>): number {
  let x: ArrayLike<number | bigint>, y: ArrayLike<number | bigint>;
  if ('dims' in a && 'dims' in b) {
    assert.deepEqual(a.dims, b.dims, 'shapes differ');
    x = a.data; y = b.data;
  } else {
    x = a as ArrayLike<number>; y = b as ArrayLike<number>;
    assert.equal(x.length, y.length, `length ${x.length} vs ${y.length}`);
  }
  let num = 0, den = 0;
  for (let i = 0; i < y.length; i++) {
    const u = Number(x[i]), v = Number(y[i]);
    num += (u - v) ** 2;
    den += v ** 2;
  }
  const e = Math.sqrt(num / den);
  return Number.isNaN(e) ? Infinity : e;
}
