/**
 * Soak: many predictions in a row against the real server process on the tiny random model (CPU), watching
 * what must stay flat: the server's resident memory, its open file descriptors, the files in its temp
 * directory, and the health check's latency (polled every 50 ms throughout, on its own connection, with the
 * CPU time the server's event-loop thread used meanwhile, which tells its own work from waiting for a core,
 * and an idle sentinel process, which tells both from the whole machine being held).
 *
 *   npm run build && node dist/scripts/soak.js [--predictions 100] [--every 10] [--nice=-10] [--profile DIR]
 *
 * Each prediction is 1 s of video with a window of 6 latents (one section, 25 frames) and 1 step at the
 * 640-pixel bucket, so the run exercises every stage (encoders, DiT, VAE decode, ffmpeg) quickly. Prints a
 * row every `--every` predictions and a summary; exits 1 if a prediction failed.
 *
 * `--nice N` runs the soak (this client, its poller and the server's event loop, which inherits it) at
 * niceness N: on a shared machine a negative value (root only) keeps other processes' load from showing up
 * as stalls of the server. The server's compute threads still lower themselves to FRAMEPACK_WORKER_NICE.
 * `--profile DIR` writes the server's V8 CPU profiles there (one per thread) for scripts/long-tasks.ts.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import sharp from 'sharp';
import { makeTinyModel } from './make-tiny-model.js';

const { values } = parseArgs({
  options: {
    predictions: { type: 'string', default: '100' }, every: { type: 'string', default: '10' },
    nice: { type: 'string' }, profile: { type: 'string' },
  },
});
// This thread's niceness; the threads and processes started from it (the poller, the server) inherit it.
if (values.nice !== undefined) setPriority(0, Number(values.nice));
const total = Number(values.predictions);
const every = Number(values.every);
const cli = new URL('../src/cli.js', import.meta.url).pathname;

const freePort = () => new Promise<number>((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => {
    const { port } = s.address() as { port: number };
    s.close(() => resolve(port));
  });
});

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

const fdCount = async (pid: number) => (await readdir(`/proc/${pid}/fd`)).length;

/** Every file and directory under `dir`. */
async function entries(dir: string): Promise<string[]> {
  const list = await readdir(dir, { recursive: true }).catch(() => []);
  return list.map(String);
}

const work = await mkdtemp(join(tmpdir(), 'framepack-soak-'));
const serverTmp = join(work, 'tmp');
await mkdir(serverTmp);
const models = await makeTinyModel(join(work, 'models'));
const image = await sharp({ create: { width: 96, height: 96, channels: 3, background: { r: 200, g: 80, b: 30 } } }).png().toBuffer();
const input = {
  input_image: `data:image/png;base64,${image.toString('base64')}`, prompt: 'a red ball rolls',
  total_video_length_seconds: 1, latent_window_size: 6, steps: 1, seed: 1,
};

const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const profile = values.profile
  ? ['--cpu-prof', `--cpu-prof-dir=${values.profile}`, '--import', new URL('./loop-stalls.js', import.meta.url).href] : [];
const server = spawn(process.execPath, [...profile, cli, 'serve', '--host', '127.0.0.1', '--port', String(port), '--models', models], {
  env: { ...process.env, FRAMEPACK_PLACEMENT: 'cpu', COG_LOG_LEVEL: 'warning', TMPDIR: serverTmp },
  stdio: ['ignore', 'ignore', 'inherit'],
});
const pid = server.pid!;

for (;;) {
  const h = await fetch(`${url}/health-check`).then((r) => r.json() as Promise<{ status: string }>, () => null);
  if (h?.status === 'READY') break;
  if (h?.status === 'SETUP_FAILED' || server.exitCode !== null) throw new Error('the server did not start');
  await new Promise((r) => setTimeout(r, 200));
}

