/**
 * Where the networks run and how much of them stays in memory, decided once at setup and named in the logs.
 *
 *   high    every session created once and kept (LLaMA, CLIP, SigLIP, VAE, DiT): FramePack's own
 *           "high_vram" mode. The VAE decodes untiled only with UNTILED_VAE_MIN_FREE_MIB free (an 80 GB
 *           card decodes in 2 x 2 spatial tiles: the untiled decode ran out of memory there).
 *   medium  the bf16 DiT and the VAE resident (VAE tiled); LLaMA, CLIP and SigLIP created per request
 *           and released once the conditioning exists. The DiT gives its activations back to the device after
 *           each section and the VAE after each decode (arena shrinkage), so the encoders of the next request
 *           and the decodes find the room they need next to the DiT's weights.
 *   low     one large network on the device at a time. Per request, LLaMA, CLIP and SigLIP (and the VAE's
 *         encode) are created, run and released; then the DiT is created, samples every section and is
 *         released; then the VAE decodes every section and is released (also on a failure or a cancel).
 *         DiT and LLaMA with 8-bit weight-only MatMulNBits; VAE spatial tiling. FramePack's low-VRAM mode
 *         without its per-layer CPU streaming. Re-creating the DiT costs a few seconds per request (logged
 *         as "DiT created in ..."). Setup creates each network once and releases the per-request ones, so a
 *         broken checkpoint fails there.
 *   cpu   everything on the CPU in float32 (the parity path; slow for real sizes).
 *
 * Memory: every CUDA session's arena grows by what a run asks for (arena_extend_strategy kSameAsRequested,
 * providers.ts), and stages whose peak is transient (the VAE's encode and decodes; the DiT between sections
 * in `medium`) give it back with ONNX Runtime's arena shrinkage. Releasing a session frees everything else.
 *
 * Environment: FRAMEPACK_PLACEMENT=auto|high|medium|low|cpu, FRAMEPACK_EP=auto|cuda|cpu|webgpu,
 * FRAMEPACK_VAE_TILING=auto|on|off (the VAE's spatial tiling; auto: on in low only),
 * FRAMEPACK_VAE_GRID=RxC (the first layout of 'fit' tiles; default 2x2),
 * FRAMEPACK_DECODE_BESIDE_SAMPLING=auto|on|off (a section decodes while the next samples; auto: high on CUDA),
 * FRAMEPACK_DEVICE_ID=<n> (the CUDA / WebGPU device, counted as CUDA counts them, i.e. after
 * CUDA_VISIBLE_DEVICES).
 */
import { appError, AppError } from '../errors.js';
import type { Precision } from '../onnx/graph.js';
import type { ExecutionProvider } from './protocol.js';
import { cudaProviderStatus, parseProviderRequest, type ProviderStatus } from './providers.js';
import { cudaVisible, probeVram, type GpuInfo, type VramProbe } from './vram.js';

export type PlacementPolicy = 'high' | 'medium' | 'low' | 'cpu';

/**
 * Free VRAM for `high`: with every network resident and the VAE in 2 x 2 tiles the default request peaked at
 * 62.4 GiB with 75.1 GiB free (bench/results/2026-12-05-h200-round2.json, an H200 held to an 80 GB card's free
 * memory; an idle H100 80GB shows 79.2 GiB); with diffusers' tiles at 59.9 GiB on an H100, flat over ten
 * requests (2026-12-05-h100-c-api.json).
 */
export const HIGH_MIN_FREE_MIB = 64 * 1024;

/**
 * Free VRAM from which `high` on CUDA builds the DiT with LoRA inputs by default (FRAMEPACK_LORA=auto). On the
 * H100 (79.2 GiB free) the LoRA graphs held 47.1 GiB at READY against 43.3 GiB for the plain ones, and the
 * default request with a rank-32 LoRA on every linear layer peaked at 68.1 GiB (62.0 GiB plain); 72 GiB leaves
 * the plain `high` margin plus room for larger LoRAs (bench/results/2026-12-07-h100-round12.json).
 */
export const LORA_GRAPHS_MIN_FREE_MIB = 72 * 1024;

