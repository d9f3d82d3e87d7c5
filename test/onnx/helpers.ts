/** Shared pieces of the toolkit tests: seeded data, tolerant comparisons, one-shot graph runs, temp dirs. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Graph } from '../../src/onnx/graph.js';
import { Checkpoint, saveRaw, type HostTensor, type StDType } from '../../src/onnx/safetensors.js';
import { Session, type SessionOptions } from '../../src/runtime/session.js';

/** Deterministic uniform values in [lo, hi) (mulberry32). */
export function rand(n: number, seed = 1, lo = -1, hi = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 4294967296);
  }
  return out;
}

export const f32 = (dims: number[], data: ArrayLike<number>): HostTensor => ({ dtype: 'float32', dims, data: Float32Array.from(data) });

/** max |a - b| <= atol + rtol * |b| elementwise, with the worst index in the message. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol = 1e-5, rtol = 1e-4, what = 'values'): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} vs ${expected.length}`);
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = Number(actual[i]), b = Number(expected[i]);
    const excess = Math.abs(a - b) - (atol + rtol * Math.abs(b));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(excess))) { worst = i; worstExcess = excess; }
  }
  if (worst >= 0) assert.fail(`${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (atol ${atol}, rtol ${rtol})`);
}

export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) { num += (Number(a[i]) - Number(b[i])) ** 2; den += Number(b[i]) ** 2; }
  return Math.sqrt(num / den);
}

/** Builds, runs once on the CPU and releases. */
export async function runGraph(g: Graph, feeds: Record<string, HostTensor>, opts: Partial<SessionOptions> = {}): Promise<Record<string, HostTensor>> {
  const s = await Session.create(g.toModel(), { ep: 'cpu', ...opts });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

export async function tempDir(prefix = 'framepack-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** The bytes of a typed array (a view, not a copy), as safetensors files hold them. */
export const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** A checkpoint in `dir`/ck holding one linear layer `proj`: its weight (N, K) as given and a float32 bias. */
export async function linearCheckpoint(dir: string, weight: { dtype: StDType; shape: [number, number]; bytes: Uint8Array }, bias: Float32Array): Promise<Checkpoint> {
  await mkdir(join(dir, 'ck'));
  await saveRaw(join(dir, 'ck', 'model.safetensors'), [
    { key: 'proj.weight', ...weight },
    { key: 'proj.bias', dtype: 'F32', shape: [bias.length], bytes: bytesOf(bias) },
  ]);
  return Checkpoint.open(join(dir, 'ck'));
}
