/**
 * Several GPUs of one host serving at once, measured through the real server: N default requests sent
 * together to `framepack serve` on N GPUs (COG_MAX_CONCURRENCY=N: one worker per card, each with its own
 * sessions and placement) against the same request on one GPU. The request is request.ts's default: a
 * 912x960 PNG (640x608 bucket), a 40-token prompt, seed 31337, 3 s, 25 steps, TeaCache off.
 *
 *   node dist/scripts/make-full-weights.js --out bench/tmp/full        # random full-size weights, once
 *   node dist/scripts/gpu/concurrent.js [--phase one|many|both] [--gpus N] [--rounds 1] [--policy auto]
 *       [--weights bench/tmp/full] [--models-out bench/tmp/models] [--models <dir>] [--input '{}']
 *       [--out bench/tmp/concurrent.json] [--setup-timeout 3600] [--ep cuda]
 *
 * Phases; each adds its part to --out, so that they can run in separate calls of a machine that limits how
 * long one command runs:
 *   one    the server on the first of the N GPUs alone (CUDA_VISIBLE_DEVICES=<it>, COG_MAX_CONCURRENCY=1):
 *          `rounds` requests, one after another;
 *   many   the server on the N GPUs (CUDA_VISIBLE_DEVICES=<them>, COG_MAX_CONCURRENCY=N): `rounds` waves of
 *          N requests sent at once.
 * N defaults to every GPU CUDA sees (CUDA_VISIBLE_DEVICES is honoured); --policy auto lets each card choose
 * (placement.ts), high/low force one. --ep cpu --policy cpu with the tiny models runs phase `one` on the CPU
 * (a check of the script itself; `many` then stops: the CPU is one worker).
 *
 * Recorded per phase: time to READY and the setup logs (each worker's placement); per request the HTTP
 * status, wall time (POST to response), predict_time, the worker that ran it (the server's "prediction
 * started" line), its video checked with ffmpeg; per card (nvidia-smi index) the peak of memory.used every
 * 100 ms during setup and during the requests; health-check latency and statuses while requests run.
 * With both phases in --out:
 *   throughput  requests per hour, `many` (requests / summed wall time of its waves) against `one`
 *               (requests / summed wall time of its requests); the ratio against the target 0.9 x N;
 *   latency     median wall time of a request, `many` against `one` (target: within 10 %);
 *   memory      each card's peak during the requests.
 * Exits non-zero when a request failed, a video is wrong or fewer workers than GPUs came up.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { findNearestBucket } from '../../src/framepack/image.js';
import { sectionCount, totalPixelFrames } from '../../src/framepack/sections.js';
import { resolveModels } from '../../src/hub/resolve.js';
import { cudaVisible, probeVram } from '../../src/runtime/vram.js';
import { sampleCardMemory } from '../gpu-memory.js';
import {
  arrangeModels, checkVideo, DEFAULT_INPUT, freePort, health, IMAGE, inputImage, lastError, pollHealth, postJson, promptTokens,
  running, secs, serverExit, sleep, startServer, stopServer,
} from './request.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

type Json = Record<string, any>;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? null : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

interface Phase {
  name: 'one' | 'many';
  /** nvidia-smi indices of the cards the server gets */
  cards: number[];
  rounds: number;
  env: NodeJS.ProcessEnv;
  body: string;
  base: string;
  setupTimeoutS: number;
  expectedFrames: number;
}

/** Polls the health check until READY (or another final status); throws if the server exits or time runs out. */
async function untilReady(url: string, lines: Json[], deadline: number): Promise<Json> {
  for (;;) {
    if (!running()) throw new Error(`the server exited during setup (code ${await serverExit})${lastError(lines)}`);
    if (performance.now() > deadline) throw new Error('setup did not finish in time');
    const h: Json = await health(url).catch(() => ({}));
    if (h.status && h.status !== 'STARTING') return h;
    await sleep(100);
  }
}

