/**
 * One writer per blob: two servers sharing a cache volume must not append to the same `.incomplete` file.
 * The lock is a file created exclusively under `<cache>/.locks/models--org--name/<etag>.lock` (the folder
 * huggingface_hub uses) holding the owner's pid; a lock whose process is gone is taken over. Python's
 * flock-based locks are not seen by this scheme: do not run a Python download into the same cache at once.
 */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoFolder } from './cache.js';

export function lockPath(cacheDir: string, repoId: string, etag: string): string {
  return join(cacheDir, '.locks', repoFolder('', repoId), `${etag}.lock`);
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try { process.kill(pid, 0); return true; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; }
}

export async function withLock<T>(file: string, fn: () => Promise<T>,
  opts: { signal?: AbortSignal; pollMs?: number; onWait?: (pid: number) => void } = {}): Promise<T> {
  await mkdir(dirname(file), { recursive: true });
  let told = false;
  for (;;) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (pid !== process.pid && alive(pid)) {
        if (!told) { opts.onWait?.(pid); told = true; }
        await sleep(opts.pollMs ?? 1000, undefined, { signal: opts.signal });
      } else if (pid !== process.pid) {
        await rm(file, { force: true });      // left by a process that died (or an empty Python lock file)
      } else {
        await sleep(opts.pollMs ?? 1000, undefined, { signal: opts.signal });   // another download in this process
      }
    }
  }
  try {
    return await fn();
  } finally {
    await rm(file, { force: true });
  }
}
