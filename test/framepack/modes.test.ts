/**
 * The end frame and the F1 sampling mode, whole generations on the CPU (float32, tiny FramePack) with the
 * references' noise injected, against tensors made by the upstream code (scripts/references/end_frame_f1.py:
 * diffusers' HunyuanVideoFramepackPipeline with last_image, sampled by FramePack's sample_hunyuan; FramePack's
 * demo_gradio_f1.py worker, the tiny transformer's weights standing for the F1 transformer). And the new
 * inputs at their defaults against the output of the code before they existed, bit for bit.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveModels } from '../../src/hub/resolve.js';
import { loadTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import { choosePlacement } from '../../src/runtime/placement.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { loadImage } from '../../src/framepack/image.js';
import { frameStats, generate, type GenerateParams, type GenerateResult } from '../../src/framepack/pipeline.js';
import { FramePackModels } from '../../src/framepack/predictor.js';
import { concatTime, type Float32Tensor } from '../../src/framepack/sections.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const refs = fileURLToPath(new URL('../../../test/fixtures/end-frame-f1/', import.meta.url));
const params = JSON.parse(readFileSync(join(refs, 'params.json'), 'utf8'));

let models: FramePackModels;
let work: string;
const logs: string[] = [];

/** Read-only fixture folders copied writable, so the copy can be removed. */
async function writable(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await writable(p);
    else await chmod(p, 0o644);
  }
}

before(async () => {
  // the tiny FramePack plus its transformer as the F1 checkpoint (one architecture, one set of key names)
  work = await mkdtemp(join(tmpdir(), 'modes-'));
  await cp(tinyModels(), work, { recursive: true });
  await writable(work);
  await cp(join(work, 'lllyasviel', 'FramePackI2V_HY'), join(work, 'lllyasviel', 'FramePack_F1_I2V_HY_20250503'), { recursive: true });
  const dirs = await resolveModels({ models: work, optional: ['transformerF1'] });
  const placement = await choosePlacement({ env: { FRAMEPACK_PLACEMENT: 'cpu' } });
  models = await FramePackModels.open(dirs, placement, (l) => logs.push(l));
});

after(async () => {
  await models?.release();
  await terminateWorkers();
  await rm(work, { recursive: true, force: true });
});

function base(p: any): GenerateParams {
  return {
    prompt: p.prompt, negativePrompt: p.negative_prompt ?? '', seed: p.seed, seconds: p.total_video_length_seconds,
    latentWindowSize: p.latent_window_size, steps: p.steps, cfg: p.cfg_scale, distilledCfg: p.distilled_cfg_scale,
    cfgRescale: p.cfg_rescale, cache: p.use_teacache ? 'teacache' : 'off',
  };
}

async function run(image: string, p: GenerateParams, noise: Record<string, HostTensor>) {
  const dump: Record<string, HostTensor> = {};
  const result = await generate(models, await loadImage(image), p,
    { signal: new AbortController().signal, log: (l) => logs.push(l), noise, dump });
  return { result, dump };
}

function close(t: { diagnostic(m: string): void }, what: string, ours: HostTensor, ref: HostTensor, tol: number): void {
  const e = relL2(ours, ref);
  t.diagnostic(`${what}: relative L2 ${e.toExponential(2)}`);
  assert.ok(e <= tol, `${what}: relative L2 ${e} > ${tol}`);
}

/** The TeaCache split the reference made: a call is skipped while the accumulated distance stays below 0.15. */
function teacacheSplit(trace: { accumulated: number }[], steps: number): string {
  const skipped = trace.filter((c) => c.accumulated < 0.15).length;
  return `TeaCache: ${steps - skipped} computed, ${skipped} skipped`;
}

describe('end frame against diffusers\' pipeline with last_image', () => {
  const p = params.end_frame_teacache;
  let expected: Record<string, HostTensor>;
  let dump: Record<string, HostTensor>;
  let result: GenerateResult;
  let from: number;

  before(async () => {
    expected = await loadTensors(join(refs, 'end_frame_teacache.safetensors'));
    from = logs.length;
    ({ result, dump } = await run(join(refs, 'start.png'), {
      ...base(p), samplingMode: 'inverted', endImage: await loadImage(join(refs, 'end.png')), endImageStrength: p.end_image_strength,
    }, expected));
  });

  test('bucket and sizes', () => {
    assert.deepEqual(result.bucket, p.bucket);
    assert.equal(result.sections, p.sections);
    assert.equal(result.pixels.frameCount, 4 * p.sections * p.latent_window_size + 1);
  });

  test('conditioning: prompt, start and end latents, averaged image embeddings (relative L2 <= 1e-4)', (t) => {
    for (const key of ['llama_vec', 'llama_attention_mask', 'clip_l_pooler', 'start_latent', 'end_latent', 'image_embeddings']) {
      close(t, key, dump[key], expected[key], 1e-4);
    }
    // the reference fed the average of both images' embeddings, not the start image's alone
    assert.ok(relL2(dump.image_embeddings, expected.image_embeddings_start) > 1e-2);
  });

  test('every section\'s latents and the final latents (relative L2 <= 1e-3)', (t) => {
    for (let i = 0; i < p.sections; i++) {
      const key = `section_${i}_generated_latents`;
      close(t, key, dump[key], expected[key], 1e-3);
    }
    // inverted order: the last section generated (with the start latent) comes first in the video
    const chunks = Array.from({ length: p.sections }, (_, i) => dump[`section_${p.sections - 1 - i}_generated_latents`] as Float32Tensor);
    close(t, 'final_latents', concatTime(...chunks), expected.final_latents, 1e-3);
  });

  test('TeaCache computes and skips the calls the reference did', () => {
    p.teacache_trace.forEach((trace: { accumulated: number }[], s: number) => {
      const line = logs.slice(from).find((l) => l.startsWith(`section ${s + 1}/${p.sections} sampled`));
      assert.match(line ?? '', new RegExp(teacacheSplit(trace, p.steps)), line);
    });
  });
});

