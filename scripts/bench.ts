/**
 * Full-size benchmark of the five networks at FramePack's real shapes, with random weights (written once by
 * make-full-weights.ts): the 640x608 bucket (latents 80x76), latent_window_size 9, a 40-token prompt.
 *
 *   npm run bench -- [--weights bench/tmp/full] [--policy high,low] [--ep cuda] [--repeats 5] [--profile]
 * A `+fp8` policy (high+fp8, profile+fp8) builds the DiT with FP8 linears (FRAMEPACK_DIT_FP8=on, GemmFloat8).
 *                    [--out bench/results/<date>-<gpu>.json] [--limit-gib n]
 *
 * Each policy runs in a child process, as the server would run it, while this process samples the GPU's
 * used memory with nvidia-smi (every 50 ms) and attributes the samples to the stage the child announced:
 *   high  every network resident (LLaMA, CLIP, SigLIP, VAE fp16; DiT bf16), then each stage timed in turn.
 *   low   as the server's low placement, one large network at a time: LLaMA (8-bit), CLIP and SigLIP created,
 *         run and released; then the 8-bit DiT, released after its stage; then the VAE (spatially tiled unless
 *         FRAMEPACK_VAE_TILING=off), released after its stages; a second encoding at the end (the next request).
 *   profile  the DiT's blocks graph once more under ONNX Runtime's profiler (through onnxruntime-node): the
 *         last of three runs per operator type, per execution provider and per graph place
 *         (src/runtime/ort-profile.ts), written next to --out. The runtime the server uses on CUDA is profiled
 *         with FRAMEPACK_ORT_PROFILE (scripts/ort-profile.ts).
 * --limit-gib n leaves only n GiB of the device free while each policy runs (gpu/hold-memory.ts holds the
 * rest), as on a smaller card; the table's peaks then leave out the held memory.
 * Stage figures: session creation time, then `repeats` timed runs after warm-up runs (min and median), and
 * the peak device memory seen while the stage ran (absolute, so it includes the networks resident then).
 * The DiT forward is timed through PackedTransformer (embed, blocks, head with TeaCache off: what the sampler
 * calls 25 times per section), and its three session runs separately (host work = the rest).
 *
 * The 8-bit DiT and LLaMA need MatMulNBits weight files; a real checkpoint's take minutes to prepare once.
 * Here the layers of a stack share their bytes (see make-full-weights.ts), so each stack's first layer is
 * prepared and the other layers' prepared files are hard links to it: the same sizes and kernels, meaningless
 * values, a few seconds instead of minutes (FRAMEPACK_QUANT_CACHE, default under the weights folder).
 *
 * Needs a CUDA EP for figures that mean anything; `--ep cpu` runs the same code (slowly: only to test it).
 */
import { spawn } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gpuInfo, limitDeviceMemory, sampleGpuMemory } from './gpu-memory.js';
import { BUCKET, LATENT, PROMPT_TOKENS, WINDOW, ditInputs, ints, randn, range } from './dit-request.js';

const here = dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------------------------------------------------
// Shapes of one FramePack call at the default settings

const TEMPLATE_TOKENS = 95;
const SECTION_LATENTS = 2 * WINDOW; // latent frames decoded per section (spec 8.4)

// ---------------------------------------------------------------------------------------------------------
// Child: one policy

type Tensor = import('../src/onnx/safetensors.js').HostTensor;

interface Stage {
  name: string;
  createS?: number;
  runsS: number[];
  warmupS: number[];
  minS?: number;
  medianS?: number;
  detail?: Record<string, unknown>;
}

const copy = (t: Tensor): Tensor => ({ ...t, dims: [...t.dims], data: t.data.slice() as Tensor['data'] });

