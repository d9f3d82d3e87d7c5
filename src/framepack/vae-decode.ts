/**
 * The VAE as FramePack uses it: encode the start image to its scaled latent, decode latent slices to pixels.
 *
 * Decoding reproduces diffusers' AutoencoderKLHunyuanVideo.decode exactly (spec 4.5): more than 4 latent
 * frames always go through the temporal tiled decode (windows of 5 latents, stride 3, 4-frame linear blend);
 * spatial tiling only when `spatialTiling` is set: diffusers' 32-latent tiles (stride 24, 64-px blend) as the
 * original does in its low-VRAM mode, or (`tiles: 'fit'`) the fewest equal tiles that fit the device.
 * Encoding uses the posterior mean (the original samples it with an unseeded RNG, a documented deviation
 * shared with the fixtures).
 *
 * The networks run in ORT sessions (worker thread of src/runtime); tile blending and the assembly of the
 * output run in a second worker (vae-stitch-worker.ts), so the event loop only moves buffers.
 */
import { ThreadClient } from '../runtime/thread-rpc.js';
import { Checkpoint, type HostTensor } from '../onnx/safetensors.js';
import type { BuiltModel, Precision } from '../onnx/graph.js';
import type { ForwardNet } from '../nets/registry.js';
import { cudaProviderOptions } from '../runtime/providers.js';
import { Session, type DeviceTensor, type ExecutionProvider } from '../runtime/session.js';
import {
  buildDecoderHead, buildDecoderTail, buildEncoderHead, buildEncoderTail, buildMidAttention, resampling, vaeConfig, type VaeConfig,
} from '../nets/vae.js';
import {
  TEMPORAL, decodeNeedsSpatialTiling, decodeSpatialPlan, encodeNeedsSpatialTiling, encodeSpatialPlan, gridSpatialPlan,
  pixelFrames, temporalWindows, type Block, type SpatialPlan,
} from './vae-tiling.js';
import { isGpuOutOfMemory } from '../runtime/placement.js';

/** ONNX Runtime's CUDA kernels index with 32-bit integers: Expand and Resize fail from 2^31 elements on. */
const DEVICE_MAX_ELEMENTS = 2 ** 31 - 1;

export interface VaeOptions {
  ep: ExecutionProvider;
  precision: Precision;
  deviceId?: number;
  /** Spatial tiling of encode and decode (the original's low-VRAM mode). */
  spatialTiling?: boolean;
  /**
   * How a tiled decode tiles: 'diffusers' (default; the original's tiles), or 'fit': the layouts of `grids` in
   * turn (2 x 2 equal tiles, 3 x 3, diffusers' tiles), each next one only after the device ran out of memory
   * (remembered). Under 'fit' the encode (one image) runs untiled, as the original's high-VRAM path runs it, and
   * tiles only after running out of memory (remembered).
   */
  tiles?: 'diffusers' | 'fit';
  /** the layouts 'fit' goes through on running out of device memory, largest first (default FIT_GRIDS) */
  grids?: readonly TileGrid[];
  /** told when a decode moves to smaller tiles, or the encode to tiles, after running out of device memory */
  onTiles?: (message: string) => void;
  /** a session worker of the VAE's own (runtime/session.ts), so that its runs overlap other networks' */
  worker?: string;
}

/** A decode's tile layout under `tiles: 'fit'`: rows x cols equal tiles, or null for diffusers' 32-latent tiles. */
export type TileGrid = readonly [rows: number, cols: number] | null;

/** Decode tile layouts of `tiles: 'fit'`, largest first. */
export const FIT_GRIDS: readonly TileGrid[] = [[2, 2], [3, 3], null];

/** 'fit' layouts starting from `first`, then FIT_GRIDS' layouts of more tiles. */
export function fitGrids(first: readonly [number, number]): TileGrid[] {
  return [first, ...FIT_GRIDS.filter((g) => !g || g[0] * g[1] > first[0] * first[1])];
}

const gridName = (g: TileGrid) => (g ? `${g[0]} x ${g[1]} tiles` : 'diffusers\' 32-latent tiles');

type Dims5 = [number, number, number, number, number];

