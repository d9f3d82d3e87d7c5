/**
 * The section loop's orchestration over stand-in networks (the parity of the real networks is e2e.test.ts):
 * stages in order, per-step progress, noise injection, dumps, cancellation between steps.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { HostTensor } from '../../src/onnx/safetensors.js';
import { SIGLIP_384, type RgbImage } from '../../src/framepack/image.js';
import { generate, type DecodeOrder, type FramePackNets, type GenerateParams, type SectionInputs } from '../../src/framepack/pipeline.js';
import { NormalGenerator } from '../../src/framepack/noise.js';
import { overlapFrames, sliceTime, toUint8Frames, type Float32Tensor } from '../../src/framepack/sections.js';
import type { StepProgress } from '../../src/framepack/progress.js';
import { float32ToFloat16 } from '../../src/onnx/half.js';

/** frames the fake decode hands over ahead (FrameStream.ahead) when asked to stream */
const AHEAD = 2;
const f32 = (dims: number[], fill = 0): HostTensor => ({ dtype: 'float32', dims, data: new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(fill) });

interface FakeOptions {
  abortAt?: { section: number; step: number; ac: AbortController };
  decodeOrder?: DecodeOrder;
  /**
   * Decode k waits until section k + 1 has started (a decode beside sampling), which waits for decode k to end;
   * decode `failDecode` fails.
   */
  slowDecodes?: { sections: number; failDecode?: number };
}

function fakeNets(events: string[], opts: FakeOptions = {}) {
  const sections: SectionInputs[] = [];
  let decodes = 0, settled = 0;
  const firstInputs: Float32Array[] = [];
  let closed = 0;
  const nets: FramePackNets = {
    halfPrecision: false,
    decodeOrder: opts.decodeOrder,
    async samplingDone() { events.push('sampling-done'); },
    sigLip: SIGLIP_384,
    async encodePrompt(prompt) {
      events.push(`prompt:${prompt}`);
      const mask: HostTensor = { dtype: 'int64', dims: [1, 512], data: new BigInt64Array(512).fill(1n, 0, 3) };
      return { llamaVec: f32([1, 512, 4], prompt.length), llamaMask: mask, clipPooler: f32([1, 8], 1) };
    },
    async encodeImage(pv) {
      events.push(`siglip:${pv.dims.join('x')}`);
      return f32([1, 729, 8], 0.5);
    },
    async encodeLatent(px) {
      events.push(`vae-encode:${px.dims.join('x')}`);
      const [, , , H, W] = px.dims;
      return f32([1, 16, 1, H / 8, W / 8], -3);
    },
    async decodeLatents(z, _signal, o) {
      const [, , T, h, w] = z.dims;
      events.push(`decode:${T}`);
      const slow = opts.slowDecodes;
      if (slow) {
        const k = decodes++;
        events.push(`decoding:${k}`);
        while (sections.length < Math.min(k + 2, slow.sections)) await new Promise((r) => setTimeout(r, 1));
        events.push(`decoded:${k}`);
        settled++;
        if (k === slow.failDecode) throw new Error('decode failed');
      }
      // pixels that depend on the latents decoded: the first value, clamped into [-1, 1]
      const out = f32([1, 3, 4 * (T - 1) + 1, 8 * h, 8 * w], Math.max(-1, Math.min(1, (z.data as Float32Array)[0] / 4)));
      if (o?.stream) {
        events.push(`stream:${o.stream.frames}`);
        o.stream.take(toUint8Frames(out as Float32Tensor, 0, o.stream.frames));
        // as a decode tiled in time does: the next frames, final before its last window, as float
        const n = Math.min(AHEAD, out.dims[2] - o.stream.frames - 1);
        if (o.stream.ahead && n > 0) o.stream.ahead(sliceTime(out as Float32Tensor, o.stream.frames, o.stream.frames + n), o.stream.frames);
      }
      return out;
    },
    async section(inputs) {
      sections.push(inputs);
      events.push(`section:${inputs.plan.index}`);
      // slow decodes: section k + 1 samples only once decode k is done, so that the order is the same every run
      while (opts.slowDecodes && settled < inputs.plan.index) await new Promise((r) => setTimeout(r, 1));
      return {
        velocity: async (x, _t, call) => {
          if (call.step === 0 && call.branch === 'positive') firstInputs.push(Float32Array.from(x));
          const a = opts.abortAt;
          if (a && inputs.plan.index === a.section && call.step === a.step) a.ac.abort();
          return new Float32Array(x.length).fill(call.branch === 'positive' ? 0.1 : 0.3);
        },
        close: async () => { closed++; },
      };
    },
  };
  return { nets, sections, firstInputs, closed: () => closed };
}