// Health checks every 50 ms for the whole run, each timed from request to parsed answer, from a worker
// thread: parsing a prediction's answer (a data URL) here must not delay or slow down the polling. Beside
// each latency, the CPU time the server's event-loop thread used meanwhile (/proc, 10 ms ticks): a slow
// answer with the thread busy is the server's own work; with it idle, the thread was waiting for a CPU
// (other processes on the machine). The busy time is split into user and kernel time (`sysMs`: page
// faults, mapping and unmapping memory), with the thread's minor page faults, which tell JavaScript from
// memory the kernel hands out or takes back.
interface Check { ms: number; cpuMs: number; sysMs: number; faults: number; fromUs: number; toUs: number }
const latencies: number[] = [];
const checks: Check[] = [];
const poller = new Worker(`
  const { readFileSync } = require('node:fs');
  const { parentPort, workerData } = require('node:worker_threads');
  const cpu = () => {
    const stat = readFileSync('/proc/' + workerData.pid + '/task/' + workerData.pid + '/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state) of proc(5)
    return { user: Number(f[11]) * 10, sys: Number(f[12]) * 10, faults: Number(f[7]) };
  };
  let polling = true;
  parentPort.on('message', () => { polling = false; });
  (async () => {
    while (polling) {
      const c0 = cpu();
      const t0 = performance.now(), fromUs = Number(process.hrtime.bigint() / 1000n);
      await fetch(workerData.url + '/health-check').then((r) => r.json());
      const ms = performance.now() - t0, c1 = cpu(), toUs = Number(process.hrtime.bigint() / 1000n);
      parentPort.postMessage({ ms, cpuMs: c1.user + c1.sys - c0.user - c0.sys, sysMs: c1.sys - c0.sys, faults: c1.faults - c0.faults, fromUs, toUs });
      await new Promise((r) => setTimeout(r, 50));
    }
    parentPort.close();
  })();
`, { eval: true, workerData: { url, pid } });
poller.on('message', (c: Check) => {
  checks.push(c);
  latencies.push(c.ms);
});
const pollerDone = new Promise((r) => poller.once('exit', r));

// The sentinel: a separate, idle process at the soak's priority whose only work is a 2 ms timer. When it too
// fires late during a slow check, every process on the machine was held (in a virtual machine the host can
// stop the guest's CPUs without the guest accounting it as stolen time, and the server's thread then reads
// as busy), so that check is the machine's, not the server's. Its late firings ([from, to] in
// CLOCK_MONOTONIC microseconds, the poller's clock) come back one JSON line each.
const sentinelStalls: [number, number][] = [];
const sentinel = spawn(process.execPath, ['-e', `
  const us = () => Number(process.hrtime.bigint() / 1000n);
  let last = us();
  setInterval(() => { const now = us(); if (now - last > 20000) console.log(JSON.stringify([last, now])); last = now; }, 2);
`], { stdio: ['ignore', 'pipe', 'inherit'] });
let sentinelOut = '';
sentinel.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
  const lines = (sentinelOut + chunk).split('\n');
  sentinelOut = lines.pop()!;
  for (const line of lines) if (line.trim()) sentinelStalls.push(JSON.parse(line));
});
/** A slow check is the machine's when the sentinel was held at least this long within the check's window. */
const SENTINEL_MS = 25;
const machineWide = (c: Check) => sentinelStalls.some(([a, b]) => Math.min(b, c.toUs) - Math.max(a, c.fromUs) >= SENTINEL_MS * 1000);
const ownWork = (c: Check) => c.ms > 50 && !machineWide(c) && c.cpuMs >= c.ms / 2;

interface Row { n: number; rss: number; fds: number; tmp: number; healthMax: number; slow: number; own: number; seconds: number }
const rows: Row[] = [];
const start = { rss: await rssMiB(pid), fds: await fdCount(pid), tmp: (await entries(serverTmp)).length };
console.log(`server pid ${pid} ready: RSS ${start.rss.toFixed(0)} MiB, ${start.fds} fds, ${start.tmp} temp entries; ${total} predictions` +
  (values.nice !== undefined ? `; soak and server event loop at nice ${values.nice}` : ''));
