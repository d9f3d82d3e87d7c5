/**
 * Where the networks run and how much of them stays in memory, decided once at setup and named in the logs.
 *
 *   high  every session created once and kept (LLaMA, CLIP, SigLIP, VAE, DiT); VAE decode untiled.
 *         FramePack's own "high_vram" mode.
 *   low   one large network on the device at a time. Per request, LLaMA, CLIP and SigLIP (and the VAE's
 *         encode) are created, run and released; then the DiT is created, samples every section and is
 *         released; then the VAE decodes every section and is released (also on a failure or a cancel).
 *         DiT and LLaMA with 8-bit weight-only MatMulNBits; VAE spatial tiling. FramePack's low-VRAM mode
 *         without its per-layer CPU streaming. Re-creating the DiT costs a few seconds per request (logged
 *         as "DiT created in ..."). Setup creates each network once and releases the per-request ones, so a
 *         broken checkpoint fails there.
 *   cpu   everything on the CPU in float32 (the parity path; slow for real sizes).
 *
 * Why sessions are released: ONNX Runtime's CUDA memory arena of a session only grows (by the end of a
 * request the DiT's holds several GiB of activations, the VAE's whatever cuDNN's algorithm search found
 * free) and, from Node, it can neither be configured nor shrunk (the binding passes only the device id).
 * Releasing the session is the one way to give that memory back.
 *
 * Environment: FRAMEPACK_PLACEMENT=auto|high|low|cpu, FRAMEPACK_EP=auto|cuda|cpu|webgpu,
 * FRAMEPACK_VAE_TILING=auto|on|off (the VAE's spatial tiling; auto: on in low only),
 * FRAMEPACK_DEVICE_ID=<n> (the CUDA / WebGPU device, counted as CUDA counts them, i.e. after
 * CUDA_VISIBLE_DEVICES).
 */
import { appError, AppError } from '../errors.js';
import type { Precision } from '../onnx/graph.js';
import type { ExecutionProvider } from './protocol.js';
import { cudaProviderStatus, parseProviderRequest, type ProviderStatus } from './providers.js';
import { probeVram, type GpuInfo, type VramProbe } from './vram.js';

export type PlacementPolicy = 'high' | 'low' | 'cpu';

/**
 * Free VRAM for `high`, from the H100 measurements in bench/results: with every network resident the
 * sessions hold 39.6 GiB and a DiT forward at the 640 bucket brings the device to 48.1 GiB; the untiled VAE
 * decode of a section then ran out of memory in the ~24 GiB left of 72.5 GiB (alone it fails within 24 GiB too:
 * cuDNN's exhaustive algorithm search sizes its workspaces from free memory and the arena keeps them). A
 * whole 80 GB card was not shown to be enough, so an H200 (139 GiB) qualifies and an H100 (79 GiB free) runs
 * `low`.
 */
export const HIGH_MIN_FREE_MIB = 88 * 1024;

/**
 * Free VRAM for `low`: the whole default request ran on an H100 with all but 19.5 GiB held by another process,
 * peaking at 17.4 GiB (the 8-bit DiT's stage: 17.9 GiB in the benchmark; LLaMA 10.1 GiB, the tiled VAE decode
 * 10.6 GiB). Below this the CPU is the only safe choice.
 */
export const LOW_MIN_FREE_MIB = 20 * 1024;

/**
 * How long a network's sessions live.
 *   resident     kept from setup (the VAE's: from first use) until shutdown.
 *   per-request  created when a request reaches the network and released when its work is done: the
 *                encoders once the prompt and image conditioning exist, the DiT once every section is
 *                sampled, the VAE after the encoding and after the decodes (and all of them when the
 *                request ends). Per-request encoders and a per-request DiT never exist at the same time.
 */
export type Lifetime = 'resident' | 'per-request';

export interface NetworkLifetimes {
  /** LLaMA, CLIP and SigLIP */
  encoders: Lifetime;
  dit: Lifetime;
  /**
   * About 0.5 GiB of weights, but cuDNN's exhaustive convolution search sizes its workspaces from the free
   * device memory (90% of it) and the session's arena keeps what it grew to: a resident VAE holds on to
   * whatever was free at its first decode. Per-request, its sessions are released after the encoding and
   * again after the decodes, and each request pays the search again (a few seconds).
   */
  vae: Lifetime;
}

export interface Placement {
  policy: PlacementPolicy;
  ep: ExecutionProvider;
  deviceId: number;
  gpu?: GpuInfo;
  lifetime: NetworkLifetimes;
  /** 8-bit weight-only quantization of the two large networks. */
  quantize: { dit?: 8; llama?: 8 };
  vaeTiling: boolean;
  precision: { dit: Precision; encoders: Precision; vae: Precision };
  /** Why this placement, for the logs. */
  reason: string;
}

