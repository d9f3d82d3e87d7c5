/**
 * Which ONNX Runtime execution provider to use.
 *
 * The onnxruntime-node package bundles the CPU and WebGPU providers; the CUDA provider is a separate
 * library (`libonnxruntime_providers_cuda.so`, version-locked to the core) that must sit next to
 * `libonnxruntime.so.1`, and that needs the CUDA / cuBLAS / cuDNN libraries it was built against. The
 * Docker image installs it; elsewhere it is usually absent. "CUDA when its provider library loads": the
 * library is dlopen-ed in a short-lived child process, so a missing dependency (say libcublas.so.13) is
 * reported by name and nothing is loaded into the server process itself. WebGPU is used only when asked
 * for (FRAMEPACK_EP=webgpu): it runs, but far slower than CUDA and without bfloat16.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { appError } from '../errors.js';
import type { ExecutionProvider } from './protocol.js';

export const CUDA_PROVIDER_LIB = 'libonnxruntime_providers_cuda.so';

/** The folder holding onnxruntime-node's libonnxruntime.so.1 for this platform. */
export function ortLibDir(): string {
  const require = createRequire(import.meta.url);
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
}

export interface ProviderStatus {
  available: boolean;
  /** What was found, for the logs: the library path when available, else why not. */
  detail: string;
}

/**
 * Loads `file` with dlopen in a child Node process. A library that is not a Node addon loads and then fails
 * with "did not self-register": that failure means every dependency resolved.
 */
function dlopenProbe(file: string, timeoutMs: number, env: NodeJS.ProcessEnv): Promise<{ ok: boolean; message: string }> {
  const script = 'try { process.dlopen({ exports: {} }, process.argv[1]); console.log("OK") } catch (e) { console.log(String(e.message)) }';
  return new Promise((resolve) => {
    execFile(process.execPath, ['-e', script, file], { timeout: timeoutMs, env }, (err, stdout) => {
      if (err && !stdout) { resolve({ ok: false, message: err.message.split('\n')[0] }); return; }
      const message = stdout.trim().split('\n')[0] ?? '';
      // The real provider then stops at "undefined symbol: Provider_GetHost": that symbol comes from
      // libonnxruntime_providers_shared.so, which ONNX Runtime loads globally before the provider. The loader
      // reports it only after every NEEDED library (libcublas, libcudart, ...) was found, so it means loadable.
      resolve({ ok: message === 'OK' || /did not self-register|Module did not|undefined symbol: Provider_GetHost/.test(message), message });
    });
  });
}

export async function cudaProviderStatus(opts: { libDir?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ProviderStatus> {
  if (process.platform !== 'linux') return { available: false, detail: `the CUDA provider is set up for Linux only (this is ${process.platform})` };
  const dir = opts.libDir ?? ortLibDir();
  const lib = join(dir, CUDA_PROVIDER_LIB);
  if (!existsSync(lib)) {
    return { available: false, detail: `${CUDA_PROVIDER_LIB} is not installed next to libonnxruntime.so.1 in ${dir}` };
  }
  const probe = await dlopenProbe(lib, opts.timeoutMs ?? 20_000, opts.env ?? process.env);
  if (!probe.ok) return { available: false, detail: `${lib} does not load: ${probe.message} (check LD_LIBRARY_PATH for the CUDA libraries)` };
  return { available: true, detail: lib };
}

export type ProviderRequest = ExecutionProvider | 'auto';

export function parseProviderRequest(value: string | undefined): ProviderRequest | null {
  const v = (value ?? 'auto').trim().toLowerCase() || 'auto';
  return v === 'auto' || v === 'cpu' || v === 'cuda' || v === 'webgpu' ? v : null;
}

export type CudaNetwork = 'default' | 'dit' | 'vae' | 'encoders';

/**
 * The CUDA provider's options per network (ONNX Runtime's string keys), chosen by measurement
 * (docs/gpu.md):
 *   arena_extend_strategy kSameAsRequested  the arena grows by what a run asks for, not to the next power of two
 *                                           (which left GiBs unused), and arena shrinkage can give it back;
 *   use_tf32 0                              float32 matrix products in float32, as PyTorch does by default: the
 *                                           float32 graphs reach the fixtures' 1e-4 on CUDA; the half-precision
 *                                           graphs have only small float32 islands, so this costs nothing there;
 *   cudnn_conv_algo_search HEURISTIC        cuDNN's heuristic picks a convolution algorithm in milliseconds; the
 *                                           exhaustive search (ONNX Runtime's default) took 0.5-1.2 s per new
 *                                           input shape and sizes its workspaces from the free device memory;
 *                                           under it every VAE run is as slow as the first (the untiled
 *                                           decode 28.0 s against 5.17 s, in 2 x 2 tiles 33.1 s against
 *                                           4.15 s on the H100).
 * Measured and left unset: prefer_nhwc (the VAE's decode 5.51 s against 5.17 s), sdpa_kernel (by default ORT
 * already runs the DiT's bfloat16 attention on cuDNN flash attention, at PyTorch's time per call).
 * FRAMEPACK_CUDA_OPTIONS overrides them: "key=value;..." for every network, "vae:key=value" for one
 * (networks: dit, vae, encoders, default).
 */
export function cudaProviderOptions(network: CudaNetwork, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const options: Record<string, string> = {
    arena_extend_strategy: 'kSameAsRequested',
    use_tf32: '0',
    cudnn_conv_algo_search: 'HEURISTIC',
  };
  for (const [scope, key, value] of parseCudaOverrides(env.FRAMEPACK_CUDA_OPTIONS)) {
    if (scope === null || scope === network) options[key] = value;
  }
  return options;
}

/** "key=value;vae:key=value" -> [scope, key, value]; malformed entries are a RUNTIME_SETTING_INVALID error. */
export function parseCudaOverrides(value: string | undefined): Array<[string | null, string, string]> {
  const out: Array<[string | null, string, string]> = [];
  for (const entry of (value ?? '').split(/[;,]/).map((s) => s.trim()).filter(Boolean)) {
    const m = /^(?:(default|dit|vae|encoders):)?([a-z0-9_]+)=(.+)$/.exec(entry);
    if (!m) throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_CUDA_OPTIONS', value, allowed: '"key=value;network:key=value" (networks: dit, vae, encoders, default)' });
    out.push([m[1] ?? null, m[2], m[3]]);
  }
  return out;
}
