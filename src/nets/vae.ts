/**
 * HunyuanVideo causal 3-D VAE (AutoencoderKLHunyuanVideo) as ONNX graphs, built from config.json and the
 * safetensors checkpoint.
 *
 * References: diffusers `models/autoencoders/autoencoder_kl_hunyuan_video.py` (0.33.1) and the FramePack
 * re-implementation spec, section 4. Any block widths, layers_per_block and group count from the config.
 *
 * Each direction is split in three graphs at the mid-block attention:
 *   head       decoder: post_quant_conv, conv_in, mid resnet 0     encoder: conv_in, down blocks, mid resnet 0
 *   attention  GroupNorm, q/k/v, frame-causal attention, to_out, residual (built per frame count)
 *   tail       decoder: mid resnet 1, up blocks, norm/act/conv_out  encoder: mid resnet 1, norm/act/conv_out, quant_conv
 * Head and tail are shape-generic (symbolic T, H, W) and hold the weights; the attention graph is tiny and
 * is built for a given number of frames T, because the frame-causal mask is expressed as T unmasked
 * attentions (queries of frame f against the keys of frames 0..f). Unmasked float32 MultiHeadAttention
 * runs ORT's CPU flash kernel, so no score matrix of the ~30,000 tokens of a decode window (5 latent frames
 * at 80x76) is materialised; on CUDA the kernel is ORT's choice for head size C (at worst one frame's
 * (h*w) x ((f+1) h*w) scores at a time, never the full (N x N) matrix).
 *
 * Conventions: video tensors are (B, C, T, H, W) with B = 1; inputs and outputs of every graph are float32,
 * computation is in the graph's precision. CausalConv3d = replicate ("edge") padding of W: k//2 both sides,
 * H: k//2 both sides, T: k-1 in front, then a plain Conv3d. GroupNorm statistics span the whole chunk
 * (channels of the group x all T x H x W), as in PyTorch.
 */
import type { Checkpoint } from '../onnx/safetensors.js';
import { Graph, type BuiltModel, type Precision, type Value } from '../onnx/graph.js';

export interface VaeConfig {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  groups: number;
  scalingFactor: number;
  spatialCompression: number;
  temporalCompression: number;
  midBlockAttention: boolean;
}

export function vaeConfig(cfg: Record<string, any>): VaeConfig {
  const c: VaeConfig = {
    inChannels: cfg.in_channels ?? 3,
    outChannels: cfg.out_channels ?? 3,
    latentChannels: cfg.latent_channels ?? 16,
    blockOutChannels: cfg.block_out_channels ?? [128, 256, 512, 512],
    layersPerBlock: cfg.layers_per_block ?? 2,
    groups: cfg.norm_num_groups ?? 32,
    scalingFactor: cfg.scaling_factor ?? 0.476986,
    spatialCompression: cfg.spatial_compression_ratio ?? 8,
    temporalCompression: cfg.temporal_compression_ratio ?? 4,
    midBlockAttention: cfg.mid_block_add_attention ?? true,
  };
  if (c.temporalCompression !== 4) throw new Error(`VAE: temporal_compression_ratio ${c.temporalCompression} is not supported (only 4)`);
  if ((cfg.act_fn ?? 'silu') !== 'silu') throw new Error(`VAE: act_fn ${cfg.act_fn} is not supported (only silu)`);
  for (const t of [...(cfg.down_block_types ?? []), ...(cfg.up_block_types ?? [])]) {
    if (t !== 'HunyuanVideoDownBlock3D' && t !== 'HunyuanVideoUpBlock3D') throw new Error(`VAE: block type ${t} is not supported`);
  }
  return c;
}

/** Per-block resampling factors (time, space) exactly as diffusers derives them from the compression ratios. */
export function resampling(c: VaeConfig): { down: Array<[number, number]>; up: Array<[number, number]> } {
  const n = c.blockOutChannels.length;
  const spatialLayers = Math.log2(c.spatialCompression);
  const timeLayers = Math.log2(c.temporalCompression);
  const factors = (i: number): [number, number] => {
    const last = i === n - 1;
    const space = i < spatialLayers ? 2 : 1;
    const time = i >= n - 1 - timeLayers && !last ? 2 : 1;
    return [time, space];
  };
  const all = c.blockOutChannels.map((_, i) => factors(i));
  return { down: all, up: all };
}

/**
 * Every parameter of the checkpoint with its shape, derived from the config (the diffusers module tree).
 * Used to make random checkpoints for benchmarks and to check a checkpoint is complete.
 */
