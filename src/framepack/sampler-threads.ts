/**
 * The sampler's element-wise passes split over worker threads (sampler-worker.ts), each a contiguous range of
 * the window, on buffers in shared memory. The passes are memory-bound loops over ~0.9M floats at 640 px
 * (tens of milliseconds a step on one core of a GPU server, where every millisecond leaves the GPU idle);
 * split over N threads, each thread takes 1/N of the elements and the event loop only waits for them.
 *
 * FRAMEPACK_SAMPLER_THREADS: how many; unset, 4 on machines with 8 or more cores and 0 (the passes run on the
 * event loop) below. Measured in the server on the H100 host (16 cores): 4 threads took the first section's
 * overhead beside its DiT calls from 3.1-3.8 % to 1.5-1.9 %. On a 2-core machine 2 threads take as long as
 * the event loop alone (9-10 ms a step at 640 px, `node dist/scripts/sampler-host.js --threads N`) and 1
 * thread is slower (14.6 ms).
 */
import { availableParallelism } from 'node:os';
import { appError } from '../errors.js';
import { ThreadClient } from '../runtime/thread-rpc.js';
import type { Pass } from './unipc-passes.js';

/** Threads when FRAMEPACK_SAMPLER_THREADS is unset, for a machine of `cores` cores. */
export const DEFAULT_SAMPLER_THREADS = (cores: number): number => (cores >= 8 ? 4 : 0);

export function samplerThreadCount(env: NodeJS.ProcessEnv = process.env, cores = availableParallelism()): number {
  const raw = env.FRAMEPACK_SAMPLER_THREADS?.trim();
  if (!raw) return DEFAULT_SAMPLER_THREADS(cores);
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 64) {
    throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_SAMPLER_THREADS', value: raw, allowed: 'an integer from 0 to 64' });
  }
  return n;
}

/** Buffers the threads can share: allocate the sampler's buffers with this when it runs on threads. */
export function sharedFloat32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(n * 4));
}
export function sharedFloat64(n: number): Float64Array {
  return new Float64Array(new SharedArrayBuffer(n * 8));
}

let pool: SamplerThreads | null = null;

export class SamplerThreads {
  private constructor(private readonly threads: ThreadClient[]) {}

  /** The process's threads, `count` of them (started on first use; idle threads keep nothing alive). */
  static get(count: number): SamplerThreads {
    if (pool && (pool.threads.length !== count || pool.threads.some((t) => t.failed))) {
      void pool.close();
      pool = null;
    }
    return (pool ??= new SamplerThreads(Array.from({ length: count },
      () => new ThreadClient(new URL('./sampler-worker.js', import.meta.url), 'sampler thread'))));
  }

  get size(): number { return this.threads.length; }

  /**
   * Runs `pass` over [0, n) in equal ranges, one per thread. Its arrays must be views of SharedArrayBuffers
   * (an ordinary buffer would be copied to each thread and the results lost).
   */
  async run(pass: Pass, n: number): Promise<void> {
    const k = this.threads.length;
    const chunk = Math.ceil(n / k);
    await Promise.all(this.threads.map((t, i) => t.call({ pass, j0: Math.min(n, i * chunk), j1: Math.min(n, (i + 1) * chunk) })));
  }

  async close(): Promise<void> {
    if (pool === this) pool = null;
    await Promise.all(this.threads.map((t) => t.close()));
  }
}
