/**
 * The GPU's identity and used memory as nvidia-smi reports them, for the benchmark scripts: one query of
 * the card, and a sampler that records memory.used every few milliseconds while something else runs (an
 * ONNX Runtime process reserves device memory in arenas, so the figure is what the process holds, the
 * quantity that decides whether the next allocation fits).
 *
 * Samples are [performance.now(), MiB] pairs of the whole device (every process on it), in this process's
 * clock, so callers attribute them to stages by comparing timestamps with their own marks.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { probeVram } from '../src/runtime/vram.js';

export interface GpuInfo {
  name: string;
  driver: string;
  totalMiB: string;
  usedMiB: string;
}

/** The first GPU's name, driver and memory; null when nvidia-smi is absent or fails. */
export function gpuInfo(): GpuInfo | null {
  try {
    const line = execFileSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total,memory.used', '--format=csv,noheader,nounits'], { encoding: 'utf8' }).trim().split('\n')[0];
    const [name, driver, totalMiB, usedMiB] = line.split(',').map((s) => s.trim());
    return { name, driver, totalMiB, usedMiB };
  } catch {
    return null;
  }
}

export interface MemorySampler {
  /** [performance.now(), used MiB] in arrival order; grows until stop(). */
  readonly samples: Array<[number, number]>;
  /** Largest used MiB among the samples taken in [from, to); null when there is none. */
  peak(from?: number, to?: number): number | null;
  /** Set when nvidia-smi could not be started (no sample will arrive). */
  readonly error: string | null;
  stop(): void;
}

/** Starts `nvidia-smi --query-gpu=memory.used -lms <intervalMs>` and collects its lines until stop(). */
export function sampleGpuMemory(intervalMs: number): MemorySampler {
  const samples: Array<[number, number]> = [];
  let error: string | null = null;
  const smi = spawn('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '-lms', String(intervalMs)], { stdio: ['ignore', 'pipe', 'ignore'] });
  smi.on('error', (err) => { error = err.message; });
  createInterface({ input: smi.stdout }).on('line', (l) => { const v = Number(l.trim()); if (Number.isFinite(v)) samples.push([performance.now(), v]); });
  return {
    samples,
    get error() { return error; },
    peak(from = -Infinity, to = Infinity) {
      let best: number | null = null;
      for (const [ts, v] of samples) if (ts >= from && ts < to && (best === null || v > best)) best = v;
      return best;
    },
    stop() { smi.kill(); },
  };
}

/** Free MiB of the first GPU (the server's own nvidia-smi probe); null without nvidia-smi. */
async function freeMiB(): Promise<number | null> {
  return (await probeVram()).gpus[0]?.freeMiB ?? null;
}

export interface MemoryLimit {
  /** Free MiB before holding, and what is left free for the measured work. */
  freeBeforeMiB: number;
  freeMiB: number;
  release(): void;
}

/**
 * Leaves about `gib` GiB of the device free by holding the rest in a child process (gpu/hold-memory.ts),
 * so that work measured next runs as on a card of that size. Resolves once the memory is held.
 */
export async function limitDeviceMemory(gib: number, script: string): Promise<MemoryLimit> {
  const before = await freeMiB();
  if (before === null) throw new Error('--limit-gib needs nvidia-smi');
  const hold = Math.floor(before / 1024 - gib);
  if (hold < 1) return { freeBeforeMiB: before, freeMiB: before, release() {} };
  const child = spawn(process.execPath, [script, '--gib', String(hold)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.on('exit', (code) => reject(new Error(`memory holder exited with code ${code}`)));
    createInterface({ input: child.stdout! }).on('line', (l) => { if (l.startsWith('holding')) resolve(); });
  });
  child.removeAllListeners('exit');
  return { freeBeforeMiB: before, freeMiB: (await freeMiB()) ?? before, release() { child.kill('SIGTERM'); } };
}

export interface CardMemorySampler {
  /** [performance.now(), nvidia-smi index, used MiB] in arrival order; grows until stop(). */
  readonly samples: Array<[number, number, number]>;
  /** Largest used MiB of each card (by nvidia-smi index) among the samples taken in [from, to). */
  peaks(from?: number, to?: number): Record<number, number>;
  readonly error: string | null;
  stop(): void;
}

/** Like sampleGpuMemory, for every card of the host: `index,memory.used` every `intervalMs`. */
export function sampleCardMemory(intervalMs: number): CardMemorySampler {
  const samples: Array<[number, number, number]> = [];
  let error: string | null = null;
  const smi = spawn('nvidia-smi', ['--query-gpu=index,memory.used', '--format=csv,noheader,nounits', '-lms', String(intervalMs)], { stdio: ['ignore', 'pipe', 'ignore'] });
  smi.on('error', (err) => { error = err.message; });
  createInterface({ input: smi.stdout }).on('line', (l) => {
    const [index, used] = l.split(',').map((s) => Number(s.trim()));
    if (Number.isFinite(index) && Number.isFinite(used)) samples.push([performance.now(), index!, used!]);
  });
  return {
    samples,
    get error() { return error; },
    peaks(from = -Infinity, to = Infinity) {
      const out: Record<number, number> = {};
      for (const [ts, index, v] of samples) if (ts >= from && ts < to && v > (out[index] ?? -1)) out[index] = v;
      return out;
    },
    stop() { smi.kill(); },
  };
}
