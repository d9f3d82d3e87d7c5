/**
 * `framepack serve` as a process on the project's tiny random FramePack (CPU), with a small start image:
 * the real server, networks and ffmpeg, fast enough for tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { makeTinyModel } from '../../scripts/make-tiny-model.js';

export const cli = new URL('../../src/cli.js', import.meta.url).pathname;
export const tinyEnv = { ...process.env, FRAMEPACK_PLACEMENT: 'cpu', COG_LOG_LEVEL: 'warning' };

/** 1 s with a window of 3 latents: 2 sections, 4*2*3 + 1 = 25 frames; a square input lands in the 608x640 bucket. */
export const TINY_INPUT = { prompt: 'a red ball rolls', total_video_length_seconds: 1, latent_window_size: 3, steps: 3, seed: 11, mp4_crf: 0 };

export interface TinyServer {
  url: string;
  /** A temp folder for the test's files (and the server's LoRA cache), removed by close(). */
  work: string;
  models: string;
  /** A 96x96 PNG (orange with a blue square), also at `imagePath`. */
  image: Buffer;
  imagePath: string;
  process: ChildProcess;
  close(): Promise<void>;
}

/**
 * fetch for idempotent requests, sent once more when the connection failed: after a request of more than the
 * server's keep-alive timeout (72 s, which a tiny-model run can take on a busy machine) a pooled connection may
 * be closed just as the next request goes out on it, and HTTP/1.1 clients retry idempotent requests then.
 */
export async function fetchIdempotent(url: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    return fetch(url, init);
  }
}

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

async function waitReady(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited with code ${child.exitCode}`);
    const h = await fetch(`${url}/health-check`).then((r) => r.json() as Promise<{ status: string; setup?: { logs?: string } }>, () => null);
    if (h?.status === 'READY') return;
    if (h?.status === 'SETUP_FAILED') throw new Error(`setup failed: ${h.setup?.logs}`);
    if (Date.now() > until) throw new Error('server not READY in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function startTinyServer(prefix: string, args: string[] = []): Promise<TinyServer> {
  const work = await mkdtemp(join(tmpdir(), `${prefix}-`));
  const models = await makeTinyModel(join(work, 'models'));
  const image = await sharp({ create: { width: 96, height: 96, channels: 3, background: { r: 200, g: 80, b: 30 } } })
    .composite([{ input: { create: { width: 40, height: 40, channels: 3, background: { r: 20, g: 40, b: 220 } } }, left: 30, top: 20 }])
    .png().toBuffer();
  const imagePath = join(work, 'start.png');
  await writeFile(imagePath, image);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, [cli, 'serve', '--host', '127.0.0.1', '--port', String(port), '--models', models, ...args],
    { env: { ...tinyEnv, FRAMEPACK_LORA_CACHE: join(work, 'loras') }, stdio: ['ignore', 'ignore', 'inherit'] });
  const close = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(work, { recursive: true, force: true });
  };
  try {
    await waitReady(url, child, 120_000);
  } catch (err) {
    await close();
    throw err;
  }
  return { url, work, models, image, imagePath, process: child, close };
}
