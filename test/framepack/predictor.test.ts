/**
 * Network lifetimes of FramePackModels on the fixtures' tiny FramePack (CPU, float32): with per-request
 * encoders and DiT (the `low` placement's lifetimes on the CPU) each request creates the encoders, releases
 * them before the DiT is created, uses one DiT for all its sections and releases it when it ends, also when
 * it fails or is cancelled; a resident placement keeps everything.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveModels, type ModelDirs } from '../../src/hub/resolve.js';
import type { HostTensor } from '../../src/onnx/safetensors.js';
import { LORA_GRAPHS_MIN_FREE_MIB, choosePlacement, type Placement } from '../../src/runtime/placement.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { findNearestBucket, loadImage, type RgbImage } from '../../src/framepack/image.js';
import { generate, type FramePackNets, type GenerateParams, type GenerateResult } from '../../src/framepack/pipeline.js';
import { FramePackModels, WARMUP, ditKernelsChoice, f1Loading, loraSupport, warmupWanted } from '../../src/framepack/predictor.js';
import { fixture, tinyModels } from '../fixtures.js';

/** 2 sections of 2 latents, 2 steps, one CFG branch: the shortest request that samples more than one section. */
const PARAMS: GenerateParams = {
  prompt: 'a cat on a windowsill', negativePrompt: '', seed: 5, seconds: 0.5, latentWindowSize: 2, steps: 2,
  cfg: 1, distilledCfg: 10, cfgRescale: 0, cache: 'off',
};

type Created = ReturnType<FramePackModels['created']>;

/** What existed at each network call of one generation. */
interface Trace {
  prompt: Created[];
  image: Created[];
  velocity: Created[];
  sections: number;
}

/**
 * `models` seen through FramePackNets, recording which networks exist at each call; `failDecode` makes the
 * first VAE decode throw (after a section has been sampled), `onVelocity` runs before each DiT call.
 * The VAE decode returns black frames of the right shape: its decode at the bucket size would be most of
 * each request's CPU time (e2e.test.ts runs it for real); the VAE encode is real.
 */
function traced(models: FramePackModels, nets: FramePackNets, trace: Trace,
  opts: { failDecode?: Error; onVelocity?: () => void; skipEncodingDone?: boolean } = {}): FramePackNets {
  return {
    halfPrecision: nets.halfPrecision,
    sigLip: nets.sigLip,
    async encodePrompt(prompt, signal) {
      const r = await nets.encodePrompt(prompt, signal);
      trace.prompt.push(models.created());
      return r;
    },
    async encodeImage(pixels, signal) {
      const r = await nets.encodeImage(pixels, signal);
      trace.image.push(models.created());
      return r;
    },
    encodeLatent: (pixels, signal) => nets.encodeLatent(pixels, signal),
    async decodeLatents(latents) {
      if (opts.failDecode) throw opts.failDecode;
      const [, , T, h, w] = latents.dims;
      const dims = [1, 3, 4 * (T - 1) + 1, 8 * h, 8 * w];
      return { dtype: 'float32', dims, data: new Float32Array(dims.reduce((a, b) => a * b, 1)) };
    },
    ...(opts.skipEncodingDone ? {} : { encodingDone: () => nets.encodingDone!() }),
    decodeOrder: nets.decodeOrder,
    samplingDone: () => nets.samplingDone!(),
    async section(inputs, signal) {
      trace.sections++;
      const m = await nets.section(inputs, signal);
      return {
        ...m,
        velocity: async (x, t, call) => {
          opts.onVelocity?.();
          trace.velocity.push(models.created());
          return m.velocity(x, t, call);
        },
      };
    },
  };
}

const newTrace = (): Trace => ({ prompt: [], image: [], velocity: [], sections: 0 });
const NONE: Created = { textEncoders: false, imageEncoder: false, dit: false };
const ALL: Created = { textEncoders: true, imageEncoder: true, dit: true };

/** Index of the first log line starting with `prefix`; fails when there is none. */
function lineOf(logs: string[], prefix: string): number {
  const i = logs.findIndex((l) => l.startsWith(prefix));
  assert.ok(i >= 0, `no "${prefix}..." line in:\n${logs.join('\n')}`);
  return i;
}
const count = (logs: string[], prefix: string) => logs.filter((l) => l.startsWith(prefix)).length;

let dirs: ModelDirs;
let cpu: Placement;
let image: RgbImage;