export interface EncodeOptions {
  signal?: AbortSignal;
  /** the input is handed over: the session may take its buffer (no copy; the caller must not use it afterwards) */
  consume?: boolean;
}

export interface DecodeOptions {
  signal?: AbortSignal;
  /** default true: diffusers' temporal tiled decode for more than 4 latent frames */
  temporalTiling?: boolean;
  /** the output's first frames as video frames, as soon as the temporal stitch completes them */
  stream?: FrameStream;
}

/**
 * Frames [0, frames) of a decode's output handed over as uint8 (F, H, W, 3) video frames (sections.ts
 * toUint8Frames), in order, while the decode goes on: an encoder can start on the frames that are final. Only a
 * temporal tiled decode streams; a shorter one hands over nothing. When a 'fit' decode is repeated in smaller
 * tiles after running out of memory, the frames already handed over are not sent again.
 *
 * With `ahead`, the frames after those, as far as they are final before the last window, are handed over too,
 * as float (1, C, F, H, W) copies of output frames [from, from + F); a repeated decode may hand some over again.
 */
export interface FrameStream {
  readonly frames: number;
  take(frames: Uint8Array): void;
  ahead?(frames: HostTensor, from: number): void;
}

/** Posterior of an encode: mean and std (exp(0.5 clamp(logvar, -30, 20))), each (1, latent, t, h, w). */
export interface Posterior { mean: HostTensor; std: HostTensor }

const f32 = (dims: number[], data: Float32Array): HostTensor => ({ dtype: 'float32', dims, data });

function asFloat32(t: HostTensor, what: string): Float32Array {
  if (t.dtype !== 'float32') throw new Error(`${what}: expected float32, got ${t.dtype}`);
  return t.data as Float32Array;
}

/** Crop [t0,t1) x [y0,y1) x [x0,x1) of a (1, C, T, H, W) tensor, optionally divided by `divisor`. */
function crop5(t: HostTensor, t0: number, t1: number, y0: number, y1: number, x0: number, x1: number, divisor = 1): HostTensor {
  const [, C, T, H, W] = t.dims;
  const src = asFloat32(t, 'crop');
  const nt = t1 - t0, nh = y1 - y0, nw = x1 - x0;
  const out = new Float32Array(C * nt * nh * nw);
  let o = 0;
  for (let c = 0; c < C; c++) {
    for (let tt = t0; tt < t1; tt++) {
      for (let y = y0; y < y1; y++) {
        const s = ((c * T + tt) * H + y) * W;
        for (let x = x0; x < x1; x++) out[o++] = src[s + x] / divisor;
      }
    }
  }
  return f32([1, C, nt, nh, nw], out);
}

/** Tile buffers kept for reuse: a 2 x 2 decode has at most about this many tiles between the device and the stitcher. */
const SPARE_TILES = 8;

/** Client of the stitching worker (started on first use, again after a failure). */
class Stitcher {
  private thread: ThreadClient<{
    dims?: number[]; data?: Float32Array; frames?: Uint8Array; ahead?: { from: number; dims: number[]; data: Float32Array }; free?: ArrayBuffer[];
  }> | null = null;
  private keys = 0;
  /** tile buffers the stitching is done with, for later tiles to be copied into (take()) */
  private spare: ArrayBuffer[] = [];

  private call(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []) {
    if (!this.thread || this.thread.failed) this.thread = new ThreadClient(new URL('./vae-stitch-worker.js', import.meta.url), 'VAE stitching');
    return this.thread.call(msg, transfer);
  }

