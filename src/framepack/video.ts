/**
 * MP4 output: raw rgb24 frames piped into ffmpeg (libx264, yuv420p, 30 fps, +faststart), the equivalent of
 * the original's torchvision write_video(..., video_codec='libx264', options={'crf': ...}).
 *
 * ffmpeg is spawned directly (no wrapper library), by the small spawn helper process (runtime/spawner.ts):
 * forking this process, which holds the model, would stall the event loop for ~100 ms. The binary is, in
 * order: $FRAMEPACK_FFMPEG, `ffmpeg` on PATH, or the static build inside the optional npm package
 * @ffmpeg-installer/linux-x64. It must have libx264.
 *
 * crf 0: x264's lossless mode only exists in the "High 4:4:4 Predictive" profile, even for 4:2:0 input,
 * and browsers do not play that profile (the original UI's "change to 16 if you get black outputs"). There
 * is no lossless 4:2:0 H.264 a browser plays, so crf 0 is encoded as crf 1 (High profile, visually
 * lossless) and the substitution is logged.
 *
 * Metadata (the provenance JSON as `comment`) goes through an FFMETADATA file beside the output rather than
 * `-metadata` arguments: a long prompt must not run into the kernel's limit on one argument's length.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { once } from 'node:events';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { spawnFromHelper } from '../runtime/spawner.js';

export const VIDEO_FPS = 30;

export class FfmpegSetupError extends Error {
  readonly code = 'ffmpeg_unavailable';
}

interface ProbeResult { path: string; ok: boolean; why?: string }

function probe(path: string): ProbeResult {
  const r = spawnSync(path, ['-hide_banner', '-encoders'], { encoding: 'utf8', timeout: 15000 });
  if (r.error) return { path, ok: false, why: r.error.message };
  if (r.status !== 0) return { path, ok: false, why: `exit ${r.status}: ${r.stderr.trim().slice(0, 200)}` };
  if (!/\blibx264\b/.test(r.stdout)) return { path, ok: false, why: 'built without libx264' };
  return { path, ok: true };
}

function npmFfmpeg(): string | null {
  try {
    const require = createRequire(import.meta.url);
    const pkg = require.resolve('@ffmpeg-installer/linux-x64/package.json');
    const bin = join(dirname(pkg), 'ffmpeg');
    return existsSync(bin) ? bin : null;
  } catch {
    return null;
  }
}

const found = new Map<string, string>(); // FRAMEPACK_FFMPEG value -> working binary

/** The ffmpeg binary to use; throws FfmpegSetupError listing what was tried when none works. */
export function findFfmpeg(): string {
  const hit = found.get(process.env.FRAMEPACK_FFMPEG ?? '');
  if (hit) return hit;
  const candidates: string[] = [];
  if (process.env.FRAMEPACK_FFMPEG) candidates.push(process.env.FRAMEPACK_FFMPEG);
  else {
    candidates.push('ffmpeg');
    const npm = npmFfmpeg();
    if (npm) candidates.push(npm);
  }
  const tried: string[] = [];
  for (const c of candidates) {
    const r = probe(c);
    if (r.ok) {
      found.set(process.env.FRAMEPACK_FFMPEG ?? '', c);
      return c;
    }
    tried.push(`${c}: ${r.why}`);
  }
  if (!process.env.FRAMEPACK_FFMPEG && candidates.length === 1) tried.push('@ffmpeg-installer/linux-x64: not installed');
  throw new FfmpegSetupError(
    `no usable ffmpeg with libx264 (tried ${tried.join('; ')}). Install ffmpeg (apt-get install ffmpeg), ` +
      'npm install @ffmpeg-installer/linux-x64, or set FRAMEPACK_FFMPEG to a binary.',
  );
}

/** The crf actually passed to x264 (see the file comment for crf 0). */
export function effectiveCrf(crf: number): number {
  if (!Number.isInteger(crf) || crf < 0 || crf > 51) throw new RangeError(`mp4 crf must be an integer 0..51, got ${crf}`);
  return crf === 0 ? 1 : crf;
}

