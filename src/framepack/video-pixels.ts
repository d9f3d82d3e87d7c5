/**
 * The video being assembled, kept in a worker thread of its own (pixel-worker.ts) so that blending decoded
 * chunks and converting frames to uint8 never hold the event loop: it only moves buffers. Same frames as
 * sections.ts PixelHistory, which does the work in the worker. close() ends the worker and frees the frames.
 */
import { ThreadClient } from '../runtime/thread-rpc.js';
import { concatBytes, type Float32Tensor } from './sections.js';

interface Reply { data?: Uint8Array; from?: number; frameCount?: number; width?: number; height?: number }

export class VideoPixels {
  private readonly thread: ThreadClient<Reply>;
  private snaps = 0;
  frameCount = 0;
  width = 0;
  height = 0;

  /** `grows` as PixelHistory's: 'backward' when chunks precede the video (inverted order), 'forward' (F1). */
  constructor(overlap: number, grows: 'backward' | 'forward' = 'backward') {
    this.thread = new ThreadClient(new URL('./pixel-worker.js', import.meta.url), 'assembling the video', { overlap, grows });
  }

  /**
   * Blends a decoded chunk (1, 3, F, H, W) in. Transfers its buffer: `chunk` must not be used afterwards.
   * `lazy` as PixelHistory.add's: leading frames converted only if read.
   */
  async add(chunk: Float32Tensor, lazy = 0): Promise<void> {
    const r = await this.thread.call({ op: 'add', dims: chunk.dims, data: chunk.data, lazy }, [chunk.data.buffer as ArrayBuffer]);
    this.frameCount = r.frameCount!;
    this.width = r.width!;
    this.height = r.height!;
  }

  /**
   * Frames [from, from + F) of the next chunk (1, 3, F, H, W), of `chunkFrames` frames in all, before it is whole:
   * PixelHistory.ahead, whose blended video frames come back. Transfers the buffer. Calls are handled in order,
   * so the chunk's add() after them finds them done.
   */
  async ahead(frames: Float32Tensor, from: number, chunkFrames: number): Promise<{ from: number; frames: Uint8Array } | null> {
    const r = await this.thread.call({ op: 'ahead', dims: frames.dims, data: frames.data, from, chunkFrames }, [frames.data.buffer as ArrayBuffer]);
    return r.data ? { from: r.from!, frames: r.data } : null;
  }

  /**
   * All frames so far from frame `from` on, earliest first, as (F, H, W, 3) uint8 buffers, taken when called: a
   * later add() does not change what a reader still iterating gets.
   */
  chunks(from = 0): AsyncIterable<Uint8Array> {
    const snap = ++this.snaps;
    this.thread.post({ op: 'snapshot', snap, from });
    const self = this;
    return (async function* () {
      try {
        for (;;) {
          const { data } = await self.thread.call({ op: 'next', snap });
          if (!data) return;
          yield data;
        }
      } finally {
        self.thread.post({ op: 'release', snap });
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
    await this.thread.close();
  }
}
