/**
 * Start-image preprocessing: buckets, the bucket resize + centre crop (byte-exact against the cases'
 * resized.png, made by Pillow), SigLIP's pixel_values (exact against the fixture), SigLIP embeddings of the
 * cases, and decoding of the formats the original accepts (alpha dropped, first GIF frame, 16-bit, grey,
 * CMYK) with clear errors for undecodable files and decompression bombs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { AppError } from '../../src/errors.js';
import {
  BUCKETS_640, SIGLIP_384, encodeImage, findNearestBucket, loadImage, loadImageEncoder, loadSigLipPreprocessor,
  prepareStartImage, resizeAndCenterCrop, roundHalfEven, sigLipPixels, vaePixels, type ImageEncoder, type RgbImage,
} from '../../src/framepack/image.js';
import { resample, BICUBIC, LANCZOS } from '../../src/framepack/resample.js';
import { loadTensors } from '../../src/onnx/safetensors.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const TOLERANCE = 1e-4; // fixtures README: components, relative L2
const CASES = ['teacache_cfg1', 'realcfg_rescale'];
const redux = () => join(tinyModels(), 'lllyasviel', 'flux_redux_bfl');

function pixelDiff(a: RgbImage, b: RgbImage): { max: number; mean: number; differing: number } {
  assert.deepEqual([a.width, a.height], [b.width, b.height], 'sizes differ');
  let max = 0, sum = 0, differing = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = Math.abs(a.data[i] - b.data[i]);
    max = Math.max(max, d);
    sum += d;
    if (d) differing++;
  }
  return { max, mean: sum / a.data.length, differing };
}

/** A minimal PNG writer, for headers and bit depths sharp does not produce on request. */
function png(width: number, height: number, colorType: number, bitDepth: number, rows: Buffer[]): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colorType;
  const raw = Buffer.concat(rows.map((r) => Buffer.concat([Buffer.from([0]), r])));
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

async function rejects(p: Promise<unknown>, code: string): Promise<AppError> {
  let caught: unknown;
  await p.catch((e) => { caught = e; });
  assert.ok(caught instanceof AppError, `expected AppError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code);
  return caught;
}

after(() => terminateWorkers());

describe('buckets', () => {
  it('has the 14 buckets of resolution 640 and breaks ties toward the later one', () => {
    assert.equal(BUCKETS_640.length, 14);
    assert.deepEqual(findNearestBucket(640, 640), [640, 608]);
    assert.deepEqual(findNearestBucket(1080, 1920), [480, 832]);
    assert.deepEqual(findNearestBucket(1920, 1080), [832, 480]);
    assert.deepEqual(findNearestBucket(100, 1000), [416, 960]);
  });

  it('picks each case\'s bucket from its input size', async () => {
    for (const name of CASES) {
      const params = JSON.parse(readFileSync(fixture('framepack-tiny', 'cases', name, 'params.json'), 'utf8'));
      const img = await loadImage(fixture('framepack-tiny', 'cases', name, 'input.png'));
      assert.deepEqual(findNearestBucket(img.height, img.width), params.bucket, name);
    }
  });
});

describe('resize and centre crop', () => {
  it('rounds half to even like Python', () => {
    assert.deepEqual([0.5, 1.5, 2.5, 10.5, -0.5, -1.5, 2.4, 2.6].map(roundHalfEven), [0, 2, 2, 10, -0, -2, 2, 3]);
  });

  for (const name of CASES) {
    it(`${name}: equals Pillow's resized.png byte for byte`, async (t) => {
      const input = await loadImage(fixture('framepack-tiny', 'cases', name, 'input.png'));
      const expected = await loadImage(fixture('framepack-tiny', 'cases', name, 'resized.png'));
      const [h, w] = findNearestBucket(input.height, input.width);
      const d = pixelDiff(resizeAndCenterCrop(input, w, h), expected);
      t.diagnostic(`${name} resized.png (${input.width}x${input.height} -> ${w}x${h}): max |diff| ${d.max}, mean ${d.mean}, ${d.differing} samples differ`);
      assert.equal(d.max, 0);
    });
  }

  it('prepareStartImage (worker thread) gives the same bucket, bytes, pixel_values and VAE input', async () => {
    const input = await loadImage(fixture('framepack-tiny', 'cases', 'realcfg_rescale', 'input.png'));
    const [h, w] = findNearestBucket(input.height, input.width);
    const resized = resizeAndCenterCrop(input, w, h);
    const prepared = await prepareStartImage(input, SIGLIP_384);
    assert.deepEqual(prepared.bucket, [h, w]);
    assert.deepEqual([prepared.resized.width, prepared.resized.height], [w, h]);
    assert.ok(Buffer.from(prepared.resized.data).equals(Buffer.from(resized.data)));
    assert.deepEqual(prepared.pixelValues.dims, [1, 3, 384, 384]);
    assert.ok(Buffer.from((prepared.pixelValues.data as Float32Array).buffer)
      .equals(Buffer.from((sigLipPixels(resized).data as Float32Array).buffer)));
    assert.deepEqual(prepared.vaeInput, vaePixels(resized), 'and the VAE input');
  });

  it('returns the image itself at the target size and crops the centre after a downscale', () => {
    const img: RgbImage = { width: 4, height: 2, data: new Uint8Array(24).map((_, i) => i) };
    assert.equal(resizeAndCenterCrop(img, 4, 2), img);
    // 8x2 -> cover 4x2: scale 1 on height... width 8 stays, crop columns 2..5
    const wide: RgbImage = { width: 8, height: 2, data: new Uint8Array(48).map((_, i) => i) };
    const out = resizeAndCenterCrop(wide, 4, 2);
    assert.deepEqual([out.width, out.height], [4, 2]);
    assert.deepEqual(Array.from(out.data.subarray(0, 3)), Array.from(wide.data.subarray(6, 9)));
  });

  it('keeps a constant image constant through both filters (weights sum to one)', () => {
    const flat = new Uint8Array(30 * 20 * 3).fill(200);
    for (const f of [LANCZOS, BICUBIC]) {
      for (const [w, h] of [[61, 7], [9, 45], [30, 20]]) {
        assert.ok(resample(flat, 30, 20, 3, w, h, f).every((v) => v === 200));
        assert.ok(resample(flat, 30, 20, 3, w, h, f, 'pytorch').every((v) => v === 200));
      }
    }
  });
});

