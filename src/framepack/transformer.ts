/**
 * The packed transformer as the sampler calls it: three ONNX sessions (embed, blocks, head; see
 * src/nets/dit.ts) run per forward call, with TeaCache deciding between embed and blocks whether the blocks
 * run or their cached residual is re-used (src/framepack/teacache.ts), or MagCache decides the same from the
 * call's step alone (src/framepack/magcache.ts).
 *
 * Per call:
 *   embed(inputs)                 -> txt, temb [, modulated when TeaCache is on]
 *   teacacheMeasure(modulated, previous modulated) -> two sums (TeaCache only)
 *   TeaCache / MagCache (host)    -> compute or skip
 *   computed: blocks(latents, txt, temb, rope) -> velocity (1, C, T, H, W) float32 [, residual to cache]
 *   skipped:  head(hidden_states, cached residual) -> velocity
 * The rotary tables depend only on the frame indices and the latent grid: they are computed on the host, in a
 * worker thread (rope-worker.ts), and bound while a section's calls repeat them.
 *
 * What crosses to the device: inputs that stay the same for a section (text, image embeddings, clean latents,
 * rotary tables, latent grid) are bound to the sessions once, when they change (compared by identity); per
 * call only the noisy latents and the timestep go up. The rotary tables, and the clean latents when the
 * section hands them over (`SectionOptions.handOver`), are transferred to the session worker, not copied:
 * megabytes that the event loop would otherwise copy once per section. A request's LoRA weights (`setLora`)
 * are bound the same way, once, and unbound when it ends. `txt` and `temb` pass from embed to blocks (or head) on
 * the device, and so do TeaCache's cached residual and block 0's modulated input, whose distance to the previous
 * call's is summed there (two numbers come back); only the velocity returns per call.
 *
 * Inputs carry the names of the original forward's arguments (and of the fixtures):
 * hidden_states, timestep, guidance, encoder_hidden_states, encoder_attention_mask, pooled_projections,
 * image_embeddings, latent_indices, clean_latents, clean_latent_indices, clean_latents_2x,
 * clean_latent_2x_indices, clean_latents_4x, clean_latent_4x_indices. Batch 1.
 */
import { Checkpoint, type HostTensor } from '../onnx/safetensors.js';
import type { Precision } from '../onnx/graph.js';
import { cudaProviderOptions } from '../runtime/providers.js';
import { Session, type DeviceTensor, type ExecutionProvider } from '../runtime/session.js';
import { LORA_ENABLED, buildDitGraphs, type DitConfig, type DitGraphOptions, type DitGraphs } from '../nets/dit.js';
import type { PackedFrameIndices, RopeConfig, RopeTable } from '../nets/dit-rope.js';
import { ThreadClient } from '../runtime/thread-rpc.js';
import type { ForwardNet, NetOptions } from '../nets/registry.js';
import { relativeL1FromSums, TeaCacheBank, type TeaCacheDecision, type TeaCacheSettings, type TeaCacheState } from './teacache.js';
import { MagCacheState, type MagCacheDecision, type MagCacheSettings } from './magcache.js';

export const DIT_INPUTS = [
  'hidden_states', 'timestep', 'encoder_hidden_states', 'encoder_attention_mask', 'pooled_projections', 'guidance',
  'latent_indices', 'clean_latents', 'clean_latent_indices', 'clean_latents_2x', 'clean_latent_2x_indices',
  'clean_latents_4x', 'clean_latent_4x_indices', 'image_embeddings',
] as const;
export type DitInputName = (typeof DIT_INPUTS)[number];
export type DitInputs = Record<Exclude<DitInputName, 'guidance'>, HostTensor> & { guidance?: HostTensor };

export interface TransformerOptions extends DitGraphOptions {
  ep: ExecutionProvider;
  deviceId?: number;
  threads?: number;
  /** the last call of each branch in a section gives the activations' memory back to the device */
  shrinkAfterSection?: boolean;
}