describe('F1 against demo_gradio_f1.py\'s worker', () => {
  const p = params.f1_teacache;
  let expected: Record<string, HostTensor>;
  let dump: Record<string, HostTensor>;
  let result: GenerateResult;
  let from: number;

  before(async () => {
    expected = await loadTensors(join(refs, 'f1_teacache.safetensors'));
    from = logs.length;
    ({ result, dump } = await run(join(refs, 'start.png'), { ...base(p), samplingMode: 'f1' }, expected));
  });

  test('the F1 transformer replaces the other one, its cost logged', () => {
    const lines = logs.slice(from);
    assert.ok(lines.some((l) => /^DiT released for the F1 transformer$/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /^F1 transformer found in [\d.]+ s and its graphs built in [\d.]+ s/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /^F1 DiT created in [\d.]+ s$/.test(l)), lines.join('\n'));
  });

  test('conditioning (relative L2 <= 1e-4)', (t) => {
    for (const key of ['llama_vec', 'llama_attention_mask', 'clip_l_pooler', 'start_latent', 'image_embeddings']) {
      close(t, key, dump[key], expected[key], 1e-4);
    }
  });

  test('every section\'s latents (relative L2 <= 1e-3)', (t) => {
    for (let i = 0; i < p.sections; i++) {
      const key = `section_${i}_generated_latents`;
      close(t, key, dump[key], expected[key], 1e-3);
    }
  });

  test('TeaCache computes and skips the calls the reference did', () => {
    p.teacache_trace.forEach((trace: { accumulated: number }[], s: number) => {
      const line = logs.slice(from).find((l) => l.startsWith(`section ${s + 1}/${p.sections} sampled`));
      assert.match(line ?? '', new RegExp(teacacheSplit(trace, p.steps)), line);
    });
  });

  test('frames: count exact, means and deviations within 1 level (forward decode and blend order)', async (t) => {
    assert.equal(result.pixels.frameCount, p.frames);
    const { mean, std } = frameStats(await result.pixels.frames(), result.width * result.height * 3);
    const refMean = expected.frame_mean.data as Float32Array, refStd = expected.frame_std.data as Float32Array;
    assert.equal(mean.length, refMean.length);
    let worst = 0;
    mean.forEach((m, f) => {
      worst = Math.max(worst, Math.abs(m - refMean[f]), Math.abs(std[f] - refStd[f]));
      assert.ok(Math.abs(m - refMean[f]) <= 1, `frame ${f}: mean ${m} vs ${refMean[f]}`);
      assert.ok(Math.abs(std[f] - refStd[f]) <= 1, `frame ${f}: std ${std[f]} vs ${refStd[f]}`);
    });
    t.diagnostic(`frame means and deviations: max |diff| ${worst.toFixed(4)}`);
  });
});

describe('defaults reproduce the output of the code before these inputs, bit for bit', () => {
  const recorded = JSON.parse(readFileSync(join(refs, 'defaults.json'), 'utf8'));

  test(`case ${recorded.case}: frames and every intermediate tensor`, async () => {
    const dir = fixture('framepack-tiny', 'cases', recorded.case);
    const p = JSON.parse(readFileSync(join(dir, 'params.json'), 'utf8'));
    const { result, dump } = await run(join(dir, 'input.png'),
      { ...base(p), samplingMode: 'inverted', endImage: null, endImageStrength: 1 },
      await loadTensors(join(dir, 'expected.safetensors')));
    const sha = (b: ArrayBufferView) => createHash('sha256').update(new Uint8Array(b.buffer, b.byteOffset, b.byteLength)).digest('hex');
    const ours: Record<string, string> = { frames: sha(await result.pixels.frames()) };
    for (const k of Object.keys(dump)) ours[k] = sha(dump[k].data);
    assert.deepEqual(ours, recorded.sha256);
  });
});
