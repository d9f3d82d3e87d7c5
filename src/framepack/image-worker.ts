/**
 * Worker thread for `prepareStartImage` (image.ts): the bucket resize of a large upload is a few hundred
 * million multiply-adds in JavaScript, and the VAE's float input megabytes of fresh memory: neither may stall
 * the server's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { lowerThisThread } from '../runtime/priority.js';
import { findNearestBucket } from './buckets.js';
import { resizeAndCenterCrop, sigLipPixels, vaePixels, type RgbImage, type SigLipPreprocessor } from './image-pixels.js';

lowerThisThread();

const { img, pre, bucket: imposed } = workerData as { img: RgbImage; pre: SigLipPreprocessor; bucket?: [number, number] };
const bucket = imposed ?? findNearestBucket(img.height, img.width);
const resized = resizeAndCenterCrop(img, bucket[1], bucket[0]);
const pixelValues = sigLipPixels(resized, pre);
const vaeInput = vaePixels(resized);
parentPort!.postMessage({ bucket, resized, pixelValues, vaeInput },
  [resized.data, pixelValues.data, vaeInput.data].map((a) => a.buffer as ArrayBuffer));
