/**
 * Worker thread that holds the video being assembled (sections.ts PixelHistory): blending a decoded chunk
 * into it and converting frames to uint8 are hundreds of milliseconds of JavaScript per section at 640 px,
 * on hundreds of MB of short-lived arrays, none of which may run on (or be collected by) the event loop.
 * Chunks are transferred in, uint8 frames transferred out. One worker per video (video-pixels.ts).
 *
 * Messages: { id, op: 'add', dims, data, lazy } -> { id, frameCount, width, height }
 *           { id, op: 'ahead', dims, data, from, chunkFrames } -> { id, from?, data? }   (PixelHistory.ahead)
 *           { op: 'snapshot', snap, from }      (no reply: the frames from `from` on as they are now, read with 'next')
 *           { id, op: 'next', snap }            -> { id, data? } (none when the snapshot is exhausted)
 *           { op: 'release', snap }
 * Errors:   { id, error }.
 */
import { workerData } from 'node:worker_threads';
import { lowerThisThread } from '../runtime/priority.js';
import { serveThread } from '../runtime/thread-rpc.js';
import { PixelHistory } from './sections.js';

lowerThisThread();

type Request =
  | { id: number; op: 'add'; dims: number[]; data: Float32Array; lazy: number }
  | { id: number; op: 'ahead'; dims: number[]; data: Float32Array; from: number; chunkFrames: number }
  | { id?: undefined; op: 'snapshot'; snap: number; from: number }
  | { id: number; op: 'next'; snap: number }
  | { id?: undefined; op: 'release'; snap: number };

const { overlap, grows } = workerData as { overlap: number; grows: 'backward' | 'forward' };
const pixels = new PixelHistory(overlap, grows);
const snapshots = new Map<number, Iterator<Uint8Array>>();

function handle(msg: Request): { data?: Uint8Array; from?: number; frameCount?: number; width?: number; height?: number } | null {
  switch (msg.op) {
    case 'add':
      pixels.add({ dtype: 'float32', dims: msg.dims, data: msg.data }, msg.lazy);
      return { frameCount: pixels.frameCount, width: pixels.width, height: pixels.height };
    case 'ahead': {
      const r = pixels.ahead({ dtype: 'float32', dims: msg.dims, data: msg.data }, msg.from, msg.chunkFrames);
      // a copy: the history keeps the frames for the chunk's add
      return r ? { from: r.from, data: r.frames.slice() } : {};
    }
    case 'snapshot':
      snapshots.set(msg.snap, pixels.chunks(msg.from)[Symbol.iterator]());
      return null;
    case 'next': {
      const next = snapshots.get(msg.snap)?.next();
      if (!next || next.done) {
        snapshots.delete(msg.snap);
        return {};
      }
      // a copy: finished chunks stay in the history and in other snapshots
      return { data: next.value.slice() };
    }
    case 'release':
      snapshots.delete(msg.snap);
      return null;
  }
}

serveThread<Request>((msg) => {
  const res = handle(msg);
  return res && { reply: res, transfer: res.data ? [res.data.buffer as ArrayBuffer] : [] };
});
