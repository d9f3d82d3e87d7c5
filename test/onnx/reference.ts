/**
 * Plain-JavaScript references for the graph helpers, written from the operators' definitions (PyTorch
 * semantics) so tests compare ONNX Runtime against independent arithmetic. Arrays are row-major.
 */

export const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

export function strides(shape: number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/** Elementwise f(a, b) with numpy broadcasting. */
export function broadcast2(a: Float32Array, as: number[], b: Float32Array, bs: number[], f: (x: number, y: number) => number) {
  const rank = Math.max(as.length, bs.length);
  const pa = [...new Array(rank - as.length).fill(1), ...as], pb = [...new Array(rank - bs.length).fill(1), ...bs];
  const out = pa.map((d, i) => Math.max(d, pb[i]));
  const sa = strides(pa), sb = strides(pb), so = strides(out);
  const r = new Float32Array(numel(out));
  for (let i = 0; i < r.length; i++) {
    let ia = 0, ib = 0;
    for (let d = 0; d < rank; d++) {
      const c = Math.floor(i / so[d]) % out[d];
      if (pa[d] !== 1) ia += c * sa[d];
      if (pb[d] !== 1) ib += c * sb[d];
    }
    r[i] = f(a[ia], b[ib]);
  }
  return { data: r, shape: out };
}

/** (..., M, K) x (K, N) or batched (B, M, K) x (B, K, N). */
export function matmul(a: Float32Array, b: Float32Array, batch: number, m: number, k: number, n: number, bBatched = true) {
  const out = new Float32Array(batch * m * n);
  for (let z = 0; z < batch; z++)
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let t = 0; t < k; t++) s += a[z * m * k + i * k + t] * b[(bBatched ? z * k * n : 0) + t * n + j];
        out[z * m * n + i * n + j] = s;
      }
  return out;
}

/** y = x W^T + b, x (rows, in), W (out, in). */
export function linear(x: Float32Array, w: Float32Array, b: Float32Array | null, rows: number, inF: number, outF: number) {
  const y = new Float32Array(rows * outF);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outF; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) s += x[r * inF + i] * w[o * inF + i];
      y[r * outF + o] = s;
    }
  return y;
}

/** Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, enough for float32 comparisons. */
export function erf(x: number): number {
  const s = Math.sign(x), a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  return s * (1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a));
}

export const geluExact = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** Normalise each row of `width` values: (x - mean) / sqrt(var + eps) (rms: no mean). */
export function rowNorm(x: Float32Array, width: number, eps: number, rms = false) {
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length / width; r++) {
    let mean = 0;
    if (!rms) { for (let i = 0; i < width; i++) mean += x[r * width + i]; mean /= width; }
    let v = 0;
    for (let i = 0; i < width; i++) v += (x[r * width + i] - mean) ** 2;
    v /= width;
    for (let i = 0; i < width; i++) out[r * width + i] = (x[r * width + i] - mean) / Math.sqrt(v + eps);
  }
  return out;
}

export function softmaxRows(x: Float32Array, width: number) {
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length / width; r++) {
    let m = -Infinity;
    for (let i = 0; i < width; i++) m = Math.max(m, x[r * width + i]);
    let s = 0;
    for (let i = 0; i < width; i++) s += Math.exp(x[r * width + i] - m);
    for (let i = 0; i < width; i++) out[r * width + i] = Math.exp(x[r * width + i] - m) / s;
  }
  return out;
}

/** N-d convolution (torch semantics), x (N, C, ...sp), w (O, C/g, ...k), zero padding `pad` per side. */
export function conv(x: Float32Array, xs: number[], w: Float32Array, ws: number[], b: Float32Array | null,
  stride: number[], pad: number[], dil: number[], groups: number) {
  const nd = xs.length - 2;
  const [N, C] = xs, O = ws[0], cpg = C / groups, opg = O / groups;
  const sp = xs.slice(2), k = ws.slice(2);
  const osp = sp.map((d, i) => Math.floor((d + 2 * pad[i] - dil[i] * (k[i] - 1) - 1) / stride[i]) + 1);
  const out = new Float32Array(N * O * numel(osp));
  const xst = strides(xs), wst = strides(ws), ost = strides([N, O, ...osp]);
  const kIdx = [...Array(numel(k)).keys()].map((i) => k.map((_, d) => Math.floor(i / strides(k)[d]) % k[d]));
  const oIdx = [...Array(numel(osp)).keys()].map((i) => osp.map((_, d) => Math.floor(i / strides(osp)[d]) % osp[d]));
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      const g = Math.floor(o / opg);
      for (const op of oIdx) {
        let s = b ? b[o] : 0;
        for (let c = 0; c < cpg; c++)
          for (const kp of kIdx) {
            let xi = n * xst[0] + (g * cpg + c) * xst[1], ok = true;
            for (let d = 0; d < nd; d++) {
              const p = op[d] * stride[d] - pad[d] + kp[d] * dil[d];
              if (p < 0 || p >= sp[d]) { ok = false; break; }
              xi += p * xst[2 + d];
            }
            if (!ok) continue;
            let wi = o * wst[0] + c * wst[1];
            for (let d = 0; d < nd; d++) wi += kp[d] * wst[2 + d];
            s += x[xi] * w[wi];
          }
        let oi = n * ost[0] + o * ost[1];
        for (let d = 0; d < nd; d++) oi += op[d] * ost[2 + d];
        out[oi] = s;
      }
    }
  return { data: out, shape: [N, O, ...osp] };
}

