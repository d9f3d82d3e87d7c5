/**
 * Worker thread that stitches VAE tiles (vae-tiling.ts) so that blending and the copies of a section's
 * pixels (hundreds of MB at the 640 bucket) never run on the event loop. Tiles are transferred in,
 * the stitched result is transferred out; the main thread only moves buffers.
 *
 * Messages: { id, op: 'open', key, kind: 'temporal', channels, latentFrames, height, width }
 *           { id, op: 'open', key, kind: 'spatial', plan }
 *           { id, op: 'push', key, index, dims, data }
 *           { id, op: 'finish', key }   { id, op: 'drop', key }
 * Replies:  { id, dims?, data? } or { id, error }.
 */
import { lowerThisThread } from '../runtime/priority.js';
import { serveThread } from '../runtime/thread-rpc.js';
import { block, SpatialStitcher, TemporalStitcher, type Block, type SpatialPlan } from './vae-tiling.js';

lowerThisThread();

type Stitcher = TemporalStitcher | SpatialStitcher;
type Request =
  | { id: number; op: 'open'; key: string; kind: 'temporal'; channels: number; latentFrames: number; height: number; width: number }
  | { id: number; op: 'open'; key: string; kind: 'spatial'; plan: SpatialPlan }
  | { id: number; op: 'push'; key: string; index: number; dims: Block['dims']; data: Float32Array }
  | { id: number; op: 'finish'; key: string }
  | { id: number; op: 'drop'; key: string };

const stitchers = new Map<string, Stitcher>();

function get(key: string): Stitcher {
  const s = stitchers.get(key);
  if (!s) throw new Error(`no stitcher '${key}'`);
  return s;
}

function handle(msg: Request): { dims?: Block['dims']; data?: Float32Array } {
  switch (msg.op) {
    case 'open':
      stitchers.set(msg.key, msg.kind === 'temporal'
        ? new TemporalStitcher(msg.channels, msg.latentFrames, msg.height, msg.width)
        : new SpatialStitcher(msg.plan));
      return {};
    case 'push':
      get(msg.key).push(msg.index, block(msg.dims, msg.data));
      return {};
    case 'finish': {
      const out = get(msg.key).finish();
      stitchers.delete(msg.key);
      return { dims: out.dims, data: out.data };
    }
    case 'drop':
      stitchers.delete(msg.key);
      return {};
  }
}

serveThread<Request>((msg) => {
  const res = handle(msg);
  return { reply: res, transfer: res.data ? [res.data.buffer as ArrayBuffer] : [] };
}, (msg) => { stitchers.delete(msg.key); });