async function runPhase(o: Phase): Promise<Json> {
  const workers = o.cards.length;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const lines: Json[] = [];
  const env = { ...o.env, CUDA_VISIBLE_DEVICES: o.cards.join(','), COG_MAX_CONCURRENCY: String(workers) };
  const memory = sampleCardMemory(100);
  const onCards = (peaks: Record<number, number>) => Object.fromEntries(o.cards.map((c) => [c, peaks[c] ?? null]));
  const out: Json = { cards: o.cards, workers, rounds: o.rounds, ok: false };
  console.log(`\n== ${o.name}: ${workers} GPU(s) [${o.cards.join(', ')}], ${o.rounds} round(s) of ${workers} request(s)`);
  const t0 = performance.now();
  try {
    startServer(port, env, `${o.base}.${o.name}.server.log`, lines, t0);
    const h = await untilReady(url, lines, t0 + o.setupTimeoutS * 1000);
    const tReady = performance.now();
    out.setup = { seconds: secs(t0, tReady), status: h.status, concurrency: h.concurrency ?? null, logs: h.setup?.logs ?? null };
    out.memory = { setupPeakMiB: onCards(memory.peaks(t0, tReady)) };
    if (h.status !== 'READY') throw new Error(`setup ended in ${h.status}: ${String(h.setup?.logs ?? '').trim().split('\n').at(-1)}`);
    if (h.concurrency?.max !== workers) throw new Error(`${h.concurrency?.max} worker(s) ready of ${workers}`);

    const requests: Json[] = [];
    const waves: Json[] = [];
    const tFirst = performance.now();
    for (let round = 0; round < o.rounds; round++) {
      console.log(`round ${round + 1}/${o.rounds}: ${workers} POST /predictions at once`);
      const tWave = performance.now();
      const posts = Promise.all(Array.from({ length: workers }, async () => {
        const t = performance.now();
        const res = await postJson(`${url}/predictions`, o.body);
        return { ...res, wallSeconds: secs(t) };
      }));
      const died = serverExit.then((c) => { throw new Error(`the server exited during the requests (code ${c})${lastError(lines)}`); });
      died.catch(() => {}); // it also settles when the server is stopped at the end
      const done = Promise.race([posts, died]);
      const [results, healthDuring] = await Promise.all([done, pollHealth(url, 250, done.catch(() => {}))]);
      waves.push({ wallSeconds: secs(tWave), health: healthDuring });
      for (const [i, res] of results.entries()) {
        const p = JSON.parse(res.body) as Json;
        const started = lines.find((l) => l.msg === 'prediction started' && l.prediction_id === p.id);
        const r: Json = {
          round, httpStatus: res.status, wallSeconds: res.wallSeconds, id: p.id ?? null, worker: started?.worker ?? null,
          status: p.status ?? null, error: p.error ?? p.detail ?? null, predictTime: p.metrics?.predict_time ?? null, logs: p.logs ?? null,
        };
        if (p.status === 'succeeded') r.video = await checkVideo(p.output, `${o.base}.${o.name}.${round}.${i}.mp4`, o.expectedFrames);
        r.ok = r.video?.isMp4 === true && r.video.frames === r.video.expectedFrames;
        requests.push(r);
      }
    }
    out.memory.requestsPeakMiB = onCards(memory.peaks(tFirst, performance.now()));
    out.requests = requests;
    out.waves = waves;
    const walls = requests.map((r) => r.wallSeconds as number);
    out.medianWallSeconds = median(walls);
    out.throughputPerHour = +(requests.length / sum(waves.map((w) => w.wallSeconds)) * 3600).toFixed(2);
    out.ok = requests.length === workers * o.rounds && requests.every((r) => r.ok);
  } catch (err) {
    out.error = err instanceof Error ? err.message : String(err);
  } finally {
    out.serverExitCode = await stopServer();
    memory.stop();
    out.memoryError = memory.error;
    out.hostLoadAfter = loadavg();
    out.serverLog = lines;
  }
  return out;
}