describe('SigLIP input', () => {
  it('reads the feature extractor config', () => {
    const pre = loadSigLipPreprocessor(join(redux(), 'feature_extractor'));
    assert.deepEqual(pre, SIGLIP_384);
  });

  it('equals the fixture pixel_values exactly (bicubic squash to 384, rescale, normalize)', async (t) => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'image_encoder.safetensors'));
    const [h, w] = ref.image_hwc_uint8.dims;
    const pixels = sigLipPixels({ width: w, height: h, data: ref.image_hwc_uint8.data as Uint8Array });
    const err = relL2(pixels, ref.pixel_values);
    t.diagnostic(`pixel_values from image_hwc_uint8: relative L2 ${err.toExponential(3)}`);
    assert.deepEqual(Array.from(pixels.data as Float32Array), Array.from(ref.pixel_values.data as Float32Array));
  });

  it('the Pillow flavour (transformers 4.46) stays within one level of it', async () => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'image_encoder.safetensors'));
    const [h, w] = ref.image_hwc_uint8.dims;
    const pil = sigLipPixels({ width: w, height: h, data: ref.image_hwc_uint8.data as Uint8Array }, { ...SIGLIP_384, flavour: 'pil' });
    const a = pil.data as Float32Array, b = ref.pixel_values.data as Float32Array;
    let max = 0;
    for (let i = 0; i < b.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
    assert.ok(max <= 1 / 127.5 + 1e-6, `max |diff| ${max}`);
  });

  it('VAE pixels are x / 127.5 - 1 in (1, 3, 1, H, W)', () => {
    const t = vaePixels({ width: 2, height: 1, data: Uint8Array.from([0, 255, 127, 10, 20, 30]) });
    assert.deepEqual(t.dims, [1, 3, 1, 1, 2]);
    // torch: float32 division, then float32 subtraction
    const f = (v: number) => Math.fround(Math.fround(v / 127.5) - 1);
    assert.deepEqual(Array.from(t.data as Float32Array), [0, 10, 255, 20, 127, 30].map(f));
    assert.equal(f(0), -1);
    assert.equal(f(255), 1);
  });
});