export interface SectionOptions {
  /** forward calls per CFG branch in this section (= sampler steps) */
  steps: number;
  teacache?: TeaCacheSettings;
  /** MagCache instead of TeaCache (at most one of them is enabled); its ratios depend on the pixel size */
  magcache?: MagCacheSettings & { enabled: boolean; height: number; width: number };
  /**
   * The clean latents of this section's calls are handed over: binding them takes their buffers (the caller
   * must not read them afterwards; a failed call cannot bind them again, and the section fails with it).
   */
  handOver?: boolean;
}

export interface ForwardResult {
  /** (1, out_channels, T, H, W) float32: the predicted flow velocity */
  output: HostTensor;
  /** what TeaCache did on this call (null when it is off) */
  teacache: TeaCacheDecision | null;
  /** what MagCache did on this call (null when it is off) */
  magcache: MagCacheDecision | null;
}

export class TransformerInputError extends Error {
  override name = 'TransformerInputError';
}

type Residual = DeviceTensor;

/** Inputs that change on every call; the others are bound once per section. */
const PER_CALL = new Set(['hidden_states', 'timestep']);
const CLEAN_LATENTS = ['clean_latents', 'clean_latents_2x', 'clean_latents_4x'] as const;

export class PackedTransformer {
  private bank: TeaCacheBank<Residual, DeviceTensor> | null = null;
  /** MagCache states per CFG branch (each branch sees exactly the calls of a cfg = 1 run) */
  private mag: { opts: NonNullable<SectionOptions['magcache']>; states: Map<string, MagCacheState<Residual>> } | null = null;
  private rope: { key: string; grid: HostTensor; cos: HostTensor; sin: HostTensor } | null = null;
  /** per session: the data each bound input was bound from */
  private readonly bound = new Map<Session, Map<string, unknown>>();
  /** the LoRA weights bound (null: none), and each LoRA-capable session's share of them */
  private loraFeeds: Record<string, HostTensor> | null = null;
  private readonly lora = new Map<Session, Record<string, HostTensor>>();
  private mask: { from: HostTensor; int64: HostTensor } | null = null;
  /** what the step caches hold on the device (residuals, TeaCache's last modulated input), freed when a section begins and on release */
  private readonly held = new Set<DeviceTensor>();
  /** forward calls per branch in this section, and the section's step count */
  private calls = new Map<string, number>();
  private steps = 0;
  private handOver = false;
  /** computes the rotary tables (started on first use) */
  private ropeThread: ThreadClient<RopeTable> | null = null;

  private constructor(
    readonly config: DitConfig,
    readonly precision: Precision,
    private readonly embed: Session,
    private readonly blocks: Session,
    private readonly head: Session,
    private readonly teacacheMeasure: Session,
    private readonly shrinkAfterSection: boolean,
  ) {}

  /** Builds the graphs of the checkpoint folder `dir` and creates their sessions. */
  static async load(dir: string, opts: TransformerOptions): Promise<PackedTransformer> {
    return PackedTransformer.create(await buildTransformerGraphs(dir, opts), opts);
  }

  /**
   * Creates the sessions of graphs built by buildTransformerGraphs. The graphs can be kept and used again
   * after `release()`: a placement that frees the DiT between requests pays only this per request.
   */
  static async create(graphs: DitGraphs, opts: TransformerOptions): Promise<PackedTransformer> {
    const so = { ep: opts.ep, deviceId: opts.deviceId, threads: opts.threads, cuda: cudaProviderOptions('dit') };
    const sessions: Session[] = [];
    try {
      for (const m of [graphs.embed, graphs.blocks, graphs.head, graphs.teacacheMeasure]) sessions.push(await Session.create(m, so));
    } catch (e) {
      await Promise.all(sessions.map((s) => s.release()));
      throw e;
    }
    return new PackedTransformer(graphs.config, opts.precision, sessions[0], sessions[1], sessions[2], sessions[3], opts.shrinkAfterSection ?? false);
  }