/** Pads `x` (any rank) by begins/ends per axis with mode constant | edge (replicate) | reflect. */
export function pad(x: Float32Array, xs: number[], begins: number[], ends: number[], mode: 'constant' | 'edge' | 'reflect', value = 0) {
  const os = xs.map((d, i) => d + begins[i] + ends[i]);
  const out = new Float32Array(numel(os));
  const xst = strides(xs), ost = strides(os);
  for (let i = 0; i < out.length; i++) {
    let xi = 0, inside = true;
    for (let d = 0; d < xs.length; d++) {
      let c = (Math.floor(i / ost[d]) % os[d]) - begins[d];
      if (c < 0 || c >= xs[d]) {
        if (mode === 'constant') { inside = false; break; }
        if (mode === 'edge') c = Math.min(Math.max(c, 0), xs[d] - 1);
        else c = c < 0 ? -c : 2 * (xs[d] - 1) - c;
      }
      xi += c * xst[d];
    }
    out[i] = inside ? x[xi] : value;
  }
  return { data: out, shape: os };
}

/**
 * Multi-head attention on packed heads: q (B, S, H*D), k (B, L, H*D), v (B, L, H*Dv) -> (B, S, H*Dv).
 * keep(b, l) false masks a key; bias(b, h, s, l) is added to the scores.
 */
export function attention(q: Float32Array, k: Float32Array, v: Float32Array, B: number, S: number, L: number, H: number, D: number, Dv: number,
  scale = 1 / Math.sqrt(D), keep?: (b: number, l: number) => boolean, bias?: (b: number, h: number, s: number, l: number) => number) {
  const out = new Float32Array(B * S * H * Dv);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let s = 0; s < S; s++) {
        const scores = new Float32Array(L);
        for (let l = 0; l < L; l++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[(b * S + s) * H * D + h * D + d] * k[(b * L + l) * H * D + h * D + d];
          scores[l] = keep && !keep(b, l) ? -Infinity : dot * scale + (bias ? bias(b, h, s, l) : 0);
        }
        const p = softmaxRows(scores, L);
        for (let d = 0; d < Dv; d++) {
          let acc = 0;
          for (let l = 0; l < L; l++) acc += p[l] * v[(b * L + l) * H * Dv + h * Dv + d];
          out[(b * S + s) * H * Dv + h * Dv + d] = acc;
        }
      }
  return out;
}

/** Rotary embedding of x (B, S, H*D) at positions pos[b*S+s], cos/sin rows of D/2. */
export function rotary(x: Float32Array, B: number, S: number, H: number, D: number, pos: number[], cos: Float32Array, sin: Float32Array, interleaved: boolean) {
  const out = new Float32Array(x.length);
  const half = D / 2;
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let h = 0; h < H; h++) {
        const base = (b * S + s) * H * D + h * D, p = pos[b * S + s];
        for (let i = 0; i < half; i++) {
          const c = cos[p * half + i], sn = sin[p * half + i];
          const [i0, i1] = interleaved ? [2 * i, 2 * i + 1] : [i, i + half];
          out[base + i0] = x[base + i0] * c - x[base + i1] * sn;
          out[base + i1] = x[base + i1] * c + x[base + i0] * sn;
        }
      }
  return out;
}

/** Bilinear upsampling of (N, C, H, W) with half-pixel centres (torch align_corners=False). */
export function bilinear(x: Float32Array, xs: number[], oh: number, ow: number) {
  const [N, C, H, W] = xs;
  const out = new Float32Array(N * C * oh * ow);
  const src = (o: number, scale: number, size: number) => Math.min(Math.max((o + 0.5) / scale - 0.5, 0), size - 1);
  for (let n = 0; n < N * C; n++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        const y = src(i, oh / H, H), xx = src(j, ow / W, W);
        const y0 = Math.floor(y), x0 = Math.floor(xx), y1 = Math.min(y0 + 1, H - 1), x1 = Math.min(x0 + 1, W - 1);
        const dy = y - y0, dx = xx - x0;
        const at = (a: number, b: number) => x[n * H * W + a * W + b];
        out[n * oh * ow + i * ow + j] = (1 - dy) * ((1 - dx) * at(y0, x0) + dx * at(y0, x1)) + dy * ((1 - dx) * at(y1, x0) + dx * at(y1, x1));
      }
  return out;
}
