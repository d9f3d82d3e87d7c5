/**
 * SigLIP vision encoder parity: post-layernormed last_hidden_state of the tiny so400m-shaped checkpoint
 * (729 patches at 384 px / patch 14) against transformers' SiglipVisionModel in float32 (fixture
 * components/image_encoder), from the fixture's pixel_values and from its uint8 image through our own
 * preprocessing.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadTensors } from '../../src/onnx/safetensors.js';
import { siglipNet } from '../../src/nets/siglip.js';
import { getNet } from '../../src/nets/registry.js';
import { loadSigLipPreprocessor, sigLipPixels } from '../../src/framepack/image.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const TOLERANCE = 1e-4; // fixtures README: components, relative L2

const weights = () => join(tinyModels(), 'lllyasviel', 'flux_redux_bfl', 'image_encoder');
const featureExtractor = () => join(tinyModels(), 'lllyasviel', 'flux_redux_bfl', 'feature_extractor');
const cpu = { precision: 'float32', ep: 'cpu' } as const;

after(() => terminateWorkers());

describe('SigLIP vision encoder', () => {
  it('matches transformers from the fixture pixel_values', async (t) => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'image_encoder.safetensors'));
    const out = await siglipNet.forward(weights(), { pixel_values: ref.pixel_values }, cpu);
    const err = relL2(out.last_hidden_state, ref.last_hidden_state);
    t.diagnostic(`image_encoder last_hidden_state from pixel_values: relative L2 ${err.toExponential(3)}`);
    assert.ok(err <= TOLERANCE, `relative L2 ${err} > ${TOLERANCE}`);
  });

  it('matches transformers from the uint8 image through our preprocessing', async (t) => {
    const ref = await loadTensors(fixture('framepack-tiny', 'components', 'image_encoder.safetensors'));
    const [h, w] = ref.image_hwc_uint8.dims;
    const img = { height: h, width: w, data: ref.image_hwc_uint8.data as Uint8Array };
    const pixels = sigLipPixels(img, loadSigLipPreprocessor(featureExtractor()));
    const pixelErr = relL2(pixels, ref.pixel_values);
    const out = await siglipNet.forward(weights(), { pixel_values: pixels }, cpu);
    const err = relL2(out.last_hidden_state, ref.last_hidden_state);
    t.diagnostic(`image_encoder pixel_values from image_hwc_uint8: relative L2 ${pixelErr.toExponential(3)}`);
    t.diagnostic(`image_encoder last_hidden_state from image_hwc_uint8: relative L2 ${err.toExponential(3)}`);
    assert.ok(err <= TOLERANCE, `relative L2 ${err} > ${TOLERANCE}`);
  });

  it('is registered for `framepack forward`', async () => {
    assert.equal(await getNet('siglip'), siglipNet);
  });
});