  newKey(): string { return `s${++this.keys}`; }
  /**
   * `streamFrames`: the output frames that come back (as uint8 video frames) with the pushes that complete them;
   * `ahead`: the later ones too, as float copies, but for the last push's
   */
  openTemporal(key: string, channels: number, latentFrames: number, height: number, width: number, streamFrames = 0, ahead = false) {
    return this.call({ op: 'open', key, kind: 'temporal', channels, latentFrames, height, width, streamFrames, ahead });
  }
  /** `into`: the push of the last tile pushes the stitched window into that temporal stitch, as window `index`. */
  openSpatial(key: string, plan: SpatialPlan, into?: { key: string; index: number }) {
    return this.call({ op: 'open', key, kind: 'spatial', plan, into });
  }
  /**
   * Transfers the tensor's buffer: `t` must not be used afterwards. Returns the streamed frames it completed
   * (for a spatial stitch opened `into` a temporal one, those its last tile completed there).
   */
  async push(key: string, index: number, t: HostTensor) {
    const data = asFloat32(t, 'stitch');
    const dims = t.dims.slice(1) as Block['dims'];
    const { frames, ahead, free } = await this.call({ op: 'push', key, index, dims, data }, [data.buffer as ArrayBuffer]);
    if (free) this.spare = [...free, ...this.spare].slice(0, SPARE_TILES);
    return { frames, ahead };
  }
  /** A buffer of at least `bytes` that tiles were stitched from, if one came back. */
  take(bytes: number): ArrayBuffer | undefined {
    const i = this.spare.findIndex((b) => b.byteLength >= bytes);
    return i < 0 ? undefined : this.spare.splice(i, 1)[0];
  }
  async finish(key: string): Promise<HostTensor> {
    const r = await this.call({ op: 'finish', key });
    return f32([1, ...r.dims!], r.data!);
  }
  drop(key: string) { return this.call({ op: 'drop', key }); }

  async close(): Promise<void> {
    const t = this.thread;
    this.thread = null;
    this.spare = [];
    await t?.close();
  }
}

/**
 * The HunyuanVideo VAE on ORT. Sessions are created on first use: a job that only encodes never loads the
 * decoder. `release()` frees them; the next use creates them again.
 */
export class Vae {
  readonly config: VaeConfig;
  private sessions = new Map<string, Promise<Session>>();
  /**
   * Graphs already built, by session name (small: the weights stay in the checkpoint files): sessions
   * created again after `release()` skip rebuilding them, tens of milliseconds of JavaScript on the event loop.
   */
  private graphs = new Map<string, BuiltModel>();
  private stitcher = new Stitcher();
  /** index into the 'fit' layouts (`grids`) of the one a tiled decode uses now */
  private fit = 0;
  /** under 'fit': an untiled encode ran out of device memory, so encodes tile from now on */
  private encodeTiles = false;

  private constructor(readonly ckpt: Checkpoint, readonly opts: VaeOptions) {
    this.config = vaeConfig(ckpt.config);
  }

  /** `dir` is the VAE component folder (config.json + diffusion_pytorch_model.safetensors). */
  static async load(dir: string, opts: VaeOptions): Promise<Vae> {
    return new Vae(await Checkpoint.open(dir), opts);
  }

  /** The session `name`, created on first use from the graph `graphName` (built once, shared by the sessions that run it). */
  private session(name: string, build: () => BuiltModel, graphName = name): Promise<Session> {
    let s = this.sessions.get(name);
    if (!s) {
      // Without the CPU arena a run frees its activations (one window's peak instead of one per window shape)
      // but runs about 2x slower on the CPU, so only the low-memory (spatially tiled) mode gives it up.
      // Memory patterns are off on the CPU: each input shape's planned block stayed in the arena beside the
      // others (the tiny model at 640 px: 3.8 GB after one request, 8.1 GB after the second); without them
      // the arena stays at one run's peak (3.8 GB) and the decode is as fast.
      let graph = this.graphs.get(graphName);
      if (!graph) this.graphs.set(graphName, graph = build());
      s = Session.create(graph, {
        ep: this.opts.ep, deviceId: this.opts.deviceId, memoryArena: !this.opts.spatialTiling, memoryPattern: this.opts.ep !== 'cpu',
        cuda: cudaProviderOptions('vae'), worker: this.opts.worker,
      });
      s.catch(() => this.sessions.delete(name));
      this.sessions.set(name, s);
    }
    return s;
  }

