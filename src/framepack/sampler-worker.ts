/**
 * Worker thread of sampler-threads.ts: runs one UniPC pass (unipc-passes.ts) over the range it is given. The
 * pass's buffers are SharedArrayBuffer views, shared with the sampler, so nothing is copied either way.
 *
 * Messages: { id, pass, j0, j1 } -> { id }
 */
import { serveThread } from '../runtime/thread-rpc.js';
import { runPass, type Pass } from './unipc-passes.js';

serveThread<{ id: number; pass: Pass; j0: number; j1: number }>((msg) => {
  runPass(msg.pass, msg.j0, msg.j1);
  return { reply: {} };
});
