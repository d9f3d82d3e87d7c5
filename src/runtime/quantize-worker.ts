/**
 * Worker thread that writes one prepared weight file at a time (onnx/quantize.ts prepareQuantized), for
 * quantize-threads.ts.
 *
 * Messages: { id, job } -> { status: 'cached' | 'written' }
 */
import { prepareQuantized, Scratch, type QuantJob } from '../onnx/quantize.js';
import { lowerThisThread } from './priority.js';
import { serveThread } from './thread-rpc.js';

lowerThisThread();

const scratch = new Scratch(); // this thread's slab memory, for every file it writes
serveThread<{ id: number; job: QuantJob }>(async (msg) => ({ reply: { status: await prepareQuantized(msg.job, scratch) } }));
