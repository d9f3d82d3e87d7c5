/**
 * The generated OpenAPI document against the Cog schema clients rely on: FramePack's Input component exactly
 * as the predictor this project replaces published it, Output as a uri string, and the
 * /predictions -> PredictionResponse.output -> Output chain `cog predict` follows.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { inputSchema } from '../../src/framepack/inputs.js';
import { fileInput } from '../../src/predictor.js';
import { inputComponent, openapiDocument, titleOf } from '../../src/server/openapi.js';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

// components.schemas.Input as published by the Cog predictor (Python cog 0.16), descriptions aside.
const EXPECTED_INPUT = {
  title: 'Input', type: 'object',
  required: ['input_image', 'prompt'],
  properties: {
    input_image: { title: 'Input Image', type: 'string', format: 'uri', 'x-order': 0 },
    prompt: { title: 'Prompt', type: 'string', 'x-order': 1 },
    negative_prompt: { title: 'Negative Prompt', type: 'string', default: '', 'x-order': 2 },
    // Cog published no bounds for the seed; ours are the range the predictor accepts (safe integers).
    seed: { title: 'Seed', type: 'integer', nullable: true, default: null, minimum: -MAX_SAFE, maximum: MAX_SAFE, 'x-order': 3 },
    total_video_length_seconds: { title: 'Total Video Length Seconds', type: 'number', default: 3.0, minimum: 1.0, maximum: 10.0, 'x-order': 4 },
    latent_window_size: { title: 'Latent Window Size', type: 'integer', default: 9, minimum: 1, maximum: 16, 'x-order': 5 },
    steps: { title: 'Steps', type: 'integer', default: 25, minimum: 1, maximum: 50, 'x-order': 6 },
    cfg_scale: { title: 'Cfg Scale', type: 'number', default: 1.0, minimum: 1.0, maximum: 32.0, 'x-order': 7 },
    distilled_cfg_scale: { title: 'Distilled Cfg Scale', type: 'number', default: 10.0, minimum: 1.0, maximum: 32.0, 'x-order': 8 },
    cfg_rescale: { title: 'Cfg Rescale', type: 'number', default: 0.0, minimum: 0.0, maximum: 1.0, 'x-order': 9 },
    use_teacache: { title: 'Use Teacache', type: 'boolean', default: true, 'x-order': 10 },
    mp4_crf: { title: 'Mp4 Crf', type: 'integer', default: 23, minimum: 0, maximum: 51, 'x-order': 11 },
  },
};

// Inputs added after the seed's: all optional, after its twelve, defaults reproducing its behaviour.
const ADDED_INPUTS = {
  end_image: { title: 'End Image', type: 'string', format: 'uri', nullable: true, default: null, 'x-order': 12 },
  end_image_strength: { title: 'End Image Strength', type: 'number', default: 1, minimum: 0, maximum: 1, 'x-order': 13 },
  sampling_mode: { title: 'Sampling Mode', type: 'string', enum: ['inverted', 'f1'], default: 'inverted', 'x-order': 14 },
  cache: { title: 'Cache', type: 'string', enum: ['teacache', 'magcache', 'off'], nullable: true, default: null, 'x-order': 15 },
  resolution: { title: 'Resolution', type: 'integer', default: 640, minimum: 320, maximum: 960, multipleOf: 32, 'x-order': 16 },
  prompt_blend_sections: { title: 'Prompt Blend Sections', type: 'integer', default: 4, minimum: 0, maximum: 10, 'x-order': 17 },
  loras: {
    title: 'Loras', type: 'array', default: [], maxItems: 8, 'x-order': 18,
    items: {
      type: 'object', required: ['url'],
      properties: {
        url: { type: 'string', description: 'http(s) URL of a .safetensors LoRA, or a Hugging Face file as <owner>/<repo>/<path>' },
        scale: { type: 'number', default: 1, minimum: -4, maximum: 4, description: 'Strength: 1 applies the LoRA as trained, 0 not at all' },
      },
    },
  },
};

function withoutDescriptions(schema: any): any {
  const props: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema.properties as Record<string, any>)) {
    const { description, ...rest } = v;
    assert.equal(typeof description, 'string', `${k} has a description`);
    props[k] = rest;
  }
  return { ...schema, properties: props };
}

describe('openapi', () => {
  const doc = openapiDocument(inputSchema);

  it('generates FramePack Input exactly (names, types, defaults, bounds, order, titles, nullable seed), then the added inputs', () => {
    const input = withoutDescriptions(doc.components.schemas.Input);
    const expected = { ...EXPECTED_INPUT, properties: { ...EXPECTED_INPUT.properties, ...ADDED_INPUTS } };
    assert.deepEqual(input, expected);
    assert.deepEqual(Object.keys(input.properties), Object.keys(expected.properties));
  });

  it('declares the output as a uri string reached by a direct $ref', () => {
    assert.equal(doc.openapi, '3.0.2');
    assert.deepEqual(doc.components.schemas.Output, { title: 'Output', type: 'string', format: 'uri' });
    const ref = doc.paths['/predictions'].post.responses['200'].content['application/json'].schema.$ref;
    assert.equal(ref, '#/components/schemas/PredictionResponse');
    assert.deepEqual(doc.components.schemas.PredictionResponse.properties.output, { $ref: '#/components/schemas/Output' });
    assert.deepEqual(doc.components.schemas.PredictionRequest.properties.input, { $ref: '#/components/schemas/Input' });
  });

  it('resolves every $ref inside the document', () => {
    const refs: string[] = [];
    const walk = (v: unknown) => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) k === '$ref' ? refs.push(x as string) : walk(x);
    };
    walk(doc);
    assert.ok(refs.length > 5);
    for (const ref of refs) assert.ok(doc.components.schemas[ref.replace('#/components/schemas/', '')], ref);
  });

  it('derives titles, order, required and nullable the way Cog does for any schema', () => {
    assert.equal(titleOf('mp4_crf'), 'Mp4 Crf');
    const c = inputComponent(z.object({ b: fileInput(), a: z.int().optional(), c: z.string().nullable().default(null) }));
    assert.deepEqual(c.required, ['b']);
    assert.deepEqual(Object.keys(c.properties), ['b', 'a', 'c']);
    // zod's implicit safe-integer bounds are what the predictor enforces, so they are published
    assert.deepEqual(c.properties.a, { title: 'A', type: 'integer', minimum: -MAX_SAFE, maximum: MAX_SAFE, 'x-order': 1 });
    assert.deepEqual(c.properties.c, { title: 'C', type: 'string', nullable: true, default: null, 'x-order': 2 });
  });
});