/** The figures the phases are run for, when both are there. */
function figures(one: Json | undefined, many: Json | undefined): Json | null {
  if (!one?.ok || !many?.ok) return null;
  const n = many.workers as number;
  const speedup = many.throughputPerHour / one.throughputPerHour;
  const latencyRatio = many.medianWallSeconds / one.medianWallSeconds;
  return {
    gpus: n,
    throughputPerHour: { one: one.throughputPerHour, many: many.throughputPerHour },
    speedup: +speedup.toFixed(3), speedupTarget: +(0.9 * n).toFixed(2), speedupMet: speedup >= 0.9 * n,
    medianWallSeconds: { one: one.medianWallSeconds, many: many.medianWallSeconds },
    latencyRatio: +latencyRatio.toFixed(3), latencyMet: latencyRatio <= 1.1,
    peakMiBPerCard: many.memory.requestsPeakMiB,
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      phase: { type: 'string', default: 'both' }, gpus: { type: 'string' }, rounds: { type: 'string', default: '1' },
      policy: { type: 'string', default: 'auto' }, weights: { type: 'string', default: 'bench/tmp/full' },
      'models-out': { type: 'string', default: 'bench/tmp/models' }, models: { type: 'string' }, input: { type: 'string', default: '{}' },
      out: { type: 'string', default: 'bench/tmp/concurrent.json' }, 'setup-timeout': { type: 'string', default: '3600' },
      ep: { type: 'string', default: 'cuda' },
    },
  });
  const phases = values.phase === 'both' ? ['one', 'many'] as const : [values.phase as 'one' | 'many'];
  if (!phases.every((p) => p === 'one' || p === 'many')) throw new Error(`--phase ${values.phase}: use one, many or both`);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds ${values.rounds}: a positive integer`);

  const vram = await probeVram();
  const visible = cudaVisible(vram.gpus, process.env.CUDA_VISIBLE_DEVICES);
  if (visible.length === 0) throw new Error(`no GPU: ${vram.reason ?? 'none visible'}`);
  const n = values.gpus ? Number(values.gpus) : visible.length;
  if (!Number.isInteger(n) || n < 1 || n > visible.length) throw new Error(`--gpus ${values.gpus}: 1..${visible.length}`);
  const cards = visible.slice(0, n).map((g) => g.index);

  const out = resolve(values.out!);
  const base = out.replace(/\.json$/, '');
  await mkdir(dirname(out), { recursive: true });
  const result: Json = existsSync(out) ? JSON.parse(readFileSync(out, 'utf8')) : {};
  const weights = values.models ? null : resolve(values.weights!);
  const models = values.models ? resolve(values.models) : resolve(values['models-out']!);
  Object.assign(result, {
    date: new Date().toISOString(), node: process.version,
    onnxruntime: JSON.parse(readFileSync(join(root, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')).version,
    host: { gpus: vram.gpus.map(({ index, name, totalMiB, freeMiB, driver }) => ({ index, name, totalMiB, freeMiB, driver })), cpus: cpus().length, memoryGiB: +(totalmem() / 2 ** 30).toFixed(1) },
    policy: values.policy, ep: values.ep, models, weights,
  });
  if (weights) await arrangeModels(weights, models);
  else await resolveModels({ models, env: {} });

  const png = await inputImage();
  const input = { ...DEFAULT_INPUT, ...JSON.parse(values.input!) } as Json;
  result.request = {
    input, image: { ...IMAGE, pngBytes: png.length, bucket: findNearestBucket(IMAGE.height, IMAGE.width) },
    promptTokens: typeof input.prompt === 'string' ? await promptTokens(models, input.prompt) : null,
  };
  const body = JSON.stringify({ input: { input_image: `data:image/png;base64,${png.toString('base64')}`, ...input } });
  const lws = Number(input.latent_window_size ?? 9);
  const expectedFrames = totalPixelFrames(sectionCount(Number(input.total_video_length_seconds ?? 3), lws), lws);

  const env: NodeJS.ProcessEnv = { ...process.env, FRAMEPACK_MODELS: models, FRAMEPACK_EP: values.ep, LOG_FORMAT: 'json' };
  if (values.policy !== 'auto') env.FRAMEPACK_PLACEMENT = values.policy;
  else delete env.FRAMEPACK_PLACEMENT;
  if (weights) env.FRAMEPACK_QUANT_CACHE ??= join(weights, 'quantized');

  for (const name of phases) {
    result[name] = await runPhase({
      name, cards: name === 'one' ? cards.slice(0, 1) : cards, rounds, env, body, base, expectedFrames,
      setupTimeoutS: Number(values['setup-timeout']),
    });
    await writeFile(out, JSON.stringify(result, null, 2) + '\n');
  }
  result.figures = figures(result.one, result.many);
  await writeFile(out, JSON.stringify(result, null, 2) + '\n');
  summary(result, out);
  return phases.every((p) => result[p].ok) ? 0 : 1;
}

function summary(r: Json, out: string): void {
  const gib = (m: unknown) => (typeof m === 'number' ? `${(m / 1024).toFixed(1)} GiB` : 'n/a');
  const lines = [`\n${r.host.gpus.map((g: Json) => g.name).join(' + ')}; policy ${r.policy}; ${r.date}`];
  for (const name of ['one', 'many'] as const) {
    const p = r[name];
    if (!p) continue;
    lines.push(`${name.padEnd(5)} ${p.workers} GPU(s): setup ${p.setup?.seconds ?? 'n/a'} s; ` +
      `${(p.requests ?? []).length} request(s), median ${p.medianWallSeconds ?? 'n/a'} s, ${p.throughputPerHour ?? 'n/a'} per hour; ` +
      `peak per card ${Object.entries(p.memory?.requestsPeakMiB ?? {}).map(([c, m]) => `${c}: ${gib(m)}`).join(', ')}` +
      `${p.error ? `; ERROR ${p.error}` : ''}`);
    for (const q of p.requests ?? []) {
      if (!q.ok) lines.push(`      request ${q.id} on ${q.worker}: HTTP ${q.httpStatus} ${q.status} ${q.error ?? ''} frames ${q.video?.frames ?? 'n/a'}`);
    }
  }
  const f = r.figures;
  if (f) {
    lines.push(`throughput x${f.speedup} on ${f.gpus} GPUs (target >= ${f.speedupTarget}: ${f.speedupMet ? 'met' : 'NOT met'}); ` +
      `latency x${f.latencyRatio} (target <= 1.1: ${f.latencyMet ? 'met' : 'NOT met'})`);
  }
  lines.push(`wrote ${out}`);
  console.log(lines.join('\n'));
}

main().then((code) => process.exit(code), (err) => { console.error(err); process.exit(1); });