before(async () => {
  dirs = await resolveModels({ models: tinyModels() });
  cpu = await choosePlacement({ env: { FRAMEPACK_PLACEMENT: 'cpu' } });
  image = await loadImage(fixture('framepack-tiny', 'cases', 'teacache_cfg1', 'input.png'));
});

after(async () => {
  await terminateWorkers();
});

describe('per-request encoders and DiT', () => {
  let models: FramePackModels;
  const setupLogs: string[] = [];

  /** One request through request(); its log lines and what existed at each call. */
  async function run(opts: Parameters<typeof traced>[3] & { signal?: AbortSignal } = {}) {
    const logs: string[] = [];
    const trace = newTrace();
    const dump: Record<string, HostTensor> = {};
    let result: GenerateResult | undefined;
    let error: unknown;
    try {
      result = await models.request((l) => logs.push(l), (nets) => generate(traced(models, nets, trace, opts), image, PARAMS,
        { signal: opts.signal ?? new AbortController().signal, log: (l) => logs.push(l), dump }));
    } catch (err) {
      error = err;
    }
    return { logs, trace, result, error, dump };
  }

  before(async () => {
    models = await FramePackModels.open(dirs, { ...cpu, lifetime: { encoders: 'per-request', dit: 'per-request', vae: 'per-request' } },
      (l) => setupLogs.push(l));
  });
  after(async () => { await models?.release(); });

  test('setup creates every network once and releases the per-request ones, encoders before the DiT is created', () => {
    const released = lineOf(setupLogs, 'encoders released');
    assert.ok(lineOf(setupLogs, 'text encoders created in') < released);
    assert.ok(lineOf(setupLogs, 'SigLIP created in') < released);
    assert.ok(released < lineOf(setupLogs, 'DiT created in'));
    assert.ok(lineOf(setupLogs, 'DiT created in') < lineOf(setupLogs, 'DiT released'));
    assert.match(setupLogs.at(-1)!, /^networks ready in .*encoders, DiT, VAE created again for each request/);
    assert.match(setupLogs.at(-1)!, /DiT float32 and LoRA inputs,/, 'the CPU builds the LoRA inputs by default');
    assert.deepEqual(models.created(), NONE);
  });

  test('two requests: encoders and VAE encode, then one DiT for all sections, released before the decodes', async () => {
    const runs = [await run(), await run()];
    for (const { logs, trace, result, error } of runs) {
      assert.equal(error, undefined, String(error));
      assert.equal(result!.sections, 2);
      assert.equal(trace.sections, 2);
      // the encoders exist while encoding, the DiT does not
      assert.deepEqual(trace.prompt, [{ textEncoders: true, imageEncoder: false, dit: false }]);
      assert.deepEqual(trace.image, [{ textEncoders: true, imageEncoder: true, dit: false }]);
      // every DiT call (2 sections x 2 steps) runs with the encoders gone
      assert.equal(trace.velocity.length, 4);
      for (const c of trace.velocity) assert.deepEqual(c, { textEncoders: false, imageEncoder: false, dit: true });
      // one DiT per request, created after the encoders were released, released when the request ended
      assert.equal(count(logs, 'DiT created in'), 1);
      assert.equal(count(logs, 'DiT released'), 1);
      assert.ok(lineOf(logs, 'text encoders created in') < lineOf(logs, 'encoders released'));
      assert.ok(lineOf(logs, 'encoders released') < lineOf(logs, 'DiT created in'));
      // the VAE's encoder sessions are released with the encoders
      assert.equal(count(logs, 'VAE released'), 1);
      assert.ok(lineOf(logs, 'start latent in') < lineOf(logs, 'VAE released'));
      assert.ok(lineOf(logs, 'VAE released') < lineOf(logs, 'DiT created in'));
      // every section is sampled, then the DiT is released, then the sections are decoded
      assert.ok(lineOf(logs, 'section 2/2 sampled') < lineOf(logs, 'DiT released'));
      assert.ok(lineOf(logs, 'DiT released') < lineOf(logs, 'section 1/2 decoded'));
      assert.match(logs.at(-1)!, /^section 2\/2 decoded/);
    }
    assert.deepEqual(models.created(), NONE);
    // a re-created DiT computes what the first one did
    for (const key of ['section_0_generated_latents', 'section_1_generated_latents']) {
      assert.deepEqual(runs[1].dump[key].data, runs[0].dump[key].data, key);
    }
  });

  test('a failing request releases the DiT; the next request creates it again', async () => {
    const boom = new Error('decode failed on purpose');
    const failed = await run({ failDecode: boom });
    assert.equal(failed.error, boom, 'the request fails with its own error');
    assert.equal(failed.trace.sections, 2, 'decoding starts once every section is sampled');
    assert.ok(failed.trace.velocity.length > 0);
    assert.equal(failed.logs.at(-1), 'DiT released');
    assert.deepEqual(models.created(), NONE);

    const next = await run();
    assert.equal(next.error, undefined, String(next.error));
    assert.equal(count(next.logs, 'DiT created in'), 1);
    assert.deepEqual(models.created(), NONE);
  });

  test('a cancelled request releases the DiT; the next request creates it again', async () => {
    const controller = new AbortController();
    const cancelled = await run({ signal: controller.signal, onVelocity: () => controller.abort() });
    assert.equal((cancelled.error as Error)?.name, 'AbortError', String(cancelled.error));
    assert.equal(cancelled.trace.velocity.length, 1);
    assert.equal(count(cancelled.logs, 'DiT created in'), 1);
    assert.equal(cancelled.logs.at(-1), 'DiT released');
    assert.deepEqual(models.created(), NONE);

    const next = await run();
    assert.equal(next.error, undefined, String(next.error));
    assert.equal(count(next.logs, 'DiT created in'), 1);
  });

  test('a cancel during encoding releases the encoders and never creates the DiT', async () => {
    const controller = new AbortController();
    const logs: string[] = [];
    const trace = newTrace();
    await assert.rejects(models.request((l) => logs.push(l), (nets) => {
      const spy = traced(models, nets, trace);
      return generate({ ...spy, encodePrompt: async (p, s) => { const r = await spy.encodePrompt(p, s); controller.abort(); return r; } },
        image, PARAMS, { signal: controller.signal, log: (l) => logs.push(l) });
    }), { name: 'AbortError' });
    assert.deepEqual(trace.prompt, [{ textEncoders: true, imageEncoder: false, dit: false }]);
    assert.equal(count(logs, 'encoders released'), 1);
    assert.equal(count(logs, 'DiT created in'), 0);
    assert.deepEqual(models.created(), NONE);
  });

  test('without request() and encodingDone(), creating the DiT still releases the encoders first', async () => {
    const logs: string[] = [];
    const trace = newTrace();
    const r = await models.request((l) => logs.push(l), (nets) =>
      generate(traced(models, nets, trace, { skipEncodingDone: true }), image, PARAMS, { signal: new AbortController().signal, log: (l) => logs.push(l) }));
    assert.equal(r.sections, 2);
    assert.ok(lineOf(logs, 'encoders released') < lineOf(logs, 'DiT created in'));
    for (const c of trace.velocity) assert.deepEqual(c, { textEncoders: false, imageEncoder: false, dit: true });

    // generate() on the object itself (no request scope): samplingDone() still frees the DiT before decoding
    await generate(traced(models, models, newTrace()), image, PARAMS, { signal: new AbortController().signal, log: () => {} });
    assert.deepEqual(models.created(), NONE);
    const next = newTrace();
    await traced(models, models, next).encodePrompt('next prompt', new AbortController().signal);
    assert.deepEqual(next.prompt, [{ textEncoders: true, imageEncoder: false, dit: false }]);
    await models.endRequest();
    assert.deepEqual(models.created(), NONE);
  });
});

