import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { effectiveCrf, findFfmpeg, writeMp4, FfmpegSetupError, FrameQueue } from '../../src/framepack/video.js';

function ffprobe(path: string) {
  const r = spawnSync('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0', '-show_entries',
    'stream=codec_name,profile,pix_fmt,width,height,r_frame_rate,nb_read_frames', '-of', 'json', path], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout).streams[0] as Record<string, string | number>;
}

/** Runs `fn` with a fresh temporary folder, removed afterwards. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fp-video-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Frames with a moving gradient, in chunks of `per` frames (as the pixel history hands them over). */
function* frames(count: number, width: number, height: number, per: number) {
  for (let f0 = 0; f0 < count; f0 += per) {
    const n = Math.min(per, count - f0);
    const buf = new Uint8Array(n * width * height * 3);
    for (let f = 0; f < n; f++) {
      for (let i = 0; i < width * height; i++) {
        const o = (f * width * height + i) * 3;
        buf[o] = (i % width + (f0 + f) * 4) & 255;
        buf[o + 1] = (Math.floor(i / width) * 2) & 255;
        buf[o + 2] = 128;
      }
    }
    yield buf;
  }
}

test('writes H.264 yuv420p at 30 fps with every frame, through back-pressure', async () => {
  await inTempDir(async (dir) => {
    const out = join(dir, 'a.mp4');
    // ~45 MB of raw frames: far more than a pipe buffer, so writes have to wait for drain.
    const n = await writeMp4(out, frames(97, 320, 480, 7), { width: 320, height: 480, crf: 23 });
    assert.equal(n, 97);
    const s = ffprobe(out);
    assert.equal(s.codec_name, 'h264');
    assert.equal(s.pix_fmt, 'yuv420p');
    assert.equal(s.r_frame_rate, '30/1');
    assert.equal(Number(s.nb_read_frames), 97);
    assert.equal(s.width, 320);
    assert.equal(s.height, 480);
    assert.equal(s.profile, 'High');
  });
});

test('crf 0 still gives a browser-playable High profile stream (encoded as crf 1)', async () => {
  assert.equal(effectiveCrf(0), 1);
  assert.equal(effectiveCrf(16), 16);
  assert.throws(() => effectiveCrf(52), RangeError);
  await inTempDir(async (dir) => {
    const out = join(dir, 'lossless.mp4');
    const logs: string[] = [];
    await writeMp4(out, frames(5, 64, 32, 5), { width: 64, height: 32, crf: 0, log: (l) => logs.push(l) });
    assert.equal(ffprobe(out).profile, 'High');
    assert.match(logs.join('\n'), /crf 1/);
  });
});

test('bad input and a failing ffmpeg leave no file behind; odd sizes are refused', async () => {
  await inTempDir(async (dir) => {
    const out = join(dir, 'bad.mp4');
    await assert.rejects(writeMp4(out, [new Uint8Array(10)], { width: 64, height: 32, crf: 23 }), /not whole/);
    await assert.rejects(stat(out), { code: 'ENOENT' });
    await assert.rejects(writeMp4(out, [], { width: 63, height: 32, crf: 23 }), RangeError);
    await assert.rejects(writeMp4(join(dir, 'no', 'such', 'dir.mp4'), frames(2, 64, 32, 1), { width: 64, height: 32, crf: 23 }), /ffmpeg failed/);
  });
});

