/**
 * FramePack's inputs: the same names, types, defaults, bounds and order as the Cog predictor this project
 * replaces (so existing clients and the published schema keep working), then the optional controls added
 * after it, whose defaults reproduce the original behaviour. The openapi document is generated from this
 * schema, so the server can serve it before any weights exist. Rules that span inputs are refinements: the
 * server answers them with a 422 like pydantic's model validators.
 */
import { z } from 'zod';
import { appError } from '../errors.js';
import { fileInput } from '../predictor.js';
import { RESOLUTION } from './buckets.js';
import { loraRefProblem } from './lora-files.js';
import type { StepCacheKind } from './pipeline.js';
import { DEFAULT_BLEND_SECTIONS, parseTimedPrompt, PromptSyntaxError } from './timed-prompts.js';

export const inputSchema = z.object({
  input_image: fileInput().describe('The image the video starts from'),
  prompt: z.string().describe('What should happen in the video. Timestamps give parts of the video their own prompt: ' +
    '"[0s: a cat sits] [2s: the cat jumps]" (FramePack-Studio\'s syntax; [1s-3s: ...] sets an end too)'),
  negative_prompt: z.string().default('').describe('What to avoid (used only when cfg_scale > 1)'),
  // The noise generator takes any safe integer (src/framepack/noise.ts); the bounds are published with the schema.
  seed: z.int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).nullable().default(null)
    .describe('Random seed, an integer between -(2^53-1) and 2^53-1; leave empty for a random one'),
  total_video_length_seconds: z.number().min(1).max(10).default(3).describe('Length of the video in seconds (30 fps)'),
  latent_window_size: z.int().min(1).max(16).default(9).describe('Latent frames generated per section'),
  steps: z.int().min(1).max(50).default(25).describe('Sampling steps per section'),
  cfg_scale: z.number().min(1).max(32).default(1).describe('Classifier-free guidance scale (1 disables it)'),
  distilled_cfg_scale: z.number().min(1).max(32).default(10).describe('Distilled guidance scale'),
  cfg_rescale: z.number().min(0).max(1).default(0).describe('Guidance rescale factor'),
  use_teacache: z.boolean().default(true).describe('Skip transformer blocks when the output barely changes (faster)'),
  mp4_crf: z.int().min(0).max(51).default(23).describe('H.264 quality: lower is better, 0 is lossless; 16 if you get black frames'),
  end_image: fileInput().nullable().default(null)
    .describe("Optional image the video should end on (sampling_mode 'inverted' only); resized to the start image's bucket"),
  end_image_strength: z.number().min(0).max(1).default(1)
    .describe("How strongly end_image pulls: scales its latent and gives its image embedding the weight strength/2; 0 ignores it"),
  sampling_mode: z.enum(['inverted', 'f1']).default('inverted')
    .describe("inverted: FramePack's anti-drifting order (the end of the video first); f1: FramePack-F1's forward order with its own transformer (loaded when first asked for)"),
  cache: z.enum(['teacache', 'magcache', 'off']).nullable().default(null)
    .describe('Step cache: teacache, magcache (skips more calls) or off; empty follows use_teacache'),
  resolution: z.int().min(RESOLUTION.min).max(RESOLUTION.max).multipleOf(RESOLUTION.step).default(RESOLUTION.default)
    .describe('Bucket class: the start image is resized and cropped to the bucket of this class closest to its aspect ' +
      'ratio (width x height for a square image: 608x640 at 640, 912x960 at 960); time and memory grow with its square'),
  prompt_blend_sections: z.int().min(0).max(10).default(DEFAULT_BLEND_SECTIONS)
    .describe('Timestamped prompts: the section where the prompt changes takes 1/N of the new prompt and the rest of the ' +
      'previous one (FramePack-Studio\'s blend); 0 or 1 switches at once'),
  loras: z.array(z.object({
    url: z.string().superRefine((ref, ctx) => {
      const problem = loraRefProblem(ref);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }).describe('http(s) URL of a .safetensors LoRA, or a Hugging Face file as <owner>/<repo>/<path>'),
    scale: z.number().min(-4).max(4).default(1).describe('Strength: 1 applies the LoRA as trained, 0 not at all'),
  })).max(8).default([])
    .describe('LoRAs for the transformer (HunyuanVideo / FramePack; diffusers, original or kohya/musubi keys), applied ' +
      'together for this request; downloaded once and cached'),
}).superRefine((v, ctx) => {
  if (v.end_image !== null && v.sampling_mode !== 'inverted') {
    ctx.addIssue({ code: 'custom', path: ['end_image'], message: appError('END_IMAGE_NEEDS_INVERTED', { mode: v.sampling_mode }).message });
  }
  try {
    parseTimedPrompt(v.prompt, { seconds: v.total_video_length_seconds, latentWindowSize: v.latent_window_size });
  } catch (err) {
    if (!(err instanceof PromptSyntaxError)) throw err;
    ctx.addIssue({ code: 'custom', path: ['prompt'], message: `timestamped prompt: ${err.message}` });
  }
});

export type FramePackInput = z.infer<typeof inputSchema>;

/** The step cache a request asks for: `cache` when given, else `use_teacache` as the seed defines it. */
export function stepCacheOf(input: Pick<FramePackInput, 'cache' | 'use_teacache'>): StepCacheKind {
  return input.cache ?? (input.use_teacache ? 'teacache' : 'off');
}