describe('resident placement', () => {
  test('cache: magcache skips DiT calls per section and says how many', async () => {
    const models = await FramePackModels.open(dirs, cpu, () => {});
    try {
      const logs: string[] = [];
      const trace = newTrace();
      await models.request((l) => logs.push(l), (nets) => generate(traced(models, nets, trace), image,
        { ...PARAMS, steps: 8, cache: 'magcache' }, { signal: new AbortController().signal, log: (l) => logs.push(l) }));
      const lines = logs.filter((l) => l.includes('MagCache:'));
      assert.equal(lines.length, trace.sections, logs.join('\n'));
      for (const l of lines) {
        const m = /MagCache: (\d+) computed, (\d+) skipped/.exec(l);
        assert.ok(m, l);
        assert.equal(Number(m[1]) + Number(m[2]), 8);
        assert.ok(Number(m[2]) > 0, `some calls are skipped: ${l}`);
      }
      assert.equal(trace.velocity.length, 8 * trace.sections, 'the sampler still makes every call; the DiT skips its blocks');
    } finally {
      await models.release();
    }
  });

  test('every network is created at setup and kept across requests', async () => {
    const setupLogs: string[] = [];
    const models = await FramePackModels.open(dirs, cpu, (l) => setupLogs.push(l));
    try {
      assert.deepEqual(models.created(), ALL);
      assert.equal(count(setupLogs, 'DiT created in'), 0);
      const logs: string[] = [];
      const trace = newTrace();
      await models.request((l) => logs.push(l), (nets) =>
        generate(traced(models, nets, trace), image, PARAMS, { signal: new AbortController().signal, log: (l) => logs.push(l) }));
      for (const c of [...trace.prompt, ...trace.image, ...trace.velocity]) assert.deepEqual(c, ALL);
      assert.deepEqual(models.created(), ALL);
      assert.equal(count(logs, 'DiT created in') + count(logs, 'DiT released') + count(logs, 'encoders released'), 0);

      // another resolution class on the same networks: the tiny model at class 320, with the real VAE decode
      const small = await generate(models, image, { ...PARAMS, resolution: 320 }, { signal: new AbortController().signal, log: () => {} });
      const [h640, w640] = findNearestBucket(image.height, image.width);
      assert.deepEqual(small.bucket, findNearestBucket(image.height, image.width, 320));
      assert.ok(small.bucket[0] < h640 && small.bucket[1] < w640);
      assert.deepEqual([small.height, small.width], small.bucket);
      assert.equal(small.pixels.frameCount, 17);
      // the CPU placement admits any size and estimates nothing
      const admitted: string[] = [];
      models.admit(findNearestBucket(image.height, image.width, 960), 16, (l) => admitted.push(l));
      assert.deepEqual(admitted, []);
    } finally {
      await models.release();
    }
    assert.deepEqual(models.created(), NONE);
  });
});

