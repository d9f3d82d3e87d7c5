/**
 * How long the event loop stalls when a process holding a model's worth of memory starts ffmpeg: directly
 * (child_process.spawn forks this process) and through the spawn helper (src/runtime/spawner.ts).
 *
 *   node dist/scripts/spawn-stall.js [--gib 2] [--runs 5]
 *
 * The helper is forked first, while the process is small (as the predictor's setup does); then `--gib` of
 * memory is allocated and touched, and each way of spawning runs `--runs` times, beside a window without any
 * spawn (the machine's noise floor). A 1 ms timer measures the longest gap between its ticks around each
 * spawn (stall = that gap minus the 1 ms period).
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { findFfmpeg } from '../src/framepack/video.js';
import { spawnFromHelper, startSpawner, stopSpawner } from '../src/runtime/spawner.js';

const { values } = parseArgs({ options: { gib: { type: 'string', default: '2' }, runs: { type: 'string', default: '5' } } });
const gib = Number(values.gib);
const runs = Number(values.runs);
const ffmpeg = findFfmpeg();
const args = ['-hide_banner', '-version'];

/** Runs `start` (which starts ffmpeg and resolves when it exited) and returns the longest loop stall around it. */
async function stallAround(start: () => Promise<void>): Promise<number> {
  let last = performance.now();
  let worst = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 1);
  await new Promise((r) => setTimeout(r, 20)); // the timer is running before the spawn
  await start();
  await new Promise((r) => setTimeout(r, 20));
  clearInterval(tick);
  return Math.max(0, worst - 1);
}

const direct = () => new Promise<void>((resolve, reject) => {
  const child = spawn(ffmpeg, args, { stdio: ['pipe', 'ignore', 'pipe'] });
  child.stdin.end();
  child.stderr.resume();
  child.once('error', reject);
  child.once('close', () => resolve());
});

const viaHelper = async () => {
  const child = await spawnFromHelper(ffmpeg, args);
  child.stdin.end();
  await child.exited;
};

startSpawner();
const held: Buffer[] = [];
for (let i = 0; i < gib * 8; i++) held.push(Buffer.alloc(128 * 1024 * 1024, 1)); // touched: resident
const rss = process.memoryUsage().rss / 2 ** 30;
console.log(`process RSS ${rss.toFixed(2)} GiB (${gib} GiB held), ${runs} spawns of ${ffmpeg} each way`);

// The same window without a spawn: the noise floor of this machine (other processes, timers, GC).
const idle = () => new Promise<void>((r) => setTimeout(r, 30));

for (const [name, start] of [['no spawn (noise floor)', idle], ['spawn from this process', direct], ['spawn through the helper', viaHelper]] as const) {
  const stalls: number[] = [];
  for (let i = 0; i < runs; i++) stalls.push(await stallAround(start));
  const sorted = [...stalls].sort((a, b) => a - b);
  console.log(`${name.padEnd(26)} stall ms: ${stalls.map((s) => s.toFixed(1)).join(' ')}  (median ${sorted[Math.floor(runs / 2)]!.toFixed(1)}, max ${sorted.at(-1)!.toFixed(1)})`);
}
held.length = 0;
stopSpawner();
