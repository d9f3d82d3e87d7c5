import assert from 'node:assert/strict';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  bfloat16ToFloat32, float16ToFloat32, float32ToBFloat16, float32ToFloat16, float32ToFloat8e4m3, float8e4m3ToFloat32,
} from '../../src/onnx/half.js';
import { Checkpoint, loadTensors, readHeader, saveRaw, saveTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import { tinyModels } from '../fixtures.js';
import { assertClose, bytesOf, rand, tempDir } from './helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
before(async () => ({ dir, cleanup } = await tempDir()));
after(() => cleanup());


describe('narrow float conversions', () => {
  test('float16 round trip is exact on representable values and rounds to nearest even', () => {
    const vals = [0, -0, 1, -2.5, 65504, 6.103515625e-5, 5.960464477539063e-8, 0.333251953125];
    assert.deepEqual(Array.from(float16ToFloat32(float32ToFloat16(vals))), vals.map((v) => (Object.is(v, -0) ? -0 : v)));
    // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties to even gives 1; just above rounds up.
    assert.equal(float16ToFloat32(float32ToFloat16([1 + 2 ** -11]))[0], 1);
    assert.equal(float16ToFloat32(float32ToFloat16([1 + 2 ** -11 + 2 ** -20]))[0], 1 + 2 ** -10);
    assert.equal(float16ToFloat32(float32ToFloat16([1e6]))[0], Infinity);
    assert.ok(Number.isNaN(float16ToFloat32(float32ToFloat16([NaN]))[0]));
  });

  test('bfloat16 keeps the float32 exponent and rounds the mantissa to 8 bits', () => {
    assert.deepEqual(Array.from(bfloat16ToFloat32(float32ToBFloat16([1, -3, 2 ** 100]))), [1, -3, 2 ** 100]);
    const big = bfloat16ToFloat32(float32ToBFloat16([1e30]))[0];
    assert.ok(Math.abs(big - 1e30) / 1e30 < 2 ** -9, `1e30 -> ${big}`);
    assert.equal(new Uint32Array(Float32Array.of(big).buffer)[0] & 0xffff, 0);
    assert.equal(bfloat16ToFloat32(float32ToBFloat16([1 + 2 ** -8]))[0], 1); // tie -> even
    assert.equal(bfloat16ToFloat32(float32ToBFloat16([1 + 3 * 2 ** -8]))[0], 1 + 2 ** -6);
  });

  test('float8 e4m3fn decodes its extremes', () => {
    assert.deepEqual(Array.from(float8e4m3ToFloat32(Uint8Array.from([0x00, 0x38, 0x7e, 0xfe, 0x01]))), [0, 1, 448, -448, 2 ** -9]);
    assert.ok(Number.isNaN(float8e4m3ToFloat32(Uint8Array.from([0x7f]))[0]));
    assert.deepEqual(Array.from(float32ToFloat8e4m3([1, -448, 0.5])), [0x38, 0xfe, 0x30]);
  });
});

describe('saveTensors / loadTensors', () => {
  test('round trips every host dtype', async () => {
    const t: Record<string, HostTensor> = {
      a: { dtype: 'float32', dims: [2, 3], data: rand(6) },
      b: { dtype: 'float16', dims: [4], data: float32ToFloat16([1, 2, 3, 4]) },
      c: { dtype: 'int64', dims: [2], data: BigInt64Array.from([-5n, 1n << 40n]) },
      d: { dtype: 'int32', dims: [1, 2], data: Int32Array.from([7, -8]) },
      e: { dtype: 'uint8', dims: [3], data: Uint8Array.from([0, 128, 255]) },
      f: { dtype: 'bool', dims: [2], data: Uint8Array.from([1, 0]) },
      scalar: { dtype: 'float32', dims: [], data: Float32Array.of(3.5) },
    };
    const file = join(dir, 'roundtrip.safetensors');
    await saveTensors(file, t);
    const back = await loadTensors(file);
    assert.deepEqual(back.a, t.a);
    assert.deepEqual(back.b, { dtype: 'float32', dims: [4], data: Float32Array.from([1, 2, 3, 4]) }); // F16 -> float32
    for (const k of ['c', 'd', 'e', 'f', 'scalar']) assert.deepEqual(back[k], t[k], k);
    // The header is 8-byte aligned, like the reference writer's.
    const raw = await readFile(file);
    assert.equal(Number(raw.readBigUInt64LE(0)) % 8, 0);
  });

  test('decodes BF16, F64, I16, I8 and F8_E4M3 to host types', async () => {
    const file = join(dir, 'dtypes.safetensors');
    const v = [0.5, -1.25, 3];
    await saveRaw(file, [
      { key: 'bf', dtype: 'BF16', shape: [3], bytes: bytesOf(float32ToBFloat16(v)) },
      { key: 'f64', dtype: 'F64', shape: [3], bytes: bytesOf(Float64Array.from(v)) },
      { key: 'i16', dtype: 'I16', shape: [2], bytes: bytesOf(Int16Array.from([-300, 300])) },
      { key: 'i8', dtype: 'I8', shape: [2], bytes: bytesOf(Int8Array.from([-3, 4])) },
      { key: 'f8', dtype: 'F8_E4M3', shape: [3], bytes: float32ToFloat8e4m3(v) },
    ]);
    const t = await loadTensors(file);
    for (const k of ['bf', 'f64', 'f8']) assert.deepEqual(Array.from(t[k].data as Float32Array), v, k);
    assert.deepEqual(t.i16, { dtype: 'int32', dims: [2], data: Int32Array.from([-300, 300]) });
    assert.deepEqual(t.i8, { dtype: 'int32', dims: [2], data: Int32Array.from([-3, 4]) });
  });

  test('rejects data that does not match dims', async () => {
    await assert.rejects(saveTensors(join(dir, 'bad.safetensors'), { x: { dtype: 'float32', dims: [3], data: new Float32Array(2) } }),
      /tensor "x": 2 elements for dims \[3\]/);
  });
});

describe('Checkpoint', () => {
  async function writeComponent(sub: string, sharded: boolean) {
    const d = join(dir, sub);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'config.json'), JSON.stringify({ hidden_size: 4 }));
    const w = { key: 'layer.weight', dtype: 'BF16' as const, shape: [2, 4], bytes: bytesOf(float32ToBFloat16(rand(8, 3))) };
    const b = { key: 'layer.bias', dtype: 'F16' as const, shape: [2], bytes: bytesOf(float32ToFloat16([0.5, -0.5])) };
    if (sharded) {
      await saveRaw(join(d, 'model-00001-of-00002.safetensors'), [w]);
      await saveRaw(join(d, 'model-00002-of-00002.safetensors'), [b]);
      await writeFile(join(d, 'model.safetensors.index.json'), JSON.stringify({
        metadata: {}, weight_map: { 'layer.weight': 'model-00001-of-00002.safetensors', 'layer.bias': 'model-00002-of-00002.safetensors' },
      }));
    } else {
      await saveRaw(join(d, 'model.safetensors'), [w, b]);
    }
    return d;
  }

  test('single file: config, keys, entries with absolute offsets, decoded values', async () => {
    const d = await writeComponent('single', false);
    const ck = await Checkpoint.open(d);
    assert.deepEqual(ck.config, { hidden_size: 4 });
    assert.deepEqual(ck.keys().sort(), ['layer.bias', 'layer.weight']);
    const e = ck.entry('layer.bias', [2]);
    const raw = await readFile(e.file);
    const headerLen = Number(raw.readBigUInt64LE(0));
    assert.equal(e.offset, 8 + headerLen + 16); // after the 2x4 bf16 weight
    assert.equal(e.length, 4);
    assert.deepEqual(Array.from(await ck.readFloat32('layer.bias')), [0.5, -0.5]);
    assertClose(await ck.readFloat32('layer.weight'), bfloat16ToFloat32(float32ToBFloat16(rand(8, 3))), 0, 0);
  });

  test('sharded through the index json, and a single file path', async () => {
    const d = await writeComponent('sharded', true);
    const ck = await Checkpoint.open(d);
    assert.equal(ck.files.length, 2);
    assert.match(ck.entry('layer.bias').file, /model-00002-of-00002\.safetensors$/);
    assert.deepEqual(Array.from(await ck.readFloat32('layer.bias')), [0.5, -0.5]);
    const one = await Checkpoint.open(join(d, 'model-00001-of-00002.safetensors'));
    assert.deepEqual(one.keys(), ['layer.weight']);
    assert.deepEqual(one.config, { hidden_size: 4 });
  });

  test('Hugging Face snapshot: symlinks resolve to blobs', async () => {
    const repo = join(dir, 'hub', 'models--org--name');
    const snap = join(repo, 'snapshots', 'abc123', 'sub');
    await mkdir(snap, { recursive: true });
    await mkdir(join(repo, 'blobs'));
    const sha = 'a'.repeat(64);
    await saveRaw(join(repo, 'blobs', sha), [{ key: 'w', dtype: 'F32', shape: [2], bytes: bytesOf(Float32Array.from([1, 2])) }]);
    await symlink(join('..', '..', '..', 'blobs', sha), join(snap, 'model.safetensors'));
    const ck = await Checkpoint.open(snap);
    assert.equal(ck.entry('w').file, join(repo, 'blobs', sha));
    assert.deepEqual(Array.from(await ck.readFloat32('w')), [1, 2]);
  });

  test('real fixture checkpoints open (sharded bf16 transformer, fp16 text encoder)', async () => {
    const dit = await Checkpoint.open(join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY'));
    assert.equal(dit.files.length, 2);
    assert.equal(dit.entry('x_embedder.proj.weight').dtype, 'BF16');
    const te = await Checkpoint.open(join(tinyModels(), 'hunyuanvideo-community', 'HunyuanVideo', 'text_encoder'));
    assert.ok(te.keys().length > 10);
    assert.equal(typeof te.config.hidden_size, 'number');
  });

  test('errors name key, file, expected and found shape', async () => {
    const d = await writeComponent('errors', false);
    const ck = await Checkpoint.open(d);
    assert.throws(() => ck.entry('layer.weight', [4, 2]),
      (e: Error) => /"layer\.weight"/.test(e.message) && e.message.includes(join(d, 'model.safetensors')) && /expected shape \[4, 2\], found \[2, 4\]/.test(e.message));
    assert.throws(() => ck.entry('layer.wieght'), /tensor "layer\.wieght" not found in checkpoint .*errors.*keys nearby: layer\./);
    await assert.rejects(Checkpoint.open(join(dir, 'nowhere')), /checkpoint not found/);
  });

  test('errors for truncated files and bad headers', async () => {
    const good = join(dir, 'good.safetensors');
    await saveRaw(good, [{ key: 'w', dtype: 'F32', shape: [4], bytes: new Uint8Array(16) }]);
    const bytes = await readFile(good);
    const cut = join(dir, 'cut.safetensors');
    await writeFile(cut, bytes.subarray(0, bytes.length - 4));
    await assert.rejects(readHeader(cut), /cut\.safetensors: tensor "w": truncated file/);
    await writeFile(cut, bytes.subarray(0, 20));
    await assert.rejects(readHeader(cut), /truncated safetensors file \(header of \d+ bytes, file has 20\)/);
    await writeFile(cut, bytes.subarray(0, 5));
    await assert.rejects(readHeader(cut), /truncated safetensors file \(5 bytes/);

    const garbage = join(dir, 'garbage.safetensors');
    await writeFile(garbage, Buffer.from('this is not a safetensors file at all'));
    await assert.rejects(readHeader(garbage), /bad safetensors header length/);
    const badJson = Buffer.concat([Buffer.alloc(8), Buffer.from('{"w": {')]);
    badJson.writeBigUInt64LE(7n, 0);
    await writeFile(garbage, badJson);
    await assert.rejects(readHeader(garbage), /bad safetensors header \(invalid JSON/);

    const hdr = (obj: unknown, data = 0) => {
      const j = Buffer.from(JSON.stringify(obj));
      const b = Buffer.alloc(8 + j.length + data);
      b.writeBigUInt64LE(BigInt(j.length), 0);
      j.copy(b, 8);
      return b;
    };
    await writeFile(garbage, hdr({ w: { dtype: 'F4', shape: [1], data_offsets: [0, 1] } }, 1));
    await assert.rejects(readHeader(garbage), /tensor "w": unsupported dtype "F4"/);
    await writeFile(garbage, hdr({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4));
    await assert.rejects(readHeader(garbage), /data_offsets span 4 bytes, F32\[2\] needs 8/);
    await writeFile(garbage, hdr({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4));
    await assert.rejects(readHeader(garbage), /bad shape \[-1\]/);
  });

  test('errors for an index naming missing files or keys', async () => {
    const d = await writeComponent('badindex', true);
    await writeFile(join(d, 'model.safetensors.index.json'), JSON.stringify({
      weight_map: { 'layer.weight': 'model-00001-of-00002.safetensors', 'layer.extra': 'model-00001-of-00002.safetensors' },
    }));
    await assert.rejects(Checkpoint.open(d), /tensor "layer\.extra" is in the index of .* but not in model-00001-of-00002/);
    await writeFile(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'layer.weight': 'model-00009.safetensors' } }));
    await assert.rejects(Checkpoint.open(d), /checkpoint file missing: .*model-00009\.safetensors \(named in the index json\)/);
  });
});
