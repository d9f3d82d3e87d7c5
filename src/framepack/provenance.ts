/**
 * How a video was made, carried inside the MP4 (its `comment` metadata, JSON, readable with
 * `ffprobe -show_entries format_tags=comment`) and in the prediction's final log line: the seed actually used,
 * every input as the predictor received it, the project's version and where the networks ran.
 *
 * The start image is recorded as `sha256:<hex>` of its bytes: the predictor only has a temporary copy, and
 * the URL a client sent may be a data URL of several megabytes.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Placement } from '../runtime/placement.js';
import { PROJECT_NAME, PROJECT_VERSION } from '../version.js';
import type { FramePackInput } from './inputs.js';

export interface Provenance {
  software: string;
  version: string;
  seed: number;
  input: Record<string, unknown>;
  placement: {
    policy: string;
    ep: string;
    device_id: number;
    precision: Placement['precision'];
    quantize: Placement['quantize'];
  };
}

export async function fileDigest(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

export async function provenanceOf(input: FramePackInput, seed: number, placement: Placement): Promise<Provenance> {
  return {
    software: PROJECT_NAME,
    version: PROJECT_VERSION,
    seed,
    input: { ...input, input_image: await fileDigest(input.input_image) },
    placement: {
      policy: placement.policy,
      ep: placement.ep,
      device_id: placement.deviceId,
      precision: placement.precision,
      quantize: placement.quantize,
    },
  };
}