/**
 * Free VRAM for the untiled VAE decode (FramePack's own high-VRAM decode) beside the resident networks: on the
 * H100 it ran out of memory at 76.4 GiB in use (the decode had taken ~37 GiB and asked for more), with and
 * without cuDNN's maximum workspace. Below this figure the VAE decodes in spatial tiles. 88 GiB is an estimate
 * that an H200 (139 GiB) meets; it was not measured there.
 */
export const UNTILED_VAE_MIN_FREE_MIB = 88 * 1024;

/**
 * Free VRAM for `medium` (DiT resident, encoders per request, VAE tiled): the default request ran with 44.1 GiB
 * free and peaked at 43.6 GiB (2026-12-05-h200-round2.json; its VAE moved from 2 x 2 to 3 x 3 tiles after
 * running out of memory once); on the H100 held to 48 GiB, with 43.5 GiB free, it peaked at 43.3 GiB (28.3 GiB at
 * READY) and took 56.3 s (2026-12-07-h100-round15.json).
 */
export const MEDIUM_MIN_FREE_MIB = 44 * 1024;

/** The first layout of the 'fit' decode tiles in `high` and `medium`. */
export const DEFAULT_VAE_GRID = [2, 2] as const;

/**
 * Free VRAM for `low`: the whole default request ran on an H100 with all but 19.5 GiB held by another process,
 * peaking at 17.4 GiB on onnxruntime-node (2026-11-25) and at 18.7 GiB on the C API (2026-12-06, 94.2 s;
 * 2026-12-07-h100-round15.json, 79.0 s).
 * Below this the CPU is the only safe choice.
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
   * About 0.5 GiB of weights; its activations are the largest transient peak of a request (an untiled
   * section decode took more than 37 GiB on CUDA). Per-request, its sessions are released after the encoding
   * and again after the decodes.
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
  /**
   * How a tiled decode tiles: 'diffusers' (the original's low-VRAM tiles: 32 latents, 16 per window at the
   * 640 bucket) or 'fit' (equal tiles in `vaeGrid`, then more of them after running out of memory).
   */
  vaeTiles: 'diffusers' | 'fit';
  /** the first 'fit' layout, rows x cols (smaller ones follow on out of memory) */
  vaeGrid: readonly [number, number];
  /** the DiT's activations go back to the device after each section (arena shrinkage) */
  shrinkDitAfterSection: boolean;
  /**
   * A section's decode runs while the next section samples (the VAE's session on its own worker and CUDA
   * stream), so that only the last decode is on the critical path. Needs both networks resident and room for a
   * decode beside the DiT's activations: `high` on CUDA.
   */
  decodeBesideSampling: boolean;
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
  if (v === 'auto' || v === 'high' || v === 'medium' || v === 'low' || v === 'cpu') return v;
  throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_PLACEMENT', value, allowed: 'auto, high, medium, low, cpu' });
}

/** auto -> undefined (the placement decides), on/off -> true/false. */
function parseOnOff(name: string, value: string | undefined): boolean | undefined {
  const v = (value ?? 'auto').trim().toLowerCase() || 'auto';
  if (v === 'auto') return undefined;
  if (v === 'on' || v === 'off') return v === 'on';
  throw appError('RUNTIME_SETTING_INVALID', { name, value, allowed: 'auto, on, off' });
}

function parseGrid(value: string | undefined): readonly [number, number] | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const m = /^([1-9])x([1-9])$/.exec(value.trim().toLowerCase());
  if (!m) throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_VAE_GRID', value, allowed: 'RxC, rows and columns of tiles from 1 to 9 (2x2)' });
  return [Number(m[1]), Number(m[2])];
}

function parseDeviceId(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_DEVICE_ID', value, allowed: 'an integer >= 0' });
  return n;
}

function policyFor(free: number): PlacementPolicy {
  return free >= HIGH_MIN_FREE_MIB ? 'high' : free >= MEDIUM_MIN_FREE_MIB ? 'medium' : free >= LOW_MIN_FREE_MIB ? 'low' : 'cpu';
}

const LIFETIMES: Record<Exclude<PlacementPolicy, 'cpu'>, NetworkLifetimes> = {
  high: { encoders: 'resident', dit: 'resident', vae: 'resident' },
  medium: { encoders: 'per-request', dit: 'resident', vae: 'resident' },
  low: { encoders: 'per-request', dit: 'per-request', vae: 'per-request' },
};

