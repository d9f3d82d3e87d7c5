/**
 * CUDA streams with a scheduling priority, for sessions that share a device at the same time: the first
 * section's VAE decode runs beside the second section's DiT calls, and the GPU's block scheduler gives free
 * SMs to the higher-priority stream's kernels first. A session gets one through the CUDA provider's
 * `user_compute_stream` option (the stream's address as a decimal string), which ONNX Runtime then runs all of
 * its kernels and copies on.
 *
 * A thin koffi binding of the four CUDA runtime calls it needs (cuda_runtime_api.h), in the libcudart the CUDA
 * provider itself loads. Streams are made once per (device, priority) in the thread that asks (a session
 * worker) and live as long as that thread's sessions may use them: until releaseStreams(), which the worker
 * calls as it ends. Blocking calls of microseconds; session workers only.
 */
import koffi from 'koffi';
import { appError } from '../errors.js';

export type StreamPriority = 'high' | 'low';

/** The CUDA runtime's soname per major version, newest first (the npm CUDA provider of 1.29.0 is built for 13). */
const CUDART = ['libcudart.so.13', 'libcudart.so.12', 'libcudart.so'];
const NON_BLOCKING = 1; // cudaStreamNonBlocking: no implicit synchronisation with the legacy default stream

interface Cudart {
  cudaSetDevice: (device: number) => number;
  cudaDeviceGetStreamPriorityRange: (least: number[], greatest: number[]) => number;
  cudaStreamCreateWithPriority: (stream: unknown[], flags: number, priority: number) => number;
  cudaStreamDestroy: (stream: unknown) => number;
  cudaGetErrorString: (code: number) => string;
}

// `lib` is kept: koffi unloads a library whose handle is garbage-collected
let loaded: { api: Cudart; lib: unknown } | null = null;
const streams = new Map<string, unknown>();

function cudart(): Cudart {
  if (loaded) return loaded.api;
  const errors: string[] = [];
  for (const name of CUDART) {
    try {
      const lib = koffi.load(name);
      const api: Cudart = {
        cudaSetDevice: lib.func('int cudaSetDevice(int device)'),
        cudaDeviceGetStreamPriorityRange: lib.func('int cudaDeviceGetStreamPriorityRange(_Out_ int* least, _Out_ int* greatest)'),
        cudaStreamCreateWithPriority: lib.func('int cudaStreamCreateWithPriority(_Out_ void** stream, unsigned int flags, int priority)'),
        cudaStreamDestroy: lib.func('int cudaStreamDestroy(void* stream)'),
        cudaGetErrorString: lib.func('const char* cudaGetErrorString(int code)'),
      };
      loaded = { api, lib };
      return api;
    } catch (e) {
      errors.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw appError('CUDA_RUNTIME_UNAVAILABLE', { detail: errors.join('; ') });
}

function check(call: string, code: number): void {
  if (code !== 0) throw appError('CUDA_CALL_FAILED', { call, code, detail: cudart().cudaGetErrorString(code) });
}

/** The address (decimal) of this thread's stream of `priority` on `deviceId`, made on first use. */
export function priorityStream(deviceId: number, priority: StreamPriority): string {
  const key = `${deviceId}:${priority}`;
  let stream = streams.get(key);
  if (!stream) {
    const rt = cudart();
    check('cudaSetDevice', rt.cudaSetDevice(deviceId));
    const least = [0], greatest = [0];
    check('cudaDeviceGetStreamPriorityRange', rt.cudaDeviceGetStreamPriorityRange(least, greatest));
    const out: unknown[] = [null];
    // lower numbers are higher priorities: greatest is the highest (-5 on current GPUs), least the default (0)
    check('cudaStreamCreateWithPriority', rt.cudaStreamCreateWithPriority(out, NON_BLOCKING, priority === 'high' ? greatest[0] : least[0]));
    stream = out[0];
    streams.set(key, stream);
  }
  return String(koffi.address(stream));
}

/**
 * CUDA provider options with `stream_priority` (high | low) replaced by the provider's user_compute_stream:
 * this thread's stream of that priority; without it, the options as they are.
 */
export function withStream(cuda: Record<string, string>, deviceId: number): Record<string, string> {
  const { stream_priority: priority, ...rest } = cuda;
  if (priority === undefined) return cuda;
  if (priority !== 'high' && priority !== 'low') {
    throw appError('RUNTIME_SETTING_INVALID', { name: 'stream_priority', value: priority, allowed: 'high, low' });
  }
  return { ...rest, user_compute_stream: priorityStream(deviceId, priority) };
}

/** Destroys this thread's streams: after the sessions that ran on them were released. */
export function releaseStreams(): void {
  for (const stream of streams.values()) loaded?.api.cudaStreamDestroy(stream);
  streams.clear();
}
