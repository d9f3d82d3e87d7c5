/**
 * The picture of latents that live previews show: the original's cheap latent -> RGB projection
 * (`vae_decode_fake` in FramePack's diffusers_helper/hunyuan.py, factors from ComfyUI: a 1x1x1 convolution of
 * the 16 HunyuanVideo latent channels to RGB, clamped to [0, 1]), every frame of the window side by side as
 * the original's Gradio app shows it (`b c t h w -> (b h) (t w) c`). No VAE: a preview costs one pass over
 * the latents. preview-renderer.ts runs it off the event loop and encodes the JPEG.
 */
import type { Float32Tensor } from './sections.js';

/** Latent channel -> (r, g, b) weights of vae_decode_fake, one row per channel. */
export const LATENT_RGB_FACTORS: ReadonlyArray<readonly [number, number, number]> = [
  [-0.0395, -0.0331, 0.0445],
  [0.0696, 0.0795, 0.0518],
  [0.0135, -0.0945, -0.0282],
  [0.0108, -0.0250, -0.0765],
  [-0.0209, 0.0032, 0.0224],
  [-0.0804, -0.0254, -0.0639],
  [-0.0991, 0.0271, -0.0669],
  [-0.0646, -0.0422, -0.0400],
  [-0.0696, -0.0595, -0.0894],
  [-0.0799, -0.0208, -0.0375],
  [0.1166, 0.1627, 0.0962],
  [0.1165, 0.0432, 0.0407],
  [-0.2315, -0.1920, -0.1355],
  [-0.0270, 0.0401, -0.0821],
  [-0.0616, -0.0997, -0.0727],
  [0.0249, -0.0469, -0.1703],
];
export const LATENT_RGB_BIAS: readonly [number, number, number] = [0.0259, -0.0192, -0.0761];

export interface RgbStrip {
  width: number;   // T x w
  height: number;  // h
  rgb: Uint8Array; // (h, T*w, 3)
}

/**
 * Latents (1, 16, T, h, w) -> an (h, T*w) RGB strip: per pixel bias + factors^T latent, clamped to [0, 1],
 * times 255, truncated to uint8 (numpy's astype after clip).
 */
export function latentsToRgb(latents: Float32Tensor): RgbStrip {
  const [B, C, T, h, w] = latents.dims;
  if (B !== 1 || C !== LATENT_RGB_FACTORS.length) {
    throw new Error(`latent preview: expected (1, ${LATENT_RGB_FACTORS.length}, T, h, w) latents, got (${latents.dims.join(', ')})`);
  }
  const plane = h * w;
  const width = T * w;
  const rgb = new Uint8Array(h * width * 3);
  const x = latents.data;
  for (let t = 0; t < T; t++) {
    for (let p = 0; p < plane; p++) {
      let r = LATENT_RGB_BIAS[0], g = LATENT_RGB_BIAS[1], b = LATENT_RGB_BIAS[2];
      for (let c = 0; c < C; c++) {
        const v = x[(c * T + t) * plane + p];
        const f = LATENT_RGB_FACTORS[c];
        r += f[0] * v; g += f[1] * v; b += f[2] * v;
      }
      const o = (Math.floor(p / w) * width + t * w + (p % w)) * 3;
      rgb[o] = Math.floor(255 * Math.min(1, Math.max(0, r)));
      rgb[o + 1] = Math.floor(255 * Math.min(1, Math.max(0, g)));
      rgb[o + 2] = Math.floor(255 * Math.min(1, Math.max(0, b)));
    }
  }
  return { width, height: h, rgb };
}