  /**
   * Starts a section: TeaCache state is reset (the original re-initialises it per section with the section's
   * step count). Without `teacache.enabled`, every call runs the blocks.
   */
  beginSection(opts: SectionOptions): void {
    const tc = opts.teacache;
    const mc = opts.magcache;
    if (tc?.enabled && mc?.enabled) throw new RangeError('TeaCache and MagCache cannot both be enabled');
    this.bank = tc?.enabled ? new TeaCacheBank<Residual, DeviceTensor>(opts.steps, tc, this.precision === 'bfloat16') : null;
    this.mag = mc?.enabled ? { opts: mc, states: new Map() } : null;
    this.dropHeld();
    this.calls.clear();
    this.steps = opts.steps;
    this.handOver = opts.handOver ?? false;
  }

  private magState(branch: string): MagCacheState<Residual> | null {
    if (!this.mag) return null;
    let s = this.mag.states.get(branch);
    if (!s) {
      const { height, width, ...settings } = this.mag.opts;
      s = new MagCacheState<Residual>(this.steps, height, width, settings);
      this.mag.states.set(branch, s);
    }
    return s;
  }

  /** Seconds the sessions' workers spent on runs so far (ONNX Runtime plus the copies in and out). */
  get sessionSeconds(): number {
    return (this.embed.busyMs + this.blocks.busyMs + this.head.busyMs + this.teacacheMeasure.busyMs) / 1000;
  }

  /** One transformer call; `branch` names the CFG branch for the per-branch TeaCache mode. */
  async forward(inputs: DitInputs, call: { branch?: string; signal?: AbortSignal } = {}): Promise<ForwardResult> {
    try {
      return await this.call(inputs, call);
    } catch (err) {
      // a failed bind or run may have reset a session's binding: bind everything again next time (the rotary
      // tables, whose buffers went to the session worker, computed again)
      this.bound.clear();
      this.rope = null;
      throw err;
    }
  }

  private async call(inputs: DitInputs, call: { branch?: string; signal?: AbortSignal }): Promise<ForwardResult> {
    const { signal } = call;
    const { grid, cos, sin } = await this.prepare(inputs);
    const branch = call.branch ?? 'positive';
    const tea = this.bank?.state(branch) ?? null;
    const mag = this.magState(branch);
    const state = tea ?? mag;
    const n = (this.calls.get(branch) ?? 0) + 1;
    this.calls.set(branch, n);
    const shrink = this.shrinkAfterSection && n === this.steps;

    // Per-call feeds are copied to the session worker (never transferred): the noisy latents belong to the caller.
    const perCall: Record<string, HostTensor> = {};
    const fixed: Record<string, HostTensor> = {};
    for (const name of this.embed.inputs) {
      if (CLEAN_LATENTS.includes(name as (typeof CLEAN_LATENTS)[number])) continue;
      const t = name === 'encoder_attention_mask' ? this.int64Mask(inputs[name]) : inputs[name as DitInputName]!;
      (PER_CALL.has(name) ? perCall : fixed)[name] = t;
    }
    await this.bindChanged([this.embed], { ...fixed, ...this.lora.get(this.embed) }, signal);
    // embed (for TeaCache's measure) and blocks both read the clean latents: one message binds them to both
    await this.bindChanged([this.embed, this.blocks].filter((g) => g.inputs.includes('clean_latents')), {
      clean_latents: inputs.clean_latents, clean_latents_2x: inputs.clean_latents_2x, clean_latents_4x: inputs.clean_latents_4x,
    }, signal, this.handOver ? CLEAN_LATENTS : []);
    const outputs = tea ? ['txt', 'temb', 'modulated'] : ['txt', 'temb'];
    const e = await this.embed.run(perCall, { signal, outputs, keep: outputs });
    try {
      const teacache = tea ? await this.teacacheDecision(tea, e.modulated as DeviceTensor, signal) : null;
      const magcache = mag ? mag.decide() : null;
      const decision = teacache ?? magcache;
      if (!decision || decision.compute) {
        await this.bindChanged([this.blocks], {
          latent_grid: grid, rope_cos: cos, rope_sin: sin, ...this.lora.get(this.blocks),
        }, signal, ['rope_cos', 'rope_sin']);
        const r = await this.blocks.run({ hidden_states: inputs.hidden_states, txt: e.txt, temb: e.temb },
          { signal, outputs: state ? ['output', 'residual'] : ['output'], keep: state ? ['residual'] : [], shrink });
        if (state) {
          if (state.residual) await this.drop(state.residual);
          state.residual = r.residual as DeviceTensor;
          this.held.add(state.residual);
        }
        return { output: r.output, teacache, magcache };
      }
      // Skipped: the head on this call's noisy tokens plus the residual of the last computed call.
      await this.bindChanged([this.head], { latent_grid: grid, ...this.lora.get(this.head) }, signal);
      const h = await this.head.run({ hidden_states: inputs.hidden_states, residual: state!.residual!, temb: e.temb }, { signal, shrink });
      return { output: h.output, teacache, magcache };
    } finally {
      // not awaited: the frees are queued before the worker's next request, and the velocity need not wait
      for (const t of [e.txt, e.temb]) void t.release().catch(() => {});
    }
  }