  /**
   * Runs head -> mid attention -> tail of one direction on `x` (handed to the session worker). The activations
   * between the three graphs stay on the device; only the tail's output comes back. `shrink` gives the
   * transient memory back to the device after the runs (the last chunk of a stage).
   */
  private async chunk(part: 'encoder' | 'decoder', x: HostTensor, signal: AbortSignal | undefined, shrink: boolean): Promise<HostTensor> {
    const g = { precision: this.opts.precision };
    const [buildHead, buildTail] = part === 'encoder' ? [buildEncoderHead, buildEncoderTail] : [buildDecoderHead, buildDecoderTail];
    // On CUDA each input length gets sessions of its own: a convolution that sees a new input shape chooses its
    // algorithms again (~10 ms each, ~35 per chunk, with the device idle), and a decode alternates between
    // the 5-latent windows and a shorter last one. One shape per session chooses once per server.
    const length = this.opts.ep === 'cpu' ? '' : `-t${x.dims[2]}`;
    const head = await this.session(`${part}-head${length}`, () => buildHead(this.ckpt, g), `${part}-head`);
    const tail = await this.session(`${part}-tail${length}`, () => buildTail(this.ckpt, g), `${part}-tail`);
    const kept: DeviceTensor[] = [];
    try {
      const h = (await head.run({ [head.inputs[0]]: x }, { signal, transfer: true, keep: [head.outputs[0]], shrink }))[head.outputs[0]];
      kept.push(h);
      const frames = h.dims[2];
      const attention = await this.session(`${part}-attention-${frames}`, () => buildMidAttention(this.ckpt, part, frames, g));
      const a = (await attention.run({ hidden: h }, { signal, keep: [attention.outputs[0]], shrink }))[attention.outputs[0]];
      kept.push(a);
      // a decoder tile goes to the stitcher, which hands its buffer back for a later tile once done with it
      const [, , t, hh, ww] = x.dims;
      const into = part === 'decoder' ? this.stitcher.take(4 * this.config.outChannels * pixelFrames(t) * hh * ww * this.config.spatialCompression ** 2) : undefined;
      return (await tail.run({ hidden: a }, { signal, shrink, ...(into ? { into: { [tail.outputs[0]]: into } } : {}) }))[tail.outputs[0]];
    } finally {
      await Promise.all(kept.map((t) => t.release()));
    }
  }

  /** One untiled encoder forward: (1, 3, T, H, W) in [-1, 1] -> moments (1, 2 latent, t, H/8, W/8). `x` is consumed. */
  private encodeChunk(x: HostTensor, signal?: AbortSignal, shrink = false): Promise<HostTensor> {
    return this.chunk('encoder', x, signal, shrink);
  }

  /** One untiled decoder forward: unscaled latent (1, latent, T, h, w) -> (1, 3, 4(T-1)+1, 8h, 8w). `z` is consumed. */
  private decodeChunk(z: HostTensor, signal?: AbortSignal, shrink = false): Promise<HostTensor> {
    return this.chunk('decoder', z, signal, shrink);
  }

  /** diffusers `encode(x).latent_dist` (mean, std), with spatial tiling when enabled (see VaeOptions.tiles) and the image exceeds 256 px. */
  async encode(x: HostTensor, opts: EncodeOptions = {}): Promise<Posterior> {
    return posterior(await this.moments(x, opts), this.config.latentChannels);
  }

  /** The encoder's moments (1, 2 latent, t, H/8, W/8): mean, then log-variance. */
  private async moments(x: HostTensor, { signal, consume = false }: EncodeOptions): Promise<HostTensor> {
    const [B, C, T, H, W] = x.dims;
    if (B !== 1 || C !== this.config.inChannels || x.dims.length !== 5) throw new Error(`VAE encode: expected (1, ${this.config.inChannels}, T, H, W), got (${x.dims.join(', ')})`);
    if (H % 8 || W % 8) throw new Error(`VAE encode: height and width must be multiples of 8, got ${H}x${W}`);
    if (T > 16) throw new Error(`VAE encode: ${T} frames would need temporal tiled encoding, which FramePack never uses`);
    const tiled = async () => {
      const plan = encodeSpatialPlan(H, W);
      const tiles = await runByShape(tilesOf(plan, H, W), (t) => this.encodeChunk(crop5(x, 0, T, t.y0, t.y1, t.x0, t.x1), signal));
      return this.stitch(plan, tiles);
    };
    const mayTile = !!this.opts.spatialTiling && encodeNeedsSpatialTiling(H, W);
    if (mayTile && (this.opts.tiles !== 'fit' || this.encodeTiles)) return tiled();
    // The session takes its input's buffer: a copy unless the caller hands x over (and not when a tiled retry
    // may still need x). An encode happens once per request, so its memory goes back afterwards.
    try {
      return await this.encodeChunk(consume && !mayTile ? x : crop5(x, 0, T, 0, H, 0, W), signal, true);
    } catch (err) {
      if (!mayTile || !isGpuOutOfMemory(err)) throw err;
      this.encodeTiles = true;
      this.opts.onTiles?.('VAE encode untiled ran out of device memory; now diffusers\' 256-pixel tiles');
      return tiled();
    }
  }

