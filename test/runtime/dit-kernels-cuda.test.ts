/**
 * The DiT kernels' CUDA C (src/runtime/dit-kernels.ts, CUDA_SOURCE) on the CPU: compiled with g++ against a
 * stand-in for the CUDA built-ins (cuda-emulation/simt.h: a thread per CUDA thread, barriers for __syncthreads and
 * the warp shuffles) and checked element by element against the formulas (cuda-emulation/dit-kernels-check.cpp),
 * with the launch shapes of the TypeScript host code. This catches indexing, reduction and rounding mistakes
 * without a GPU; the GPU suite (test/gpu/dit-kernels.test.ts) then runs the same source compiled by NVRTC.
 *
 * Skipped, saying why, where g++ is missing (.ci/run installs it).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { CUDA_SOURCE } from '../../src/runtime/dit-kernels.js';

// dist/test/runtime/<this>.js -> the sources next to this test in the repository
const here = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'runtime', 'cuda-emulation');
const gxx = spawnSync('g++', ['--version']).status === 0;

describe('DiT kernels, CUDA source emulated on the CPU', { skip: gxx ? false : 'g++ is not installed' }, () => {
  test('every kernel agrees with its formula within a bfloat16 rounding', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dit-kernels-'));
    try {
      for (const f of ['simt.h', 'dit-kernels-check.cpp']) copyFileSync(join(here, f), join(dir, f));
      writeFileSync(join(dir, 'kernels.cu'), CUDA_SOURCE);
      const exe = join(dir, 'check');
      const cc = spawnSync('g++', ['-std=c++20', '-O1', '-pthread', '-w', '-o', exe, join(dir, 'dit-kernels-check.cpp')], { encoding: 'utf8' });
      assert.equal(cc.status, 0, `g++ failed:\n${cc.stderr}`);
      const run = spawnSync(exe, { encoding: 'utf8', timeout: 120_000 });
      console.log(`# ${run.stdout.trim().split('\n').at(-1)}`);
      assert.equal(run.status, 0, run.stdout + run.stderr);
      assert.match(run.stdout, /^ok: 0 of \d+ elements off$/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