const image: RgbImage = { width: 64, height: 48, data: new Uint8Array(64 * 48 * 3).fill(200) };
const params: GenerateParams = {
  prompt: 'a cat', negativePrompt: 'dog', seed: 5, seconds: 1, latentWindowSize: 2, steps: 3, cfg: 1, distilledCfg: 10,
  cfgRescale: 0, cache: 'teacache',
};

test('stages run in order; every section gets its plan, history and the shared conditioning', async () => {
  const events: string[] = [];
  const logs: string[] = [];
  const progress: number[] = [];
  const steps: Array<{ at: StepProgress; first: number; dims: number[] }> = [];
  const decoded: Array<[number, number, number]> = [];
  const f = fakeNets(events);
  const r = await generate(f.nets, image, params, {
    signal: new AbortController().signal, log: (l) => logs.push(l), progress: (d) => progress.push(d),
    onStep: (at, denoised) => {
      events.push(`step:${at.section}.${at.step}`);
      steps.push({ at, first: denoised.data[0], dims: denoised.dims });
    },
    onSection: (section, sections, pixels) => decoded.push([section, sections, pixels.frameCount]),
  });
  // 64x48 -> the 640 bucket of the same aspect: (H, W) = (544, 704)
  assert.deepEqual(r.bucket, [544, 704]);
  assert.equal(r.width, 704);
  assert.equal(r.height, 544);
  assert.equal(r.sections, 4);
  assert.equal(r.pixels.frameCount, 33);
  const stepsOf = (s: number) => [1, 2, 3].map((i) => `step:${s}.${i}`);
  assert.deepEqual(events, ['prompt:a cat', 'vae-encode:1x3x1x544x704', 'siglip:1x3x384x384',
    'section:0', ...stepsOf(1), 'decode:2', 'section:1', ...stepsOf(2), 'decode:4', 'section:2', ...stepsOf(3), 'decode:4',
    'section:3', ...stepsOf(4), 'decode:5', 'sampling-done']);
  // Each step hands over its x0 prediction (x - sigma v with the stand-in velocity 0.1) and where sampling stands.
  assert.equal(steps.length, 12);
  assert.deepEqual(steps[0].dims, [1, 16, 2, 68, 88]);
  assert.deepEqual(steps.map((s) => s.at.percent), [8.3, 16.7, 25, 33.3, 41.7, 50, 58.3, 66.7, 75, 83.3, 91.7, 100]);
  assert.deepEqual(steps[4].at, { ...steps[4].at, section: 2, sections: 4, step: 2, steps: 3 });
  assert.equal(steps[11].at.eta_seconds, 0);
  assert.ok(steps.every((s) => Number.isFinite(s.first)));
  // The video so far after each section: 2 latents -> 5 frames, then 8 more per section (4 lws - 3 blended).
  assert.deepEqual(decoded, [[1, 4, 5], [2, 4, 13], [3, 4, 21], [4, 4, 33]]);
  assert.deepEqual(f.sections.map((s) => s.plan.padding), [3, 2, 1, 0]);
  assert.equal(f.sections[0].negative, null, 'cfg 1: no negative conditioning');
  assert.equal(f.sections[0].guidance, 10000);
  assert.deepEqual(f.sections[0].latentShape, [1, 16, 2, 68, 88]);
  // Section 2's 1x history frame is section 1's first generated frame: x0 = noise - 1 * v at the last step...
  const post = f.sections[1].conditioning.cleanLatents;
  assert.equal(post.data[0], -3, 'clean latents start with the start latent');
  assert.notEqual(post.data[68 * 88], 0, 'the 1x frame comes from section 1');
  assert.equal(f.sections[0].conditioning.cleanLatents.data[68 * 88], 0, 'empty history in section 1');
  assert.equal(f.closed(), 4);
  // one tqdm bar per section: the empty bar, then a line per step naming the section
  const bars = logs.filter((l) => /^\s*\d+%\|/.test(l));
  assert.equal(bars.length, 16, logs.join('\n'));
  assert.match(bars[7], /^100%\|##########\| 3\/3 \[\d\d:\d\d<00:00, +[\d.]+(s\/it|it\/s), section 2\/4\]$/);
  assert.ok(logs.some((l) => l.startsWith('seed 5;')));
  assert.deepEqual(progress, Array.from({ length: 12 }, (_, i) => i + 1));
  // The seeded generator draws section after section.
  const g = new NormalGenerator(5);
  const n = 16 * 2 * 68 * 88;
  assert.deepEqual(f.firstInputs[0], g.normal(n));
  assert.deepEqual(f.firstInputs[1], g.normal(n));
});

test('real CFG encodes the negative prompt; injected noise and the dump use the fixture names', async () => {
  const events: string[] = [];
  const f = fakeNets(events);
  const shape = [1, 16, 2, 68, 88];
  const noise: Record<string, HostTensor> = {};
  for (let i = 0; i < 4; i++) noise[`noise_${i}`] = f32(shape, i + 1);
  // float16 noise, as the fixtures store it, is accepted too
  const n1 = noise.noise_1;
  noise.noise_1 = { dtype: 'float16', dims: n1.dims, data: float32ToFloat16(n1.data as Float32Array) };
  const dump: Record<string, HostTensor> = {};
  await generate(f.nets, image, { ...params, cfg: 2 }, { signal: new AbortController().signal, log: () => {}, noise, dump });
  assert.deepEqual(events.slice(0, 2), ['prompt:a cat', 'prompt:dog']);
  assert.ok(f.sections[0].negative);
  f.firstInputs.forEach((x, i) => assert.ok(x.every((v) => v === i + 1), `section ${i} starts from noise_${i}`));
  assert.deepEqual(Object.keys(dump).sort(), ['clip_l_pooler', 'clip_l_pooler_n', 'image_embeddings', 'llama_attention_mask',
    'llama_vec', 'llama_vec_n', 'noise_0', 'noise_1', 'noise_2', 'noise_3', 'section_0_generated_latents',
    'section_1_generated_latents', 'section_2_generated_latents', 'section_3_generated_latents', 'start_latent']);
  assert.deepEqual(dump.section_3_generated_latents.dims, [1, 16, 3, 68, 88], 'the start latent is prepended in the last section');
  assert.deepEqual(dump.section_0_generated_latents.dims, [1, 16, 2, 68, 88]);

  await assert.rejects(generate(fakeNets([]).nets, image, params, { signal: new AbortController().signal, log: () => {},
    noise: { noise_0: f32([1, 16, 2, 8, 8]) } }), /noise_0 has shape/);
});

test('the start image is prepared while the prompt is encoded: either failure is raised, none goes unhandled', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  try {
    // an image the worker cannot read: its error comes after the prompt, at the image stage
    const broken = { width: 64, height: 48, data: undefined } as unknown as RgbImage;
    const events: string[] = [];
    await assert.rejects(generate(fakeNets(events).nets, broken, params, { signal: new AbortController().signal, log: () => {} }));
    assert.deepEqual(events, ['prompt:a cat'], 'the prompt was encoded, nothing after the image');
    // a failing prompt while the broken image is being prepared: the prompt's error, and the image's is handled
    const f = fakeNets([]);
    f.nets.encodePrompt = async () => { throw new Error('prompt failed'); };
    await assert.rejects(generate(f.nets, broken, params, { signal: new AbortController().signal, log: () => {} }), /prompt failed/);
    await new Promise((r) => setTimeout(r, 500)); // the worker's failure arrives after the prompt's
    assert.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('a cancel stops within the step and frees the section', async () => {
  const ac = new AbortController();
  const events: string[] = [];
  const f = fakeNets(events, { abortAt: { section: 1, step: 1, ac } });
  const logs: string[] = [];
  await assert.rejects(generate(f.nets, image, params, { signal: ac.signal, log: (l) => logs.push(l) }), { name: 'AbortError' });
  assert.equal(f.closed(), 2, 'the aborted section was closed too');
  assert.ok(!events.includes('decode:4'), 'nothing decoded after the cancel');
  assert.ok(!logs.some((l) => /2\/3 .*section 2\/4/.test(l)), 'the canceled step is not reported');
  assert.ok(logs.some((l) => /1\/3 .*section 2\/4/.test(l)));
});

test('decode after sampling: every section sampled, then samplingDone, then the same decodes and the same frames', async () => {
  const run = async (decodeOrder: DecodeOrder) => {
    const events: string[] = [];
    const r = await generate(fakeNets(events, { decodeOrder }).nets, image, params, { signal: new AbortController().signal, log: () => {} });
    return { events, frames: await r.pixels.frames() };
  };
  const inline = await run('inline'), deferred = await run('after-sampling');
  assert.deepEqual(deferred.events.slice(3), ['section:0', 'section:1', 'section:2', 'section:3', 'sampling-done',
    'decode:2', 'decode:4', 'decode:4', 'decode:5']);
  assert.ok(new Set(inline.frames).size > 1, 'the fake decode gives frames that differ by section');
  assert.deepEqual(deferred.frames, inline.frames);
});

test('the last decode of the inverted order hands over the video\'s first frames as they come; the rest follow from the pixels', async () => {
  const whole = async (r: { pixels: { frames(): Promise<Uint8Array> } }) => Buffer.from(await r.pixels.frames());
  for (const [seconds, sections] of [[1, 4], [0.2, 1]] as const) {
    const p = { ...params, seconds };
    const plain = await generate(fakeNets([]).nets, image, p, { signal: new AbortController().signal, log: () => {} });
    const events: string[] = [];
    const handed: Buffer[] = [];
    const sizes = new Set<string>();
    const r = await generate(fakeNets(events).nets, image, p, {
      signal: new AbortController().signal, log: () => {},
      onFrames: (f, size) => { handed.push(Buffer.from(f)); sizes.add(`${size.width}x${size.height}`); },
    });
    assert.equal(r.sections, sections);
    // only the last decode streams: all its frames but the overlap blended into the next ones (all when it is the only one)
    const lastFrames = 4 * (events.filter((e) => e.startsWith('decode:')).map((e) => Number(e.slice(7))).at(-1)! - 1) + 1;
    const expected = sections > 1 ? lastFrames - overlapFrames(params.latentWindowSize) : lastFrames;
    assert.deepEqual(events.filter((e) => e.startsWith('stream:')), [`stream:${expected}`]);
    // with earlier sections, the frames handed over ahead are blended into the video and handed over too
    assert.equal(r.streamed, sections > 1 ? expected + AHEAD : expected);
    assert.deepEqual([...sizes], [`${r.width}x${r.height}`]);
    const rest: Buffer[] = [];
    for await (const c of r.pixels.chunks(r.streamed)) rest.push(Buffer.from(c));
    assert.ok(Buffer.concat([...handed, ...rest]).equals(await whole(plain)), 'the handed frames and the rest are the video');
    await r.pixels.close();
  }
  // F1 appends: the last decode's frames end the video, so nothing streams (the video is encoded at the end)
  const handed: Uint8Array[] = [];
  const f1 = await generate(fakeNets([]).nets, image, { ...params, samplingMode: 'f1' },
    { signal: new AbortController().signal, log: () => {}, onFrames: (f) => handed.push(f) });
  assert.deepEqual([handed.length, f1.streamed], [0, 0]);
  await f1.pixels.close();
});

test('decode beside sampling: section k decodes while k + 1 samples, in order, with the same frames', async () => {
  const inline = await generate(fakeNets([]).nets, image, params, { signal: new AbortController().signal, log: () => {} });
  const events: string[] = [];
  const sectionsSeen: number[] = [];
  const r = await generate(fakeNets(events, { decodeOrder: 'beside-sampling', slowDecodes: { sections: 4 } }).nets, image, params,
    { signal: new AbortController().signal, log: () => {}, onSection: (s) => sectionsSeen.push(s) });
  const at = (e: string) => { const i = events.indexOf(e); assert.ok(i >= 0, `${e} in ${events.join(' ')}`); return i; };
  for (let k = 0; k < 4; k++) {
    // one decode at a time, in order
    if (k > 0) assert.ok(at(`decoding:${k}`) > at(`decoded:${k - 1}`), events.join(' '));
    // section k's decode finishes only after section k + 1 started sampling: the overlap
    if (k < 3) assert.ok(at(`decoded:${k}`) > at(`section:${k + 1}`), events.join(' '));
  }
  assert.equal(events.at(-1), 'sampling-done');
  assert.deepEqual(sectionsSeen, [1, 2, 3, 4]);
  assert.deepEqual(await r.pixels.frames(), await inline.pixels.frames());
});

test('decode beside sampling: a failed decode stops the next section, and nothing is left running', async () => {
  const events: string[] = [];
  await assert.rejects(generate(fakeNets(events, { decodeOrder: 'beside-sampling', slowDecodes: { sections: 4, failDecode: 0 } }).nets,
    image, params, { signal: new AbortController().signal, log: () => {} }), /decode failed/);
  // decode 0 fails while section 2 samples; section 3 never starts and no later decode runs
  assert.deepEqual(events.slice(3), ['section:0', 'decode:2', 'decoding:0', 'section:1', 'decoded:0']);
});

test('timestamped prompts: each distinct prompt encoded once, each section conditioned on its own, the change blended', async () => {
  const events: string[] = [];
  const logs: string[] = [];
  const f = fakeNets(events);
  // 1 s, lws 2: 4 sections of 5 frames (1/6 s), generated from the end: "yy" (0.5 s on) for the first three,
  // "x" for the last, which blends the change
  await generate(f.nets, image, { ...params, prompt: '[0s: x] [0.5s: yy]', promptBlendSections: 4 },
    { signal: new AbortController().signal, log: (l) => logs.push(l) });
  assert.deepEqual(events.filter((e) => e.startsWith('prompt:')), ['prompt:yy', 'prompt:x']);
  // llamaVec of a prompt is filled with its length (fakeNets): 2 for "yy", 1 for "x"
  const firstValue = f.sections.map((s) => (s.positive.llamaVec.data as Float32Array)[0]);
  assert.deepEqual(firstValue, [2, 2, 2, Math.fround(Math.fround(0.75) * 2) + Math.fround(Math.fround(0.25) * 1)]);
  assert.ok(logs.some((l) => /^timestamped prompt: 2 tag\(s\), 2 prompt\(s\) used; by section \(end of the video first\): 1: "yy", 2: "yy", 3: "yy", 4: "yy" x 0.75 \+ "x" x 0.25$/.test(l)), logs.join('\n'));
  // without blending the change is immediate
  const g = fakeNets([]);
  await generate(g.nets, image, { ...params, prompt: '[0s: x] [0.5s: yy]', promptBlendSections: 0 }, { signal: new AbortController().signal, log: () => {} });
  assert.deepEqual(g.sections.map((s) => (s.positive.llamaVec.data as Float32Array)[0]), [2, 2, 2, 1]);
});

test('a plain prompt is encoded once and the same conditioning reaches every section', async () => {
  const events: string[] = [];
  const f = fakeNets(events);
  await generate(f.nets, image, { ...params, prompt: ' a [red] cat ' }, { signal: new AbortController().signal, log: () => {} });
  assert.deepEqual(events.filter((e) => e.startsWith('prompt:')), ['prompt: a [red] cat ']);
  assert.ok(f.sections.every((s) => s.positive === f.sections[0].positive));
});

test('resolution: the bucket of the class, its cost logged; 640 logs nothing extra', async () => {
  const events: string[] = [];
  const logs: string[] = [];
  const f = fakeNets(events);
  const r = await generate(f.nets, image, { ...params, resolution: 320 }, { signal: new AbortController().signal, log: (l) => logs.push(l) });
  // 64x48 -> (544, 704) at 640 -> (272, 352) at 320
  assert.deepEqual(r.bucket, [272, 352]);
  assert.ok(events.includes('vae-encode:1x3x1x272x352'), events.join(' '));
  assert.deepEqual(f.sections[0].latentShape, [1, 16, 2, 34, 44]);
  assert.ok(logs.some((l) => /^resolution 320: 1\d{3} image tokens per transformer call, 0\.2\dx the 704x544 bucket of class 640/.test(l)), logs.join('\n'));
  const plain: string[] = [];
  await generate(fakeNets([]).nets, image, params, { signal: new AbortController().signal, log: (l) => plain.push(l) });
  assert.ok(!plain.some((l) => l.startsWith('resolution')));
});

const endImage: RgbImage = { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3).fill(40) };

/** Stand-in nets whose VAE and SigLIP outputs tell the start image (fill 200) from the end image (fill 40). */
function imageAwareNets(events: string[]) {
  const f = fakeNets(events);
  f.nets.encodeLatent = async (px) => {
    events.push(`vae-encode:${px.dims.join('x')}`);
    const [, , , H, W] = px.dims;
    return f32([1, 16, 1, H / 8, W / 8], (px.data as Float32Array)[0] > 0 ? -3 : 4);
  };
  f.nets.encodeImage = async (pv) => {
    events.push('siglip');
    return f32([1, 729, 8], (pv.data as Float32Array)[0] > 0 ? 0.5 : -1.5);
  };
  return f;
}

test('end image: resized to the start bucket, its latent in the first section only, embeddings averaged', async () => {
  const events: string[] = [];
  const f = imageAwareNets(events);
  const dump: Record<string, HostTensor> = {};
  const logs: string[] = [];
  await generate(f.nets, image, { ...params, endImage }, { signal: new AbortController().signal, log: (l) => logs.push(l), dump });
  // the 32x32 end image is brought to the start image's 544x704 bucket, not its own square one
  assert.deepEqual(events.filter((e) => e.startsWith('vae-encode')), ['vae-encode:1x3x1x544x704', 'vae-encode:1x3x1x544x704']);
  const frame = 68 * 88;
  // cleanLatents is (1, 16, 2, h, w): channel 0's second frame is the 1x history frame
  const post = (k: number) => Array.from(new Set((f.sections[k].conditioning.cleanLatents.data as Float32Array).subarray(frame, 2 * frame)));
  assert.deepEqual(post(0), [4], 'first section: the end latent as its 1x frame');
  assert.equal((f.sections[0].conditioning.cleanLatents.data as Float32Array)[0], -3, 'the start latent stays first');
  assert.ok(!post(1).includes(4), 'later sections: generated latents');
  for (const s of f.sections) assert.ok((s.imageEmbeddings.data as Float32Array).every((v) => v === -0.5), '(0.5 + -1.5) / 2');
  assert.ok((dump.end_latent.data as Float32Array).every((v) => v === 4));
  assert.ok(logs.some((l) => l.startsWith('encoding the end image (32x32 -> 704x544; strength 1)')), logs.join('\n'));
});

test('end_image_strength scales the end latent and its embedding weight; 0 leaves the end image out entirely', async () => {
  const run = async (p: GenerateParams) => {
    const events: string[] = [];
    const f = imageAwareNets(events);
    const logs: string[] = [];
    const r = await generate(f.nets, image, p, { signal: new AbortController().signal, log: (l) => logs.push(l) });
    return { f, events, logs, frames: await r.pixels.frames() };
  };
  const half = await run({ ...params, endImage, endImageStrength: 0.5 });
  const c0 = half.f.sections[0].conditioning.cleanLatents.data as Float32Array;
  assert.equal(c0[68 * 88], 2, '0.5 x the end latent');
  // (1 - 0.25) * 0.5 + 0.25 * -1.5
  assert.ok((half.f.sections[0].imageEmbeddings.data as Float32Array).every((v) => v === 0));

  const none = await run(params);
  const zero = await run({ ...params, endImage, endImageStrength: 0 });
  assert.deepEqual(zero.events, none.events, 'the end image is not even encoded');
  assert.ok(zero.logs.includes('end_image_strength is 0: the end image is left out'));
  assert.deepEqual(zero.f.sections.map((s) => s.conditioning), none.f.sections.map((s) => s.conditioning));
  assert.deepEqual(zero.frames, none.frames);
});

test('f1: forward sections with the F1 transformer, frames appended; an end image is refused', async () => {
  const events: string[] = [];
  const f = fakeNets(events);
  const logs: string[] = [];
  const r = await generate(f.nets, image, { ...params, samplingMode: 'f1' }, { signal: new AbortController().signal, log: (l) => logs.push(l) });
  assert.equal(r.pixels.frameCount, 33);
  assert.deepEqual(f.sections.map((s) => [s.mode, s.plan.padding, s.plan.latentIndices.join()]), Array(4).fill(['f1', 0, '20,21']));
  // first decode: start latent + window; then the newest 2 lws
  assert.deepEqual(events.filter((e) => e.startsWith('decode')), ['decode:3', 'decode:4', 'decode:4', 'decode:4']);
  const clean0 = f.sections[0].conditioning.cleanLatents.data as Float32Array;
  assert.deepEqual([clean0[0], clean0[68 * 88]], [-3, -3], 'the start latent, and again as the first 1x frame');
  assert.notEqual((f.sections[1].conditioning.cleanLatents.data as Float32Array)[68 * 88], -3, 'then the newest generated frame');
  assert.ok(logs.some((l) => /4 section\(s\) of 2 latent frames \(forward order, F1 transformer\)/.test(l)), logs.join('\n'));
  await assert.rejects(generate(fakeNets([]).nets, image, { ...params, samplingMode: 'f1', endImage }, { signal: new AbortController().signal, log: () => {} }),
    (err: unknown) => (err as { code?: string }).code === 'END_IMAGE_NEEDS_INVERTED');
});

test('timestamped prompts with f1: times not mirrored, sections chosen forward from the start latent', async () => {
  const logs: string[] = [];
  const f = fakeNets([]);
  // 1 s, lws 2, forward: section k follows 1 + 2k latents, at (1 + 8k) / 30 s: "x" (0-0.5 s) for the first two,
  // "yy" from the third on, which blends the change
  await generate(f.nets, image, { ...params, samplingMode: 'f1', prompt: '[0s: x] [0.5s: yy]', promptBlendSections: 4 },
    { signal: new AbortController().signal, log: (l) => logs.push(l) });
  const firstValue = f.sections.map((s) => (s.positive.llamaVec.data as Float32Array)[0]);
  assert.deepEqual(firstValue, [1, 1, Math.fround(Math.fround(0.75) * 1) + Math.fround(Math.fround(0.25) * 2), 2]);
  assert.ok(logs.some((l) => /by section \(start of the video first\): 1: "x", 2: "x", 3: "x" x 0.75 \+ "yy" x 0.25, 4: "yy"$/.test(l)), logs.join('\n'));
});

test('resolution with an end image: the end image takes the start image\'s bucket of the class', async () => {
  const events: string[] = [];
  const f = imageAwareNets(events);
  const r = await generate(f.nets, image, { ...params, resolution: 320, endImage }, { signal: new AbortController().signal, log: () => {} });
  assert.deepEqual(r.bucket, [272, 352]);
  assert.deepEqual(events.filter((e) => e.startsWith('vae-encode')), ['vae-encode:1x3x1x272x352', 'vae-encode:1x3x1x272x352']);
  assert.deepEqual(f.sections[0].latentShape, [1, 16, 2, 34, 44]);
});
