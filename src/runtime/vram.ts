/**
 * The GPUs and their memory, asked of `nvidia-smi` (onnxruntime-node exposes no allocator statistics, and no
 * CUDA bindings are needed this way), and how CUDA numbers them. No nvidia-smi, or one that fails, means no
 * usable NVIDIA GPU: the CPU it is.
 */
import { execFile } from 'node:child_process';

export interface GpuInfo {
  index: number;
  name: string;
  totalMiB: number;
  usedMiB: number;
  freeMiB: number;
  driver: string;
  /** GPU-<uuid>, what CUDA_VISIBLE_DEVICES may name instead of the index */
  uuid?: string;
}

export interface VramProbe {
  gpus: GpuInfo[];
  /** Why the list is empty (no nvidia-smi, an error, no devices); undefined when GPUs were found. */
  reason?: string;
}

const QUERY = '--query-gpu=index,name,memory.total,memory.used,memory.free,driver_version,uuid';

/** Parses `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` output (MiB). */
export function parseNvidiaSmi(stdout: string): GpuInfo[] {
  const gpus: GpuInfo[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.trim()) continue;
    const f = line.split(',').map((s) => s.trim());
    if (f.length < 6) continue;
    const [index, totalMiB, usedMiB, freeMiB] = [f[0], f[2], f[3], f[4]].map(Number);
    // "[N/A]" appears for memory on some MIG / vGPU setups: such a device cannot be sized, so it is skipped
    if (![index, totalMiB, usedMiB, freeMiB].every(Number.isFinite)) continue;
    gpus.push({ index, name: f[1], totalMiB, usedMiB, freeMiB, driver: f[5], ...(f[6] ? { uuid: f[6] } : {}) });
  }
  return gpus;
}

export function probeVram(opts: { command?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<VramProbe> {
  const command = opts.command ?? 'nvidia-smi';
  return new Promise((resolve) => {
    execFile(command, [QUERY, '--format=csv,noheader,nounits'], { timeout: opts.timeoutMs ?? 10_000, env: opts.env ?? process.env },
      (err, stdout, stderr) => {
        if (err) {
          const code = (err as NodeJS.ErrnoException).code;
          const reason = code === 'ENOENT' ? `${command} not found` : `${command} failed: ${(stderr || err.message).trim().split('\n')[0]}`;
          resolve({ gpus: [], reason });
          return;
        }
        const gpus = parseNvidiaSmi(stdout);
        resolve(gpus.length ? { gpus } : { gpus, reason: `${command} lists no GPU with readable memory` });
      });
  });
}

/**
 * The GPUs as CUDA numbers them (device 0, 1, ... in this order). nvidia-smi lists every GPU by its physical
 * index; CUDA sees only those CUDA_VISIBLE_DEVICES names (indices or GPU-<uuid> prefixes), in that order, and
 * stops at the first entry that names no GPU (`-1`, an unknown index, a repeat). MIG instances (`MIG-...`)
 * cannot be matched to nvidia-smi's rows: the list is then nvidia-smi's, unchanged.
 */
export function cudaVisible(gpus: GpuInfo[], visible: string | undefined): GpuInfo[] {
  if (visible === undefined) return gpus;
  const entries = visible.split(',').map((s) => s.trim()).filter(Boolean);
  if (entries.some((e) => e.startsWith('MIG-'))) return gpus;
  const out: GpuInfo[] = [];
  for (const entry of entries) {
    const matches = /^\d+$/.test(entry) ? gpus.filter((g) => g.index === Number(entry))
      : entry.startsWith('GPU-') ? gpus.filter((g) => g.uuid?.startsWith(entry)) : [];
    if (matches.length !== 1 || out.includes(matches[0]!)) break;
    out.push(matches[0]!);
  }
  return out;
}
