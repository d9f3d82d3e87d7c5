/**
 * The start image's pixels as the networks take them: the bucket resize + centre crop, SigLIP's pixel_values
 * and the VAE's input. Pure functions over 8-bit RGB, with no native module: the image worker
 * (image-worker.ts) loads only this file and the buckets, so a request's preparation does not wait for
 * sharp and the network builders to load in a fresh thread.
 *
 * References: `diffusers_helper/utils.py::resize_and_center_crop`, `diffusers_helper/clip_vision.py::
 * hf_clip_vision_encode` (transformers' SiglipImageProcessor). All resampling goes through `resample.ts`, a
 * port of Pillow's resampler, so the pixels match the original's byte for byte.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostTensor } from '../onnx/safetensors.js';
import { BICUBIC, LANCZOS, resample } from './resample.js';

/** An 8-bit RGB image, rows top to bottom, pixels interleaved (H, W, 3). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

// ------------------------------------------------------------------------------------------------------
// Resize and crop

/** Python's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Pillow's `Image.crop` of an in-bounds box. */
function crop(img: RgbImage, left: number, top: number, width: number, height: number): RgbImage {
  if (left < 0 || top < 0 || left + width > img.width || top + height > img.height) {
    throw new Error(`crop box (${left}, ${top}, ${width}x${height}) outside ${img.width}x${img.height}`);
  }
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const src = ((top + y) * img.width + left) * 3;
    data.set(img.data.subarray(src, src + width * 3), y * width * 3);
  }
  return { width, height, data };
}

/** Pillow's `resize` with the given filter (same size returns a copy). */
export function resizeImage(img: RgbImage, width: number, height: number, filter: 'lanczos' | 'bicubic'): RgbImage {
  const data = resample(img.data, img.width, img.height, 3, width, height, filter === 'lanczos' ? LANCZOS : BICUBIC);
  return { width, height, data };
}

/**
 * Scales the image to cover target_width x target_height (Lanczos), then crops the centre. The sizes and
 * the crop box are rounded half-to-even, as Python's round() and Pillow's crop do.
 */
export function resizeAndCenterCrop(img: RgbImage, targetWidth: number, targetHeight: number): RgbImage {
  if (img.width === targetWidth && img.height === targetHeight) return img;
  const scale = Math.max(targetWidth / img.width, targetHeight / img.height);
  const rw = roundHalfEven(img.width * scale);
  const rh = roundHalfEven(img.height * scale);
  const resized = resizeImage(img, rw, rh, 'lanczos');
  const left = roundHalfEven((rw - targetWidth) / 2);
  const top = roundHalfEven((rh - targetHeight) / 2);
  const right = roundHalfEven((rw + targetWidth) / 2);
  const bottom = roundHalfEven((rh + targetHeight) / 2);
  return crop(resized, left, top, right - left, bottom - top);
}

// ------------------------------------------------------------------------------------------------------
// Tensors

/**
 * Which implementation of SiglipImageProcessor to reproduce:
 * - 'torchvision': current transformers (the reference fixtures): PyTorch's antialiased uint8 bicubic,
 *   then rescale and normalize fused into (x - mean/rescale) / (std/rescale) in float32;
 * - 'pil': transformers 4.46 as pinned by the original: Pillow's bicubic, then x * rescale and
 *   (x - mean) / std as separate float32 steps.
 * They differ by one level on about 0.3% of the resized samples.
 */
export type SigLipFlavour = 'torchvision' | 'pil';

/** The SiglipImageProcessor settings FramePack relies on (feature_extractor/preprocessor_config.json). */
export interface SigLipPreprocessor {
  width: number;
  height: number;
  rescaleFactor: number;
  mean: [number, number, number];
  std: [number, number, number];
  flavour: SigLipFlavour;
}