/** Throws when a sample of the output is not finite (a half-precision overflow must not pass as a timing). */
function finite(t: Tensor, what: string): Tensor {
  const v = t.data as Float32Array;
  for (let i = 0; i < v.length; i += 4099) if (!Number.isFinite(v[i])) throw new Error(`${what} output is not finite at ${i}`);
  return t;
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const secs = (t0: number) => (performance.now() - t0) / 1000;

/** Announces a stage boundary to the parent (which timestamps it against its memory samples). */
function mark(label: string): void {
  process.stdout.write(`@mark ${label}\n`);
}

async function timed(stage: Stage, warmup: number, repeats: number, fn: () => Promise<unknown>): Promise<Stage> {
  for (let i = 0; i < warmup; i++) { const t = performance.now(); await fn(); stage.warmupS.push(secs(t)); }
  for (let i = 0; i < repeats; i++) { const t = performance.now(); await fn(); stage.runsS.push(secs(t)); }
  if (stage.runsS.length) { stage.minS = Math.min(...stage.runsS); stage.medianS = median(stage.runsS); }
  process.stdout.write(`@stage ${JSON.stringify(stage)}\n`); // a run cut short still reports what it finished
  return stage;
}

/**
 * Hard-links each layer's MatMulNBits file to its stack's first layer's (see the file comment), preparing
 * that one. Only for the shared-data random checkpoints of make-full-weights.ts.
 */
async function primeQuantCache(model: import('../src/onnx/graph.js').BuiltModel): Promise<number> {
  const { prepareQuantized } = await import('../src/onnx/quantize.js');
  const first = new Map<string, string>();
  let linked = 0;
  for (const job of model.prepare ?? []) {
    const group = `${job.source.file}|${job.source.key.replace(/\.\d+\./, '.*.')}|${job.bits}|${job.blockSize}`;
    const src = first.get(group);
    if (!src) { await prepareQuantized(job); first.set(group, job.file); continue; }
    if (!existsSync(job.file)) { mkdirSync(dirname(job.file), { recursive: true }); linkSync(src, job.file); linked++; }
  }
  return linked;
}

/** `+fp8` policies: the DiT's FP8 linears (GemmFloat8) on CUDA. */
const ditFp8 = (ep: string) => (process.env.FRAMEPACK_DIT_FP8 === 'on' && ep === 'cuda' ? { mode: 'gemm' as const } : undefined);

async function child(policy: string, o: { weights: string; ep: 'cpu' | 'cuda'; repeats: number; profileOut?: string; only: Set<string> | null }): Promise<Record<string, unknown>> {
  const { Checkpoint } = await import('../src/onnx/safetensors.js');
  const { Session, terminateWorkers } = await import('../src/runtime/session.js');
  const { buildLlama } = await import('../src/nets/llama.js');
  const { buildClipText } = await import('../src/nets/clip.js');
  const { buildSiglipVision } = await import('../src/nets/siglip.js');
  const { buildDitGraphs } = await import('../src/nets/dit.js');
  const { Vae } = await import('../src/framepack/vae-decode.js');
  const { PackedTransformer } = await import('../src/framepack/transformer.js');
  const { precisionFor } = await import('../src/onnx/precision.js');

  const ep = o.ep;
  const low = policy === 'low';
  const want = (stage: string) => !o.only || o.only.has(stage);
  const dir = (c: string) => join(o.weights, c);
  const encPrecision = precisionFor(ep, 'encoder');
  const ditPrecision = precisionFor(ep, 'dit');
  const q8 = low ? { bits: 8 as const } : undefined;
  const stages: Stage[] = [];
  const R = o.repeats;

  if (policy === 'profile') return profileBlocks(o);
  if (policy === 'attention') return attentionMicro(o);
  if (policy !== 'high' && policy !== 'low') throw new Error(`unknown policy ${policy} (high, low, profile, attention; +cudnn for cuDNN flash attention)`);

  // --- resident networks
  mark('create:vae');
  let t = performance.now();
  const tiling = process.env.FRAMEPACK_VAE_TILING === 'on' || (low && process.env.FRAMEPACK_VAE_TILING !== 'off');
  const vae = await Vae.load(dir('vae'), { ep, precision: precisionFor(ep, 'vae'), spatialTiling: tiling });
  const vaeCreate = secs(t); // sessions are created lazily, on the first encode/decode
  const createDit = async () => {
    mark('create:dit');
    const t0 = performance.now();
    let linked = 0;
    if (q8 || ditFp8(ep)) linked = await primeQuantCache(buildDitGraphs(await Checkpoint.open(dir('transformer')), { precision: ditPrecision, quantize: q8, fp8: ditFp8(ep) }).blocks);
    const d = want('dit') ? await PackedTransformer.load(dir('transformer'), { precision: ditPrecision, ep, quantize: q8, fp8: ditFp8(ep) }) : null;
    return { dit: d, ditCreate: secs(t0), linked };
  };
  // high: every network resident from the start; low: the DiT exists only between the encoding and the decodes
  let { dit, ditCreate, linked } = low ? { dit: null, ditCreate: 0, linked: 0 } : await createDit();

  type Enc = { llama: InstanceType<typeof Session>; clip: InstanceType<typeof Session>; siglip: InstanceType<typeof Session>; createS: Record<string, number> };
  const openEncoders = async (): Promise<Enc> => {
    const createS: Record<string, number> = {};
    let t0 = performance.now();
    const llamaModel = buildLlama(await Checkpoint.open(dir('text_encoder')), { precision: encPrecision, quantize: q8 });
    if (q8) await primeQuantCache(llamaModel);
    const llama = await Session.create(llamaModel, { ep });
    createS.llama = secs(t0);
    t0 = performance.now();
    const clip = await Session.create(buildClipText(await Checkpoint.open(dir('text_encoder_2')), { precision: encPrecision }), { ep });
    createS.clip = secs(t0);
    t0 = performance.now();
    const siglip = await Session.create(buildSiglipVision(await Checkpoint.open(dir('image_encoder')), { precision: encPrecision }), { ep });
    createS.siglip = secs(t0);
    return { llama, clip, siglip, createS };
  };
  const tokens = TEMPLATE_TOKENS + PROMPT_TOKENS;
  const llamaFeeds = { input_ids: ints(range(1000, tokens)), attention_mask: ints(new Array(tokens).fill(1)) };
  const clipFeeds = { input_ids: ints([...range(100, 42), ...new Array(35).fill(2)]) };
  const sigFeeds = { pixel_values: randn([1, 3, 384, 384], 0.5, 11) };
  const encode = async (e: Enc, round: string, warmup: number, repeats: number) => {
    mark(`llama${round}`);
    stages.push(await timed({ name: `llama${round}`, createS: e.createS.llama, runsS: [], warmupS: [], detail: { tokens, quantize: q8?.bits ?? null } },
      warmup, repeats, () => e.llama.run(llamaFeeds, { outputs: ['hidden_states_minus_3'] })));
    mark(`clip${round}`);
    stages.push(await timed({ name: `clip${round}`, createS: e.createS.clip, runsS: [], warmupS: [] }, warmup, repeats, () => e.clip.run(clipFeeds, { outputs: ['pooler_output'] })));
    mark(`siglip${round}`);
    stages.push(await timed({ name: `siglip${round}`, createS: e.createS.siglip, runsS: [], warmupS: [] }, warmup, repeats, () => e.siglip.run(sigFeeds)));
  };
  const closeEncoders = (e: Enc) => Promise.all([e.llama.release(), e.clip.release(), e.siglip.release()]);

  let enc: Enc | null = null;
  if (want('llama') || want('clip') || want('siglip')) {
    mark('create:encoders');
    enc = await openEncoders();
    await encode(enc, '', 2, R);
    if (low) { mark('release:encoders'); await closeEncoders(enc); enc = null; }
  }
  if (low) ({ dit, ditCreate, linked } = await createDit());

  // --- DiT forward (TeaCache off), with the three session runs timed separately
  const parts: Record<string, number[]> = { embed: [], blocks: [], head: [] };
  if (dit) for (const k of Object.keys(parts)) {
    const s = (dit as any)[k];
    const run = s.run.bind(s);
    s.run = async (...args: unknown[]) => { const t0 = performance.now(); try { return await run(...args); } finally { parts[k].push(secs(t0)); } };
  }
  if (dit && want('dit')) {
  const model = dit;
  const inputs = ditInputs(model.config);
  mark('dit');
  model.beginSection({ steps: 25 });
  const ditStage = await timed({ name: 'dit', createS: ditCreate, runsS: [], warmupS: [], detail: { precision: ditPrecision, quantize: q8?.bits ?? null, linkedQuantFiles: linked } },
    2, R, async () => {
      const r = await model.forward(inputs as any); // feeds are copied to the worker, never transferred
      finite(r.output, 'DiT');
    });
  const timedParts = Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, { min: Math.min(...v.slice(2)), median: median(v.slice(2)) }]));
  ditStage.detail!.sessions = timedParts;
  ditStage.detail!.hostS = ditStage.medianS! - Object.values(timedParts).reduce((a, p) => a + p.median, 0);
  ditStage.detail!.tokens = { noisy: WINDOW * (LATENT.h / 2) * (LATENT.w / 2), text: 729 + PROMPT_TOKENS };
  process.stdout.write(`@stage ${JSON.stringify(ditStage)}\n`);
  stages.push(ditStage);
  }
  if (low && dit) { mark('release:dit'); await dit.release(); dit = null; }

  // --- VAE: one section's decode, then the start-image encode
  const latents = randn([1, 16, SECTION_LATENTS, LATENT.h, LATENT.w], 0.5, 12);
  if (want('vae-decode')) mark('vae-decode');
  if (want('vae-decode')) stages.push(await timed({ name: 'vae-decode', createS: vaeCreate, runsS: [], warmupS: [], detail: { latentFrames: SECTION_LATENTS, spatialTiling: tiling } },
    1, Math.min(R, 2), async () => finite(await vae.decodeLatents(copy(latents)), 'VAE decode')));
  if (low) { mark('release:vae'); await vae.release(); }
  const pixels = randn([1, 3, 1, BUCKET.height, BUCKET.width], 0.4, 13);
  if (want('vae-encode')) mark('vae-encode');
  if (want('vae-encode')) stages.push(await timed({ name: 'vae-encode', runsS: [], warmupS: [], detail: { spatialTiling: tiling } }, 2, R, async () => finite(await vae.encodeLatent(copy(pixels)), 'VAE encode')));
  if (low) await vae.release();

  if (low && want('llama')) {
    // The next request's encoding: nothing of the previous request may still hold device memory.
    mark('create:encoders-again');
    enc = await openEncoders();
    await encode(enc, '-again', 1, 1);
    await closeEncoders(enc);
  }
  mark('release');
  if (enc) await closeEncoders(enc);
  await dit?.release();
  await vae.release();
  await terminateWorkers();
  mark('end');
  return { policy, stages, vaeCreateS: vaeCreate };
}

