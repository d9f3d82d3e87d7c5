/**
 * Where a session's runs spend their time, from ONNX Runtime's profiler (src/runtime/ort-profile.ts):
 *
 *   FRAMEPACK_ORT_PROFILE=/tmp/prof CUDA_LAUNCH_BLOCKING=1 node dist/scripts/gpu/dit-forward.js ... --variant fused
 *   node dist/scripts/ort-profile.js /tmp/prof/dit-blocks_*.json [--skip 1] [--top 25] [--out summary.json]
 *
 * Prints, per file: runs summed, wall and summed node time per run, then milliseconds per run by operator
 * type, by provider and by graph place (block indices folded). --out writes the summaries as JSON.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { summarizeProfile, type ProfileLine, type TraceEvent } from '../src/runtime/ort-profile.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { skip: { type: 'string', default: '1' }, top: { type: 'string', default: '25' }, out: { type: 'string' } },
});
if (!positionals.length) {
  console.error('usage: node dist/scripts/ort-profile.js PROFILE.json... [--skip 1] [--top 25] [--out summary.json]');
  process.exit(2);
}

const table = (title: string, lines: ProfileLine[]) => {
  console.log(`  ${title}`);
  for (const l of lines) console.log(`    ${l.ms.toFixed(2).padStart(9)} ms ${(100 * l.share).toFixed(1).padStart(5)} %  ${String(l.nodes).padStart(5)} x  ${l.key}`);
};

const out: Record<string, unknown> = {};
for (const file of positionals) {
  const s = summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as TraceEvent[], { skip: Number(values.skip), top: Number(values.top) });
  out[basename(file)] = s;
  console.log(`${basename(file)}: ${s.runs} runs, ${s.runMs.toFixed(1)} ms a run, ${s.nodeMs.toFixed(1)} ms of nodes`);
  table('by operator', s.byOp);
  table('by provider', s.byProvider);
  table(`by place (top ${values.top})`, s.byPlace);
  if (s.byKernel.length) table(`device kernels (top ${values.top})`, s.byKernel);
}
if (values.out) writeFileSync(values.out, JSON.stringify(out, null, 1));
