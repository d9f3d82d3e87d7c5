/**
 * The packed DiT's 3D rotary tables, computed on the host once per section (they depend only on the frame
 * indices and the token grid) and fed to the blocks graph.
 *
 * Reference: FramePack (lllyasviel) diffusers_helper/models/hunyuan_video_packed.py,
 * HunyuanVideoRotaryPosEmbed (get_frequency, forward_inner), pad_for_3d_conv, center_down_sample_3d and
 * process_input_hidden_states; spec section 5.3.
 *
 * For a token at (t, y, x) and a head of width sum(axes) the original builds 2 * sum(axes) values,
 * [cos block | sin block], each frequency repeated on two adjacent lanes (interleaved pairs). We keep one
 * value per pair, which is the layout com.microsoft.RotaryEmbedding reads with interleaved = 1:
 *   row = [f_T0 t .. f_T(dT/2-1) t, f_Y0 y .. , f_X0 x .. ]  (sum(axes) / 2 angles) -> cos row, sin row.
 * Frequencies are f_k = 1 / theta^(2k / d) per axis, computed in float32 as the original does.
 *
 * Tokens of the 2x and 4x clean latents take the full-resolution table of their frames on the same h x w
 * grid, replicate-padded at the end of each axis to a multiple of k (2 or 4) and average-pooled with kernel =
 * stride = (k, k, k). This averages cos and sin values, not positions, so pooled entries are not unit
 * rotations; the rotary op applies them with the same formula.
 */

const f = Math.fround;

export interface RopeConfig {
  theta: number;                       // rope_theta (256)
  axes: readonly [number, number, number]; // rope_axes_dim (16, 56, 56): time, height, width
}

/** cos and sin, (tokens, half) row-major, half = sum(axes) / 2. */
export interface RopeTable {
  tokens: number;
  half: number;
  cos: Float32Array;
  sin: Float32Array;
}

export function ropeConfig(config: Record<string, any>): RopeConfig {
  const axes = config.rope_axes_dim ?? [16, 56, 56];
  if (!Array.isArray(axes) || axes.length !== 3 || axes.some((d: number) => !Number.isInteger(d) || d <= 0 || d % 2 !== 0)) {
    throw new Error(`rope_axes_dim must be three positive even integers, got ${JSON.stringify(axes)}`);
  }
  return { theta: config.rope_theta ?? 256, axes: [axes[0], axes[1], axes[2]] };
}

/** 1 / theta^(arange(0, d, 2) / d), float32 at each step as torch computes it. */
function frequencies(theta: number, d: number): Float32Array {
  const out = new Float32Array(d / 2);
  for (let k = 0; k < d / 2; k++) out[k] = f(1 / f(Math.pow(theta, f((2 * k) / d))));
  return out;
}

/** The unpooled table of a (frames.length, h, w) grid, tokens in (t, y, x) order. */
export function gridRope(cfg: RopeConfig, frames: ArrayLike<number>, h: number, w: number): RopeTable {
  const [dT, dY, dX] = cfg.axes;
  const fT = frequencies(cfg.theta, dT);
  const fY = frequencies(cfg.theta, dY);
  const fX = frequencies(cfg.theta, dX);
  const half = (dT + dY + dX) / 2;
  const tokens = frames.length * h * w;
  const cos = new Float32Array(tokens * half);
  const sin = new Float32Array(tokens * half);
  // Angles per axis value are shared by many tokens: compute each row segment once.
  const segment = (freqs: Float32Array, pos: number): [Float32Array, Float32Array] => {
    const c = new Float32Array(freqs.length);
    const s = new Float32Array(freqs.length);
    for (let k = 0; k < freqs.length; k++) {
      const a = f(freqs[k] * pos);
      c[k] = Math.cos(a);
      s[k] = Math.sin(a);
    }
    return [c, s];
  };
  const ys = Array.from({ length: h }, (_, y) => segment(fY, y));
  const xs = Array.from({ length: w }, (_, x) => segment(fX, x));
  let row = 0;
  for (let t = 0; t < frames.length; t++) {
    const [ct, st] = segment(fT, frames[t]);
    for (let y = 0; y < h; y++) {
      const [cy, sy] = ys[y];
      for (let x = 0; x < w; x++, row++) {
        const [cx, sx] = xs[x];
        const o = row * half;
        cos.set(ct, o); cos.set(cy, o + ct.length); cos.set(cx, o + ct.length + cy.length);
        sin.set(st, o); sin.set(sy, o + st.length); sin.set(sx, o + st.length + sy.length);
      }
    }
  }
  return { tokens, half, cos, sin };
}

