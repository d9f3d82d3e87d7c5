/**
 * The real server and command line on the project's tiny random FramePack (CPU): a prediction posted over
 * HTTP comes back as a playable MP4 that says how it was made, its live events arrive in order while it
 * runs, a cancel stops a running generation, and `framepack predict` writes the same kind of file.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { loadTensors } from '../../src/onnx/safetensors.js';
import { collectEvents, type SseEvent } from './sse-client.js';
import { cli, fetchIdempotent, startTinyServer, TINY_INPUT as INPUT, tinyEnv as env, type TinyServer } from './tiny-server.js';

let tiny: TinyServer;
let work: string;
let imagePng: Buffer;
let url: string;

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function ffprobe(path: string) {
  const r = spawnSync('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0', '-show_entries',
    'stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames', '-of', 'json', path], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout).streams[0] as Record<string, string | number>;
}

function assertPlayable(path: string, frames = 25) {
  const s = ffprobe(path);
  assert.equal(s.codec_name, 'h264');
  assert.equal(s.pix_fmt, 'yuv420p');
  assert.equal(s.r_frame_rate, '30/1');
  assert.equal(Number(s.nb_read_frames), frames);
  assert.equal(s.width, 608);
  assert.equal(s.height, 640);
}

/** The provenance JSON in the MP4's comment metadata, as ffprobe reads it. */
function provenanceOf(path: string): any {
  const r = spawnSync('ffprobe', ['-v', 'error', '-show_entries', 'format_tags=comment', '-of', 'json', path], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(JSON.parse(r.stdout).format.tags.comment);
}

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function writeOutput(output: string, name: string): Promise<string> {
  const path = join(work, name);
  await writeFile(path, Buffer.from(output.slice(output.indexOf(',') + 1), 'base64'));
  return path;
}

before(async () => {
  tiny = await startTinyServer('framepack-e2e');
  ({ work, url, image: imagePng } = tiny);
});

after(async () => {
  await tiny?.close();
});

test('POST /predictions returns a playable H.264 MP4 of the expected length and size', async () => {
  const res = await fetch(`${url}/predictions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ input: { ...INPUT, input_image: `data:image/png;base64,${imagePng.toString('base64')}` } }),
  });
  const body = await res.json() as { status: string; input: Record<string, unknown>; output: string; logs: string; error: string | null };
  assert.equal(res.status, 200, JSON.stringify(body).slice(0, 500));
  assert.equal(body.status, 'succeeded', body.error ?? '');
  assert.match(body.logs, /seed 11/);
  // Replicate's progress bar: a tqdm line per step, the section named after the rate
  assert.match(body.logs, /^100%\|##########\| 3\/3 \[\d\d:\d\d<00:00, +[\d.]+(s\/it|it\/s), section 2\/2\]$/m);
  assert.match(body.output, /^data:video\/mp4;base64,/);
  const mp4 = await writeOutput(body.output, 'server.mp4');
  assertPlayable(mp4);
  // The video says how it was made: the request's inputs (the image by its digest) and the seed; so does the last log line.
  const provenance = provenanceOf(mp4);
  assert.deepEqual(provenance.input, { ...body.input, input_image: sha256(imagePng) });
  assert.equal(provenance.seed, 11);
  assert.equal(provenance.software, 'framepack-cog');
  assert.match(provenance.version, /^\d+\.\d+\.\d+/);
  assert.deepEqual([provenance.placement.policy, provenance.placement.ep], ['cpu', 'cpu']);
  const last = body.logs.trimEnd().split('\n').at(-1)!;
  assert.deepEqual(JSON.parse(last.slice(last.indexOf('provenance ') + 'provenance '.length)), provenance);
});

test('live events of a run: ordered progress, at most one preview per step, a section video per section, then done', async () => {
  const id = 'tiny-events';
  // No seed: the one drawn must be what the video and the logs report.
  const input = { ...INPUT, seed: null, mp4_crf: 23, input_image: `data:image/png;base64,${imagePng.toString('base64')}` };
  const res = await fetchIdempotent(`${url}/predictions/${id}`, {
    method: 'PUT', headers: { 'content-type': 'application/json', prefer: 'respond-async' }, body: JSON.stringify({ input }),
  });
  assert.equal(res.status, 202);
  const events = `${url}/predictions/${id}/events`;
  // The listeners connect right after the 202, seconds before the first section can end. Besides two that read
  // everything: one that never reads (it must not hold the run up) and one that leaves after its first event.
  const request = `GET /predictions/${id}/events HTTP/1.1\r\nHost: x\r\n\r\n`;
  const stalled = connect(Number(new URL(url).port), '127.0.0.1');
  stalled.pause();
  stalled.write(request);
  const leaver = connect(Number(new URL(url).port), '127.0.0.1');
  leaver.on('data', (d: Buffer) => { if (d.includes('event: ')) leaver.destroy(); });
  leaver.write(request);
  const [a, b] = await Promise.all([collectEvents(events), collectEvents(events)]);
  stalled.destroy();
  assert.ok(leaver.destroyed, 'the leaver went away after its first event');
  assert.deepEqual(a.map((e) => e.event), b.map((e) => e.event), 'both listeners saw the same events');

  const done = a.at(-1)!;
  assert.equal(done.event, 'done');
  assert.equal(done.data.status, 'succeeded', done.data.error ?? '');
  const at = (e: SseEvent) => (e.data.section - 1) * INPUT.steps + e.data.step; // overall step number
  const progress = a.filter((e) => e.event === 'progress');
  assert.deepEqual(progress.map(at), progress.map((_, i) => at(progress[0]) + i), 'every step in order');
  assert.equal(at(progress.at(-1)!), 2 * INPUT.steps);
  assert.equal(progress.at(-1)!.data.percent, 100);
  const previews = a.filter((e) => e.event === 'preview');
  assert.ok(previews.length >= 1, 'at least one preview');
  assert.equal(new Set(previews.map(at)).size, previews.length, 'at most one preview per step');
  for (const p of previews) {
    assert.match(p.data.image, /^data:image\/jpeg;base64,\/9j\//);
    assert.deepEqual([p.data.width, p.data.height], [INPUT.latent_window_size * 608 / 8, 640 / 8], 'the window\'s frames side by side');
    const shownAfter = a.findIndex((e) => e.event === 'progress' && at(e) === at(p));
    assert.ok(shownAfter >= 0 && shownAfter < a.indexOf(p), 'a preview follows the progress of its step');
  }
  const sections = a.filter((e) => e.event === 'section');
  assert.deepEqual(sections.map((e) => e.data.section), [1, 2], 'a section event per section');
  for (const s of sections) {
    const lastStep = a.findIndex((e) => e.event === 'progress' && e.data.section === s.data.section && e.data.step === INPUT.steps);
    assert.ok(lastStep < a.indexOf(s), 'a section comes after its steps');
    const video = await fetch(`${url}${s.data.url}`);
    assert.equal(video.status, 200);
    const file = join(work, `section-${s.data.section}.mp4`);
    await writeFile(file, Buffer.from(await video.arrayBuffer()));
    assertPlayable(file, s.data.frames);
  }
  assert.deepEqual(sections.map((e) => e.data.frames), [9, 25]);

  const mp4 = await writeOutput(done.data.output, 'events.mp4');
  const provenance = provenanceOf(mp4);
  const seed = Number(/^seed (\d+);/m.exec(done.data.logs)![1]);
  assert.equal(provenance.seed, seed);
  assert.equal(provenance.input.seed, null, 'the request asked for a random seed');
  assert.deepEqual(provenance.input, { ...done.data.input, input_image: sha256(imagePng) });
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
    const id = 'tiny-cancel';
    const res = await fetchIdempotent(`${url}/predictions/${id}`, {
      method: 'PUT', headers: { 'content-type': 'application/json', prefer: 'respond-async' },
      body: JSON.stringify({ webhook, input: { ...INPUT, steps: 50, input_image: `data:image/png;base64,${imagePng.toString('base64')}` } }),
    });
    assert.equal(res.status, 202);
    const events = collectEvents(`${url}/predictions/${id}/events`);
    await until(() => /2\/50 \[.*, section 1\/2\]/.test(logs), 'the second sampling step', 120_000);
    assert.equal((await fetch(`${url}/predictions/${id}/cancel`, { method: 'POST' })).status, 200);
    const t0 = Date.now();
    await until(() => final !== null, 'the canceled prediction', 30_000);
    assert.equal(final!.status, 'canceled');
    const seen = await events;
    assert.equal(seen.at(-1)!.event, 'canceled');
    assert.ok(!seen.some((e) => e.event === 'section' || e.event === 'done'));
    assert.ok(!/section 1\/2 decoded/.test(logs), 'nothing is decoded after the cancel');
    await until(async () => (await (await fetchIdempotent(`${url}/health-check`)).json() as { status: string }).status === 'READY', 'READY', 10_000);
    assert.ok(Date.now() - t0 < 30_000);
  } finally {
    await new Promise((r) => hooks.close(r));
  }
});

test('framepack predict writes a playable MP4 on the tiny model', async () => {
  const img = tiny.imagePath;
  const out = join(work, 'cli.mp4');
  const dumpFile = join(work, 'dump.safetensors');
  const args = [cli, 'predict', '--models', tiny.models, '--dump', dumpFile, '-o', out, '-i', `input_image=@${img}`];
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
  const ditDir = join(tiny.models, 'lllyasviel', 'FramePackI2V_HY');
  const weights = await readFile(join(ditDir, readdirSync(ditDir).find((f) => f.endsWith('.safetensors'))!));
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
