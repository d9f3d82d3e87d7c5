/**
 * `framepack predict` and the `framepack` dispatcher, run as processes with the test predictors.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cliPath, PNG_1x1, predictorPath, tempDir } from '../server/helpers.js';

function framepack(args: string[], cwd: string) {
  return spawnSync(process.execPath, [cliPath, ...args], { cwd, encoding: 'utf8', timeout: 30_000, env: { ...process.env, TMPDIR: cwd } });
}

describe('framepack predict', () => {
  it('writes output.<ext> in the current directory, with plain progress lines off a terminal', () => {
    const cwd = tempDir('predict');
    const r = framepack(['predict', '--predictor', predictorPath('slow'), '-i', 'prompt="a cat"', '-i', 'steps=2', '-i', 'ratio=1', '-i', 'flag=false'], cwd);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Written output to: .*output\.mp4/);
    assert.match(r.stderr, /step 1\/2\n/);
    assert.match(r.stderr, /steps 2\/2\n/);
    const out = readFileSync(join(cwd, 'output.mp4'), 'utf8');
    assert.match(out, /^fake video for a cat /);
    assert.deepEqual(JSON.parse(out.slice(out.indexOf('{'))), { prompt: 'a cat', steps: 2, step_ms: 20, ratio: 1, flag: false, seed: null });
    assert.deepEqual(readdirSync(cwd).sort(), ['output.mp4'], 'temp files removed');
  });

  it('exits when done even if the model left handles open, after disposing it', () => {
    const cwd = tempDir('predict');
    const marker = join(cwd, 'disposed');
    const r = framepack(['predict', '--predictor', predictorPath('slow'), '-i', 'prompt=x', '--leave-timer', '--dispose-marker', marker], cwd);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(marker, 'utf8'), 'disposed');
  });

  it('draws a progress bar on a terminal', () => {
    const cwd = tempDir('predict');
    const cmd = [process.execPath, cliPath, 'predict', '--predictor', predictorPath('slow'), '-i', 'prompt=x', '-i', 'steps=3']
      .map((a) => `'${a}'`).join(' ');
    // `script` runs the command on a pseudo-terminal.
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd, encoding: 'utf8', timeout: 30_000, env: { ...process.env, TMPDIR: cwd } });
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /\r\x1b\[2Ksteps \[#{10}-{20}\] 1\/3/);
    assert.match(r.stdout, /steps \[#{30}\] 3\/3/);
    assert.match(r.stdout, /Written output to: /);
  });

  it('reads @file inputs and honours -o and --json', () => {
    const cwd = tempDir('predict');
    writeFileSync(join(cwd, 'in.png'), PNG_1x1);
    const r = framepack(['predict', '--predictor', predictorPath('file-input'), '-i', 'input_image=@in.png', '-o', 'copy.png'], cwd);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(readFileSync(join(cwd, 'copy.png')), PNG_1x1);
    const j = framepack(['predict', '--predictor', predictorPath('file-input'), '--json', '{"input_image": "@in.png"}', '-o', 'j.png'], cwd);
    assert.equal(j.status, 0, j.stderr);
    assert.deepEqual(readFileSync(join(cwd, 'in.png')), PNG_1x1, 'the input file is left alone');
  });

  it('prints cog predict\'s validation message and exits 1', () => {
    const cwd = tempDir('predict');
    const r = framepack(['predict', '--predictor', predictorPath('slow'), '-i', 'steps=0', '-i', 'ratio=abc'], cwd);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'The inputs you passed could not be validated:\n - prompt: Field required\n - steps: Input should be greater than or equal to 1\n - ratio: Input should be a valid number, unable to parse string as a number\n');
    const unknown = framepack(['predict', '--predictor', predictorPath('slow'), '-i', 'prompt=x', '-i', 'bogus=1'], cwd);
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /unknown input 'bogus'/);
    const missing = framepack(['predict', '--predictor', predictorPath('file-input'), '-i', 'input_image=@nope.png'], cwd);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /Could not read input file .*nope\.png/);
  });

  it('reports a failing prediction and exits 1', () => {
    const cwd = tempDir('predict');
    const r = framepack(['predict', '--predictor', predictorPath('failing')], cwd);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /about to fail\n[\s\S]*Prediction failed: .*the model exploded/);
  });

  it('validates FramePack inputs without loading the model', () => {
    const cwd = tempDir('predict');
    const r = framepack(['predict', '-i', 'prompt=x', '-i', 'mp4_crf=52'], cwd);
    assert.equal(r.status, 1);
    assert.match(r.stderr, / - input_image: Field required\n - mp4_crf: Input should be less than or equal to 51\n/);
  });
});

describe('framepack predict: mistakes found before any work', () => {
  // FramePack's schema is known without its model; an empty --models folder makes any setup fail at once,
  // so an error that mentions the output or an input file (and not the models) came before setup.
  const withoutModels = (cwd: string, ...args: string[]) => framepack(['predict', '--models', tempDir('no-models'), ...args], cwd);
  const oneLine = (stderr: string) => {
    assert.equal(stderr.trimEnd().split('\n').length, 1, stderr);
    assert.doesNotMatch(stderr, /^\s+at |Model files/m);
  };

  it('refuses -o into a missing directory', () => {
    const cwd = tempDir('predict');
    writeFileSync(join(cwd, 'in.png'), PNG_1x1);
    const r = withoutModels(cwd, '-i', 'input_image=@in.png', '-i', 'prompt=x', '-o', join(cwd, 'missing', 'out.mp4'));
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cannot write the output to .*missing\/out\.mp4: the directory .*missing does not exist/);
    oneLine(r.stderr);
  });

  it('reports a missing -i @file and a missing --json @file in one line', () => {
    const cwd = tempDir('predict');
    const image = withoutModels(cwd, '-i', 'input_image=@/missing.png', '-i', 'prompt=x');
    assert.equal(image.status, 1);
    assert.match(image.stderr, /Could not read input file \/missing\.png: ENOENT/);
    oneLine(image.stderr);
    const json = withoutModels(cwd, '--json', '@missing.json');
    assert.equal(json.status, 1);
    assert.match(json.stderr, /Could not read input file missing\.json: ENOENT/);
    oneLine(json.stderr);
  });

  it('keeps the output and prints where when it cannot be written at the end', async () => {
    const cwd = tempDir('predict');
    const outDir = join(cwd, 'out');
    mkdirSync(outDir);
    const child = spawn(process.execPath, [cliPath, 'predict', '--predictor', predictorPath('slow'), '-i', 'prompt=kept', '-i', 'steps=20', '-i', 'step_ms=50',
      '-o', join(outDir, 'video.mp4')], { cwd, env: { ...process.env, TMPDIR: cwd } });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      stderr += d;
      if (d.includes('step 1/20')) rmSync(outDir, { recursive: true }); // the target goes away mid-run
    });
    const code = await new Promise((r) => child.once('exit', r));
    assert.equal(code, 1);
    const kept = /The output is kept at (.*)\n/.exec(stderr)?.[1];
    assert.ok(kept, stderr);
    assert.match(stderr, /Could not write .*video\.mp4: ENOENT/);
    assert.match(readFileSync(kept, 'utf8'), /^fake video for kept /);
  });
});

describe('framepack dispatcher', () => {
  it('prints usage for an unknown command and exits 1', () => {
    const r = spawnSync(process.execPath, [cliPath, 'frobnicate'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /unknown command 'frobnicate'[\s\S]*usage: framepack <command>[\s\S]*serve/);
    const traversal = spawnSync(process.execPath, [cliPath, '../cli'], { encoding: 'utf8' });
    assert.equal(traversal.status, 1);
    assert.match(traversal.stderr, /unknown command/);
    const none = spawnSync(process.execPath, [cliPath], { encoding: 'utf8' });
    assert.equal(none.status, 1);
    assert.match(none.stdout, /usage:/);
  });
});
