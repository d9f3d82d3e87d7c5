/**
 * Worker thread that holds a generation's latent history (sections.ts LatentHistory / ForwardHistory). Each
 * section copies the whole history once to grow it and slices the next section's conditioning and decode
 * window out of it: megabytes of fresh memory per section at 640 px, which the event loop must not touch
 * (history-thread.ts). Tensors are transferred both ways.
 *
 * workerData: { mode, start: { dims, data } }
 * Messages:   { id, op: 'conditioning', post? }       -> { cleanLatents, cleanLatents2x, cleanLatents4x }
 *             { id, op: 'push', generated, plan, chunk } -> { generated, chunk? }
 *             { id, op: 'decodeSlice', plan, lws }      -> { latents }
 * Errors:     { id, error }.
 */
import { workerData } from 'node:worker_threads';
import { lowerThisThread } from '../runtime/priority.js';
import { serveThread } from '../runtime/thread-rpc.js';
import { createHistory, type Float32Tensor, type SamplingMode, type SectionPlan } from './sections.js';

lowerThisThread();

type Wire = { dims: number[]; data: Float32Array };
type Request =
  | { id: number; op: 'conditioning'; post?: Wire }
  | { id: number; op: 'push'; generated: Wire; plan: SectionPlan; chunk: boolean }
  | { id: number; op: 'decodeSlice'; plan: SectionPlan; lws: number };

const tensor = (w: Wire): Float32Tensor => ({ dtype: 'float32', dims: w.dims, data: w.data });
const { mode, start } = workerData as { mode: SamplingMode; start: Wire };
const history = createHistory(mode, tensor(start));

serveThread<Request>((msg) => {
  switch (msg.op) {
    case 'conditioning': {
      const c = history.conditioning(msg.post && tensor(msg.post));
      return { reply: { ...c }, transfer: [c.cleanLatents, c.cleanLatents2x, c.cleanLatents4x].map((t) => t.data.buffer as ArrayBuffer) };
    }
    case 'push': {
      // the history keeps a copy of the chunk: the chunk itself can leave
      const chunk = history.push(tensor(msg.generated), msg.plan);
      return msg.chunk
        ? { reply: { generated: history.generated, chunk }, transfer: [chunk.data.buffer as ArrayBuffer] }
        : { reply: { generated: history.generated } };
    }
    case 'decodeSlice': {
      const latents = history.decodeSlice(msg.plan, msg.lws);
      return { reply: { latents }, transfer: [latents.data.buffer as ArrayBuffer] };
    }
  }
});
