/**
 * The priority of the work done beside the event loop. Threads and processes that compute for a request
 * (ONNX Runtime's session workers and their thread pools, the VAE stitching and image workers, ffmpeg) run
 * nicer than the server's main thread, so that on a busy machine the event loop still gets the CPU whenever
 * it has something to do: health checks and cancels are answered promptly while a request saturates every
 * core. FRAMEPACK_WORKER_NICE (0-19, default 10) is that niceness.
 */
import { setPriority } from 'node:os';

export function backgroundNice(): number {
  const v = Number(process.env.FRAMEPACK_WORKER_NICE ?? 10);
  return Number.isInteger(v) && v >= 0 && v <= 19 ? v : 10;
}

/**
 * Lowers the priority of the calling thread (call it first thing in a worker thread). On Linux a priority
 * set for pid 0 applies to the calling thread only, and to the threads it starts later.
 */
export function lowerThisThread(): void {
  lowerProcess(0);
}

/** Lowers the priority of process `pid` (a child that computes, e.g. ffmpeg); 0 is the calling thread. */
export function lowerProcess(pid: number): void {
  const nice = backgroundNice();
  if (!nice) return;
  try {
    setPriority(pid, nice);
  } catch {
    // not permitted (or not Linux): normal priority
  }
}
