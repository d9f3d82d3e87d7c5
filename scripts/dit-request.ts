/**
 * One DiT call of the default request at its real shapes, with random inputs: the 640x608 bucket (latents
 * 80x76), latent_window_size 9, a 40-token prompt (text padded to 512, so 729 + 40 tokens after the crop), the
 * first section's frame indices. Shared by the benchmarks that time the transformer.
 */
import type { HostTensor as Tensor } from '../src/onnx/safetensors.js';

export const BUCKET = { height: 640, width: 608 };
export const LATENT = { h: BUCKET.height / 8, w: BUCKET.width / 8 }; // 80 x 76
export const WINDOW = 9;
export const PROMPT_TOKENS = 40;

function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 2147483648 - 1;
  };
}

export function randn(dims: number[], scale = 1, seed = 7): Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  const r = uniform(seed);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = scale * (r() + r() + r()); // roughly normal, never all zeros
  return { dtype: 'float32', dims, data };
}

export const ints = (values: number[]): Tensor => ({ dtype: 'int64', dims: [1, values.length], data: BigInt64Array.from(values.map(BigInt)) });
export const range = (a: number, n: number) => Array.from({ length: n }, (_, i) => a + i);

/** Inputs of one transformer call of the first section (spec 8.2 with padding 0); `latent` for smaller runs. */
export function ditInputs(c: { textDim: number; pooledDim: number; imageProjDim: number }, latent = LATENT): Record<string, Tensor> {
  const { h, w } = latent;
  const mask = new BigInt64Array(512);
  mask.fill(1n, 0, PROMPT_TOKENS);
  return {
    hidden_states: randn([1, 16, WINDOW, h, w], 0.5, 1),
    timestep: { dtype: 'float32', dims: [1], data: Float32Array.of(960) },
    guidance: { dtype: 'float32', dims: [1], data: Float32Array.of(10000) },
    encoder_hidden_states: randn([1, 512, c.textDim], 0.5, 2),
    encoder_attention_mask: { dtype: 'int64', dims: [1, 512], data: mask },
    pooled_projections: randn([1, c.pooledDim], 0.5, 3),
    image_embeddings: randn([1, 729, c.imageProjDim], 0.5, 4),
    latent_indices: ints(range(1, WINDOW)),
    clean_latents: randn([1, 16, 2, h, w], 0.5, 5),
    clean_latent_indices: ints([0, WINDOW + 1]),
    clean_latents_2x: randn([1, 16, 2, h, w], 0.5, 6),
    clean_latent_2x_indices: ints([WINDOW + 2, WINDOW + 3]),
    clean_latents_4x: randn([1, 16, 16, h, w], 0.5, 8),
    clean_latent_4x_indices: ints(range(WINDOW + 4, 16)),
  };
}