/** so400m-patch14-384's processor: 384x384 bicubic, x / 255, (x - 0.5) / 0.5. */
export const SIGLIP_384: SigLipPreprocessor = {
  width: 384, height: 384, rescaleFactor: 1 / 255, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], flavour: 'torchvision',
};

/**
 * Reads preprocessor_config.json. Only what FramePack's path can use is accepted: resize on, bicubic,
 * rescale and normalize on; anything else is an error rather than a silently different tensor.
 */
export function loadSigLipPreprocessor(dir: string, flavour: SigLipFlavour = 'torchvision'): SigLipPreprocessor {
  const file = join(dir, 'preprocessor_config.json');
  if (!existsSync(file)) throw new Error(`SigLIP preprocessor: ${file} not found`);
  const c = JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>;
  const problems: string[] = [];
  if (c.do_resize === false) problems.push('do_resize is false');
  if (c.resample !== undefined && c.resample !== 3) problems.push(`resample ${c.resample} (only 3 = bicubic)`);
  if (c.do_rescale === false) problems.push('do_rescale is false');
  if (c.do_normalize === false) problems.push('do_normalize is false');
  const size = c.size ?? {};
  if (!Number.isInteger(size.height) || !Number.isInteger(size.width)) problems.push('size needs height and width');
  if (problems.length) throw new Error(`SigLIP preprocessor ${file}: unsupported settings: ${problems.join('; ')}`);
  const triple = (v: unknown, d: number): [number, number, number] =>
    Array.isArray(v) && v.length === 3 ? [Number(v[0]), Number(v[1]), Number(v[2])] : [d, d, d];
  return {
    width: size.width,
    height: size.height,
    rescaleFactor: typeof c.rescale_factor === 'number' ? c.rescale_factor : 1 / 255,
    mean: triple(c.image_mean, 0.5),
    std: triple(c.image_std, 0.5),
    flavour,
  };
}

/**
 * SigLIP's pixel_values (1, 3, H, W) float32: the bucket image squashed (no crop) to the processor size with
 * an antialiased bicubic, then rescaled and normalized, following the chosen processor implementation.
 */
export function sigLipPixels(img: RgbImage, pre: SigLipPreprocessor = SIGLIP_384): HostTensor {
  const { width, height } = pre;
  const fixedPoint = pre.flavour === 'pil' ? 'pillow' : 'pytorch';
  const resized = resample(img.data, img.width, img.height, 3, width, height, BICUBIC, fixedPoint);
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    if (pre.flavour === 'pil') {
      // numpy: rescale in float64 stored as float32, then (x - mean) / std in float32
      const mean = f(pre.mean[c]), std = f(pre.std[c]);
      for (let p = 0; p < plane; p++) out[c * plane + p] = f(f(f(resized[p * 3 + c] * pre.rescaleFactor) - mean) / std);
    } else {
      // torch: mean and std divided by the rescale factor once, then one float32 subtract and divide
      const mean = f(pre.mean[c] * (1 / pre.rescaleFactor)), std = f(pre.std[c] * (1 / pre.rescaleFactor));
      for (let p = 0; p < plane; p++) out[c * plane + p] = f(f(resized[p * 3 + c] - mean) / std);
    }
  }
  return { dtype: 'float32', dims: [1, 3, height, width], data: out };
}

/** The VAE input (1, 3, 1, H, W) float32 in [-1, 1]: x / 127.5 - 1. */
export function vaePixels(img: RgbImage): HostTensor {
  const plane = img.width * img.height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) out[c * plane + p] = Math.fround(img.data[p * 3 + c] / 127.5) - 1;
  }
  return { dtype: 'float32', dims: [1, 3, 1, img.height, img.width], data: out };
}

export interface StartImage {
  /** (height, width) */
  bucket: [number, number];
  /** the bucket-sized image the VAE and SigLIP see */
  resized: RgbImage;
  /** SigLIP's pixel_values of `resized` */
  pixelValues: HostTensor;
  /** the VAE's input: vaePixels(resized) */
  vaeInput: HostTensor;
}
