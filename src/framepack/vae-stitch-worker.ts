/**
 * Worker thread that stitches VAE tiles (vae-tiling.ts) so that blending and the copies of a section's
 * pixels (hundreds of MB at the 640 bucket) never run on the event loop. Tiles are transferred in,
 * the stitched result is transferred out; the main thread only moves buffers.
 *
 * A temporal stitch may stream: its output frames [0, streamFrames) come back as uint8 video frames
 * (sections.ts toUint8Frames) with the push that completes them, so that the video's encoder can start on them
 * before the decode ends.
 *
 * Messages: { id, op: 'open', key, kind: 'temporal', channels, latentFrames, height, width, streamFrames? }
 *           { id, op: 'open', key, kind: 'spatial', plan }
 *           { id, op: 'push', key, index, dims, data }
 *           { id, op: 'finish', key }   { id, op: 'drop', key }
 * Replies:  { id, dims?, data?, frames? } or { id, error }.
 */
import { lowerThisThread } from '../runtime/priority.js';
import { serveThread } from '../runtime/thread-rpc.js';
import { toUint8Frames } from './sections.js';
import { block, SpatialStitcher, TemporalStitcher, type Block, type SpatialPlan } from './vae-tiling.js';

lowerThisThread();

type Stitcher = TemporalStitcher | SpatialStitcher;
type Request =
  | { id: number; op: 'open'; key: string; kind: 'temporal'; channels: number; latentFrames: number; height: number; width: number; streamFrames?: number }
  | { id: number; op: 'open'; key: string; kind: 'spatial'; plan: SpatialPlan }
  | { id: number; op: 'push'; key: string; index: number; dims: Block['dims']; data: Float32Array }
  | { id: number; op: 'finish'; key: string }
  | { id: number; op: 'drop'; key: string };

const stitchers = new Map<string, Stitcher>();
/** temporal stitches that stream: frames to send in all, frames sent so far */
const streams = new Map<string, { frames: number; sent: number }>();

function get(key: string): Stitcher {
  const s = stitchers.get(key);
  if (!s) throw new Error(`no stitcher '${key}'`);
  return s;
}

/** The streamed frames a push completed, as (F, H, W, 3) uint8; none when the stitch does not stream. */
function streamed(key: string, s: Stitcher): Uint8Array | undefined {
  const st = streams.get(key);
  if (!st || !(s instanceof TemporalStitcher)) return undefined;
  const upTo = Math.min(s.written, st.frames);
  if (upTo <= st.sent) return undefined;
  const frames = toUint8Frames({ dtype: 'float32', dims: [1, ...s.out.dims], data: s.out.data }, st.sent, upTo);
  st.sent = upTo;
  return frames;
}

function handle(msg: Request): { dims?: Block['dims']; data?: Float32Array; frames?: Uint8Array } {
  switch (msg.op) {
    case 'open':
      stitchers.set(msg.key, msg.kind === 'temporal'
        ? new TemporalStitcher(msg.channels, msg.latentFrames, msg.height, msg.width)
        : new SpatialStitcher(msg.plan));
      if (msg.kind === 'temporal' && msg.streamFrames) streams.set(msg.key, { frames: msg.streamFrames, sent: 0 });
      return {};
    case 'push': {
      const s = get(msg.key);
      s.push(msg.index, block(msg.dims, msg.data));
      return { frames: streamed(msg.key, s) };
    }
    case 'finish': {
      const out = get(msg.key).finish();
      forget(msg.key);
      return { dims: out.dims, data: out.data };
    }
    case 'drop':
      forget(msg.key);
      return {};
  }
}

function forget(key: string): void {
  stitchers.delete(key);
  streams.delete(key);
}

serveThread<Request>((msg) => {
  const res = handle(msg);
  return { reply: res, transfer: [res.data, res.frames].flatMap((a) => (a ? [a.buffer as ArrayBuffer] : [])) };
}, (msg) => forget(msg.key));
