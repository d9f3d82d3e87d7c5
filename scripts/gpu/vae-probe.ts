/**
 * Where a half-precision VAE decode stops being finite: runs the decoder's three graphs (head, mid-block
 * attention, tail) on the CUDA EP in float16 and in float32 on the fixture's decode_input, printing the
 * largest magnitude and the count of non-finite values after each.
 *
 *   node dist/scripts/gpu/vae-probe.js [--models <tiny models dir>]
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Checkpoint, loadTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import type { BuiltModel, Precision } from '../../src/onnx/graph.js';
import { buildDecoderHead, buildDecoderTail, buildMidAttention, vaeConfig } from '../../src/nets/vae.js';
import { Session, terminateWorkers } from '../../src/runtime/session.js';
import { fixture, tinyModels } from '../../test/fixtures.js';

function stats(t: HostTensor): string {
  let max = 0, bad = 0;
  for (const v of t.data as Float32Array) { if (!Number.isFinite(v)) bad++; else max = Math.max(max, Math.abs(v)); }
  return `max |x| ${max.toPrecision(4)}, non-finite ${bad} of ${t.data.length}`;
}

async function run(m: BuiltModel, feeds: Record<string, HostTensor>): Promise<HostTensor> {
  const s = await Session.create(m, { ep: 'cuda' });
  try { return Object.values(await s.run(feeds))[0]; } finally { await s.release(); }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { models: { type: 'string' } } });
  const ck = await Checkpoint.open(join(values.models ?? tinyModels(), 'hunyuanvideo-community/HunyuanVideo/vae'));
  const cfg = vaeConfig(ck.config);
  const ref = await loadTensors(fixture('framepack-tiny', 'components', 'vae.safetensors'));
  const z = ref.decode_input;
  const scaled: HostTensor = { ...z, data: Float32Array.from(z.data as Float32Array) };
  for (const precision of ['float32', 'float16'] as Precision[]) {
    const o = { precision };
    const h = await run(buildDecoderHead(ck, o), { z: scaled });
    console.log(`${precision} decoder head: ${stats(h)}`);
    const a = await run(buildMidAttention(ck, 'decoder', z.dims[2], o), { hidden: h });
    console.log(`${precision} mid attention: ${stats(a)}`);
    const out = await run(buildDecoderTail(ck, o), { hidden: a });
    console.log(`${precision} decoder tail: ${stats(out)} (scaling ${cfg.scalingFactor})`);
  }
  await terminateWorkers();
}

main().catch((err) => { console.error(err); process.exit(1); });
