/**
 * The host's share of a tiled section decode: the time from the last tile coming back from the device to the
 * decoded section being whole (the stitching that follows the last run, on the critical path of a request's
 * last decode). The device is simulated: every decoder chunk "runs" for --device-ms, one at a time, and returns
 * a tile of the real shape, written (every page) into a buffer the stitcher handed back or a new one, as the
 * session worker copies an output; so only the host's work is measured, on any machine, with the real decode
 * logic and stitching worker. --no-reuse always takes a new buffer (the session worker before tiles came back).
 *
 *   node dist/scripts/decode-host-tail.js [--vae bench/tmp/full/vae] [--latents 19] [--grid 2x2] [--device-ms 170]
 *     [--runs 6] [--out file.json]
 *
 * Needs only the VAE's config and checkpoint header (make-full-weights.js --only vae writes one).
 * Prints per decode: total, and the tail after the last tile; then medians over all but the first decode.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Vae } from '../src/framepack/vae-decode.js';
import type { HostTensor } from '../src/onnx/safetensors.js';
import { terminateWorkers } from '../src/runtime/session.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      vae: { type: 'string', default: 'bench/tmp/full/vae' }, latents: { type: 'string', default: '19' }, grid: { type: 'string', default: '2x2' },
      'device-ms': { type: 'string', default: '170' }, runs: { type: 'string', default: '6' }, out: { type: 'string' },
      'no-reuse': { type: 'boolean', default: false },
    },
  });
  const m = /^(\d+)x(\d+)$/.exec(values.grid!);
  if (!m) throw new Error(`--grid: RxC, got ${values.grid}`);
  const deviceMs = Number(values['device-ms']);
  const T = Number(values.latents), runs = Number(values.runs);
  const vae = await Vae.load(values.vae!, { ep: 'cuda', precision: 'float16', spatialTiling: true, tiles: 'fit', grids: [[Number(m[1]), Number(m[2])]] });

  // one simulated device: chunks run back to back, each for deviceMs
  let device = Promise.resolve();
  let lastTileAt = 0;
  const inner = vae as unknown as { decodeChunk: (z: HostTensor) => Promise<HostTensor>; stitcher: { take(bytes: number): ArrayBuffer | undefined } };
  inner.decodeChunk = (z) => {
    const [, , t, h, w] = z.dims;
    const dims = [1, 3, 4 * (t - 1) + 1, 8 * h, 8 * w];
    const n = dims.reduce((a, b) => a * b, 1);
    const into = values['no-reuse'] ? undefined : inner.stitcher.take(4 * n);
    const done = device.then(() => new Promise<void>((r) => setTimeout(r, deviceMs)));
    device = done;
    return done.then(() => {
      // the session worker's copy of the output, every page written
      const data = into ? new Float32Array(into, 0, n) : new Float32Array(n);
      for (let i = 0; i < data.length; i += 1024) data[i] = Math.sin(i) * 0.9;
      lastTileAt = performance.now();
      return { dtype: 'float32', dims, data };
    });
  };

  const n = 16 * T * 80 * 76;
  const results: Array<{ totalS: number; tailMs: number }> = [];
  for (let r = 0; r < runs; r++) {
    const z: HostTensor = { dtype: 'float32', dims: [1, 16, T, 80, 76], data: Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.5) };
    const t0 = performance.now();
    await vae.decodeLatents(z);
    const t1 = performance.now();
    results.push({ totalS: (t1 - t0) / 1000, tailMs: t1 - lastTileAt });
    console.log(`decode ${r + 1}: ${((t1 - t0) / 1000).toFixed(3)} s, after the last tile ${(t1 - lastTileAt).toFixed(1)} ms`);
  }
  const later = results.slice(1);
  const summary = { latents: T, grid: values.grid, deviceMs, decodes: results, medianTailMs: median(later.map((x) => x.tailMs)), medianTotalS: median(later.map((x) => x.totalS)) };
  console.log(`median after the first: ${summary.medianTotalS.toFixed(3)} s, after the last tile ${summary.medianTailMs.toFixed(1)} ms`);
  if (values.out) writeFileSync(values.out, JSON.stringify(summary, null, 2));
  await vae.release();
  await terminateWorkers();
}

main().catch((err) => { console.error(err); process.exit(1); });