describe('image embeddings of the cases', () => {
  let enc: ImageEncoder;
  before(async () => {
    enc = await loadImageEncoder({ imageEncoder: join(redux(), 'image_encoder'), featureExtractor: join(redux(), 'feature_extractor') },
      { ep: 'cpu', precision: 'float32' });
  });
  after(async () => enc?.release());

  for (const name of CASES) {
    it(`${name}: image_embeddings from input.png through the whole preprocessing`, async (t) => {
      const ref = await loadTensors(fixture('framepack-tiny', 'cases', name, 'expected.safetensors'));
      const input = await loadImage(fixture('framepack-tiny', 'cases', name, 'input.png'));
      const [h, w] = findNearestBucket(input.height, input.width);
      const emb = await encodeImage(enc, sigLipPixels(resizeAndCenterCrop(input, w, h), enc.preprocessor));
      const err = relL2(emb, ref.image_embeddings);
      t.diagnostic(`${name} image_embeddings: relative L2 ${err.toExponential(3)}`);
      assert.ok(err <= TOLERANCE, `relative L2 ${err} > ${TOLERANCE}`);
    });
  }
});

describe('decoding', () => {
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'framepack-image-')); });
  after(async () => rm(dir, { recursive: true, force: true }));

  const rgb = Uint8Array.from({ length: 4 * 3 * 3 }, (_, i) => (i * 37 + 11) & 255); // 4x3 RGB

  it('PNG RGB decodes to the same bytes', async () => {
    const f = join(dir, 'rgb.png');
    await sharp(rgb, { raw: { width: 4, height: 3, channels: 3 } }).png().toFile(f);
    const img = await loadImage(f);
    assert.deepEqual([img.width, img.height], [4, 3]);
    assert.deepEqual(Array.from(img.data), Array.from(rgb));
  });

  it('drops alpha without compositing (PNG and lossless WebP), even where alpha is 0', async () => {
    const rgba = new Uint8Array(4 * 3 * 4);
    for (let p = 0; p < 12; p++) {
      rgba.set(rgb.subarray(p * 3, p * 3 + 3), p * 4);
      rgba[p * 4 + 3] = p % 2 ? 0 : 128;
    }
    type Sharp = ReturnType<typeof sharp>;
    for (const [ext, enc] of [['png', (s: Sharp) => s.png()], ['webp', (s: Sharp) => s.webp({ lossless: true, exact: true })]] as const) {
      const f = join(dir, `rgba.${ext}`);
      await enc(sharp(rgba, { raw: { width: 4, height: 3, channels: 4 } })).toFile(f);
      const img = await loadImage(f);
      assert.deepEqual(Array.from(img.data), Array.from(rgb), ext);
    }
  });

  it('greyscale (8-bit and 16-bit) is replicated to RGB; 16-bit keeps the high byte', async () => {
    const grey8 = Uint8Array.from([0, 50, 100, 150, 200, 255]);
    const f8 = join(dir, 'grey8.png');
    await writeFile(f8, png(3, 2, 0, 8, [Buffer.from(grey8.subarray(0, 3)), Buffer.from(grey8.subarray(3))]));
    const g8 = await loadImage(f8);
    assert.deepEqual(Array.from(g8.data), Array.from(grey8).flatMap((v) => [v, v, v]));

    const grey16 = [0x0000, 0x80ff, 0xffff, 0x1234, 0xfe01, 0x00ff];
    const rows = [0, 1].map((r) => {
      const b = Buffer.alloc(6);
      for (let i = 0; i < 3; i++) b.writeUInt16BE(grey16[r * 3 + i], i * 2);
      return b;
    });
    const f16 = join(dir, 'grey16.png');
    await writeFile(f16, png(3, 2, 0, 16, rows));
    const g16 = await loadImage(f16);
    assert.deepEqual(Array.from(g16.data), grey16.flatMap((v) => [v >> 8, v >> 8, v >> 8]));
  });

  it('16-bit RGB keeps the high byte, as Pillow', async () => {
    const values = Array.from({ length: 2 * 2 * 3 }, (_, i) => (i * 5003 + 0x80ff) & 0xffff);
    const rows = [0, 1].map((r) => {
      const b = Buffer.alloc(12);
      for (let i = 0; i < 6; i++) b.writeUInt16BE(values[r * 6 + i], i * 2);
      return b;
    });
    const f = join(dir, 'rgb16.png');
    await writeFile(f, png(2, 2, 2, 16, rows));
    const img = await loadImage(f);
    assert.deepEqual(Array.from(img.data), values.map((v) => v >> 8));
  });

  it('palette PNG and the first frame of an animated GIF', async () => {
    const red = new Uint8Array(8 * 8 * 3).map((_, i) => (i % 3 === 0 ? 255 : 0));
    const blue = new Uint8Array(8 * 8 * 3).map((_, i) => (i % 3 === 2 ? 255 : 0));
    const pal = join(dir, 'pal.png');
    await sharp(red, { raw: { width: 8, height: 8, channels: 3 } }).png({ palette: true }).toFile(pal);
    assert.deepEqual(Array.from((await loadImage(pal)).data), Array.from(red));

    const gif = join(dir, 'anim.gif');
    const frames = Buffer.concat([Buffer.from(red), Buffer.from(blue)]);
    await sharp(frames, { raw: { width: 8, height: 16, channels: 3, pageHeight: 8 } }).gif().toFile(gif);
    const meta = await sharp(gif).metadata();
    assert.equal(meta.pages, 2, 'the GIF has two frames');
    const img = await loadImage(gif);
    assert.deepEqual([img.width, img.height], [8, 8]);
    assert.deepEqual(Array.from(img.data), Array.from(red));
  });

  it('JPEG decodes without ICC conversion or EXIF rotation', async () => {
    const flat = new Uint8Array(16 * 16 * 3).map((_, i) => [200, 120, 40][i % 3]);
    const f = join(dir, 'rotated.jpg');
    await sharp(flat, { raw: { width: 16, height: 8, channels: 3 } }).jpeg({ quality: 100 })
      .withMetadata({ orientation: 6 }).toFile(f);
    const img = await loadImage(f);
    assert.deepEqual([img.width, img.height], [16, 8], 'orientation tag ignored');
    for (let i = 0; i < img.data.length; i++) assert.ok(Math.abs(img.data[i] - flat[i % 3]) <= 2);
  });

  it('CMYK JPEG uses Pillow\'s plain conversion', async () => {
    // sharp writes CMYK from RGB through its profile; read the stored ink values back and apply Pillow's formula
    const flat = new Uint8Array(16 * 16 * 3).map((_, i) => [30, 160, 220][i % 3]);
    const f = join(dir, 'cmyk.jpg');
    await sharp(flat, { raw: { width: 16, height: 16, channels: 3 } }).toColourspace('cmyk').jpeg({ quality: 100 }).toFile(f);
    assert.equal((await sharp(f).metadata()).space, 'cmyk');
    const ink = await sharp(f, { ignoreIcc: true }).toColourspace('cmyk').raw().toBuffer();
    const img = await loadImage(f);
    const c = ink.subarray(0, 4);
    const nk = 255 - c[3];
    const pillow = [0, 1, 2].map((k) => nk - Math.floor((Math.floor((c[k] * nk + 128) / 256) + c[k] * nk + 128) / 256));
    assert.deepEqual(Array.from(img.data.subarray(0, 3)), pillow);
  });

  it('rejects files that are not images, and truncated images', async () => {
    const junk = join(dir, 'junk.png');
    await writeFile(junk, Buffer.from('this is not an image at all'));
    const e = await rejects(loadImage(junk, 'input_image'), 'IMAGE_UNREADABLE');
    assert.match(e.message, /input_image/);

    const good = await sharp(new Uint8Array(64 * 64 * 3).map((_, i) => i & 255), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
    const cut = join(dir, 'truncated.png');
    await writeFile(cut, good.subarray(0, Math.floor(good.length / 2)));
    await rejects(loadImage(cut), 'IMAGE_UNREADABLE');
    await rejects(loadImage(join(dir, 'missing.png')), 'IMAGE_UNREADABLE');
  });

  it('rejects decompression bombs from the header, before decoding', async () => {
    // a 100000 x 100000 PNG header over a few bytes of data: 10^10 pixels
    const bomb = png(100_000, 100_000, 2, 8, [Buffer.alloc(1)]);
    const f = join(dir, 'bomb.png');
    await writeFile(f, bomb);
    const e = await rejects(loadImage(f), 'IMAGE_TOO_LARGE');
    assert.match(e.message, /100000x100000/);

    const small = join(dir, 'small.png');
    await sharp(new Uint8Array(20 * 20 * 3), { raw: { width: 20, height: 20, channels: 3 } }).png().toFile(small);
    const saved = process.env.FRAMEPACK_MAX_IMAGE_PIXELS;
    process.env.FRAMEPACK_MAX_IMAGE_PIXELS = '399';
    try {
      await rejects(loadImage(small), 'IMAGE_TOO_LARGE');
      process.env.FRAMEPACK_MAX_IMAGE_PIXELS = '400';
      assert.equal((await loadImage(small)).width, 20);
    } finally {
      if (saved === undefined) delete process.env.FRAMEPACK_MAX_IMAGE_PIXELS;
      else process.env.FRAMEPACK_MAX_IMAGE_PIXELS = saved;
    }
  });
});
