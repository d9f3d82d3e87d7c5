/**
 * Where a spatially tiled VAE decode spends its time: decodes one section (18 latents at the 640x608 bucket, or
 * --latents N) with spatial tiling, twice (the first run includes session creation and cuDNN's algorithm search),
 * and prints the second run's session runs grouped by session and input shape: count, total and mean seconds;
 * then encodes one 640 x 608 image three times (a request's start latent). --tiles fit tiles as `high` and
 * `medium` do (2 x 2 equal tiles), diffusers (default) as the original's low-VRAM mode. --grid 1x2,2x2 decodes
 * under 'fit' in each rows x cols layout in turn, each with a VAE of its own, and prints the device's peak memory
 * (nvidia-smi) during its second decode beside the memory in use before the VAE was loaded.
 *
 *   node dist/scripts/gpu/vae-tiles.js [--vae bench/tmp/full/vae] [--ep cuda] [--tiling on|off] [--tiles diffusers|fit]
 *     [--grid RxC,...] [--latents 18]
 */
import { parseArgs } from 'node:util';
import { Vae, type TileGrid } from '../../src/framepack/vae-decode.js';
import { Session, terminateWorkers, type Feeds, type RunOptions } from '../../src/runtime/session.js';
import { sampleGpuMemory } from '../gpu-memory.js';

function parseGrids(list: string | undefined): Array<TileGrid | undefined> {
  if (!list) return [undefined];
  return list.split(',').map((g) => {
    const m = /^(\d+)x(\d+)$/.exec(g.trim());
    if (!m) throw new Error(`--grid: RxC[,RxC...], got ${list}`);
    return [Number(m[1]), Number(m[2])] as const;
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      vae: { type: 'string', default: 'bench/tmp/full/vae' }, ep: { type: 'string', default: 'cuda' }, tiling: { type: 'string', default: 'on' },
      tiles: { type: 'string', default: 'diffusers' }, latents: { type: 'string', default: '18' }, grid: { type: 'string' },
    },
  });
  if (values.tiles !== 'fit' && values.tiles !== 'diffusers') throw new Error(`--tiles: fit or diffusers, got ${values.tiles}`);
  const grids = parseGrids(values.grid);
  const gpu = values.ep === 'cuda' ? sampleGpuMemory(50) : null;
  const T = Number(values.latents);
  const runs: Array<{ key: string; s: number }> = [];
  const run = Session.prototype.run as (feeds: Feeds, opts?: RunOptions) => Promise<unknown>;
  (Session.prototype as any).run = async function (this: Session, feeds: Feeds, opts?: RunOptions) {
    const key = `${this.name} ${Object.values(feeds).map((t) => t.dims.join('x')).join(' ')}`;
    const t0 = performance.now();
    try { return await run.call(this, feeds, opts); } finally { runs.push({ key, s: (performance.now() - t0) / 1000 }); }
  };
  const n = 16 * T * 80 * 76;
  const z = () => ({ dtype: 'float32' as const, dims: [1, 16, T, 80, 76], data: Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.5) });
  let vae!: Vae;
  for (const grid of grids) {
    if (vae) await vae.release();
    await new Promise((r) => setTimeout(r, 300)); // nvidia-smi sees the release
    const baseMiB = gpu?.samples.at(-1)?.[1] ?? null;
    vae = await Vae.load(values.vae!, {
      ep: values.ep as 'cuda' | 'cpu', precision: values.ep === 'cpu' ? 'float32' : 'float16', spatialTiling: values.tiling === 'on',
      tiles: grid ? 'fit' : values.tiles, grids: grid ? [grid] : undefined,
    });
    if (grid) console.log(`grid ${grid[0]} x ${grid[1]}`);
    for (const label of ['first', 'second']) {
      runs.length = 0;
      const t0 = performance.now();
      await vae.decodeLatents(z());
      const t1 = performance.now();
      const total = (t1 - t0) / 1000;
      const by = new Map<string, { count: number; s: number }>();
      for (const r of runs) { const e = by.get(r.key) ?? { count: 0, s: 0 }; e.count++; e.s += r.s; by.set(r.key, e); }
      const inRuns = runs.reduce((a, r) => a + r.s, 0);
      const peak = gpu?.peak(t0, t1 + 100);
      const mem = peak != null && baseMiB != null ? `; device peak ${(peak / 1024).toFixed(1)} GiB, ${(baseMiB / 1024).toFixed(1)} GiB before the VAE` : '';
      console.log(`${label} decode: ${total.toFixed(2)} s, of which session runs ${inRuns.toFixed(2)} s (${runs.length} runs)${mem}`);
      for (const [key, e] of [...by].sort((a, b) => b[1].s - a[1].s)) console.log(`  ${e.s.toFixed(2)} s  ${e.count} x ${(e.s / e.count).toFixed(3)} s  ${key}`);
    }
  }
  // the start image's encode at the same bucket (608 x 640), as a request does it once
  for (const label of ['first', 'second', 'third']) {
    runs.length = 0;
    const image = { dtype: 'float32' as const, dims: [1, 3, 1, 640, 608], data: Float32Array.from({ length: 3 * 640 * 608 }, (_, i) => Math.sin(i * 0.37)) };
    const t0 = performance.now();
    await vae.encodeLatent(image, { consume: true });
    const inRuns = runs.reduce((a, r) => a + r.s, 0);
    console.log(`${label} encode: ${((performance.now() - t0) / 1000).toFixed(3)} s, of which session runs ${inRuns.toFixed(3)} s (${runs.map((r) => `${r.key.split(' ')[0]} ${r.s.toFixed(3)}`).join(', ')})`);
  }
  await vae.release();
  gpu?.stop();
  await terminateWorkers();
}

main().catch((err) => { console.error(err); process.exit(1); });
