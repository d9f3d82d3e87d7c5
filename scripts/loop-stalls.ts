/**
 * Preload (`node --cpu-prof --cpu-prof-dir=DIR --import ./dist/scripts/loop-stalls.js ...`): records when the
 * main thread's event loop stalled, as a 2 ms interval timer firing more than 15 ms late, and writes the
 * [from, to] windows (microseconds, the clock of V8's CPU profiles) to DIR/stalls.<pid>.json at exit, for
 * scripts/long-tasks.ts --stalls. A loop that yields between slices never goes idle, so the profile alone
 * cannot tell where one turn ends; the timer can.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isMainThread } from 'node:worker_threads';

const dir = process.execArgv.find((a) => a.startsWith('--cpu-prof-dir='))?.slice('--cpu-prof-dir='.length);
if (isMainThread && dir) {
  const us = () => Number(process.hrtime.bigint() / 1000n);
  const stalls: [number, number][] = [];
  let last = us();
  setInterval(() => {
    const now = us();
    if (now - last > 15_000) stalls.push([last, now]);
    last = now;
  }, 2).unref();
  process.on('exit', () => writeFileSync(join(dir, `stalls.${process.pid}.json`), JSON.stringify(stalls)));
}