export interface PlacementInputs {
  env?: NodeJS.ProcessEnv;
  /** Injected in tests; probed with nvidia-smi otherwise. */
  vram?: VramProbe;
  cuda?: ProviderStatus;
  log?: (line: string) => void;
}

function parsePolicy(value: string | undefined): PlacementPolicy | 'auto' {
  const v = (value ?? 'auto').trim().toLowerCase() || 'auto';
  if (v === 'auto' || v === 'high' || v === 'low' || v === 'cpu') return v;
  throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_PLACEMENT', value, allowed: 'auto, high, low, cpu' });
}

function parseTiling(value: string | undefined): boolean | undefined {
  const v = (value ?? 'auto').trim().toLowerCase() || 'auto';
  if (v === 'auto') return undefined;
  if (v === 'on' || v === 'off') return v === 'on';
  throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_VAE_TILING', value, allowed: 'auto, on, off' });
}

function parseDeviceId(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_DEVICE_ID', value, allowed: 'an integer >= 0' });
  return n;
}

/**
 * The GPUs as CUDA numbers them: nvidia-smi lists every GPU by its physical index, CUDA only those in
 * CUDA_VISIBLE_DEVICES, renumbered from 0 in that order.
 */
export function cudaVisible(gpus: GpuInfo[], visible: string | undefined): GpuInfo[] {
  if (visible === undefined) return gpus;
  const ids = visible.split(',').map((s) => s.trim()).filter(Boolean);
  if (!ids.every((s) => /^\d+$/.test(s))) return gpus;     // UUID / MIG names: keep nvidia-smi's order
  return ids.map(Number).map((i) => gpus.find((g) => g.index === i)).filter((g): g is GpuInfo => g !== undefined);
}

function policyFor(free: number): PlacementPolicy {
  return free >= HIGH_MIN_FREE_MIB ? 'high' : free >= LOW_MIN_FREE_MIB ? 'low' : 'cpu';
}

const ALL_RESIDENT: NetworkLifetimes = { encoders: 'resident', dit: 'resident', vae: 'resident' };
const ONE_LARGE_AT_A_TIME: NetworkLifetimes = { encoders: 'per-request', dit: 'per-request', vae: 'per-request' };

function build(policy: PlacementPolicy, ep: ExecutionProvider, deviceId: number, gpu: GpuInfo | undefined, reason: string): Placement {
  if (policy === 'cpu' || ep === 'cpu') {
    // The VAE's CPU arena keeps a full-resolution decode's activations (3.8 GB for the tiny model at 640 px,
    // tens of GB for the real one): released after each request, an idle server holds only the weights.
    return { policy: 'cpu', ep: 'cpu', deviceId: 0, lifetime: { ...ALL_RESIDENT, vae: 'per-request' }, quantize: {}, vaeTiling: false,
      precision: { dit: 'float32', encoders: 'float32', vae: 'float32' }, reason };
  }
  // WebGPU has no bfloat16 and the DiT gives NaN in float16, so its DiT stays in float32 there.
  const dit: Precision = ep === 'cuda' ? 'bfloat16' : 'float32';
  const low = policy === 'low';
  return { policy, ep, deviceId, gpu, lifetime: { ...(low ? ONE_LARGE_AT_A_TIME : ALL_RESIDENT) },
    quantize: low ? { dit: 8, llama: 8 } : {}, vaeTiling: low, precision: { dit, encoders: 'float16', vae: 'float16' }, reason };
}

const mib = (n: number) => `${(n / 1024).toFixed(1)} GiB`;

export async function choosePlacement(inputs: PlacementInputs = {}): Promise<Placement> {
  const env = inputs.env ?? process.env;
  const tiling = parseTiling(env.FRAMEPACK_VAE_TILING);
  const p = await choosePolicy(inputs, env);
  if (tiling === undefined || tiling === p.vaeTiling) return p;
  return { ...p, vaeTiling: tiling, reason: `${p.reason}; FRAMEPACK_VAE_TILING=${tiling ? 'on' : 'off'}` };
}