/** ONNX Runtime's profile of one run of the DiT blocks graph (random inputs of the real shapes). */
async function profileBlocks(o: { weights: string; ep: 'cpu' | 'cuda'; profileOut?: string }): Promise<Record<string, unknown>> {
  const ort = await import('onnxruntime-node');
  const { Checkpoint } = await import('../src/onnx/safetensors.js');
  const { buildDitGraphs } = await import('../src/nets/dit.js');
  const { packedRope } = await import('../src/nets/dit-rope.js');
  const { precisionFor } = await import('../src/onnx/precision.js');
  const ck = await Checkpoint.open(join(o.weights, 'transformer'));
  const graphs = buildDitGraphs(ck, { precision: precisionFor(o.ep, 'dit'), fp8: ditFp8(o.ep) });
  const m = graphs.blocks;
  await primeQuantCache(m);
  const prefix = o.profileOut ?? join(process.cwd(), 'dit-blocks-profile');
  const extra: Record<string, any> = { session: {} };
  if (m.externalFolder) extra.session.model_external_initializers_file_folder_path = m.externalFolder;
  for (const [k, v] of Object.entries(m.sessionConfig ?? {})) { const [a, b] = k.split(/\.(.*)/); (extra[a] ??= {})[b] = v; }
  mark('profile:create');
  let t = performance.now();
  const s = await ort.InferenceSession.create(m.bytes, {
    executionProviders: o.ep === 'cuda' ? [{ name: 'cuda', deviceId: 0 }] : ['cpu'],
    graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: prefix, extra,
  });
  const createS = secs(t);
  const { h, w } = LATENT;
  const gh = h / 2, gw = w / 2;
  const rope = packedRope(graphs.config.rope, { latent: range(1, WINDOW), clean: [0, WINDOW + 1], clean2x: [WINDOW + 2, WINDOW + 3], clean4x: range(WINDOW + 4, 16) }, gh, gw);
  const nImg = rope.tokens;
  const D = graphs.config.dim;
  const T = (t: Tensor) => new ort.Tensor(t.dtype, t.data as any, t.dims);
  const lat = ditInputs(graphs.config);
  const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {
    hidden_states: T(lat.hidden_states), clean_latents: T(lat.clean_latents), clean_latents_2x: T(lat.clean_latents_2x), clean_latents_4x: T(lat.clean_latents_4x),
    txt: T(randn([1, 729 + PROMPT_TOKENS, D], 0.5, 22)), temb: T(randn([1, D], 0.5, 23)),
    rope_cos: new ort.Tensor('float32', rope.cos, [nImg, rope.half]), rope_sin: new ort.Tensor('float32', rope.sin, [nImg, rope.half]),
    latent_grid: new ort.Tensor('int64', BigInt64Array.from([WINDOW, gh, gw].map(BigInt)), [3]),
  };
  for (const k of Object.keys(feeds)) if (!s.inputNames.includes(k)) delete feeds[k];
  mark('profile:run');
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) { t = performance.now(); await s.run(feeds); runs.push(secs(t)); }
  s.endProfiling(); // writes <prefix>_<timestamp>.json (the Node binding does not return the name)
  await s.release();
  const base = prefix.split('/').pop()!;
  const found = readdirSync(dirname(prefix)).filter((f) => f.startsWith(base) && f.endsWith('.json')).map((f) => join(dirname(prefix), f));
  const file = found.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  mark('end');
  const { summarizeProfile } = await import('../src/runtime/ort-profile.js');
  return { policy: 'profile', createS, runsS: runs, profileFile: file, summary: summarizeProfile(JSON.parse(readFileSync(file, 'utf8')), { skip: 2 }) };
}