  /**
   * TeaCache's decision for the call whose modulated input `mod` stays on the device: the distance to the
   * previous call's is summed there and only two numbers come back. `mod` becomes the state's previous input.
   */
  private async teacacheDecision(tea: TeaCacheState<Residual, DeviceTensor>, mod: DeviceTensor, signal?: AbortSignal): Promise<TeaCacheDecision> {
    const prev = tea.previous;
    tea.previous = mod;
    this.held.add(mod);
    let relL1: number | null = null;
    if (prev) {
      const { sums } = await this.teacacheMeasure.run({ current: mod, previous: prev }, { signal });
      const [absDiff, absPrev] = sums.data as Float32Array;
      relL1 = relativeL1FromSums(absDiff, absPrev, prev.dims.reduce((a, b) => a * b, 1), this.bank!.bf16Measure);
      await this.drop(prev);
    }
    return tea.advance(() => relL1);
  }

  /** Whether the graphs have LoRA inputs (built with DitGraphOptions.lora). */
  get acceptsLora(): boolean {
    return this.blocks.optionalInputs.includes(LORA_ENABLED);
  }

  /**
   * Binds LoRA weights (dit-lora.ts `loraFeeds`) for every later forward, like a section's inputs: once, and
   * again only when `feeds` is another object. null unbinds them (their device copies are freed) and the
   * sessions take the plain body again. False when nothing changed.
   */
  async setLora(feeds: Record<string, HostTensor> | null): Promise<boolean> {
    if (feeds === this.loraFeeds) return false;
    if (feeds && !this.acceptsLora) throw new TransformerInputError('this transformer was built without LoRA inputs');
    const bound = [...this.lora];
    this.loraFeeds = null;
    this.lora.clear();
    await Promise.all(bound.map(async ([s, mine]) => {
      for (const name of Object.keys(mine)) this.bound.get(s)?.delete(name);
      await s.unbind(Object.keys(mine));
    }));
    if (!feeds) return true;
    const on: HostTensor = { dtype: 'bool', dims: [], data: Uint8Array.of(1) };
    for (const s of [this.embed, this.blocks, this.head]) {
      if (!s.optionalInputs.includes(LORA_ENABLED)) continue;
      const mine: Record<string, HostTensor> = { [LORA_ENABLED]: on };
      for (const name of s.optionalInputs) if (feeds[name]) mine[name] = feeds[name];
      this.lora.set(s, mine);
    }
    this.loraFeeds = feeds;
    await Promise.all([...this.lora].map(([s, mine]) => this.bindChanged([s], mine)));
    return true;
  }

  async release(): Promise<void> {
    this.bank = null;
    this.mag = null;
    this.dropHeld();
    this.bound.clear();
    this.rope = null;
    this.lora.clear();
    this.loraFeeds = null;
    const rope = this.ropeThread;
    this.ropeThread = null;
    await Promise.all([rope?.close(), this.embed.release(), this.blocks.release(), this.head.release(), this.teacacheMeasure.release()]);
  }

