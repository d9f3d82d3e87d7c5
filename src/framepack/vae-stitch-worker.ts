/**
 * Worker thread that stitches VAE tiles (vae-tiling.ts) so that blending and the copies of a section's
 * pixels (hundreds of MB at the 640 bucket) never run on the event loop. Tiles are transferred in,
 * the stitched result is transferred out; the main thread only moves buffers.
 *
 * A temporal stitch may stream: its output frames [0, streamFrames) come back as uint8 video frames
 * (sections.ts toUint8Frames) with the push that completes them, so that the video's encoder can start on them
 * before the decode ends. With `ahead`, the frames after those come back too, as float copies ({ from, dims,
 * data }), with every push that completes some but the last (whose frames the finished stitch returns anyway).
 *
 * Messages: { id, op: 'open', key, kind: 'temporal', channels, latentFrames, height, width, streamFrames?, ahead? }
 *           { id, op: 'open', key, kind: 'spatial', plan }
 *           { id, op: 'push', key, index, dims, data }
 *           { id, op: 'finish', key }   { id, op: 'drop', key }
 * Replies:  { id, dims?, data?, frames?, ahead? } or { id, error }.
 */
import { lowerThisThread } from '../runtime/priority.js';
import { serveThread } from '../runtime/thread-rpc.js';
import { sliceTime, toUint8Frames } from './sections.js';
import { block, SpatialStitcher, TemporalStitcher, type Block, type SpatialPlan } from './vae-tiling.js';

lowerThisThread();

type Stitcher = TemporalStitcher | SpatialStitcher;
type Request =
  | { id: number; op: 'open'; key: string; kind: 'temporal'; channels: number; latentFrames: number; height: number; width: number; streamFrames?: number; ahead?: boolean }
  | { id: number; op: 'open'; key: string; kind: 'spatial'; plan: SpatialPlan }
  | { id: number; op: 'push'; key: string; index: number; dims: Block['dims']; data: Float32Array }
  | { id: number; op: 'finish'; key: string }
  | { id: number; op: 'drop'; key: string };

const stitchers = new Map<string, Stitcher>();
/** temporal stitches that stream: frames to send as uint8, frames sent so far (float ones too, with `ahead`) */
const streams = new Map<string, { frames: number; sent: number; ahead: boolean }>();
type Ahead = { from: number; dims: Block['dims']; data: Float32Array };

function get(key: string): Stitcher {
  const s = stitchers.get(key);
  if (!s) throw new Error(`no stitcher '${key}'`);
  return s;
}

/**
 * The streamed frames a push completed: as (F, H, W, 3) uint8 up to `frames`, then (with `ahead`) as float
 * copies until the stitch is whole; none when the stitch does not stream.
 */
function streamed(key: string, s: Stitcher): { frames?: Uint8Array; ahead?: Ahead } {
  const st = streams.get(key);
  if (!st || !(s instanceof TemporalStitcher)) return {};
  const out: { frames?: Uint8Array; ahead?: Ahead } = {};
  const upTo = Math.min(s.written, st.frames);
  if (upTo > st.sent) {
    out.frames = toUint8Frames({ dtype: 'float32', dims: [1, ...s.out.dims], data: s.out.data }, st.sent, upTo);
    st.sent = upTo;
  }
  if (st.ahead && s.written < s.out.dims[1] && s.written > st.sent) {
    const copy = sliceTime({ dtype: 'float32', dims: [1, ...s.out.dims], data: s.out.data }, st.sent, s.written);
    out.ahead = { from: st.sent, dims: copy.dims.slice(1) as Block['dims'], data: copy.data };
    st.sent = s.written;
  }
  return out;
}

function handle(msg: Request): { dims?: Block['dims']; data?: Float32Array; frames?: Uint8Array; ahead?: Ahead } {
  switch (msg.op) {
    case 'open':
      stitchers.set(msg.key, msg.kind === 'temporal'
        ? new TemporalStitcher(msg.channels, msg.latentFrames, msg.height, msg.width)
        : new SpatialStitcher(msg.plan));
      if (msg.kind === 'temporal' && msg.streamFrames) streams.set(msg.key, { frames: msg.streamFrames, sent: 0, ahead: !!msg.ahead });
      return {};
    case 'push': {
      const s = get(msg.key);
      s.push(msg.index, block(msg.dims, msg.data));
      return streamed(msg.key, s);
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
  return { reply: res, transfer: [res.data, res.frames, res.ahead?.data].flatMap((a) => (a ? [a.buffer as ArrayBuffer] : [])) };
}, (msg) => forget(msg.key));