export interface WriteVideoOptions {
  width: number;
  height: number;
  crf: number;
  fps?: number;
  /** x264 preset (`medium`); the videos shown while a prediction runs use a faster one. */
  preset?: string;
  /** Container metadata (`comment`, `title`...), readable with ffprobe's format tags. */
  metadata?: Record<string, string>;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

/** FFMETADATA escapes `=`, `;`, `#`, `\` and newlines with a backslash. */
function ffmetadata(tags: Record<string, string>): string {
  const esc = (v: string) => v.replace(/[=;#\\\n]/g, (c) => `\\${c}`);
  return `;FFMETADATA1\n${Object.entries(tags).map(([k, v]) => `${esc(k)}=${esc(v)}`).join('\n')}\n`;
}

/**
 * Encodes frames (each buffer holds whole H x W x 3 rgb24 frames, earliest first) to `path`. Writes honour
 * stdin back-pressure, so memory stays bounded by the frames the caller already holds.
 */
export async function writeMp4(path: string, frames: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, opts: WriteVideoOptions): Promise<number> {
  const { width, height } = opts;
  if (width % 2 || height % 2) throw new RangeError(`yuv420p needs even dimensions, got ${width}x${height}`);
  const crf = effectiveCrf(opts.crf);
  if (crf !== opts.crf) opts.log?.(`mp4_crf ${opts.crf} would make a lossless High 4:4:4 stream browsers cannot play; using crf ${crf}`);
  const bin = findFfmpeg();
  const metaFile = opts.metadata ? `${path}.ffmetadata` : undefined;
  if (metaFile) await writeFile(metaFile, ffmetadata(opts.metadata!));
  const args = [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-r', String(opts.fps ?? VIDEO_FPS), '-i', 'pipe:0',
    ...(metaFile ? ['-f', 'ffmetadata', '-i', metaFile, '-map', '0:v', '-map_metadata', '1'] : []),
    '-an', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-crf', String(crf), '-preset', opts.preset ?? 'medium',
    '-movflags', '+faststart', path,
  ];
  const child = await spawnFromHelper(bin, args, { signal: opts.signal, background: true });
  let ended = false;
  const exited = child.exited.finally(() => { ended = true; });
  // An early ffmpeg exit makes stdin emit EPIPE; the exit status below carries the real error.
  child.stdin.on('error', () => {});

  const frameBytes = width * height * 3;
  let count = 0;
  try {
    for await (const buf of frames) {
      if (buf.length % frameBytes) throw new Error(`frame buffer of ${buf.length} bytes is not whole ${width}x${height} rgb24 frames`);
      count += buf.length / frameBytes;
      if (!child.stdin.write(buf)) {
        await Promise.race([once(child.stdin, 'drain'), exited]);
        if (ended) break;
      } else {
        await yieldToLoop(); // frames may be produced on demand: let the event loop run between them
      }
    }
    child.stdin.end();
    const { code, signal, stderr } = await exited;
    if (code !== 0) throw new Error(`ffmpeg failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`);
  } catch (err) {
    child.kill('SIGKILL');
    child.stdin.destroy();
    await exited;
    await rm(path, { force: true });
    opts.signal?.throwIfAborted();
    throw err;
  } finally {
    if (metaFile) await rm(metaFile, { force: true });
  }
  return count;
}

/**
 * Frames that arrive over time, as writeMp4's input: push() them as they come, then end() with the rest, or
 * fail() to stop the encode (writeMp4 then stops ffmpeg and removes the file). Holds what the encoder has not
 * taken yet.
 */
export class FrameQueue implements AsyncIterable<Uint8Array> {
  private readonly items: Uint8Array[] = [];
  private rest: AsyncIterable<Uint8Array> | Iterable<Uint8Array> | null = null;
  private error: { cause: unknown } | null = null;
  private wake: (() => void) | null = null;

  push(frames: Uint8Array): void {
    this.items.push(frames);
    this.notify();
  }

  /** No more pushes: the frames after the pushed ones are `rest`. */
  end(rest: AsyncIterable<Uint8Array> | Iterable<Uint8Array> = []): void {
    this.rest = rest;
    this.notify();
  }

  fail(cause: unknown): void {
    this.error = { cause };
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      if (this.error) throw this.error.cause;
      const next = this.items.shift();
      if (next) yield next;
      else if (this.rest) {
        yield* this.rest;
        return;
      } else await new Promise<void>((resolve) => { this.wake = resolve; });
    }
  }
}