  /**
   * Binds the inputs of `feeds` whose data differ from what the sessions have bound (a new section, a new
   * prompt) to all of `sessions` at once. The buffers of those named in `transfer` go to the session worker.
   */
  private async bindChanged(sessions: Session[], feeds: Record<string, HostTensor>, signal?: AbortSignal, transfer: readonly string[] = []): Promise<void> {
    const seen = sessions.map((s) => {
      let m = this.bound.get(s);
      if (!m) this.bound.set(s, (m = new Map()));
      return m;
    });
    const changed = Object.entries(feeds).filter(([name, t]) => seen.some((m) => m.get(name) !== t.data));
    if (!changed.length) return;
    const [first, ...also] = sessions;
    const handed = changed.filter(([name]) => transfer.includes(name));
    const kept = changed.filter(([name]) => !transfer.includes(name));
    if (kept.length) await first.bind(Object.fromEntries(kept), { signal, also });
    if (handed.length) await first.bind(Object.fromEntries(handed), { signal, also, transfer: true });
    for (const [name, t] of changed) for (const m of seen) m.set(name, t.data);
  }

  private int64Mask(mask: HostTensor): HostTensor {
    if (this.mask?.from !== mask) this.mask = { from: mask, int64: asInt64(mask) };
    return this.mask.int64;
  }

  private async drop(t: DeviceTensor): Promise<void> {
    this.held.delete(t);
    await t.release();
  }

  private dropHeld(): void {
    for (const t of this.held) void t.release().catch(() => {}); // queued before the worker's next request
    this.held.clear();
  }

  /** Checks the inputs and returns the noisy token grid (T, h, w) and the rotary table of this call. */
  private async prepare(x: DitInputs): Promise<{ grid: HostTensor; cos: HostTensor; sin: HostTensor }> {
    const c = this.config;
    for (const name of DIT_INPUTS) {
      if (name === 'guidance' && !c.guidance) continue;
      if (!x[name as keyof DitInputs]) throw new TransformerInputError(`transformer input "${name}" is missing`);
    }
    const [b, ch, T, H, W] = expectDims(x.hidden_states, 'hidden_states', 5);
    if (b !== 1) throw new TransformerInputError(`hidden_states: batch ${b}, only batch 1 is supported (run CFG branches as separate calls)`);
    if (ch !== c.inChannels) throw new TransformerInputError(`hidden_states: ${ch} channels, the model takes ${c.inChannels}`);
    if (H % c.patch || W % c.patch) throw new TransformerInputError(`hidden_states: latent size ${H}x${W} is not a multiple of the patch size ${c.patch}`);
    const frames = (tensor: string, idx: string): number[] => {
      const d = expectDims(x[tensor as keyof DitInputs]!, tensor, 5);
      if (d[0] !== 1 || d[1] !== ch || d[3] !== H || d[4] !== W) {
        throw new TransformerInputError(`${tensor}: dims [${d}] do not match hidden_states [1, ${ch}, *, ${H}, ${W}]`);
      }
      const ids = indices(x[idx as keyof DitInputs]!, idx);
      if (ids.length !== d[2]) throw new TransformerInputError(`${idx}: ${ids.length} indices for ${d[2]} frames of ${tensor}`);
      return ids;
    };
    const latent = indices(x.latent_indices, 'latent_indices');
    if (latent.length !== T) throw new TransformerInputError(`latent_indices: ${latent.length} indices for ${T} frames of hidden_states`);
    const clean = frames('clean_latents', 'clean_latent_indices');
    const clean2x = frames('clean_latents_2x', 'clean_latent_2x_indices');
    const clean4x = frames('clean_latents_4x', 'clean_latent_4x_indices');

    const [tb, L, td] = expectDims(x.encoder_hidden_states, 'encoder_hidden_states', 3);
    if (tb !== 1 || td !== c.textDim) throw new TransformerInputError(`encoder_hidden_states: dims [${tb}, ${L}, ${td}], expected [1, L, ${c.textDim}]`);
    const [mb, ml] = expectDims(x.encoder_attention_mask, 'encoder_attention_mask', 2);
    if (mb !== 1 || ml !== L) throw new TransformerInputError(`encoder_attention_mask: dims [${mb}, ${ml}], expected [1, ${L}]`);
    if (!Array.from(x.encoder_attention_mask.data as ArrayLike<number | bigint>).some((v) => Number(v) !== 0)) {
      throw new TransformerInputError('encoder_attention_mask: no valid text token');
    }

    const h = H / c.patch, w = W / c.patch;
    const key = `${h}x${w}|${latent}|${clean}|${clean2x}|${clean4x}`;
    if (this.rope?.key !== key) {
      const table = await this.ropeTable(c.rope, { latent, clean, clean2x, clean4x }, h, w);
      this.rope = {
        key, grid: { dtype: 'int64', dims: [3], data: BigInt64Array.from([T, h, w].map(BigInt)) },
        cos: { dtype: 'float32', dims: [table.tokens, table.half], data: table.cos },
        sin: { dtype: 'float32', dims: [table.tokens, table.half], data: table.sin },
      };
    }
    return this.rope;
  }

