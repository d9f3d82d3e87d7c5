/**
 * Prepares a network's quantized weight files (8-bit MatMulNBits, FP8) over several threads. The first
 * session of `low` quantizes every linear of the DiT and of LLaMA, 21 billion weights: on one thread that
 * took over 10 minutes of the H100 host's first setup (LLaMA alone 225 s), while the host had 15 idle cores
 * (`node dist/scripts/quantize-speed.js` measures the rate).
 * Files are independent, so each thread takes the next unprepared file until none is left. Files already
 * prepared are found here first, by a stat each: a placement that creates its sessions for every request
 * starts no thread once the files exist.
 *
 * Threads: up to 8 and one fewer than the machine's cores (each holds one ~64 MB slab of source and its
 * float32 copy at a time); on a machine of 1 or 2 cores the files are prepared on the calling thread.
 */
import { availableParallelism } from 'node:os';
import { isPrepared, prepareQuantized, Scratch, type QuantJob } from '../onnx/quantize.js';
import type { CreateResult } from './protocol.js';
import { ThreadClient } from './thread-rpc.js';

type Prepared = CreateResult['prepared'][number];

export const quantizeThreadCount = (cores = availableParallelism()): number => Math.min(8, Math.max(0, cores - 1));

export async function prepareAll(jobs: QuantJob[], threads = quantizeThreadCount()): Promise<Prepared[]> {
  const done = await Promise.all(jobs.map(isPrepared));
  const status: Prepared['status'][] = done.map((d) => (d ? 'cached' : 'written'));
  const todo = jobs.filter((_, i) => !done[i]);
  const count = Math.min(threads, todo.length);
  if (count < 2) {
    const scratch = new Scratch();
    for (const job of todo) await prepareQuantized(job, scratch);
  } else {
    const clients = Array.from({ length: count }, () => new ThreadClient(new URL('./quantize-worker.js', import.meta.url), 'quantizing weights'));
    let next = 0;
    const drain = async (c: ThreadClient) => {
      while (next < todo.length) await c.call({ job: todo[next++] });
    };
    try {
      await Promise.all(clients.map(drain));
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  }
  return jobs.map((j, i) => ({ file: j.file, status: status[i] }));
}
