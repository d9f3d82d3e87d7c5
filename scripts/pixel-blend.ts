/**
 * The video's assembly after the last decode, at the default request's size: a 3-second video at the 640
 * bucket (640 x 608 pixels, window 9) is decoded in chunks of 37 and 73 frames, the second blended over the
 * first's 33. In the server the last chunk's first 40 frames have gone to the encoder while it was decoded;
 * what the request waits for afterwards is PixelHistory.add of that chunk, then the frames from 40 on read as
 * uint8. Timed on this thread, with those 40 frames converted in add() (lazy 0) and left float (lazy 40), and
 * with lazy 40 after frames 40-60 were blended ahead (PixelHistory.ahead; the decode's windows make them final
 * before the last one; untimed, as they are blended while the device decodes).
 *
 *   npm run build && node dist/scripts/pixel-blend.js [--repeat 5]
 */
import { parseArgs } from 'node:util';
import { PixelHistory, overlapFrames, sliceTime, zeros, type Float32Tensor } from '../src/framepack/sections.js';

const { values } = parseArgs({ options: { repeat: { type: 'string', default: '5' } } });
const repeat = Number(values.repeat);
const [H, W] = [608, 640];
const overlap = overlapFrames(9);

function chunk(frames: number, seed: number): Float32Tensor {
  const x = zeros([1, 3, frames, H, W]);
  for (let i = 0; i < x.data.length; i++) x.data[i] = Math.sin(seed + i * 0.001) * 1.05;
  return x;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const first = chunk(37, 1);
const timings: Record<string, { add: number[]; read: number[] }> = {};
for (let r = 0; r < repeat; r++) {
  for (const [name, lazy, ahead] of [['lazy 0', 0, 0], ['lazy 40', 73 - overlap, 0], ['lazy 40, 21 ahead', 73 - overlap, 21]] as const) {
    const pixels = new PixelHistory(overlap);
    pixels.add(first);
    const last = chunk(73, 2); // made before the clock starts
    if (ahead) pixels.ahead(sliceTime(last, 73 - overlap, 73 - overlap + ahead), 73 - overlap, 73);
    let t = performance.now();
    pixels.add(last, lazy);
    const add = performance.now() - t;
    t = performance.now();
    let bytes = 0;
    for (const part of pixels.chunks(73 - overlap)) bytes += part.length;
    const read = performance.now() - t;
    if (bytes !== (pixels.frameCount - (73 - overlap)) * 3 * H * W) throw new Error(`read ${bytes} bytes`);
    (timings[name] ??= { add: [], read: [] }).add.push(add);
    timings[name].read.push(read);
  }
}
console.log(`last chunk (73 frames) onto 37, ${W} x ${H}, median of ${repeat}:`);
for (const [name, { add, read }] of Object.entries(timings)) {
  console.log(`  ${name}: add ${median(add).toFixed(0)} ms, frames ${73 - overlap}.. read ${median(read).toFixed(0)} ms, ` +
    `together ${median(add.map((a, i) => a + read[i])).toFixed(0)} ms`);
}