  private ropeTable(rope: RopeConfig, indices: PackedFrameIndices, h: number, w: number): Promise<RopeTable> {
    if (!this.ropeThread || this.ropeThread.failed) {
      this.ropeThread = new ThreadClient(new URL('./rope-worker.js', import.meta.url), 'DiT rotary tables');
    }
    return this.ropeThread.call({ rope, indices, h, w });
  }
}

/**
 * The three graphs of the checkpoint folder `dir`. They hold no weights (those stay in the checkpoint files
 * and the quantized-weight cache they point to), so keeping them to create the sessions again costs little
 * memory and skips reading the checkpoint headers and building the graphs.
 */
export async function buildTransformerGraphs(dir: string, opts: TransformerOptions): Promise<DitGraphs> {
  const ck = await Checkpoint.open(dir);
  return buildDitGraphs(ck, { ...opts, castWeightsAt: opts.castWeightsAt ?? defaultCastWeightsAt(ck, opts.precision) });
}

/**
 * Where weight casts run when the caller does not say: folded at load, unless the checkpoint is large and
 * stored in another dtype than the precision (the real bf16 checkpoint in float32 would fold into 52 GB).
 */
function defaultCastWeightsAt(ck: Checkpoint, precision: Precision): 'load' | 'run' {
  const stored = precision === 'bfloat16' ? 'BF16' : precision === 'float16' ? 'F16' : 'F32';
  let convertedBytes = 0;
  for (const key of ck.keys()) {
    const e = ck.entry(key);
    if (e.dtype !== stored) convertedBytes += e.length;
  }
  return convertedBytes > 2 ** 31 ? 'run' : 'load';
}

function expectDims(t: HostTensor, name: string, rank: number): number[] {
  if (t.dims.length !== rank) throw new TransformerInputError(`${name}: rank ${t.dims.length} (dims [${t.dims}]), expected ${rank}`);
  return t.dims;
}

function indices(t: HostTensor, name: string): number[] {
  if (t.dims.length !== 2 || t.dims[0] !== 1) throw new TransformerInputError(`${name}: dims [${t.dims}], expected [1, n]`);
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

function asInt64(t: HostTensor): HostTensor {
  if (t.dtype === 'int64') return t;
  return { dtype: 'int64', dims: [...t.dims], data: BigInt64Array.from(Array.from(t.data as ArrayLike<number>), (v) => BigInt(v ? 1 : 0)) };
}

/**
 * One uncached forward of the transformer in `weightsDir`: builds the graphs, runs them once (TeaCache off)
 * and releases the sessions. Feeds are picked by name; other tensors are ignored.
 */
export async function forwardDit(weightsDir: string, feeds: Record<string, HostTensor>, opts: NetOptions): Promise<Record<string, HostTensor>> {
  const inputs: Record<string, HostTensor> = {};
  for (const name of DIT_INPUTS) if (feeds[name]) inputs[name] = feeds[name];
  const t = await PackedTransformer.load(weightsDir, { precision: opts.precision, ep: opts.ep, quantize: opts.quantize });
  try {
    t.beginSection({ steps: 1 });
    const { output } = await t.forward(inputs as DitInputs);
    return { output };
  } finally {
    await t.release();
  }
}

/** The `dit` network of `framepack forward` (tensor names of components/transformer.safetensors). */
export const ditNet: ForwardNet = {
  inputs: [...DIT_INPUTS],
  outputs: ['output'],
  kind: 'dit',
  forward: forwardDit,
};
