/**
 * CPU wall time of each stage of one whole generation: a fixture case run through the real pipeline with its
 * noise injected (the same work as test/framepack/e2e.test.ts), then the MP4 encode. Prints one line per
 * stage and per section, and the total.
 *
 *   node dist/scripts/bench-stages.js [case=teacache_cfg1] [--models <dir>] [--runs N]
 *
 * Placement follows FRAMEPACK_PLACEMENT / FRAMEPACK_EP (default auto: the CPU on a machine without a GPU).
 * It loads the CPU fully: run it on an otherwise idle machine.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveModels } from '../src/hub/resolve.js';
import { loadTensors, type HostTensor } from '../src/onnx/safetensors.js';
import { choosePlacement } from '../src/runtime/placement.js';
import { terminateWorkers } from '../src/runtime/session.js';
import { loadImage } from '../src/framepack/image.js';
import { generate, type FramePackNets, type SectionModel } from '../src/framepack/pipeline.js';
import { FramePackModels } from '../src/framepack/predictor.js';
import { writeMp4 } from '../src/framepack/video.js';
import { parseArgs } from '../src/cli/flags.js';
import { fixture } from '../test/fixtures.js';

/** Wraps every network method of `nets` to add its wall time to `times[stage]`. */
function timed(nets: FramePackNets, times: Map<string, number[]>): FramePackNets {
  const add = (stage: string, ms: number) => times.set(stage, [...(times.get(stage) ?? []), ms]);
  const wrap = <A extends unknown[], R>(stage: string, fn: (...a: A) => Promise<R>) => async (...a: A): Promise<R> => {
    const t0 = performance.now();
    try { return await fn(...a); } finally { add(stage, performance.now() - t0); }
  };
  return {
    halfPrecision: nets.halfPrecision,
    sigLip: nets.sigLip,
    encodePrompt: wrap('text encoders (LLaMA + CLIP)', nets.encodePrompt.bind(nets)),
    encodeImage: wrap('SigLIP', nets.encodeImage.bind(nets)),
    encodeLatent: wrap('VAE encode', nets.encodeLatent.bind(nets)),
    decodeLatents: wrap('VAE decode', nets.decodeLatents.bind(nets)),
    encodingDone: nets.encodingDone?.bind(nets),
    async section(inputs, signal): Promise<SectionModel> {
      const m = await nets.section(inputs, signal);
      return { ...m, velocity: wrap('DiT call', m.velocity) };
    },
  };
}

const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

async function main(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  const name = args.positionals[0] ?? 'teacache_cfg1';
  const runs = Number(args.flags.get('runs') ?? 1);
  const modelsFlag = args.flags.get('models');
  const dir = fixture('framepack-tiny', 'cases', name);
  const p = JSON.parse(readFileSync(join(dir, 'params.json'), 'utf8'));

  let t0 = performance.now();
  const dirs = await resolveModels({ models: typeof modelsFlag === 'string' ? modelsFlag : fixture('framepack-tiny', 'models') });
  const placement = await choosePlacement();
  const nets = await FramePackModels.open(dirs, placement, () => {});
  const setupMs = performance.now() - t0;
  const noise: Record<string, HostTensor> = await loadTensors(join(dir, 'expected.safetensors'));
  const image = await loadImage(join(dir, 'input.png'));
  console.log(`case ${name}: bucket ${p.bucket.join('x')} (HxW), ${p.total_latent_sections} sections of ${p.latent_window_size} latents, ` +
    `${p.steps} steps, cfg ${p.cfg_scale}, teacache ${p.use_teacache}, ${p.frames} frames; ${placement.policy} on ${placement.ep}`);
  console.log(`setup (open checkpoints, build graphs, create sessions): ${fmt(setupMs)}`);

  const tmp = await mkdtemp(join(tmpdir(), 'bench-stages-'));
  try {
    for (let run = 0; run < runs; run++) {
      const times = new Map<string, number[]>();
      const sections: string[] = [];
      t0 = performance.now();
      const result = await generate(timed(nets, times), image, {
        prompt: p.prompt, negativePrompt: p.negative_prompt, seed: p.seed, seconds: p.total_video_length_seconds,
        latentWindowSize: p.latent_window_size, steps: p.steps, cfg: p.cfg_scale, distilledCfg: p.distilled_cfg_scale,
        cfgRescale: p.cfg_rescale, cache: p.use_teacache ? 'teacache' : 'off',
      }, { signal: new AbortController().signal, noise, log: (l) => { if (/sampled|decoded/.test(l)) sections.push(l); } });
      const genMs = performance.now() - t0;
      const t1 = performance.now();
      await writeMp4(join(tmp, 'out.mp4'), result.pixels.chunks(), { width: result.width, height: result.height, crf: 23 });
      await result.pixels.close();
      const mp4Ms = performance.now() - t1;

      console.log(`\nrun ${run + 1}/${runs}`);
      let accounted = 0;
      for (const [stage, list] of times) {
        const sum = list.reduce((a, b) => a + b, 0);
        accounted += sum;
        const per = list.length > 1 ? `  (${list.length} calls, ${fmt(sum / list.length)} each, min ${fmt(Math.min(...list))}, max ${fmt(Math.max(...list))})` : '';
        console.log(`  ${stage.padEnd(30)} ${fmt(sum).padStart(9)}${per}`);
      }
      console.log(`  ${'host (resize, sampler, blend)'.padEnd(30)} ${fmt(genMs - accounted).padStart(9)}`);
      console.log(`  ${'MP4 encode (ffmpeg)'.padEnd(30)} ${fmt(mp4Ms).padStart(9)}`);
      console.log(`  ${'total'.padEnd(30)} ${fmt(genMs + mp4Ms).padStart(9)}`);
      for (const l of sections) console.log(`    ${l}`);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
    await nets.release();
    await terminateWorkers();
  }
}

main(process.argv.slice(2)).catch((err) => { console.error(err); process.exit(1); });
