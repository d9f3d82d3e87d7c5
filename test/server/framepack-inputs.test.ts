/**
 * The end frame and sampling mode inputs through the server and `framepack predict`, with FramePack's input
 * schema and a predictor that echoes what it received: defaults, file handling of end_image, and the 422 for
 * end_image with sampling_mode f1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cliPath, json, PNG_1x1, pngDataUrl as png, post, predictorPath, startServer, tempDir, waitReady, type TestServer } from './helpers.js';

const received = (p: any) => JSON.parse(Buffer.from(p.output.slice(p.output.indexOf(',') + 1), 'base64').toString('utf8'));

describe('end_image, end_image_strength and sampling_mode over HTTP', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer('echo-framepack');
    await waitReady(s.url);
  });
  after(async () => { await s.close(); });

  it('defaults to no end image, strength 1 and inverted sampling', async () => {
    const p = await json(await post(`${s.url}/predictions`, { input: { input_image: png, prompt: 'a cat' } }));
    assert.equal(p.status, 'succeeded', p.error);
    const got = received(p);
    assert.deepEqual([got.end_image, got.end_image_strength, got.sampling_mode], [null, 1, 'inverted']);
  });

  it('fetches end_image like input_image and hands the model a local file', async () => {
    const p = await json(await post(`${s.url}/predictions`, { input: { input_image: png, prompt: 'a cat', end_image: png, end_image_strength: 0.5 } }));
    assert.equal(p.status, 'succeeded', p.error);
    assert.equal(p.input.end_image, png);
    const got = received(p);
    assert.match(got.end_image, /end_image-file\.png$/);
    assert.equal(got.end_image_strength, 0.5);
  });

  it('answers end_image with sampling_mode f1 with a 422 on end_image', async () => {
    const res = await post(`${s.url}/predictions`, { input: { input_image: png, prompt: 'a cat', end_image: png, sampling_mode: 'f1' } });
    assert.equal(res.status, 422);
    const [issue, ...rest] = (await json(res)).detail;
    assert.deepEqual(rest, []);
    assert.equal(issue.type, 'value_error');
    assert.deepEqual(issue.loc, ['body', 'input', 'end_image']);
    assert.match(issue.msg, /end_image needs sampling_mode 'inverted', got 'f1'/);
  });

  it('answers an unknown sampling_mode and an out-of-range strength with 422s', async () => {
    const res = await post(`${s.url}/predictions`, { input: { input_image: png, prompt: 'a cat', sampling_mode: 'F1', end_image_strength: 2 } });
    assert.equal(res.status, 422);
    const detail = (await json(res)).detail;
    assert.deepEqual(detail.map((d: any) => [d.type, d.loc.at(-1)]), [['less_than_equal', 'end_image_strength'], ['enum', 'sampling_mode']]);
  });

  it('runs sampling_mode f1 without an end image', async () => {
    const p = await json(await post(`${s.url}/predictions`, { input: { input_image: png, prompt: 'a cat', sampling_mode: 'f1' } }));
    assert.equal(p.status, 'succeeded', p.error);
    assert.equal(received(p).sampling_mode, 'f1');
  });
});

describe('framepack predict with the end frame inputs', () => {
  it('refuses end_image with sampling_mode f1 before setup, naming the input', () => {
    const cwd = tempDir('predict-modes');
    writeFileSync(join(cwd, 'in.png'), PNG_1x1);
    const r = spawnSync(process.execPath, [cliPath, 'predict', '--predictor', predictorPath('echo-framepack'),
      '-i', 'input_image=@in.png', '-i', 'prompt=a cat', '-i', 'end_image=@in.png', '-i', 'sampling_mode=f1'],
    { cwd, encoding: 'utf8', timeout: 30_000, env: { ...process.env, TMPDIR: cwd } });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /end_image: Value error, end_image needs sampling_mode 'inverted', got 'f1'/);
  });
});
