/**
 * The real server and command line on the project's tiny random FramePack (CPU): a prediction posted over
 * HTTP comes back as a playable MP4, a cancel stops a running generation, and `framepack predict` writes
 * the same kind of file.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { makeTinyModel } from '../../scripts/make-tiny-model.js';
import { loadTensors } from '../../src/onnx/safetensors.js';

const cli = new URL('../../src/cli.js', import.meta.url).pathname;
const env: NodeJS.ProcessEnv = { ...process.env, FRAMEPACK_PLACEMENT: 'cpu', COG_LOG_LEVEL: 'warning' };

let work: string;
let models: string;
let imagePng: Buffer;
let server: ChildProcess;
let url: string;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitReady(timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const h = await (await fetch(`${url}/health-check`)).json() as { status: string; setup?: { logs?: string } };
      if (h.status === 'READY') return;
      if (h.status === 'SETUP_FAILED') throw new Error(`setup failed: ${h.setup?.logs}`);
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('setup failed')) throw err;
    }
    if (Date.now() > until) throw new Error('server not READY in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

function ffprobe(path: string) {
  const r = spawnSync('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0', '-show_entries',
    'stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames', '-of', 'json', path], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout).streams[0] as Record<string, string | number>;
}

/** 1 s with a window of 3 latents: 2 sections, 4*2*3 + 1 = 25 frames; a square input lands in the 608x640 bucket. */
const INPUT = { prompt: 'a red ball rolls', total_video_length_seconds: 1, latent_window_size: 3, steps: 3, seed: 11, mp4_crf: 0 };

function assertPlayable(path: string) {
  const s = ffprobe(path);
  assert.equal(s.codec_name, 'h264');
  assert.equal(s.pix_fmt, 'yuv420p');
  assert.equal(s.r_frame_rate, '30/1');
  assert.equal(Number(s.nb_read_frames), 25);
  assert.equal(s.width, 608);
  assert.equal(s.height, 640);
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'framepack-e2e-'));
  env.FRAMEPACK_LORA_CACHE = join(work, 'loras');
  models = await makeTinyModel(join(work, 'models'));
  imagePng = await sharp({ create: { width: 96, height: 96, channels: 3, background: { r: 200, g: 80, b: 30 } } })
    .composite([{ input: { create: { width: 40, height: 40, channels: 3, background: { r: 20, g: 40, b: 220 } } }, left: 30, top: 20 }])
    .png().toBuffer();
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  server = spawn(process.execPath, [cli, 'serve', '--host', '127.0.0.1', '--port', String(port), '--models', models],
    { env, stdio: ['ignore', 'ignore', 'inherit'] });
  await waitReady(120_000);
});

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await exited;
  }
  await rm(work, { recursive: true, force: true });
});

test('POST /predictions returns a playable H.264 MP4 of the expected length and size', async () => {
  const res = await fetch(`${url}/predictions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ input: { ...INPUT, input_image: `data:image/png;base64,${imagePng.toString('base64')}` } }),
  });
  const body = await res.json() as { status: string; output: string; logs: string; error: string | null };
  assert.equal(res.status, 200, JSON.stringify(body).slice(0, 500));
  assert.equal(body.status, 'succeeded', body.error ?? '');
  assert.match(body.logs, /seed 11/);
  assert.match(body.logs, /section 2\/2, step 3\/3/);
  assert.match(body.output, /^data:video\/mp4;base64,/);
  const mp4 = join(work, 'server.mp4');
  await writeFile(mp4, Buffer.from(body.output.slice(body.output.indexOf(',') + 1), 'base64'));
  assertPlayable(mp4);
});

test('a cancel stops a running generation between steps', async () => {
  // A webhook receiver tells when sampling has started (the logs carry the step lines).
  let logs = '';
  let final: { status: string } | null = null;
  const hooks = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const p = JSON.parse(body) as { status: string; logs: string };
      logs = p.logs ?? logs;
      if (p.status === 'canceled' || p.status === 'failed' || p.status === 'succeeded') final = p;
      res.end();
    });
  });
  await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', r));
  try {
    const webhook = `http://127.0.0.1:${(hooks.address() as { port: number }).port}/hook`;
    const res = await fetch(`${url}/predictions`, {
      method: 'POST', headers: { 'content-type': 'application/json', prefer: 'respond-async' },
      body: JSON.stringify({ webhook, input: { ...INPUT, steps: 50, input_image: `data:image/png;base64,${imagePng.toString('base64')}` } }),
    });
    assert.equal(res.status, 202);
    const { id } = await res.json() as { id: string };
    await until(() => /section 1\/2, step 2\/50/.test(logs), 'the second sampling step', 120_000);
    assert.equal((await fetch(`${url}/predictions/${id}/cancel`, { method: 'POST' })).status, 200);
    const t0 = Date.now();
    await until(() => final !== null, 'the canceled prediction', 30_000);
    assert.equal(final!.status, 'canceled');
    assert.ok(!/section 1\/2 decoded/.test(logs), 'nothing is decoded after the cancel');
    await until(async () => (await (await fetch(`${url}/health-check`)).json() as { status: string }).status === 'READY', 'READY', 10_000);
    assert.ok(Date.now() - t0 < 30_000);
  } finally {
    await new Promise((r) => hooks.close(r));
  }
});