function build(policy: PlacementPolicy, ep: ExecutionProvider, deviceId: number, gpu: GpuInfo | undefined, reason: string): Placement {
  if (policy === 'cpu' || ep === 'cpu') {
    // The VAE's CPU arena keeps a full-resolution decode's activations (3.8 GB for the tiny model at 640 px,
    // tens of GB for the real one): released after each request, an idle server holds only the weights.
    return { policy: 'cpu', ep: 'cpu', deviceId: 0, lifetime: { ...LIFETIMES.high, vae: 'per-request' }, quantize: {}, vaeTiling: false,
      vaeTiles: 'diffusers', vaeGrid: DEFAULT_VAE_GRID, precision: { dit: 'float32', encoders: 'float32', vae: 'float32' }, reason, shrinkDitAfterSection: false,
      decodeBesideSampling: false };
  }
  // WebGPU has no bfloat16 and the DiT gives NaN in float16, so its DiT stays in float32 there.
  const dit: Precision = ep === 'cuda' ? 'bfloat16' : 'float32';
  const low = policy === 'low';
  return { policy, ep, deviceId, gpu, lifetime: { ...LIFETIMES[policy] },
    quantize: low ? { dit: 8, llama: 8 } : {}, vaeTiling: low || !gpu || gpu.freeMiB < UNTILED_VAE_MIN_FREE_MIB, vaeTiles: low ? 'diffusers' : 'fit', vaeGrid: DEFAULT_VAE_GRID,
    precision: { dit, encoders: 'float16', vae: 'float16' }, reason, shrinkDitAfterSection: !low,
    decodeBesideSampling: policy === 'high' && ep === 'cuda' };
}

const mib = (n: number) => `${(n / 1024).toFixed(1)} GiB`;

export async function choosePlacement(inputs: PlacementInputs = {}): Promise<Placement> {
  const env = inputs.env ?? process.env;
  const tiling = parseOnOff('FRAMEPACK_VAE_TILING', env.FRAMEPACK_VAE_TILING);
  const beside = parseOnOff('FRAMEPACK_DECODE_BESIDE_SAMPLING', env.FRAMEPACK_DECODE_BESIDE_SAMPLING);
  const grid = parseGrid(env.FRAMEPACK_VAE_GRID);
  let p = await choosePolicy(inputs, env);
  if (grid) p = { ...p, vaeGrid: grid, reason: `${p.reason}; FRAMEPACK_VAE_GRID=${grid.join('x')}` };
  if (tiling !== undefined && tiling !== p.vaeTiling) {
    p = { ...p, vaeTiling: tiling, reason: `${p.reason}; FRAMEPACK_VAE_TILING=${tiling ? 'on' : 'off'}` };
  }
  if (beside !== undefined && beside !== p.decodeBesideSampling) {
    p = { ...p, decodeBesideSampling: beside, reason: `${p.reason}; FRAMEPACK_DECODE_BESIDE_SAMPLING=${beside ? 'on' : 'off'}` };
  }
  return p;
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
    : policy === 'medium' ? `>= ${mib(MEDIUM_MIN_FREE_MIB)} and < ${mib(HIGH_MIN_FREE_MIB)} free`
      : policy === 'low' ? `>= ${mib(LOW_MIN_FREE_MIB)} and < ${mib(MEDIUM_MIN_FREE_MIB)} free` : `< ${mib(LOW_MIN_FREE_MIB)} free, too little for the 8-bit DiT`;
  return build(policy, policy === 'cpu' ? 'cpu' : ep, deviceId, gpu, `${where} (${rule}); ${epWhy}`);
}

/** One log line naming the policy and what it implies. */
export function describePlacement(p: Placement): string {
  const device = p.ep === 'cpu' ? 'cpu' : `${p.ep}:${p.deviceId}`;
  const tiling = (!p.vaeTiling ? 'VAE untiled' : p.vaeTiles === 'fit' ? `VAE decode in ${p.vaeGrid.join(' x ')} tiles (smaller on out of memory), encode untiled` : 'VAE tiled') +
    (p.decodeBesideSampling ? ', decoding beside sampling' : '');
  const what = p.policy === 'high' ? `every session resident; ${tiling}`
    : p.policy === 'medium' ? `DiT and VAE resident, encoders created per request; ${tiling}`
      : p.policy === 'low' ? `encoders, DiT, VAE created per request in turn; 8-bit DiT and LLaMA; ${tiling}`
        : 'float32 on the CPU';
  return `placement: ${p.policy} on ${device} (${what}; DiT ${p.precision.dit}, encoders ${p.precision.encoders}): ${p.reason}`;
}