describe('warm-up at setup', () => {
  test('FRAMEPACK_WARMUP: on by default where the DiT stays on a GPU only; on and off everywhere; a bad value is a setting error', () => {
    const gpu = (dit: 'resident' | 'per-request') => ({ ep: 'cuda' as const, lifetime: { encoders: 'per-request' as const, dit, vae: 'resident' as const } });
    assert.equal(warmupWanted(gpu('resident'), {}), true);
    assert.equal(warmupWanted(gpu('per-request'), {}), false);
    assert.equal(warmupWanted(cpu, {}), false);
    assert.equal(warmupWanted(cpu, { FRAMEPACK_WARMUP: ' ON ' }), true);
    assert.equal(warmupWanted(gpu('resident'), { FRAMEPACK_WARMUP: 'off' }), false);
    assert.throws(() => warmupWanted(cpu, { FRAMEPACK_WARMUP: 'yes' }), (e: { code?: string }) => e.code === 'RUNTIME_SETTING_INVALID');
  });

  test('one generation at the default shapes, its frames dropped; the networks stay as they were and a request follows', async () => {
    const models = await FramePackModels.open(dirs, cpu, () => {});
    try {
      // the tiny model at class 320 (the real 640 bucket's decode would be most of the CPU test's time): 2 sections of 2 latents
      const { seconds, frames } = await models.warmUp(new AbortController().signal,
        { ...WARMUP, params: { ...WARMUP.params, seconds: 0.5, latentWindowSize: 2, resolution: 320 } });
      assert.equal(frames, 17);
      assert.ok(seconds > 0);
      assert.deepEqual(models.created(), ALL);
      const logs: string[] = [];
      const r = await models.request((l) => logs.push(l), (nets) => generate(nets, image, { ...PARAMS, resolution: 320 }, { signal: new AbortController().signal, log: (l) => logs.push(l) }));
      assert.equal(r.pixels.frameCount, 17);
      await r.pixels.close();
      assert.equal(count(logs, 'DiT created in'), 0);
    } finally {
      await models.release();
    }
  });
});