/** The decoded rgb24 frames of an MP4. */
function decodedFrames(path: string): Buffer {
  const r = spawnSync('ffmpeg', ['-v', 'error', '-i', path, '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'], { maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, String(r.stderr));
  return r.stdout;
}

test('a frame queue: frames pushed while ffmpeg runs, then the rest, give the same video as all frames at once', async () => {
  await inTempDir(async (dir) => {
    const all = [...frames(41, 96, 64, 4)];
    const whole = join(dir, 'whole.mp4'), queued = join(dir, 'queued.mp4');
    await writeMp4(whole, all, { width: 96, height: 64, crf: 23 });
    const queue = new FrameQueue();
    const encoded = writeMp4(queued, queue, { width: 96, height: 64, crf: 23 });
    for (const f of all.slice(0, 5)) {
      queue.push(f);
      await new Promise((r) => setTimeout(r, 20)); // the encoder waits for the next frames meanwhile
    }
    queue.end((async function* () { yield* all.slice(5); })());
    assert.equal(await encoded, 41);
    assert.ok(decodedFrames(queued).equals(decodedFrames(whole)));
  });
});

test('a frame queue that fails stops the encoder with its error and leaves no file', async () => {
  await inTempDir(async (dir) => {
    const out = join(dir, 'failed.mp4');
    const queue = new FrameQueue();
    const encoded = writeMp4(out, queue, { width: 96, height: 64, crf: 23 });
    queue.push([...frames(3, 96, 64, 3)][0]);
    await new Promise((r) => setTimeout(r, 50));
    queue.fail(new Error('the decode failed'));
    await assert.rejects(encoded, /the decode failed/);
    await assert.rejects(stat(out), { code: 'ENOENT' });
  });
});

test('a cancel stops the encoder and removes the partial file', async () => {
  await inTempDir(async (dir) => {
    const out = join(dir, 'c.mp4');
    const ac = new AbortController();
    function* slow() {
      let i = 0;
      for (const f of frames(400, 640, 640, 1)) {
        if (++i === 20) ac.abort();
        yield f;
      }
    }
    await assert.rejects(writeMp4(out, slow(), { width: 640, height: 640, crf: 23, signal: ac.signal }), { name: 'AbortError' });
    await assert.rejects(stat(out), { code: 'ENOENT' });
  });
});

test('a missing ffmpeg is a clear setup error', () => {
  assert.ok(findFfmpeg().length > 0);
  const saved = process.env.FRAMEPACK_FFMPEG;
  process.env.FRAMEPACK_FFMPEG = '/nonexistent/ffmpeg';
  try {
    assert.throws(() => findFfmpeg(), (e: unknown) => e instanceof FfmpegSetupError && /nonexistent.*apt-get install ffmpeg/s.test(e.message));
  } finally {
    if (saved === undefined) delete process.env.FRAMEPACK_FFMPEG;
    else process.env.FRAMEPACK_FFMPEG = saved;
  }
});

test('metadata reaches the MP4 intact, whatever the characters and however long; no side file is left', async () => {
  await inTempDir(async (dir) => {
    const out = join(dir, 'meta.mp4');
    // FFMETADATA's special characters, a newline, non-ASCII, and more than one argv string may hold (128 KiB)
    const comment = JSON.stringify({ prompt: `a=b; #c \\ d\n"e" 猫 ${'x'.repeat(200_000)}`, seed: 42 });
    await writeMp4(out, frames(3, 64, 48, 3), { width: 64, height: 48, crf: 30, preset: 'veryfast', metadata: { comment } });
    const r = spawnSync('ffprobe', ['-v', 'error', '-show_entries', 'format_tags=comment', '-of', 'json', out], { encoding: 'utf8', maxBuffer: 1 << 24 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).format.tags.comment, comment);
    assert.deepEqual(await readdir(dir), ['meta.mp4']);
  });
});

/** Every process named `comm`, with its parent and niceness (Linux /proc). */
function processesNamed(comm: string): { pid: number; ppid: number; nice: number }[] {
  const out: { pid: number; ppid: number; nice: number }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try { stat = readFileSync(`/proc/${entry}/stat`, 'utf8'); } catch { continue; }
    // "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (name === comm) out.push({ pid: Number(entry), ppid: Number(fields[1]), nice: Number(fields[16]) });
  }
  return out;
}

const parentOf = (pid: number) => processesNamed('node').concat(processesNamed('ffmpeg')).find((p) => p.pid === pid)?.ppid;

test('ffmpeg is started by the spawn helper, never forked from this (large) process, below the event loop\'s priority', async () => {
  await inTempDir(async (dir) => {
    const seen: { pid: number; ppid: number; nice: number }[] = [];
    function* watched() {
      for (const f of frames(6, 64, 32, 1)) {
        yield f;
        // ffmpeg runs now (it reads these frames): find ours, a child of a child of this process
        seen.push(...processesNamed('ffmpeg').filter((p) => p.ppid === process.pid || parentOf(p.ppid) === process.pid));
      }
    }
    assert.equal(await writeMp4(join(dir, 'h.mp4'), watched(), { width: 64, height: 32, crf: 23 }), 6);
    assert.ok(seen.length > 0, 'ffmpeg was running while frames were written');
    for (const p of seen) {
      assert.notEqual(p.ppid, process.pid, 'ffmpeg is not a child of this process');
      assert.equal(p.nice, 10, 'ffmpeg runs at FRAMEPACK_WORKER_NICE');
    }
  });
});