/**
 * The device memory of the sampling stage at other resolutions and windows, estimated from measurements at
 * the 640x608 bucket with lws 9 (17,500 image tokens per DiT call, docs/gpu.md): `high` peaked at 48.1 GiB
 * after a DiT forward with every network resident (39.6 GiB before it; 39.5 GiB at READY on the C API);
 * `medium` is its 24.8 GiB at READY (DiT and VAE) plus the bf16 DiT's activations, 8.6 GiB in a forward of
 * the DiT alone (33.1 GiB peak, 24.5 GiB of it weights); `low` peaked at 17.9 GiB with the 8-bit DiT alone
 * (about 13 GiB of it packed weights: 8 bits, block scales and zero points). The part above the fixed memory
 * is taken to grow in proportion to the image tokens (attention is fused, so no activation is quadratic in the
 * sequence). An estimate, not a measurement, for any other size.
 */
const MEASURED_TOKENS = 17_500;
const SAMPLING_STAGE: Record<Exclude<PlacementPolicy, 'cpu'>, { fixedGiB: number; peakGiB: number }> = {
  high: { fixedGiB: 39.6, peakGiB: 48.1 },
  medium: { fixedGiB: 24.8, peakGiB: 33.4 },
  low: { fixedGiB: 13.0, peakGiB: 17.9 },
};

/** Estimated device GiB while sampling with `tokens` image tokens per DiT call; null on the CPU. */
export function samplingPeakGiB(p: Placement, tokens: number): number | null {
  if (p.ep === 'cpu' || p.policy === 'cpu') return null;
  const s = SAMPLING_STAGE[p.policy];
  return s.fixedGiB + ((s.peakGiB - s.fixedGiB) * tokens) / MEASURED_TOKENS;
}

/**
 * Why a request of `tokens` image tokens per DiT call cannot run on this placement (its estimated sampling
 * peak is above the device memory that was free at setup), or null. Unknown free memory is not refused.
 */
export function sizeProblem(p: Placement, tokens: number): string | null {
  const need = samplingPeakGiB(p, tokens);
  const free = p.gpu ? p.gpu.freeMiB / 1024 : null;
  if (need === null || free === null || need <= free) return null;
  return `sampling needs an estimated ${need.toFixed(1)} GiB on the ${p.policy} placement and ${free.toFixed(1)} GiB of ` +
    `${p.gpu!.name} were free at setup`;
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
 * Failures after which a GPU cannot be trusted for another run: CUDA's sticky errors (they poison the device's
 * context for the rest of the process: illegal address, launch failure, ECC, device-side assert, 999), a
 * device that vanished or cannot be reached, and the death of the device's session worker (its sessions are
 * gone). ONNX Runtime words them "CUDA failure <code>: <text> ; GPU=<n> ; ...".
 */
const GPU_LOST = [
  /CUDA (?:failure|error) (?:3|4|46|100|101|214|700|702|710|71[4-9]|999)\b/i, /illegal memory access/i,
  /unspecified launch failure/i, /uncorrectable ECC/i, /device-side assert/i, /fallen off the bus/i,
  /no CUDA-capable device/i, /busy or unavailable/i, /session worker cuda:\d+ (?:exited|failed)/, /was lost: its worker exited/,
];

export function isGpuLost(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return GPU_LOST.some((re) => re.test(message));
}

/**
 * The catalogue error for an ORT failure of the GPU itself (out of memory, lost), or the error itself when it
 * is something else. Neither is fatal: the prediction fails; the server decides whether the GPU keeps serving.
 */
export function mapOrtError(err: unknown, ep: ExecutionProvider): unknown {
  // the CPU arena reports "Failed to allocate memory" too: that is host memory, not the GPU's
  if (ep === 'cpu' || err instanceof AppError) return err;
  const code = isGpuOutOfMemory(err) ? 'GPU_OUT_OF_MEMORY' : isGpuLost(err) ? 'GPU_LOST' : undefined;
  if (!code) return err;
  const first = (err instanceof Error ? err.message : String(err)).split('\n')[0].slice(0, 300);
  return appError(code, { detail: first }, err);
}
