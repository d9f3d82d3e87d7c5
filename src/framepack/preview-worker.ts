/**
 * Worker thread of PreviewRenderer (preview.ts): projects one window of latents to an RGB strip per message,
 * so that the per-pixel loop never runs on the server's event loop.
 */
import { parentPort } from 'node:worker_threads';
import { latentsToRgb } from './preview.js';

parentPort!.on('message', ({ dims, data }: { dims: number[]; data: Float32Array }) => {
  const strip = latentsToRgb({ dtype: 'float32', dims, data });
  parentPort!.postMessage(strip, [strip.rgb.buffer as ArrayBuffer]);
});
