/**
 * Worker thread that computes the DiT's rotary tables (nets/dit-rope.ts packedRope) for transformer.ts: at
 * 640 px they are about 10 MB of fresh float32, tens of milliseconds the event loop must not spend. The
 * tables are transferred out.
 *
 * Messages: { id, rope, indices, h, w } -> { tokens, half, cos, sin }
 */
import { lowerThisThread } from '../runtime/priority.js';
import { serveThread } from '../runtime/thread-rpc.js';
import { packedRope, type PackedFrameIndices, type RopeConfig } from '../nets/dit-rope.js';

lowerThisThread();

serveThread<{ id: number; rope: RopeConfig; indices: PackedFrameIndices; h: number; w: number }>((msg) => {
  const t = packedRope(msg.rope, msg.indices, msg.h, msg.w);
  return { reply: { ...t }, transfer: [t.cos.buffer as ArrayBuffer, t.sin.buffer as ArrayBuffer] };
});
