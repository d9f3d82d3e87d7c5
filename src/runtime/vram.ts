/**
 * GPU memory, asked of `nvidia-smi` (onnxruntime-node exposes no allocator statistics, and no CUDA bindings
 * are needed this way). No nvidia-smi, or one that fails, means no usable NVIDIA GPU: the CPU it is.
 */
import { execFile } from 'node:child_process';

export interface GpuInfo {
  index: number;
  name: string;
  totalMiB: number;
  usedMiB: number;
  freeMiB: number;
  driver: string;
}

export interface VramProbe {
  gpus: GpuInfo[];
  /** Why the list is empty (no nvidia-smi, an error, no devices); undefined when GPUs were found. */
  reason?: string;
}

const QUERY = '--query-gpu=index,name,memory.total,memory.used,memory.free,driver_version';

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
    gpus.push({ index, name: f[1], totalMiB, usedMiB, freeMiB, driver: f[5] });
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
