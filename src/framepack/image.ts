/**
 * The start image: decoding an upload, its preparation for the networks (image-pixels.ts, run in a worker
 * thread) and the SigLIP image encoder.
 *
 * References: the Cog predictor's `Image.open(path).convert("RGB")`, `diffusers_helper/clip_vision.py`.
 *
 * Decoding uses sharp (libvips) but keeps Pillow's semantics: no EXIF rotation, no ICC conversion, alpha
 * dropped rather than composited, the first frame of an animation, 16-bit samples reduced to their high
 * byte, CMYK converted with Pillow's plain formula.
 */
import { Worker } from 'node:worker_threads';
import sharp from 'sharp';
import { appError } from '../errors.js';
import type { Precision } from '../onnx/graph.js';
import { Checkpoint, type HostTensor } from '../onnx/safetensors.js';
import { buildSiglipVision } from '../nets/siglip.js';
import { Session, type ExecutionProvider } from '../runtime/session.js';
import { loadSigLipPreprocessor, SIGLIP_384, type RgbImage, type SigLipFlavour, type SigLipPreprocessor, type StartImage } from './image-pixels.js';

export { BUCKETS_640, RESOLUTION, bucketsFor, findNearestBucket, scaleBucket } from './buckets.js';
export * from './image-pixels.js';

// ------------------------------------------------------------------------------------------------------
// Decoding

/**
 * Largest accepted image in pixels: Pillow's decompression-bomb error threshold (2 x MAX_IMAGE_PIXELS),
 * which is what the original raises on. FRAMEPACK_MAX_IMAGE_PIXELS overrides it.
 */
export const DEFAULT_MAX_IMAGE_PIXELS = 2 * 89_478_485;

export function maxImagePixels(): number {
  const env = process.env.FRAMEPACK_MAX_IMAGE_PIXELS;
  if (env === undefined || env === '') return DEFAULT_MAX_IMAGE_PIXELS;
  const n = Number(env);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`FRAMEPACK_MAX_IMAGE_PIXELS must be a positive integer, got ${env}`);
  return n;
}

/** Pillow's CMYK -> RGB: each channel is (255 - K) scaled by (255 - ink), with its rounded 8-bit division. */
function cmykToRgb(cmyk: Uint8Array, pixels: number): Uint8Array {
  const out = new Uint8Array(pixels * 3);
  const mulDiv255 = (a: number, b: number) => {
    const t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  };
  for (let p = 0; p < pixels; p++) {
    const nk = 255 - cmyk[p * 4 + 3];
    for (let c = 0; c < 3; c++) out[p * 3 + c] = nk - mulDiv255(cmyk[p * 4 + c], nk);
  }
  return out;
}

/**
 * Decodes JPEG, PNG, WebP, GIF (first frame), TIFF, ... into 8-bit RGB the way `Image.open(p).convert("RGB")`
 * does. Throws IMAGE_UNREADABLE for files that are not decodable images and IMAGE_TOO_LARGE above the
 * pixel limit (checked from the header, before any pixel is decoded).
 */
export async function loadImage(input: string | Buffer, name = 'image'): Promise<RgbImage> {
  const limit = maxImagePixels();
  const open = (pixelLimit: number | false) => sharp(input, {
    failOn: 'error', // truncated or corrupt data is an error, as in Pillow; harmless libjpeg warnings are not
    limitInputPixels: pixelLimit,
    ignoreIcc: true,
    autoOrient: false,
    page: 0,
    pages: 1,
  });
  // The header is read without sharp's own limit so that a bomb gets IMAGE_TOO_LARGE, not a generic error.
  const meta = await open(false).metadata().catch((err: unknown) => {
    throw appError('IMAGE_UNREADABLE', { name, detail: describe(err) }, err);
  });
  const width = meta.width ?? 0;
  const height = meta.pageHeight ?? meta.height ?? 0;
  if (width * height > limit) {
    throw appError('IMAGE_TOO_LARGE', { name, width, height, pixels: width * height, limit });
  }
  if (width < 1 || height < 1) throw appError('IMAGE_UNREADABLE', { name, detail: 'the image has no pixels' });
  try {
    if (meta.space === 'cmyk') {
      const { data, info } = await open(limit).toColourspace('cmyk').raw().toBuffer({ resolveWithObject: true });
      if (info.channels !== 4) throw new Error(`CMYK image decoded to ${info.channels} channels`);
      return { width: info.width, height: info.height, data: cmykToRgb(data, info.width * info.height) };
    }
    // 'srgb' here only maps grey to RGB and 16-bit to 8-bit (high byte, as Pillow); with ignoreIcc no
    // colour transform is applied.
    const { data, info } = await open(limit).removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`image decoded to ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  } catch (err) {
    throw appError('IMAGE_UNREADABLE', { name, detail: describe(err) }, err);
  }
}

function describe(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0].trim();
}

/**
 * Bucket, resize + centre crop and SigLIP pixels of an uploaded image (image-pixels.ts), computed in a worker
 * thread so that a large image does not block the event loop. `bucket` (h, w) imposes the size instead of
 * the nearest bucket of class 640: a start image's of another resolution class (findNearestBucket), an end
 * image's the start image's.
 */
export function prepareStartImage(img: RgbImage, pre: SigLipPreprocessor = SIGLIP_384, bucket?: [number, number]): Promise<StartImage> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./image-worker.js', import.meta.url), { workerData: { img, pre, bucket } });
    let settled = false;
    worker.once('message', (m: StartImage) => {
      settled = true;
      resolve(m);
    });
    worker.once('error', (err) => {
      settled = true;
      reject(err);
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`image preprocessing worker exited with code ${code}`));
    });
  });
}

// ------------------------------------------------------------------------------------------------------
// Image embeddings

export interface ImageEncoder {
  preprocessor: SigLipPreprocessor;
  session: Session;
  release(): Promise<void>;
}

/** SigLIP vision session + its preprocessor settings (image_encoder/ and feature_extractor/ folders). */
export async function loadImageEncoder(dirs: { imageEncoder: string; featureExtractor: string },
  opts: { ep: ExecutionProvider; precision: Precision; deviceId?: number; flavour?: SigLipFlavour }): Promise<ImageEncoder> {
  const preprocessor = loadSigLipPreprocessor(dirs.featureExtractor, opts.flavour);
  const ckpt = await Checkpoint.open(dirs.imageEncoder);
  const session = await Session.create(buildSiglipVision(ckpt, { precision: opts.precision }),
    { ep: opts.ep, deviceId: opts.deviceId });
  return { preprocessor, session, release: () => session.release() };
}

/** SigLIP last_hidden_state (1, P, D) float32 of pixel_values made by sigLipPixels. */
export async function encodeImage(enc: ImageEncoder, pixelValues: HostTensor, signal?: AbortSignal): Promise<HostTensor> {
  const out = await enc.session.run({ pixel_values: pixelValues }, { signal });
  return out.last_hidden_state;
}
