/**
 * Each prediction's temp directory (inputs and output, removed when the prediction ends) is named
 * `prediction-<pid>-XXXXXX`, so that a server starting up can tell which ones a server killed before it
 * could clean up left behind: those of processes no longer running (and its own pid's, which can only be
 * an earlier process's when the pid was reused, as in containers) are removed at start-up.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

export function predictionTempDir(root: string): Promise<string> {
  return mkdtemp(join(root, `prediction-${process.pid}-`));
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/** Removes the prediction directories of servers that are gone; returns what it removed. */
export async function sweepStaleTempDirs(root: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(root).catch(() => [])) {
    const m = /^prediction-(\d+)-/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid !== process.pid && running(pid)) continue;
    const dir = join(root, name);
    await rm(dir, { recursive: true, force: true }).then(() => removed.push(dir), () => undefined);
  }
  return removed;
}