/**
 * The DiT's attention alone: a chain of 8 com.microsoft.MultiHeadAttention nodes at the real joint sequence
 * (17,500 image + 769 text tokens, 24 heads of 128, bfloat16), so the host copies are negligible per node.
 */
async function attentionMicro(o: { ep: 'cpu' | 'cuda' }): Promise<Record<string, unknown>> {
  const { Graph } = await import('../src/onnx/graph.js');
  const { Session, terminateWorkers } = await import('../src/runtime/session.js');
  const N = WINDOW * (LATENT.h / 2) * (LATENT.w / 2) + 2 * (LATENT.h / 2) * (LATENT.w / 2) + 380 + 400 + 729 + PROMPT_TOKENS;
  const heads = 24, hd = 128, chain = 8;
  const g = new Graph({ name: 'attention-micro', precision: o.ep === 'cuda' ? 'bfloat16' : 'float32' });
  const x = g.input('x', 'float32', [1, N, hd]);
  const wide = g.op('Expand', [g.unsqueeze(x, [2]), g.ints([1, N, heads, hd])], {}, { shape: [1, N, heads, hd] })[0];
  let h = g.cast(g.reshape(wide, [1, N, heads * hd]), g.precision);
  for (let i = 0; i < chain; i++) h = g.attention(h, h, h, { heads });
  g.output(g.reduceMean(g.cast(h, 'float32'), [2], false), 'y');
  const s = await Session.create(g.toModel(), { ep: o.ep });
  const feeds = { x: randn([1, N, hd], 1, 31) };
  mark('attention');
  const stage = await timed({ name: 'attention x8', runsS: [], warmupS: [], detail: { tokens: N, heads, headDim: hd, chain } }, 2, 5, () => s.run(feeds));
  const per = stage.medianS! / chain;
  stage.detail!.perAttentionMs = +(per * 1000).toFixed(2);
  stage.detail!.tflops = +((4 * N * N * heads * hd) / per / 1e12).toFixed(0);
  stage.detail!.projected60BlocksS = +(60 * per).toFixed(3);
  process.stdout.write(`@stage ${JSON.stringify(stage)}\n`);
  await s.release();
  await terminateWorkers();
  mark('end');
  return { policy: 'attention', stages: [stage] };
}

