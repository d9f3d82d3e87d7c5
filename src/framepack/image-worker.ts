/**
 * Worker thread for `prepareStartImage` (image.ts): the bucket resize of a large upload is a few hundred
 * million multiply-adds in JavaScript, which must not stall the server's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { lowerThisThread } from '../runtime/priority.js';
import { findNearestBucket, resizeAndCenterCrop, sigLipPixels, type RgbImage, type SigLipPreprocessor } from './image.js';

lowerThisThread();

const { img, pre, bucket: imposed } = workerData as { img: RgbImage; pre: SigLipPreprocessor; bucket?: [number, number] };
const bucket = imposed ?? findNearestBucket(img.height, img.width);
const resized = resizeAndCenterCrop(img, bucket[1], bucket[0]);
const pixelValues = sigLipPixels(resized, pre);
parentPort!.postMessage({ bucket, resized, pixelValues }, [resized.data.buffer as ArrayBuffer, pixelValues.data.buffer as ArrayBuffer]);
