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
 * A spatial stitch opened `into` a temporal one is pushed into it, as window `index`, by the push of its last
 * tile, which then returns what the temporal push streamed. Its output buffer is then free, and the temporal
 * stitch keeps it for its next window's spatial stitch: a decode's windows reuse one buffer instead of each
 * touching new pages (on some hosts a page fault costs microseconds: ~40 ms a window at the 640 bucket). For
 * the same reason a temporal stitch touches its whole output as it opens, while the device runs the first
 * window, rather than the last window's frames after the last run; and tiles come back (`free`) once no blend
 * needs them: after a temporal push, or with the last tile of a spatial stitch, so that the session worker can
 * copy later tiles into them.
 *
 * Messages: { id, op: 'open', key, kind: 'temporal', channels, latentFrames, height, width, streamFrames?, ahead? }
 *           { id, op: 'open', key, kind: 'spatial', plan, into?: { key, index } }
 *           { id, op: 'push', key, index, dims, data }
 *           { id, op: 'finish', key }   { id, op: 'drop', key }
 * Replies:  { id, dims?, data?, frames?, ahead?, free? } or { id, error }.
 */
import { lowerThisThread } from '../runtime/priority.js';
import { serveThread } from '../runtime/thread-rpc.js';
import { sliceTime, toUint8Frames } from './sections.js';
import { block, SpatialStitcher, TemporalStitcher, type Block, type SpatialPlan } from './vae-tiling.js';

lowerThisThread();

type Stitcher = TemporalStitcher | SpatialStitcher;
type Request =
  | { id: number; op: 'open'; key: string; kind: 'temporal'; channels: number; latentFrames: number; height: number; width: number; streamFrames?: number; ahead?: boolean }
  | { id: number; op: 'open'; key: string; kind: 'spatial'; plan: SpatialPlan; into?: Into }
  | { id: number; op: 'push'; key: string; index: number; dims: Block['dims']; data: Float32Array }
  | { id: number; op: 'finish'; key: string }
  | { id: number; op: 'drop'; key: string };

type Into = { key: string; index: number };

const stitchers = new Map<string, Stitcher>();
/** spatial stitches that end in a temporal one: where their output goes */
const targets = new Map<string, Into>();
/** by temporal stitch: the buffer its last window's spatial stitch returned, for the next one */
const spares = new Map<string, Float32Array>();
/** by spatial stitch: the buffers of the tiles pushed so far */
const pushed = new Map<string, ArrayBuffer[]>();
type Reply = { dims?: Block['dims']; data?: Float32Array; frames?: Uint8Array; ahead?: Ahead; free?: ArrayBuffer[] };

/** A pushed tile's buffer, when the tile is all of it (only such come back to be written again). */
const whole = (a: Float32Array): ArrayBuffer[] => (a.byteOffset === 0 && a.buffer instanceof ArrayBuffer ? [a.buffer] : []);
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

function handle(msg: Request): Reply {
  switch (msg.op) {
    case 'open':
      if (msg.kind === 'temporal') {
        const t = new TemporalStitcher(msg.channels, msg.latentFrames, msg.height, msg.width);
        t.out.data.fill(0); // its pages now, not as the last window is written
        stitchers.set(msg.key, t);
        if (msg.streamFrames) streams.set(msg.key, { frames: msg.streamFrames, sent: 0, ahead: !!msg.ahead });
      } else {
        stitchers.set(msg.key, new SpatialStitcher(msg.plan, msg.into && spares.get(msg.into.key)));
        if (msg.into) {
          spares.delete(msg.into.key);
          targets.set(msg.key, msg.into);
        }
      }
      return {};
    case 'push': {
      const s = get(msg.key);
      s.push(msg.index, block(msg.dims, msg.data));
      if (s instanceof TemporalStitcher) return { ...streamed(msg.key, s), free: whole(msg.data) };
      const tiles = pushed.get(msg.key) ?? [];
      tiles.push(...whole(msg.data));
      pushed.set(msg.key, tiles);
      if (!s.complete) return {};
      const into = targets.get(msg.key);
      if (!into) return { free: tiles };
      const window = s.finish();
      forget(msg.key);
      const t = get(into.key);
      t.push(into.index, window);
      spares.set(into.key, new Float32Array(window.data.buffer)); // the whole buffer, which may be larger
      return { ...streamed(into.key, t), free: tiles };
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

/** Drops a stitch's state; a temporal stitch's takes the spatial stitches that end in it along. */
function forget(key: string): void {
  stitchers.delete(key);
  streams.delete(key);
  spares.delete(key);
  targets.delete(key);
  pushed.delete(key);
  for (const [k, into] of targets) if (into.key === key) forget(k);
}

serveThread<Request>((msg) => {
  const res = handle(msg);
  return { reply: res, transfer: [...[res.data, res.frames, res.ahead?.data].flatMap((a) => (a ? [a.buffer as ArrayBuffer] : [])), ...(res.free ?? [])] };
}, (msg) => forget(msg.key));