// ---------------------------------------------------------------------------------------------------------
// Parent: children + GPU memory sampling

async function runPolicy(policy: string, args: string[], sample: boolean): Promise<Record<string, unknown>> {
  const smi = sample ? sampleGpuMemory(50) : null;
  const samples = smi?.samples ?? [];
  const marks: Array<[number, string]> = [];
  let result: Record<string, unknown> | null = null;
  const finished: Stage[] = [];
  const t0 = performance.now();
  const [base, variant] = policy.split('+');
  const env = variant === 'cudnn' ? { ...process.env, ORT_ENABLE_CUDNN_FLASH_ATTENTION: '1', ORT_DISABLE_FLASH_ATTENTION: '1' }
    : variant === 'fp8' ? { ...process.env, FRAMEPACK_DIT_FP8: 'on' } : process.env;
  const c = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', base, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env });
  createInterface({ input: c.stdout! }).on('line', (l) => {
    if (l.startsWith('@mark ')) { marks.push([performance.now(), l.slice(6)]); process.stdout.write(`  [${policy} ${((performance.now() - t0) / 1000).toFixed(1)} s] ${l.slice(6)}\n`); }
    else if (l.startsWith('@result ')) result = JSON.parse(l.slice(8));
    else if (l.startsWith('@stage ')) { const st = JSON.parse(l.slice(7)) as Stage; const i = finished.findIndex((f) => f.name === st.name); if (i >= 0) finished.splice(i, 1); finished.push(st); process.stdout.write(`  [${policy}] ${st.name}: min ${st.minS?.toFixed(3)} s, median ${st.medianS?.toFixed(3)} s, warm-up ${st.warmupS.map((x) => x.toFixed(2)).join(' ')} s${st.detail?.sessions ? `, sessions ${JSON.stringify(st.detail.sessions)}` : ''}\n`); }
    else process.stdout.write(`  ${l}\n`);
  });
  const code: number = await new Promise((res) => c.on('close', (n) => res(n ?? 1)));
  await new Promise((r) => setTimeout(r, 200));
  smi?.stop();
  const res = (result ?? { policy, error: `child exited with code ${code}`, stages: finished }) as Record<string, any>;
  res.policy = policy;
  res.wallS = secs(t0);
  if (res.summary) {
    const sm = res.summary;
    process.stdout.write(`  [${policy}] runs ${res.runsS.map((x: number) => x.toFixed(3)).join(' ')} s; last run ${sm.modelRunMs} ms, kernels ${sm.kernelMs} ms; by provider ${JSON.stringify(sm.msByProvider)}\n  [${policy}] ms by op: ${JSON.stringify(sm.msByOpType)}\n`);
  }
  if (sample && samples.length) {
    const peak: Record<string, number> = {};
    for (let i = 0; i < marks.length; i++) {
      const [from, label] = marks[i];
      const to = marks[i + 1]?.[0] ?? Infinity;
      const inside = samples.filter(([ts]) => ts >= from && ts < to).map(([, v]) => v);
      if (inside.length) peak[label] = Math.max(...inside);
    }
    res.peakMiBByStage = peak;
    res.peakMiB = Math.max(...samples.map(([, v]) => v));
    res.baselineMiB = samples[0][1];
    for (const s of (res.stages ?? []) as Stage[]) if (peak[s.name] !== undefined) (s as any).peakMiB = peak[s.name];
  }
  return res;
}

