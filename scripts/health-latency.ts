/**
 * Health-check latency while a prediction keeps a CPU core busy (in a worker thread, as ORT sessions run):
 * p50/p99 of 200 sequential `GET /health-check` over a real socket, idle and busy.
 *
 *   npm run build && node dist/scripts/health-latency.js [--requests 200]
 */
import pino from 'pino';
import { CogServer } from '../src/server/app.js';
import { predictorSource } from '../src/server/predictor-source.js';

const args = process.argv.slice(2);
const requests = Number(args[args.indexOf('--requests') + 1] ?? 200) || 200;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function measure(url: string, expect: string): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < requests; i++) {
    const t0 = performance.now();
    const res = await fetch(`${url}/health-check`);
    const body = (await res.json()) as { status: string };
    times.push(performance.now() - t0);
    if (body.status !== expect) throw new Error(`expected ${expect}, got ${body.status}`);
  }
  return times.sort((a, b) => a - b);
}

const report = (label: string, t: number[]) =>
  console.log(`${label.padEnd(34)} n=${t.length}  p50=${percentile(t, 50).toFixed(2)} ms  p99=${percentile(t, 99).toFixed(2)} ms  max=${t.at(-1)!.toFixed(2)} ms`);

const server = new CogServer({
  logger: pino({ level: 'silent' }),
  host: '127.0.0.1', port: 0, awaitExplicitShutdown: true, bodyLimit: 1 << 20,
  source: predictorSource(new URL('../test/server/predictors/cpu-busy.js', import.meta.url).pathname, {}),
  policy: { denyPrivate: false }, maxInputBytes: 1 << 20, throttleMs: 500,
});
const url = await server.start();
while (server.runner.status !== 'READY') await new Promise((r) => setTimeout(r, 10));

await measure(url, 'READY'); // warm-up (connections, JIT)
report('idle server', await measure(url, 'READY'));

await fetch(`${url}/predictions`, {
  method: 'POST', headers: { 'content-type': 'application/json', prefer: 'respond-async' },
  body: JSON.stringify({ id: 'busy', input: { ms: 600_000 } }),
});
await new Promise((r) => setTimeout(r, 200));
report('while a CPU-busy prediction runs', await measure(url, 'BUSY'));

const t0 = performance.now();
await fetch(`${url}/predictions/busy/cancel`, { method: 'POST' });
while (server.runner.status !== 'READY') await new Promise((r) => setTimeout(r, 1));
console.log(`cancel -> READY                    ${(performance.now() - t0).toFixed(1)} ms`);
await server.stop(0, { cancel: true, graceMs: 1000 });