describe('the F1 transformer', () => {
  test('FRAMEPACK_F1=setup finds, builds and creates it at setup, then it makes way for the default transformer', async () => {
    const setupLogs: string[] = [];
    // the tiny transformer stands for the F1 checkpoint (one architecture, one set of key names)
    const models = await FramePackModels.open({ ...dirs, transformerF1: dirs.transformer }, cpu, (l) => setupLogs.push(l), { f1: 'setup' });
    try {
      assert.ok(lineOf(setupLogs, 'F1 transformer found in') < lineOf(setupLogs, 'F1 DiT released for the inverted transformer'));
      assert.match(setupLogs.at(-1)!, /F1 transformer prepared\)$/);
      assert.deepEqual(models.created(), ALL);
    } finally {
      await models.release();
    }
  });

  test('without a folder for it, an F1 request fails naming the missing component', async () => {
    const models = await FramePackModels.open(dirs, cpu, () => {});
    try {
      const logs: string[] = [];
      await assert.rejects(models.request((l) => logs.push(l), (nets) => generate(nets, image, { ...PARAMS, samplingMode: 'f1' },
        { signal: new AbortController().signal, log: (l) => logs.push(l) })), /Model files are missing: transformerF1/);
    } finally {
      await models.release();
    }
  });

  test('FRAMEPACK_F1 takes first-use (default) or setup', () => {
    assert.equal(f1Loading({}), 'first-use');
    assert.equal(f1Loading({ FRAMEPACK_F1: ' Setup ' }), 'setup');
    assert.throws(() => f1Loading({ FRAMEPACK_F1: 'eager' }), /FRAMEPACK_F1=eager is not valid: use one of first-use, setup/);
  });
});