async function choosePolicy(inputs: PlacementInputs, env: NodeJS.ProcessEnv): Promise<Placement> {
  const forced = parsePolicy(env.FRAMEPACK_PLACEMENT);
  const request = parseProviderRequest(env.FRAMEPACK_EP);
  if (request === null) throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_EP', value: env.FRAMEPACK_EP, allowed: 'auto, cuda, cpu, webgpu' });
  const wantedDevice = parseDeviceId(env.FRAMEPACK_DEVICE_ID);

  if (forced === 'cpu' || request === 'cpu') {
    const why = forced === 'cpu' ? 'FRAMEPACK_PLACEMENT=cpu' : 'FRAMEPACK_EP=cpu';
    return build('cpu', 'cpu', 0, undefined, why);
  }

  const vram = inputs.vram ?? await probeVram({ env });
  const gpus = cudaVisible(vram.gpus, env.CUDA_VISIBLE_DEVICES);
  const deviceId = wantedDevice ?? 0;
  const gpu = gpus[deviceId];
  if (wantedDevice !== undefined && gpus.length > 0 && !gpu) {
    throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_DEVICE_ID', value: wantedDevice, allowed: `0..${gpus.length - 1} (${gpus.length} visible GPUs)` });
  }

  let ep: ExecutionProvider;
  let epWhy: string;
  if (request === 'webgpu') {
    ep = 'webgpu';
    epWhy = 'FRAMEPACK_EP=webgpu';
  } else {
    const cuda = gpu ? (inputs.cuda ?? await cudaProviderStatus({ env })) : undefined;
    if (gpu && cuda?.available) {
      ep = 'cuda';
      epWhy = `CUDA provider ${cuda.detail}`;
    } else if (request === 'cuda' || (forced !== 'auto')) {
      const detail = !gpu ? (vram.reason ?? 'no GPU is visible') : cuda!.detail;
      throw appError('EP_UNAVAILABLE', { what: request === 'cuda' ? 'FRAMEPACK_EP=cuda' : `FRAMEPACK_PLACEMENT=${forced}`, detail });
    } else {
      return build('cpu', 'cpu', 0, undefined, !gpu ? `no GPU: ${vram.reason ?? 'none visible'}` : `GPU found but ${cuda!.detail}`);
    }
  }

  const where = gpu ? `${gpu.name}, ${mib(gpu.freeMiB)} free of ${mib(gpu.totalMiB)}` : 'no nvidia-smi figures';
  if (forced !== 'auto') return build(forced, ep, deviceId, gpu, `FRAMEPACK_PLACEMENT=${forced}; ${epWhy}; ${where}`);
  if (!gpu) return build('low', ep, deviceId, gpu, `${epWhy}; free memory unknown, so low`);
  const policy = policyFor(gpu.freeMiB);
  const rule = policy === 'high' ? `>= ${mib(HIGH_MIN_FREE_MIB)} free`
    : policy === 'low' ? `< ${mib(HIGH_MIN_FREE_MIB)} free` : `< ${mib(LOW_MIN_FREE_MIB)} free, too little for the 8-bit DiT`;
  return build(policy, policy === 'cpu' ? 'cpu' : ep, deviceId, gpu, `${where} (${rule}); ${epWhy}`);
}

/** One log line naming the policy and what it implies. */
export function describePlacement(p: Placement): string {
  const device = p.ep === 'cpu' ? 'cpu' : `${p.ep}:${p.deviceId}`;
  const tiling = p.vaeTiling ? 'VAE tiled' : 'VAE untiled';
  const what = p.policy === 'high' ? `every session resident; ${tiling}`
    : p.policy === 'low' ? `encoders, DiT, VAE created per request in turn; 8-bit DiT and LLaMA; ${tiling}`
      : 'float32 on the CPU';
  return `placement: ${p.policy} on ${device} (${what}; DiT ${p.precision.dit}, encoders ${p.precision.encoders}): ${p.reason}`;
}

/** Messages ONNX Runtime's CUDA / cuDNN / cuBLAS paths and its arena use when device memory runs out. */
const GPU_OOM = [
  /CUDA (?:failure|error) 2\b/i, /out of memory/i, /cudaErrorMemoryAllocation/, /CUBLAS_STATUS_ALLOC_FAILED/,
  /CUDNN_STATUS_ALLOC_FAILED/, /BFCArena.*(?:Available memory|Failed to allocate)/s, /Failed to allocate memory for requested buffer/,
];

export function isGpuOutOfMemory(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return GPU_OOM.some((re) => re.test(message));
}

/**
 * The catalogue error for an ORT out-of-memory failure, or the error itself when it is something else.
 * Not fatal: the prediction fails, the server stays ready for the next one.
 */
export function mapOrtError(err: unknown, ep: ExecutionProvider): unknown {
  // the CPU arena reports "Failed to allocate memory" too: that is host memory, not the GPU's
  if (ep === 'cpu' || err instanceof AppError || !isGpuOutOfMemory(err)) return err;
  const first = (err instanceof Error ? err.message : String(err)).split('\n')[0].slice(0, 300);
  return appError('GPU_OUT_OF_MEMORY', { detail: first }, err);
}