  /** FramePack's start latent: posterior mean x scaling factor, (1, latent, 1, H/8, W/8) (the std is not computed). */
  async encodeLatent(image: HostTensor, opts: EncodeOptions = {}): Promise<HostTensor> {
    const moments = await this.moments(image, opts);
    const [B, , ...rest] = moments.dims;
    const all = asFloat32(moments, 'posterior');
    // B is 1: the mean is the first half of the moments, scaled in place
    const mean = all.subarray(0, all.length / 2);
    for (let i = 0; i < mean.length; i++) mean[i] *= this.config.scalingFactor;
    return f32([B, this.config.latentChannels, ...rest], mean);
  }

  /**
   * diffusers `decode(z).sample` for an UNSCALED latent (1, latent, T, h, w) -> float32 (1, 3, 4(T-1)+1, 8h, 8w),
   * roughly in [-1, 1]. `temporalTiling: false` decodes all frames at once (diffusers' tiled_decode/decoder
   * alone; a different result for T > 4 and much more memory): for checks and experiments only.
   */
  decode(z: HostTensor, opts: DecodeOptions = {}): Promise<HostTensor> {
    return this.decodeScaled(z, 1, opts);
  }

  /** FramePack's vae_decode: scaled latents (1, latent, T, h, w) -> pixels (1, 3, 4(T-1)+1, 8h, 8w) float32. */
  decodeLatents(latents: HostTensor, opts: DecodeOptions = {}): Promise<HostTensor> {
    return this.decodeScaled(latents, this.config.scalingFactor, opts);
  }

  private async decodeScaled(z: HostTensor, divisor: number, { signal, temporalTiling = true, stream }: DecodeOptions): Promise<HostTensor> {
    const [B, L, T, h, w] = z.dims as Dims5;
    if (B !== 1 || L !== this.config.latentChannels || z.dims.length !== 5) throw new Error(`VAE decode: expected (1, ${this.config.latentChannels}, T, h, w), got (${z.dims.join(', ')})`);
    if (T < 1 || h < 1 || w < 1) throw new Error(`VAE decode: empty latent (${z.dims.join(', ')})`);
    const tiled = this.decodesInTiles(h, w);
    let sent = 0; // bytes handed to `stream`, over every attempt
    for (;;) {
      let mine = 0; // bytes this attempt streamed
      const attempt: FrameStream | undefined = stream && {
        frames: stream.frames,
        take: (frames) => {
          const skip = Math.max(0, sent - mine);
          mine += frames.length;
          if (skip < frames.length) stream.take(skip ? frames.subarray(skip) : frames);
          sent = Math.max(sent, mine);
        },
        ahead: stream.ahead?.bind(stream),
      };
      const grids = this.opts.grids ?? FIT_GRIDS;
      const grid = this.opts.tiles === 'fit' ? grids[this.fit] : null;
      const plan = grid ? gridSpatialPlan(h, w, grid[0], grid[1]) : decodeSpatialPlan(h, w);
      try {
        return await this.decodeWindows(z, divisor, tiled ? plan : null, temporalTiling, signal, attempt);
      } catch (err) {
        if (!tiled || this.opts.tiles !== 'fit' || this.fit === grids.length - 1 || !isGpuOutOfMemory(err)) throw err;
        // a failed run leaves its arena grown: new decoder sessions start with an empty one
        await this.releaseDecoder();
        this.fit++;
        this.opts.onTiles?.(`VAE decode in ${gridName(grid)} ran out of device memory; now ${gridName(grids[this.fit])}`);
      }
    }
  }