describe('LoRA', () => {
  const fixtureLora = new URL('../../../test/fixtures/lora/musubi_framepack.safetensors', import.meta.url);
  let cache: string;
  let saved: Record<string, string | undefined>;
  before(async () => {
    cache = await mkdtemp(join(tmpdir(), 'predictor-lora-'));
    saved = { FRAMEPACK_LORA: process.env.FRAMEPACK_LORA, FRAMEPACK_LORA_CACHE: process.env.FRAMEPACK_LORA_CACHE };
    process.env.FRAMEPACK_LORA_CACHE = cache;
  });
  after(async () => {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
    await rm(cache, { recursive: true, force: true });
  });
  const ctx = (logs: string[]) => ({ log: (l: string) => logs.push(l), download: async (_url: string, file: string) => copyFile(fixtureLora, file) });
  const loras = [{ url: 'https://example.com/style.safetensors', scale: 0.7 }];

  test('FRAMEPACK_LORA: auto builds the LoRA inputs on the CPU, and on CUDA under high with 72 GiB free; on and off everywhere', () => {
    const cuda = (policy: Placement['policy'], freeMiB: number) => ({
      ep: 'cuda' as const, policy, gpu: { index: 0, name: 'NVIDIA H100 80GB HBM3', totalMiB: 81559, usedMiB: 81559 - freeMiB, freeMiB, driver: '580' },
    });
    assert.equal(loraSupport(cpu, {}), true);
    assert.equal(loraSupport(cuda('high', 80959), {}), true); // an idle 80 GB card
    assert.equal(loraSupport(cuda('high', LORA_GRAPHS_MIN_FREE_MIB), {}), true);
    assert.equal(loraSupport(cuda('high', LORA_GRAPHS_MIN_FREE_MIB - 1), {}), false);
    assert.equal(loraSupport(cuda('low', 80959), {}), false); // a DiT created for each request would pay the slower creation each time
    assert.equal(loraSupport(cuda('low', 20000), { FRAMEPACK_LORA: ' On ' }), true);
    assert.equal(loraSupport(cuda('high', 80959), { FRAMEPACK_LORA: 'off' }), false);
    assert.equal(loraSupport(cpu, { FRAMEPACK_LORA: 'off' }), false);
    assert.throws(() => loraSupport(cpu, { FRAMEPACK_LORA: 'yes' }), /FRAMEPACK_LORA=yes is not valid: use one of auto, on, off/);
  });

  test('FRAMEPACK_DIT_KERNELS: auto by default; auto and on only for a bfloat16 CUDA DiT with NVRTC and cuBLASLt, else the reason is logged', () => {
    const p = (ep: 'cuda' | 'cpu', dit: 'bfloat16' | 'float32', bits?: 8) => ({ ep, precision: { dit }, quantize: { dit: bits } }) as unknown as Placement;
    const ok = () => null, missing = () => 'NVRTC cannot be loaded (libnvrtc.so.13: not found)';
    assert.equal(ditKernelsChoice(p('cuda', 'bfloat16'), {}, ok).enabled, true);
    assert.equal(ditKernelsChoice(p('cuda', 'bfloat16'), { FRAMEPACK_DIT_KERNELS: 'off' }, ok).enabled, false);
    const cpu = ditKernelsChoice(p('cpu', 'float32'), {}, () => { throw new Error('the CPU placement must not load the CUDA driver'); });
    assert.equal(cpu.enabled, false);
    assert.match(cpu.line, /FRAMEPACK_DIT_KERNELS=auto, but the DiT runs on cpu/);
    for (const v of ['on', 'auto']) assert.equal(ditKernelsChoice(p('cuda', 'bfloat16'), { FRAMEPACK_DIT_KERNELS: v }, ok).enabled, true);
    for (const [placement, why] of [[p('cpu', 'float32'), 'runs on cpu'], [p('cuda', 'bfloat16', 8), '8-bit'], [p('cuda', 'float32'), 'is float32']] as const) {
      const c = ditKernelsChoice(placement, { FRAMEPACK_DIT_KERNELS: 'on' }, ok);
      assert.equal(c.enabled, false);
      assert.match(c.line, new RegExp(`FRAMEPACK_DIT_KERNELS=on, but .*${why}`));
    }
    const auto = ditKernelsChoice(p('cuda', 'bfloat16'), { FRAMEPACK_DIT_KERNELS: 'auto' }, missing);
    assert.equal(auto.enabled, false);
    assert.match(auto.line, /auto, but NVRTC cannot be loaded/);
    assert.throws(() => ditKernelsChoice(p('cuda', 'bfloat16'), { FRAMEPACK_DIT_KERNELS: 'on' }, missing),
      (e: any) => e.code === 'DIT_KERNELS_UNAVAILABLE' && /NVRTC cannot be loaded \(libnvrtc/.test(e.message));
    assert.throws(() => ditKernelsChoice(p('cuda', 'bfloat16'), { FRAMEPACK_DIT_KERNELS: 'yes' }, ok), /FRAMEPACK_DIT_KERNELS=yes is not valid: use one of auto, on, off/);
  });

  test('bound to the transformer that samples (F1 too) for one request, then unbound: the next request is plain again', async () => {
    const models = await FramePackModels.open({ ...dirs, transformerF1: dirs.transformer }, cpu, () => {});
    const run = async (p: GenerateParams, lora: Record<string, HostTensor> | null, logs: string[] = []) => {
      const r = await models.request((l) => logs.push(l), (nets) => generate(nets, image, p,
        { signal: new AbortController().signal, log: (l) => logs.push(l) }), lora);
      return r.pixels.frames();
    };
    try {
      const f1 = { ...PARAMS, samplingMode: 'f1' as const };
      const plain = await run(f1, null);
      const logs: string[] = [];
      const feeds = await models.prepareLoras(loras, ctx(logs));
      assert.ok(feeds);
      const styled = await run(f1, feeds, logs);
      assert.equal(count(logs, 'LoRA weights bound to the F1 DiT in'), 1, logs.join('\n'));
      assert.notDeepEqual(styled, plain, 'the LoRA changes the video');
      assert.deepEqual(await run(f1, null), plain, 'unbound after its request');
      // the inverted transformer gets it the same way
      const inverted = await run(PARAMS, null);
      const invertedLogs: string[] = [];
      assert.notDeepEqual(await run(PARAMS, feeds, invertedLogs), inverted);
      assert.equal(count(invertedLogs, 'LoRA weights bound to the DiT in'), 1);
      assert.deepEqual(await run(PARAMS, null), inverted);
    } finally {
      await models.release();
    }
  });

  test('a DiT built without LoRA inputs refuses loras before any download, naming FRAMEPACK_LORA', async () => {
    process.env.FRAMEPACK_LORA = 'off';
    const models = await FramePackModels.open(dirs, cpu, () => {});
    try {
      const logs: string[] = [];
      await assert.rejects(models.prepareLoras(loras, { log: (l) => logs.push(l), download: async () => assert.fail('no download') }),
        (err: unknown) => (err as { code?: string }).code === 'LORA_NOT_ENABLED' &&
          /FRAMEPACK_LORA is off, or auto on the cpu placement.*with at least 72 GiB free.*FRAMEPACK_LORA=on/.test((err as Error).message));
      assert.equal(await models.prepareLoras([], ctx(logs)), null);
    } finally {
      delete process.env.FRAMEPACK_LORA;
      await models.release();
    }
  });
});
