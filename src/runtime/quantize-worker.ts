/**
 * Worker thread that writes one prepared weight file at a time (onnx/quantize.ts prepareQuantized), for
 * quantize-threads.ts.
 *
 * Messages: { id, job } -> { status: 'cached' | 'written' }
 */
import { prepareQuantized, type QuantJob } from '../onnx/quantize.js';
import { lowerThisThread } from './priority.js';
import { serveThread } from './thread-rpc.js';

lowerThisThread();

serveThread<{ id: number; job: QuantJob }>(async (msg) => ({ reply: { status: await prepareQuantized(msg.job) } }));
