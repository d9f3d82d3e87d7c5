/**
 * Fake GPUs for tests: an `nvidia-smi` script on PATH that answers the query src/runtime/vram.ts makes with
 * the lines in FAKE_SMI_OUT (or fails like a broken driver when FAKE_SMI_FAIL is set).
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface FakeSmi {
  /** The folder holding the script. */
  bin: string;
  /** An environment whose PATH finds only the fake nvidia-smi (and sh), plus `extra`. */
  env(extra?: Record<string, string>): NodeJS.ProcessEnv;
  remove(): Promise<void>;
}

export async function installFakeSmi(): Promise<FakeSmi> {
  const bin = await mkdtemp(join(tmpdir(), 'fake-smi-'));
  await writeFile(join(bin, 'nvidia-smi'), [
    '#!/bin/sh',
    'case "$*" in *--query-gpu=index,name,memory.total,memory.used,memory.free,driver_version*) ;; *) echo "unexpected args: $*" >&2; exit 2;; esac',
    'if [ -n "$FAKE_SMI_FAIL" ]; then echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver." >&2; exit 9; fi',
    'printf "%b" "$FAKE_SMI_OUT"',
  ].join('\n'));
  await chmod(join(bin, 'nvidia-smi'), 0o755);
  return {
    bin,
    env: (extra = {}) => ({ PATH: `${bin}:/usr/bin:/bin`, ...extra }),
    remove: () => rm(bin, { recursive: true, force: true }),
  };
}

/** One row of FAKE_SMI_OUT (index, name, MiB total/used/free, driver, uuid), newline escaped for printf %b. */
export const gpuLine = (index: number, totalMiB: number, freeMiB: number, name = 'NVIDIA H100 80GB HBM3') =>
  `${index}, ${name}, ${totalMiB}, ${totalMiB - freeMiB}, ${freeMiB}, 580.159.04, ${gpuUuid(index)}\\n`;

/** The uuid gpuLine gives the GPU of physical index `index`. */
export const gpuUuid = (index: number) => `GPU-${String(index).padStart(8, '0')}-1111-2222-3333-444444444444`;