/**
 * The table of `frames` on an h x w grid, replicate-padded to multiples of k and average-pooled by (k, k, k):
 * ceil(T/k) * ceil(h/k) * ceil(w/k) tokens. k = 1 returns the grid table itself.
 */
export function pooledRope(cfg: RopeConfig, frames: ArrayLike<number>, h: number, w: number, k: number): RopeTable {
  const full = gridRope(cfg, frames, h, w);
  if (k === 1) return full;
  const T = frames.length;
  const [To, Ho, Wo] = [Math.ceil(T / k), Math.ceil(h / k), Math.ceil(w / k)];
  const half = full.half;
  const tokens = To * Ho * Wo;
  const cos = new Float32Array(tokens * half);
  const sin = new Float32Array(tokens * half);
  const accC = new Float64Array(half);
  const accS = new Float64Array(half);
  const clamp = (v: number, n: number) => (v < n ? v : n - 1); // replicate padding at the end
  let out = 0;
  for (let t = 0; t < To; t++) {
    for (let y = 0; y < Ho; y++) {
      for (let x = 0; x < Wo; x++, out++) {
        accC.fill(0);
        accS.fill(0);
        for (let dt = 0; dt < k; dt++) {
          for (let dy = 0; dy < k; dy++) {
            for (let dx = 0; dx < k; dx++) {
              const src = ((clamp(t * k + dt, T) * h + clamp(y * k + dy, h)) * w + clamp(x * k + dx, w)) * half;
              for (let j = 0; j < half; j++) {
                accC[j] += full.cos[src + j];
                accS[j] += full.sin[src + j];
              }
            }
          }
        }
        const n = k * k * k;
        for (let j = 0; j < half; j++) {
          cos[out * half + j] = accC[j] / n;
          sin[out * half + j] = accS[j] / n;
        }
      }
    }
  }
  return { tokens, half, cos, sin };
}

/** Frame indices of the four token groups of one packed call (each a list of time positions). */
export interface PackedFrameIndices {
  latent: ArrayLike<number>;   // noisy window
  clean: ArrayLike<number>;    // clean 1x (start frame, then post frames)
  clean2x: ArrayLike<number>;
  clean4x: ArrayLike<number>;
}

/**
 * The rows of every image token in packing order [4x | 2x | clean 1x | noisy] for a latent grid of
 * (H, W) latents, i.e. h = H/2, w = W/2 tokens per frame at 1x.
 */
export function packedRope(cfg: RopeConfig, idx: PackedFrameIndices, h: number, w: number): RopeTable {
  const parts = [
    pooledRope(cfg, idx.clean4x, h, w, 4),
    pooledRope(cfg, idx.clean2x, h, w, 2),
    gridRope(cfg, idx.clean, h, w),
    gridRope(cfg, idx.latent, h, w),
  ];
  const half = parts[0].half;
  const tokens = parts.reduce((a, p) => a + p.tokens, 0);
  const cos = new Float32Array(tokens * half);
  const sin = new Float32Array(tokens * half);
  let o = 0;
  for (const p of parts) {
    cos.set(p.cos, o);
    sin.set(p.sin, o);
    o += p.cos.length;
  }
  return { tokens, half, cos, sin };
}
