/**
 * Live preview JPEGs of the latents being sampled (preview.ts draws them). The projection runs in a worker
 * thread (preview-worker.ts) and the JPEG in libvips' thread pool (sharp), never on the event loop. One
 * preview is rendered at a time; a newer offer replaces one still waiting, so a slow preview is skipped
 * rather than queued and sampling never waits for one.
 */
import { Worker } from 'node:worker_threads';
import sharp from 'sharp';
import type { RgbStrip } from './preview.js';
import type { Float32Tensor } from './sections.js';

export interface PreviewImage {
  width: number;
  height: number;
  jpeg: Buffer;
}

/** JPEG quality of previews: they are glanced at while sampling runs, small beats faithful. */
const JPEG_QUALITY = 80;

/**
 * Renders previews of latents off the event loop, one at a time, newest first: `offer` while one is being
 * rendered keeps only the newest offer. `meta` travels with its latents to `onPreview`.
 */
export class PreviewRenderer<M> {
  private worker: Worker | null = null;
  private busy = false;
  private pending: { meta: M; dims: number[]; data: Float32Array } | null = null;
  private closed = false;
  private idle: Promise<void> = Promise.resolve();
  private markIdle: () => void = () => undefined;

  constructor(
    private readonly onPreview: (meta: M, preview: PreviewImage) => void,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Queues a preview of `latents` (copied: the caller may reuse the buffer). */
  offer(meta: M, latents: Float32Tensor): void {
    if (this.closed) return;
    const reuse = this.pending?.data.length === latents.data.length ? this.pending.data : null;
    const data = reuse ?? new Float32Array(latents.data.length);
    data.set(latents.data);
    this.pending = { meta, dims: latents.dims, data };
    if (!this.busy) void this.render();
  }

  private async render(): Promise<void> {
    this.busy = true;
    this.idle = new Promise((r) => { this.markIdle = r; });
    while (this.pending && !this.closed) {
      const job = this.pending;
      this.pending = null;
      try {
        const strip = await this.project(job.dims, job.data);
        const jpeg = await sharp(strip.rgb, { raw: { width: strip.width, height: strip.height, channels: 3 } })
          .jpeg({ quality: JPEG_QUALITY }).toBuffer();
        if (!this.closed) this.onPreview(job.meta, { width: strip.width, height: strip.height, jpeg });
      } catch (err) {
        if (!this.closed) this.onError(err);
      }
    }
    this.busy = false;
    this.markIdle();
  }

  private project(dims: number[], data: Float32Array): Promise<RgbStrip> {
    this.worker ??= this.startWorker();
    const worker = this.worker;
    return new Promise((resolve, reject) => {
      const cleanup = () => { worker.off('message', onMessage); worker.off('error', onError); worker.off('exit', onExit); };
      const onMessage = (m: RgbStrip) => { cleanup(); resolve(m); };
      const onError = (err: Error) => { cleanup(); reject(err); };
      const onExit = (code: number) => { cleanup(); reject(new Error(`preview worker exited with code ${code}`)); };
      worker.on('message', onMessage);
      worker.once('error', onError);
      worker.once('exit', onExit);
      worker.postMessage({ dims, data }, [data.buffer as ArrayBuffer]);
    });
  }

  private startWorker(): Worker {
    const worker = new Worker(new URL('./preview-worker.js', import.meta.url));
    worker.unref(); // an idle preview worker must not keep a finished command alive
    worker.on('error', () => { if (this.worker === worker) this.worker = null; });
    worker.on('exit', () => { if (this.worker === worker) this.worker = null; });
    return worker;
  }

  /** Drops what is waiting, lets the preview being rendered finish unreported, stops the worker. */
  async close(): Promise<void> {
    this.closed = true;
    this.pending = null;
    await this.idle;
    const worker = this.worker;
    this.worker = null;
    await worker?.terminate();
  }
}
