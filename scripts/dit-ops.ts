/**
 * Node counts of the full-size DiT blocks graph per op type, unfused and fused (DitGraphOptions.fuse), for the
 * whole graph and for one dual-stream and one single-stream block. Built from the real config over a
 * shape-only checkpoint (make-full-dit.ts writeShapeOnlyDit: no weights, nothing to download or run).
 *
 *   node dist/scripts/dit-ops.js [--precision bfloat16|float32] [--json]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { opCounts, type Precision } from '../src/onnx/graph.js';
import { Checkpoint } from '../src/onnx/safetensors.js';
import { buildDitGraphs } from '../src/nets/dit.js';
import { writeShapeOnlyDit } from './make-full-dit.js';

type Counts = Record<string, number>;
const total = (c: Counts) => Object.values(c).reduce((a, b) => a + b, 0);

/** Per variant: blocks-graph op counts overall and in block 1 of each kind (block 0 has no pending residual). */
export async function ditOpCounts(precision: Precision): Promise<Record<'unfused' | 'fused', { graph: Counts; dualBlock: Counts; singleBlock: Counts }>> {
  const dir = await mkdtemp(join(tmpdir(), 'dit-ops-'));
  try {
    await writeShapeOnlyDit(dir);
    const ck = await Checkpoint.open(dir);
    const counts = (fuse: boolean) => {
      const m = buildDitGraphs(ck, { precision, fuse }).blocks;
      return { graph: opCounts(m), dualBlock: opCounts(m, 'transformer_blocks.1'), singleBlock: opCounts(m, 'single_transformer_blocks.1') };
    };
    return { unfused: counts(false), fused: counts(true) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { precision: { type: 'string', default: 'bfloat16' }, json: { type: 'boolean', default: false } } });
  const r = await ditOpCounts(values.precision as Precision);
  if (values.json) { console.log(JSON.stringify(r, null, 2)); return; }
  for (const part of ['graph', 'dualBlock', 'singleBlock'] as const) {
    const a = r.unfused[part], b = r.fused[part];
    const ops = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort((x, y) => (b[y] ?? 0) + (a[y] ?? 0) - (b[x] ?? 0) - (a[x] ?? 0));
    console.log(`\n${part} (${values.precision}): ${total(a)} -> ${total(b)} nodes`);
    for (const op of ops) if ((a[op] ?? 0) !== (b[op] ?? 0) || part !== 'graph') console.log(`  ${op.padEnd(36)} ${String(a[op] ?? 0).padStart(5)} -> ${b[op] ?? 0}`);
  }
}

if (process.argv[1]?.endsWith('dit-ops.js')) await main();