  /**
   * The temporal windows of one decode, each untiled or in the tiles of `plan`. The device runs every window's
   * tiles back to back, grouped by shape (runByShape); the stitching worker takes each tile as soon as it and
   * the tiles before it are in, so the host's blending overlaps the device's next runs and only the last tile's
   * follows the last run. The last run of each input shape gives the transient memory back to the device: on
   * CUDA the next shape runs in sessions of its own (chunk()).
   */
  private async decodeWindows(z: HostTensor, divisor: number, plan: SpatialPlan | null, temporalTiling: boolean, signal?: AbortSignal,
    stream?: FrameStream): Promise<HostTensor> {
    const [, , T, h, w] = z.dims as Dims5;
    const windows = temporalTiling ? temporalWindows(T) : [[0, T] as [number, number]];
    // a trailing 1-latent window decodes to 1 frame, which the temporal blend drops: only its slot matters
    const skipped = (i: number) => windows.length > 1 && windows[i][1] - windows[i][0] === 1;
    const areas = plan ? tilesOf(plan, h, w) : [{ y0: 0, y1: h, x0: 0, x1: w }];
    const jobs = windows.flatMap(([t0, t1], window) => (skipped(window) ? [] : areas.map((a, tile) => ({ ...a, t0, t1, window, tile }))));
    const s = this.config.spatialCompression, C = this.config.outChannels;
    const temporal = windows.length > 1;
    const key = this.stitcher.newKey();
    // not awaited: the stitcher takes its messages in order, and opening touches the whole output (see the worker)
    let stitching: Promise<unknown> = temporal ? this.stitcher.openTemporal(key, C, T, h * s, w * s, stream?.frames, !!stream?.ahead) : Promise.resolve();
    let stitchError: { error: unknown } | null = null;
    let spatialKey: string | null = null; // the window whose tiles are being stitched
    let whole: HostTensor | undefined; // the result when there is a single window

    const streamed = ({ frames, ahead }: { frames?: Uint8Array; ahead?: { from: number; dims: number[]; data: Float32Array } }) => {
      if (frames) stream!.take(frames);
      if (ahead) stream!.ahead!(f32([1, ...ahead.dims], ahead.data), ahead.from);
    };
    // Tile j of window i to the stitcher. A tiled window's tiles are stitched as they come, so only the last
    // tile's blend follows the last run; its last tile pushes it into the temporal stitch, in the worker.
    const pushTile = async (i: number, j: number, t: HostTensor): Promise<void> => {
      if (!plan) {
        if (temporal) streamed(await this.stitcher.push(key, i, t));
        else whole = t;
        return;
      }
      if (j === 0) {
        spatialKey = this.stitcher.newKey();
        await this.stitcher.openSpatial(spatialKey, plan, temporal ? { key, index: i } : undefined);
      }
      const pushed = await this.stitcher.push(spatialKey!, j, t);
      if (j < areas.length - 1) return;
      if (temporal) streamed(pushed);
      else whole = await this.stitcher.finish(spatialKey!);
      spatialKey = null;
    };
    const tiles: Array<Array<HostTensor | undefined>> = windows.map(() => []);
    let next = { window: 0, tile: 0 }; // the next tile the stitcher takes: windows in order, tiles row-major
    const handOver = () => {
      for (;;) {
        const { window: i, tile: j } = next;
        if (i >= windows.length) return;
        let push: () => Promise<void>;
        if (skipped(i)) {
          push = async () => streamed(await this.stitcher.push(key, i, f32([1, C, 1, h * s, w * s], new Float32Array(C * h * s * w * s))));
          next = { window: i + 1, tile: 0 };
        } else {
          const t = tiles[i][j];
          if (!t) return;
          tiles[i][j] = undefined;
          push = () => pushTile(i, j, t);
          next = j + 1 < areas.length ? { window: i, tile: j + 1 } : { window: i + 1, tile: 0 };
        }
        stitching = stitching.then(push);
        // observed at once (no unhandled rejection while the device works on), thrown by the next tile or below
        stitching.catch((error) => { stitchError ??= { error }; });
      }
    };
    try {
      handOver();
      await runByShape(jobs, (j, lastOfShape) => {
        if (stitchError) throw stitchError.error;
        return this.decodeChunk(crop5(z, j.t0, j.t1, j.y0, j.y1, j.x0, j.x1, divisor), signal, lastOfShape);
      }, (k, t) => {
        tiles[jobs[k].window][jobs[k].tile] = t;
        handOver();
      });
      await stitching;
      return temporal ? await this.stitcher.finish(key) : whole!;
    } catch (err) {
      await stitching.catch(() => {});
      if (spatialKey) await this.stitcher.drop(spatialKey).catch(() => {});
      if (temporal) await this.stitcher.drop(key).catch(() => {});
      throw err;
    }
  }

