/**
 * The video being assembled, kept in a worker thread of its own (pixel-worker.ts) so that blending decoded
 * chunks and converting frames to uint8 never hold the event loop: it only moves buffers. Same frames as
 * sections.ts PixelHistory, which does the work in the worker. close() ends the worker and frees the frames.
 */
import { Worker } from 'node:worker_threads';
import { concatBytes, type Float32Tensor } from './sections.js';

interface Reply { id: number; error?: string; data?: Uint8Array; frameCount?: number; width?: number; height?: number }

export class VideoPixels {
  private readonly worker: Worker;
  private seq = 0;
  private snaps = 0;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private failure: Error | null = null;
  frameCount = 0;
  width = 0;
  height = 0;

  /** `grows` as PixelHistory's: 'backward' when chunks precede the video (inverted order), 'forward' (F1). */
  constructor(overlap: number, grows: 'backward' | 'forward' = 'backward') {
    this.worker = new Worker(new URL('./pixel-worker.js', import.meta.url), { workerData: { overlap, grows } });
    this.worker.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (!this.pending.size) this.worker.unref();
      if (m.error) p.reject(new Error(`assembling the video: ${m.error}`));
      else p.resolve(m);
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', () => this.fail(new Error('the video was closed')));
    this.worker.unref(); // kept alive only while a reply is awaited (after the listeners, which ref it)
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private call(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ id, ...msg }, transfer);
    });
  }

  /** Blends a decoded chunk (1, 3, F, H, W) in. Transfers its buffer: `chunk` must not be used afterwards. */
  async add(chunk: Float32Tensor): Promise<void> {
    const r = await this.call({ op: 'add', dims: chunk.dims, data: chunk.data }, [chunk.data.buffer as ArrayBuffer]);
    this.frameCount = r.frameCount!;
    this.width = r.width!;
    this.height = r.height!;
  }

  /**
   * All frames so far, earliest first, as (F, H, W, 3) uint8 buffers, taken when called: a later add() does
   * not change what a reader still iterating gets.
   */
  chunks(): AsyncIterable<Uint8Array> {
    const snap = ++this.snaps;
    if (!this.failure) this.worker.postMessage({ op: 'snapshot', snap });
    const self = this;
    return (async function* () {
      try {
        for (;;) {
          const { data } = await self.call({ op: 'next', snap });
          if (!data) return;
          yield data;
        }
      } finally {
        if (!self.failure) self.worker.postMessage({ op: 'release', snap });
      }
    })();
  }

  /** All frames as one contiguous (F, H, W, 3) uint8 buffer, then close(): the whole video, once. */
  async frames(): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for await (const p of this.chunks()) parts.push(p);
    await this.close();
    return concatBytes(parts);
  }

  /** Ends the worker; the frames are gone. */
  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