function table(results: Record<string, any>[]): string {
  const rows = [['policy', 'stage', 'create s', 'min s', 'median s', 'peak GiB']];
  for (const r of results) {
    if (r.error) rows.push([r.policy, `ERROR ${r.error}`, '', '', '', '']);
    if (r.error && !r.stages?.length) continue;
    if (r.policy.startsWith('profile') && !r.error) { rows.push([r.policy, 'dit blocks (ORT profiler)', r.createS.toFixed(1), Math.min(...r.runsS).toFixed(3), median(r.runsS).toFixed(3), '']); continue; }
    const held = r.memoryLimit?.heldMiB ?? 0;
    for (const s of r.stages as (Stage & { peakMiB?: number })[]) {
      rows.push([r.policy, s.name, s.createS?.toFixed(1) ?? '', s.minS?.toFixed(3) ?? '', s.medianS?.toFixed(3) ?? '', s.peakMiB ? ((s.peakMiB - held) / 1024).toFixed(1) : '']);
    }
    if (r.peakMiB) rows.push([r.policy, held ? `whole policy (peak; ${(r.memoryLimit.freeMiB / 1024).toFixed(1)} GiB left free)` : 'whole policy (peak)', '', '', '', ((r.peakMiB - held) / 1024).toFixed(1)]);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ')).join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      child: { type: 'string' }, weights: { type: 'string', default: 'bench/tmp/full' }, policy: { type: 'string', default: 'high,low' },
      ep: { type: 'string', default: 'cuda' }, repeats: { type: 'string', default: '5' }, profile: { type: 'boolean', default: false },
      out: { type: 'string' }, 'profile-out': { type: 'string' }, only: { type: 'string' }, 'limit-gib': { type: 'string' },
    },
  });
  const weights = resolve(values.weights!);
  const ep = values.ep as 'cpu' | 'cuda';
  const repeats = Number(values.repeats);
  process.env.FRAMEPACK_QUANT_CACHE ??= join(weights, 'quantized');
  if (values.child) {
    const only = values.only ? new Set(values.only.split(',')) : null;
    const r = await child(values.child, { weights, ep, repeats, profileOut: values['profile-out'], only });
    process.stdout.write(`@result ${JSON.stringify(r)}\n`);
    return;
  }
  if (!existsSync(join(weights, 'transformer', 'config.json'))) {
    throw new Error(`no weights in ${weights}: run node dist/scripts/make-full-weights.js --out ${weights} first`);
  }
  const gpu = ep === 'cuda' ? gpuInfo() : null;
  const date = new Date().toISOString();
  const out = resolve(values.out ?? join('bench', 'results', `${date.slice(0, 10)}-${(gpu?.name ?? ep).toLowerCase().replace(/[^a-z0-9]+/g, '-')}.json`));
  mkdirSync(dirname(out), { recursive: true });
  const policies = values.policy!.split(',').filter(Boolean);
  if (values.profile) policies.push('profile', 'profile+cudnn');
  const results: Record<string, any>[] = [];
  const ort = JSON.parse(readFileSync(join(here, '..', '..', 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')).version;
  for (const p of policies) {
    console.log(`policy ${p}`);
    const profileOut = join(dirname(out), 'dit-blocks-profile');
    const args = ['--weights', weights, '--ep', ep, '--repeats', String(repeats), '--profile-out', `${profileOut}-${p.replace('+', '-')}`];
    if (values.only) args.push('--only', values.only);
    const limit = values['limit-gib'] ? await limitDeviceMemory(Number(values['limit-gib']), join(here, 'gpu', 'hold-memory.js')) : null;
    try {
      const r = await runPolicy(p, args, !!gpu);
      // peaks are of the whole device: the policy's own figures leave out what the holder keeps
      if (limit) r.memoryLimit = { gib: Number(values['limit-gib']), freeBeforeMiB: limit.freeBeforeMiB, freeMiB: limit.freeMiB, heldMiB: limit.freeBeforeMiB - limit.freeMiB };
      results.push(r);
    } finally {
      limit?.release();
    }
    writeFileSync(out, JSON.stringify({
      date, gpu, ep, node: process.version, onnxruntime: ort,
      shapes: { bucket: BUCKET, latent: LATENT, latentWindowSize: WINDOW, promptTokens: PROMPT_TOKENS, sectionLatentFrames: SECTION_LATENTS },
      weights: 'random, full-size shapes (make-full-weights.ts); layers share bytes on disk, not in memory',
      results,
    }, null, 2) + '\n');
  }
  console.log(`\n${gpu ? `${gpu.name} (driver ${gpu.driver}, ${gpu.totalMiB} MiB)` : ep}, ${date}\n${table(results)}\nwrote ${out}`);
}

main().catch((err) => { console.error(err); process.exit(1); });