test('framepack predict writes a playable MP4 on the tiny model', async () => {
  const img = join(work, 'start.png');
  await writeFile(img, imagePng);
  const out = join(work, 'cli.mp4');
  const dumpFile = join(work, 'dump.safetensors');
  const args = [cli, 'predict', '--models', models, '--dump', dumpFile, '-o', out, '-i', `input_image=@${img}`];
  for (const [k, v] of Object.entries(INPUT)) args.push('-i', `${k}=${v}`);
  const r = spawnSync(process.execPath, args, { env, encoding: 'utf8', timeout: 540_000 });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.ok((await readFile(out)).length > 1000);
  assertPlayable(out);
  // --dump: the intermediate tensors under the fixtures' names; 608x640 -> latents 76x80.
  const dump = await loadTensors(dumpFile);
  assert.deepEqual(dump.start_latent.dims, [1, 16, 1, 80, 76]);
  assert.deepEqual(dump.noise_0.dims, [1, 16, 3, 80, 76]);
  assert.deepEqual(dump.section_0_generated_latents.dims, [1, 16, 3, 80, 76]);
  assert.deepEqual(dump.section_1_generated_latents.dims, [1, 16, 4, 80, 76], 'the start latent leads the last section');
  assert.deepEqual(dump.image_embeddings.dims.slice(0, 2), [1, 729]);
  assert.deepEqual(dump.llama_vec.dims.slice(0, 2), [1, 512]);
});

test('loras: a LoRA served over HTTP is downloaded, cached and applied; a file of unknown keys fails naming the key', async () => {
  const lora = await readFile(new URL('../../../test/fixtures/lora/musubi_framepack.safetensors', import.meta.url));
  const weights = await readFile(join(models, 'lllyasviel', 'FramePackI2V_HY', (await import('node:fs')).readdirSync(join(models, 'lllyasviel', 'FramePackI2V_HY')).find((f) => f.endsWith('.safetensors'))!));
  let fetched = 0;
  const files = http.createServer((req, res) => {
    fetched++;
    res.end(req.url === '/style.safetensors' ? lora : weights);
  });
  await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(files.address() as { port: number }).port}`;
  const predict = async (loras: unknown) => (await fetch(`${url}/predictions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ input: { ...INPUT, steps: 2, resolution: 320, loras, input_image: `data:image/png;base64,${imagePng.toString('base64')}` } }),
  })).json() as Promise<{ status: string; logs: string; error: string | null }>;
  try {
    for (const round of [1, 2]) {
      const p = await predict([{ url: `${base}/style.safetensors`, scale: 0.7 }]);
      assert.equal(p.status, 'succeeded', p.error ?? '');
      assert.match(p.logs, round === 1 ? /LoRA 1: http:\/\/127\.0\.0\.1:\d+\/style\.safetensors downloaded/ : /LoRA 1: .* from the cache/);
      assert.match(p.logs, /LoRA http:\/\/.*style\.safetensors: 40 layers, rank 4, weight 0\.7/);
      assert.match(p.logs, /LoRA weights bound to the DiT in/);
    }
    assert.equal(fetched, 1, 'downloaded once');
    const bad = await predict([{ url: `${base}/weights.safetensors` }]);
    assert.equal(bad.status, 'failed');
    assert.match(bad.error ?? '', /^LoRA http:\/\/.*weights\.safetensors: key "[^"]+": not a lora_A\/lora_B, lora_down\/lora_up or alpha key$/);
    const invalid = await fetch(`${url}/predictions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input: { ...INPUT, loras: [{ url: 'not a url' }], input_image: `data:image/png;base64,${imagePng.toString('base64')}` } }),
    });
    assert.equal(invalid.status, 422);
    assert.deepEqual(((await invalid.json()) as { detail: { loc: unknown[] }[] }).detail[0].loc, ['body', 'input', 'loras', 0, 'url']);
  } finally {
    await new Promise((r) => files.close(r));
  }
});