console.log('    n   RSS MiB   fds   temp entries   health max ms   > 50 ms (own work)   seconds/prediction');
let failed = 0;
let window: Check[] = [];
const t0 = performance.now();
let tLast = t0;
for (let n = 1; n <= total; n++) {
  const from = checks.length;
  const res = await fetch(`${url}/predictions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input }) });
  const p = await res.json() as { status: string; error: string | null };
  if (p.status !== 'succeeded') {
    failed++;
    console.log(`prediction ${n}: ${p.status} ${p.error}`);
  }
  window = window.concat(checks.slice(from));
  if (n % every === 0 || n === total) {
    await new Promise((r) => setTimeout(r, 200)); // the temp directory is removed right after the answer
    const now = performance.now();
    const row: Row = {
      n, rss: await rssMiB(pid), fds: await fdCount(pid), tmp: (await entries(serverTmp)).length,
      healthMax: Math.max(...window.map((c) => c.ms)), slow: window.filter((c) => c.ms > 50).length,
      own: window.filter(ownWork).length, seconds: (now - tLast) / 1000 / (n - (rows.at(-1)?.n ?? 0)),
    };
    rows.push(row);
    console.log(`${String(n).padStart(5)} ${row.rss.toFixed(0).padStart(9)} ${String(row.fds).padStart(5)} ${String(row.tmp).padStart(14)} ` +
      `${row.healthMax.toFixed(1).padStart(15)} ${`${row.slow} (${row.own})`.padStart(20)} ${row.seconds.toFixed(1).padStart(20)}`);
    window = [];
    tLast = now;
  }
}
poller.postMessage('stop');
await pollerDone;
sentinel.kill();

const sorted = [...latencies].sort((a, b) => a - b);
const q = (f: number) => sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))]!;
const after10 = rows.some((r) => r.n >= 10) ? rows.filter((r) => r.n >= 10) : rows;
console.log(`\n${total} predictions in ${((performance.now() - t0) / 60_000).toFixed(1)} min, ${failed} failed`);
console.log(`RSS: ${start.rss.toFixed(0)} MiB at READY, ${rows[0]!.rss.toFixed(0)} after ${rows[0]!.n}, ` +
  `${Math.min(...after10.map((r) => r.rss)).toFixed(0)}-${Math.max(...after10.map((r) => r.rss)).toFixed(0)} MiB from prediction ${after10[0]!.n} on, ${rows.at(-1)!.rss.toFixed(0)} at the end`);
console.log(`fds: ${start.fds} at READY, ${Math.min(...rows.map((r) => r.fds))}-${Math.max(...rows.map((r) => r.fds))} after predictions`);
console.log(`temp entries: ${start.tmp} at READY, at most ${Math.max(...rows.map((r) => r.tmp))} after predictions (${(await entries(serverTmp)).join(', ') || 'none'})`);
console.log(`health checks: ${latencies.length}, p50 ${q(0.5).toFixed(1)} ms, p99 ${q(0.99).toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms, over 50 ms: ${latencies.filter((l) => l > 50).length}`);
const slow = checks.filter((c) => c.ms > 50).sort((a, b) => b.ms - a.ms);
const machine = slow.filter(machineWide);
const busy = slow.filter(ownWork);
const waiting = slow.filter((c) => !machineWide(c) && !ownWork(c));
console.log(`  over 50 ms while the sentinel process was held too (the machine stopped every process): ${machine.length}` +
  `${machine.length ? ` (${machine.slice(0, 10).map((c) => `${c.ms.toFixed(0)} ms`).join(', ')})` : ''}; the sentinel was held > 20 ms ${sentinelStalls.length} times in all`);
console.log(`  over 50 ms otherwise, with the server's event-loop thread on the CPU at least half the time (its own work): ${busy.length}` +
  `${busy.length ? ` (${busy.slice(0, 10).map((c) => `${c.ms.toFixed(0)} ms/${c.cpuMs} ms CPU`).join(', ')})` : ''}`);
if (busy.length) {
  const sys = busy.reduce((a, c) => a + c.sysMs, 0), all = busy.reduce((a, c) => a + c.cpuMs, 0);
  const faults = busy.map((c) => c.faults).sort((a, b) => a - b);
  console.log(`    of their CPU time ${(100 * sys / all).toFixed(0)} % in the kernel; minor page faults per check: median ${faults[faults.length >> 1]}, max ${faults.at(-1)}` +
    ` (all checks: median ${[...checks].map((c) => c.faults).sort((a, b) => a - b)[checks.length >> 1]})`);
}
console.log(`  over 50 ms otherwise, with the thread mostly off the CPU (waiting for a core): ${waiting.length}` +
  `${waiting.length ? ` (worst: ${waiting.slice(0, 10).map((c) => `${c.ms.toFixed(0)} ms/${c.cpuMs} ms CPU`).join(', ')})` : ''}`);

const exited = new Promise((r) => server.once('exit', r));
server.kill('SIGTERM');
await exited;
await rm(work, { recursive: true, force: true });
process.exit(failed > 0 ? 1 : 0);