  /** Blends the spatial tiles of `plan` (row-major) in the stitching worker; its state is dropped on failure. */
  private async stitch(plan: SpatialPlan, tiles: HostTensor[]): Promise<HostTensor> {
    const key = this.stitcher.newKey();
    await this.stitcher.openSpatial(key, plan);
    try {
      for (const [i, tile] of tiles.entries()) await this.stitcher.push(key, i, tile);
      return await this.stitcher.finish(key);
    } catch (err) {
      await this.stitcher.drop(key).catch(() => {});
      throw err;
    }
  }

  /**
   * Whether a decode of h x w latents goes through spatial tiles: when tiling is on, or on a GPU when an untiled
   * window would create a tensor beyond ONNX Runtime's 32-bit indexing (above about 490,000 pixels with the real
   * VAE, i.e. resolution classes above 704).
   */
  decodesInTiles(h: number, w: number): boolean {
    if (!decodeNeedsSpatialTiling(h, w)) return false;
    return this.opts.spatialTiling === true || (this.opts.ep !== 'cpu' && largestDecodeTensor(this.config, h, w) > DEVICE_MAX_ELEMENTS);
  }

  /** Whether any session exists (they are created on first use and again after `release()`). */
  get active(): boolean {
    return this.sessions.size > 0;
  }

  /** Number of pixel frames a decode of `latentFrames` latents returns. */
  static pixelFrames = pixelFrames;

  /** Frees the decoder's sessions (the encoder's stay). */
  private async releaseDecoder(): Promise<void> {
    const names = [...this.sessions.keys()].filter((n) => n.startsWith('decoder'));
    const all = names.map((n) => this.sessions.get(n)!);
    for (const n of names) this.sessions.delete(n);
    await Promise.all(all.map(async (p) => { try { await (await p).release(); } catch { /* creation failed: nothing to free */ } }));
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map(async (p) => { try { await (await p).release(); } catch { /* creation failed: nothing to free */ } }));
    await this.stitcher.close();
  }
}

/**
 * Elements of the largest tensor an untiled decode window (5 latents, 17 frames) of h x w latents creates:
 * channels x frames x height x width over the decoder's up blocks (256 x 17 x H x W with HunyuanVideo's VAE).
 */
export function largestDecodeTensor(config: VaeConfig, h: number, w: number): number {
  const widths = [...config.blockOutChannels].reverse();
  const { up } = resampling(config);
  let t: number = TEMPORAL.latentTile, y = h, x = w, cin = widths[0], largest = 0;
  widths.forEach((cout, i) => {
    largest = Math.max(largest, Math.max(cin, cout) * t * y * x);
    const [time, space] = up[i];
    t = 1 + time * (t - 1);
    y *= space;
    x *= space;
    largest = Math.max(largest, cout * t * y * x);
    cin = cout;
  });
  return largest;
}

/** The spatial tiles of `plan` over an (h, w) input, row-major: input rows [y0, y1) and columns [x0, x1). */
function tilesOf(plan: SpatialPlan, h: number, w: number): Array<{ y0: number; y1: number; x0: number; x1: number }> {
  return plan.rows.flatMap((y0) => plan.cols.map((x0) => ({ y0, y1: Math.min(y0 + plan.tile[0], h), x0, x1: Math.min(x0 + plan.tile[1], w) })));
}

