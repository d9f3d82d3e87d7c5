/**
 * Whether the DiT's linears run in FP8 (com.microsoft.GemmFloat8, cuBLASLt) or in the placement's precision,
 * chosen once at setup from FRAMEPACK_DIT_FP8 and logged:
 *   off (default)  bfloat16, the reference path.
 *   on             FP8 on a CUDA placement of an sm89+ GPU (Ada, Hopper and newer) whose DiT is not 8-bit;
 *                  anything else is a setup error (FP8_UNAVAILABLE). A capability nvidia-smi cannot tell is
 *                  taken at its word: GemmFloat8 then fails at the first forward on an older GPU.
 *   auto           FP8 where `on` would be allowed and FP8 has been measured faster than bfloat16 end to end
 *                  (FP8_MEASURED_FASTER, set from the GPU benchmarks, docs/gpu.md); bfloat16 otherwise.
 */
import { execFile } from 'node:child_process';
import { appError } from '../errors.js';
import type { Placement } from './placement.js';

/**
 * Whether the GPU benchmarks showed the FP8 DiT faster end to end than bfloat16. Measured on the H100
 * (2026-12-06, docs/gpu.md): 1.038 s per forward against 1.011 s, so no. GemmFloat8 itself is 1.1-1.6x
 * faster than the bf16 GEMM, but quantizing each activation (amax, scale, two casts) costs more than that.
 */
export const FP8_MEASURED_FASTER = false;

export interface Fp8Choice {
  enabled: boolean;
  /** the setup log line */
  line: string;
}

/** `major.minor` compute capability of CUDA device `index` from nvidia-smi, or null when it cannot tell. */
export function computeCapability(index: number, env: NodeJS.ProcessEnv = process.env): Promise<number | null> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['--query-gpu=compute_cap', '--format=csv,noheader', '-i', String(index)], { timeout: 10_000, env },
      (err, stdout) => {
        const v = Number(stdout?.trim());
        resolve(err || !Number.isFinite(v) || v <= 0 ? null : v);
      });
  });
}

export async function chooseDitFp8(p: Placement, env: NodeJS.ProcessEnv = process.env,
  capability: (index: number) => Promise<number | null> = (i) => computeCapability(i, env)): Promise<Fp8Choice> {
  const v = (env.FRAMEPACK_DIT_FP8 ?? '').trim().toLowerCase() || 'off';
  if (v !== 'auto' && v !== 'on' && v !== 'off') {
    throw appError('RUNTIME_SETTING_INVALID', { name: 'FRAMEPACK_DIT_FP8', value: env.FRAMEPACK_DIT_FP8, allowed: 'auto, on, off' });
  }
  const off = (why: string): Fp8Choice => ({ enabled: false, line: `DiT linears: ${p.precision.dit} (${why})` });
  if (v === 'off') return off('FRAMEPACK_DIT_FP8=off');
  let problem: string | null = null;
  let cap: number | null = null;
  if (p.ep !== 'cuda') problem = `the DiT runs on ${p.ep}`;
  else if (p.quantize.dit) problem = `the ${p.policy} placement runs an 8-bit DiT`;
  else {
    cap = p.gpu ? await capability(p.deviceId) : null;
    if (cap !== null && cap < 8.9) problem = `${p.gpu!.name} has compute capability ${cap}`;
  }
  if (problem && v === 'on') throw appError('FP8_UNAVAILABLE', { detail: problem });
  if (problem) return off(`FRAMEPACK_DIT_FP8=auto: ${problem}`);
  if (v === 'auto' && !FP8_MEASURED_FASTER) return off('FRAMEPACK_DIT_FP8=auto: FP8 was measured slower than bfloat16 end to end (docs/gpu.md)');
  return {
    enabled: true,
    line: `DiT linears: fp8 (GemmFloat8, E4M3FN, per-tensor scales; the blocks' attention projections; ` +
      `compute capability ${cap ?? 'unknown'}; FRAMEPACK_DIT_FP8=${v})`,
  };
}
