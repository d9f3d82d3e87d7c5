/**
 * Digests of what a default request produces on the fixtures' tiny FramePack: both fixture cases run through
 * `generate` on the CPU (float32) with their reference noise injected, and every intermediate tensor the run
 * dumps plus the final uint8 frames is hashed (sha256 of the raw bytes).
 *
 * The committed digests (test/fixtures/defaults/digests.json) were written by this script before the
 * optional inputs that change generations existed; test/framepack/e2e.test.ts runs the same requests
 * through the current input schema's defaults and requires the same bytes, so an input left at its default
 * cannot change a video.
 *
 * Usage: node dist/scripts/defaults-digest.js [out.json]   (prints the JSON when no file is given)
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { resolveModels } from '../src/hub/resolve.js';
import { loadTensors, type HostTensor } from '../src/onnx/safetensors.js';
import { choosePlacement } from '../src/runtime/placement.js';
import { terminateWorkers } from '../src/runtime/session.js';
import { loadImage } from '../src/framepack/image.js';
import { generate } from '../src/framepack/pipeline.js';
import { FramePackModels } from '../src/framepack/predictor.js';
import { fixture, tinyModels } from '../test/fixtures.js';

export interface CaseDigest {
  /** the request's inputs, named as in the Cog schema */
  input: Record<string, unknown>;
  /** sha256 of each dumped tensor's bytes, and of all frames as `frames` */
  sha256: Record<string, string>;
}

const sha = (bytes: ArrayBufferView) => createHash('sha256').update(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)).digest('hex');

/** The fixture case's request as Cog inputs (the input image is the case's input.png). */
export function caseInput(name: string): Record<string, unknown> {
  const p = JSON.parse(readFileSync(fixture('framepack-tiny', 'cases', name, 'params.json'), 'utf8'));
  return {
    prompt: p.prompt, negative_prompt: p.negative_prompt, seed: p.seed, total_video_length_seconds: p.total_video_length_seconds,
    latent_window_size: p.latent_window_size, steps: p.steps, cfg_scale: p.cfg_scale, distilled_cfg_scale: p.distilled_cfg_scale,
    cfg_rescale: p.cfg_rescale, use_teacache: p.use_teacache,
  };
}

/** Where digests were recorded: float32 kernels differ between CPU families, so bytes are compared only on the same kind. */
export interface DigestOrigin { cpu: string; avx512: boolean; commit?: string }

export function thisMachine(): DigestOrigin {
  const flags = (() => { try { return readFileSync('/proc/cpuinfo', 'utf8'); } catch { return ''; } })();
  return { cpu: cpus()[0]?.model.trim() ?? 'unknown', avx512: /\bavx512f\b/.test(flags) };
}

export const digestCases = (): string[] => readdirSync(fixture('framepack-tiny', 'cases')).sort();

/** Hashes of a run's dump and frames. */
export function digestOf(dump: Record<string, HostTensor>, frames: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(dump).sort()) out[key] = sha(dump[key].data as ArrayBufferView);
  out.frames = sha(frames);
  return out;
}

async function main(): Promise<void> {
  const dirs = await resolveModels({ models: tinyModels() });
  const placement = await choosePlacement({ env: { FRAMEPACK_PLACEMENT: 'cpu' } });
  const models = await FramePackModels.open(dirs, placement, () => {});
  const cases: Record<string, CaseDigest> = {};
  try {
    for (const name of digestCases()) {
      const dir = fixture('framepack-tiny', 'cases', name);
      const input = caseInput(name);
      const noise = await loadTensors(join(dir, 'expected.safetensors'));
      const dump: Record<string, HostTensor> = {};
      const result = await generate(models, await loadImage(join(dir, 'input.png')), {
        prompt: input.prompt as string, negativePrompt: input.negative_prompt as string, seed: input.seed as number,
        seconds: input.total_video_length_seconds as number, latentWindowSize: input.latent_window_size as number,
        steps: input.steps as number, cfg: input.cfg_scale as number, distilledCfg: input.distilled_cfg_scale as number,
        cfgRescale: input.cfg_rescale as number, cache: input.use_teacache ? 'teacache' : 'off',
      }, { signal: new AbortController().signal, log: () => {}, noise, dump });
      cases[name] = { input, sha256: digestOf(dump, await result.pixels.frames()) };
    }
  } finally {
    await models.release();
    await terminateWorkers();
  }
  let commit: string | undefined;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch { /* not a git checkout */ }
  const json = `${JSON.stringify({ recorded_on: { ...thisMachine(), commit }, cases }, null, 2)}\n`;
  const file = process.argv[2];
  if (file) await writeFile(resolve(file), json);
  else process.stdout.write(json);
}

if (process.argv[1] && resolve(process.argv[1]).endsWith('defaults-digest.js')) await main();