/**
 * Runs `run` on every job, one input shape after the other (the shapes in the order they first appear), and
 * returns the results in job order; `onResult` hears of each as it comes. On CUDA a convolution that sees a
 * new input shape chooses its algorithms again (~0.3 s for the decoder), and row-major order would change the
 * shape at 3 of every 4 tiles; this order changes it once per distinct shape. `run` is told which job is the
 * last of its shape.
 *
 * `depth` jobs are in flight at a time (default 2): a job's three session runs wait on the main thread between
 * them, so with one job only the device would idle for every round trip and every output handed back; with
 * two, the session worker always has the next job's run queued. A failed job stops new starts; the jobs
 * already started are waited for before the first error is thrown, so no run outlives the call.
 */
export async function runByShape<J extends { y0: number; y1: number; x0: number; x1: number; t0?: number; t1?: number }>(
  jobs: J[], run: (job: J, lastOfShape: boolean) => Promise<HostTensor>, onResult?: (index: number, result: HostTensor) => void,
  depth = 2,
): Promise<HostTensor[]> {
  const keys = jobs.map((j) => `${(j.t1 ?? 0) - (j.t0 ?? 0)}x${j.y1 - j.y0}x${j.x1 - j.x0}`);
  const first = new Map<string, number>();
  keys.forEach((k, i) => { if (!first.has(k)) first.set(k, i); });
  const order = jobs.map((_, i) => i).sort((a, b) => first.get(keys[a])! - first.get(keys[b])! || a - b);
  const out: HostTensor[] = new Array(jobs.length);
  const errors: unknown[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    while (!errors.length && next < order.length) {
      const k = next++, i = order[k];
      try {
        out[i] = await run(jobs[i], k === order.length - 1 || keys[order[k + 1]] !== keys[i]);
        onResult?.(i, out[i]);
      } catch (error) {
        errors.push(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(depth, jobs.length)) }, lane));
  if (errors.length) throw errors[0];
  return out;
}

/** DiagonalGaussianDistribution of (1, 2L, t, h, w) moments: mean = first L channels, std from the logvar half. */
export function posterior(moments: HostTensor, latent: number): Posterior {
  const [B, C2, ...rest] = moments.dims;
  if (C2 !== 2 * latent) throw new Error(`VAE posterior: ${C2} moment channels, expected ${2 * latent}`);
  const m = asFloat32(moments, 'posterior');
  const half = m.length / 2;
  const mean = m.slice(0, half);
  const std = new Float32Array(half);
  for (let i = 0; i < half; i++) std[i] = Math.exp(0.5 * Math.min(20, Math.max(-30, m[half + i])));
  return { mean: f32([B, latent, ...rest], mean), std: f32([B, latent, ...rest], std) };
}

// ---------------------------------------------------------------------------------------------------------
// `framepack forward vae-encode | vae-decode` (tensor names of the reference fixtures)

/** encode_input (1, 3, T, H, W) in [-1, 1] -> encode_mean, encode_std (the unscaled posterior). */
export const vaeEncodeNet: ForwardNet = {
  inputs: ['encode_input'],
  outputs: ['encode_mean', 'encode_std'],
  kind: 'vae',
  async forward(dir, feeds, opts) {
    const vae = await Vae.load(dir, { ep: opts.ep, precision: opts.precision });
    try {
      const { mean, std } = await vae.encode(feeds.encode_input);
      return { encode_mean: mean, encode_std: std };
    } finally { await vae.release(); }
  },
};

/** decode_input (1, 16, T, h, w), unscaled -> decode_output (1, 3, 4(T-1)+1, 8h, 8w), temporal tiling for T > 4. */
export const vaeDecodeNet: ForwardNet = {
  inputs: ['decode_input'],
  outputs: ['decode_output'],
  kind: 'vae',
  async forward(dir, feeds, opts) {
    const vae = await Vae.load(dir, { ep: opts.ep, precision: opts.precision });
    try {
      return { decode_output: await vae.decode(feeds.decode_input) };
    } finally { await vae.release(); }
  },
};