export function vaeParameterShapes(c: VaeConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const conv = (p: string, cin: number, cout: number, k: number) => {
    out.set(`${p}.conv.weight`, [cout, cin, k, k, k]);
    out.set(`${p}.conv.bias`, [cout]);
  };
  const norm = (p: string, ch: number) => { out.set(`${p}.weight`, [ch]); out.set(`${p}.bias`, [ch]); };
  const resnet = (p: string, cin: number, cout: number) => {
    norm(`${p}.norm1`, cin); conv(`${p}.conv1`, cin, cout, 3);
    norm(`${p}.norm2`, cout); conv(`${p}.conv2`, cout, cout, 3);
    if (cin !== cout) conv(`${p}.conv_shortcut`, cin, cout, 1);
  };
  const mid = (p: string, ch: number) => {
    resnet(`${p}.resnets.0`, ch, ch);
    if (c.midBlockAttention) {
      const a = `${p}.attentions.0`;
      norm(`${a}.group_norm`, ch);
      for (const n of ['to_q', 'to_k', 'to_v', 'to_out.0']) { out.set(`${a}.${n}.weight`, [ch, ch]); out.set(`${a}.${n}.bias`, [ch]); }
    }
    resnet(`${p}.resnets.1`, ch, ch);
  };
  const widths = c.blockOutChannels, top = widths.at(-1)!, L = c.latentChannels;
  const { down, up } = resampling(c);
  conv('encoder.conv_in', c.inChannels, widths[0], 3);
  widths.forEach((cout, i) => {
    const cin = i === 0 ? widths[0] : widths[i - 1];
    for (let j = 0; j < c.layersPerBlock; j++) resnet(`encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    if (down[i][0] > 1 || down[i][1] > 1) conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, cout, cout, 3);
  });
  mid('encoder.mid_block', top);
  norm('encoder.conv_norm_out', top);
  conv('encoder.conv_out', top, 2 * L, 3);
  out.set('quant_conv.weight', [2 * L, 2 * L, 1, 1, 1]); out.set('quant_conv.bias', [2 * L]);
  out.set('post_quant_conv.weight', [L, L, 1, 1, 1]); out.set('post_quant_conv.bias', [L]);
  conv('decoder.conv_in', L, top, 3);
  mid('decoder.mid_block', top);
  const rev = [...widths].reverse();
  rev.forEach((cout, i) => {
    const cin = i === 0 ? rev[0] : rev[i - 1];
    for (let j = 0; j < c.layersPerBlock + 1; j++) resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    if (up[i][0] > 1 || up[i][1] > 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, cout, cout, 3);
  });
  norm('decoder.conv_norm_out', widths[0]);
  conv('decoder.conv_out', widths[0], c.outChannels, 3);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// building blocks

const EPS = 1e-6;

class VaeBuilder {
  constructor(readonly g: Graph, readonly ckpt: Checkpoint, readonly cfg: VaeConfig) {}

  /** HunyuanVideoCausalConv3d `${prefix}.conv` [cout, cin, k, k, k]: replicate padding, causal in time. */
  conv(x: Value, prefix: string, cin: number, cout: number, k: number, stride: [number, number, number] = [1, 1, 1]): Value {
    const w = this.g.param(this.ckpt, `${prefix}.conv.weight`, { shape: [cout, cin, k, k, k] });
    const b = this.g.param(this.ckpt, `${prefix}.conv.bias`, { shape: [cout] });
    return this.g.causalConv3d(x, w, b, { stride });
  }

  /** Plain 1x1x1 Conv3d (quant_conv, post_quant_conv). */
  pointwise(x: Value, prefix: string, cin: number, cout: number): Value {
    const w = this.g.param(this.ckpt, `${prefix}.weight`, { shape: [cout, cin, 1, 1, 1] });
    const b = this.g.param(this.ckpt, `${prefix}.bias`, { shape: [cout] });
    return this.g.conv3d(x, w, b);
  }

  /** GroupNorm(groups, C, eps 1e-6, affine), statistics over (C/groups x T x H x W) of the whole chunk. */
  groupNorm(x: Value, prefix: string, channels: number): Value {
    const w = this.g.param(this.ckpt, `${prefix}.weight`, { shape: [channels] });
    const b = this.g.param(this.ckpt, `${prefix}.bias`, { shape: [channels] });
    return this.g.groupNorm(x, this.cfg.groups, w, b, EPS);
  }

  /** h = conv1(silu(GN1(x))); h = conv2(silu(GN2(h))); out = h + (x or conv_shortcut(x)). */
  resnet(x: Value, prefix: string, cin: number, cout: number): Value {
    const g = this.g;
    return g.scope(prefix, () => {
      let h = g.silu(this.groupNorm(x, `${prefix}.norm1`, cin));
      h = this.conv(h, `${prefix}.conv1`, cin, cout, 3);
      h = g.silu(this.groupNorm(h, `${prefix}.norm2`, cout));
      h = this.conv(h, `${prefix}.conv2`, cout, cout, 3);
      const skip = cin === cout ? x : this.conv(x, `${prefix}.conv_shortcut`, cin, cout, 1);
      return g.add(h, skip);
    });
  }

  /**
   * HunyuanVideoUpsampleCausal3D: the first frame is upsampled (nearest) in space only, the other frames by
   * (time, space, space); concatenated on T (T -> time (T - 1) + 1), then a causal conv.
   */
  upsample(x: Value, prefix: string, channels: number, time: number, space: number): Value {
    const g = this.g;
    return g.scope(prefix, () => {
      const first = g.slice(x, [0], [1], [2]); // (1, C, 1, H, W)
      const rest = g.slice(x, [1], [Number.MAX_SAFE_INTEGER], [2]); // (1, C, T-1, H, W), empty when T = 1
      const up = g.concat([
        g.resize(first, { scales: [1, 1, 1, space, space], mode: 'nearest' }),
        g.resize(rest, { scales: [1, 1, time, space, space], mode: 'nearest' }),
      ], 2); // (1, C, time (T-1) + 1, space H, space W)
      return this.conv(up, `${prefix}.conv`, channels, channels, 3);
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// graphs

export interface VaeGraphOptions { precision: Precision }

function newGraph(name: string, opts: VaeGraphOptions): Graph {
  return new Graph({ name, precision: opts.precision });
}

/** Decoder head: (1, latent, T, h, w) latent (already divided by the scaling factor) -> (1, C_mid, T, h, w). */
export function buildDecoderHead(ckpt: Checkpoint, opts: VaeGraphOptions): BuiltModel {
  const cfg = vaeConfig(ckpt.config), g = newGraph('vae_decoder_head', opts), b = new VaeBuilder(g, ckpt, cfg);
  const L = cfg.latentChannels, C = cfg.blockOutChannels.at(-1)!;
  let h = g.floatInput('z', [1, L, 'T', 'h', 'w']);
  h = b.pointwise(h, 'post_quant_conv', L, L);
  h = b.conv(h, 'decoder.conv_in', L, C, 3); // (1, C, T, h, w)
  h = b.resnet(h, 'decoder.mid_block.resnets.0', C, C);
  g.floatOutput(h, 'hidden');
  return g.toModel();
}

/** Decoder tail: (1, C_mid, T, h, w) after the mid attention -> (1, out, 4(T-1)+1, 8h, 8w) pixels. */
export function buildDecoderTail(ckpt: Checkpoint, opts: VaeGraphOptions): BuiltModel {
  const cfg = vaeConfig(ckpt.config), g = newGraph('vae_decoder_tail', opts), b = new VaeBuilder(g, ckpt, cfg);
  const widths = [...cfg.blockOutChannels].reverse();
  const { up } = resampling(cfg);
  let h = g.floatInput('hidden', [1, widths[0], 'T', 'h', 'w']);
  h = b.resnet(h, 'decoder.mid_block.resnets.1', widths[0], widths[0]);
  let cin = widths[0];
  widths.forEach((cout, i) => {
    for (let j = 0; j < cfg.layersPerBlock + 1; j++) {
      h = b.resnet(h, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    }
    const [time, space] = up[i];
    if (time > 1 || space > 1) h = b.upsample(h, `decoder.up_blocks.${i}.upsamplers.0`, cout, time, space);
    cin = cout;
  });
  h = g.silu(b.groupNorm(h, 'decoder.conv_norm_out', cin));
  h = b.conv(h, 'decoder.conv_out', cin, cfg.outChannels, 3); // (1, 3, 4(T-1)+1, 8h, 8w)
  g.floatOutput(h, 'sample');
  return g.toModel();
}

/** Encoder head: (1, 3, T, H, W) pixels in [-1, 1] -> (1, C_mid, (T-1)/4+1, H/8, W/8). */
export function buildEncoderHead(ckpt: Checkpoint, opts: VaeGraphOptions): BuiltModel {
  const cfg = vaeConfig(ckpt.config), g = newGraph('vae_encoder_head', opts), b = new VaeBuilder(g, ckpt, cfg);
  const widths = cfg.blockOutChannels;
  const { down } = resampling(cfg);
  let h = g.floatInput('x', [1, cfg.inChannels, 'T', 'H', 'W']);
  h = b.conv(h, 'encoder.conv_in', cfg.inChannels, widths[0], 3);
  let cin = widths[0];
  widths.forEach((cout, i) => {
    for (let j = 0; j < cfg.layersPerBlock; j++) {
      h = b.resnet(h, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    }
    const [time, space] = down[i];
    // output size per axis n -> floor((n - 1) / stride) + 1 thanks to the causal/replicate padding
    if (time > 1 || space > 1) h = b.conv(h, `encoder.down_blocks.${i}.downsamplers.0.conv`, cout, cout, 3, [time, space, space]);
    cin = cout;
  });
  h = b.resnet(h, 'encoder.mid_block.resnets.0', cin, cin);
  g.floatOutput(h, 'hidden');
  return g.toModel();
}

/** Encoder tail: (1, C_mid, t, h, w) after the mid attention -> posterior moments (1, 2 latent, t, h, w). */
export function buildEncoderTail(ckpt: Checkpoint, opts: VaeGraphOptions): BuiltModel {
  const cfg = vaeConfig(ckpt.config), g = newGraph('vae_encoder_tail', opts), b = new VaeBuilder(g, ckpt, cfg);
  const C = cfg.blockOutChannels.at(-1)!, Z = 2 * cfg.latentChannels;
  let h = g.floatInput('hidden', [1, C, 't', 'h', 'w']);
  h = b.resnet(h, 'encoder.mid_block.resnets.1', C, C);
  h = g.silu(b.groupNorm(h, 'encoder.conv_norm_out', C));
  h = b.conv(h, 'encoder.conv_out', C, Z, 3);
  h = b.pointwise(h, 'quant_conv', Z, Z); // (1, 2 latent, t, h, w): mean ; logvar
  g.floatOutput(h, 'moments');
  return g.toModel();
}

/**
 * Mid-block attention for exactly `frames` frames: x (1, C, T, h, w) -> x + to_out(attn(GN(x))).
 * One head of width C, scale 1/sqrt(C), mask "frame(key) <= frame(query)": the queries of frame f attend
 * to the keys of frames 0..f, computed as T unmasked attentions so no score matrix is materialised.
 */
export function buildMidAttention(ckpt: Checkpoint, part: 'encoder' | 'decoder', frames: number, opts: VaeGraphOptions): BuiltModel {
  const cfg = vaeConfig(ckpt.config), g = newGraph(`vae_${part}_mid_attention_t${frames}`, opts), b = new VaeBuilder(g, ckpt, cfg);
  const C = cfg.blockOutChannels.at(-1)!, p = `${part}.mid_block.attentions.0`;
  const x = g.floatInput('hidden', [1, C, frames, 'h', 'w']);
  if (!cfg.midBlockAttention) { g.floatOutput(x, 'out'); return g.toModel(); }
  // tokens in (t, h, w) order, as hidden_states.permute(0, 2, 3, 4, 1).flatten(1, 3), one row per frame
  const normed = b.groupNorm(x, `${p}.group_norm`, C);
  const tokens = g.reshape(g.transpose(normed, [0, 2, 3, 4, 1]), [frames, -1, C]); // (T, h*w, C)
  const q = g.linear(tokens, ckpt, `${p}.to_q`); // (T, h*w, C)
  const k = g.linear(tokens, ckpt, `${p}.to_k`);
  const v = g.linear(tokens, ckpt, `${p}.to_v`);
  const outs: Value[] = [];
  for (let f = 0; f < frames; f++) {
    const qf = g.slice(q, [f], [f + 1], [0]); // (1, h*w, C)
    const kf = g.reshape(g.slice(k, [0], [f + 1], [0]), [1, -1, C]); // (1, (f+1)*h*w, C)
    const vf = g.reshape(g.slice(v, [0], [f + 1], [0]), [1, -1, C]);
    outs.push(g.attention(qf, kf, vf, { heads: 1 })); // (1, h*w, C)
  }
  const attn = frames === 1 ? outs[0] : g.concat(outs, 0); // (T, h*w, C)
  const o = g.linear(attn, ckpt, `${p}.to_out.0`); // (T, h*w, C)
  // back to (1, C, T, h, w), then the residual connection
  const video = g.reshapeTo(g.transpose(o, [2, 0, 1]), x.shape, x, 5); // (C, T, h*w) -> (1, C, T, h, w)
  g.floatOutput(g.add(video, x), 'out');
  return g.toModel();
}
