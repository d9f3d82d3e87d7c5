/**
 * Which nodes of each network's graphs the CUDA execution provider leaves to the CPU.
 *
 *   node dist/scripts/gpu/placement.js [--models <tiny models dir>] [--precision policy|float32] 2> placement.log
 *
 * Builds every graph the server creates (LLaMA, CLIP, SigLIP, the VAE's encoder/decoder parts and mid-block
 * attention, the DiT's embed/blocks/head) from the tiny fixture checkpoints (same operators as the real
 * sizes) and creates each twice on CUDA:
 *   1. with CPU fallback allowed and ONNX Runtime's verbose log, whose "Node(s) placed on" lines (stderr,
 *      after the "@graph <name>" marker this script writes) list the nodes each provider got;
 *   2. with session.disable_cpu_ep_fallback=1, printing whether ONNX Runtime accepts the graph that way.
 * Shape arithmetic (Shape, Gather on shapes, Concat of int64 dims) landing on the CPU is by design in ONNX
 * Runtime (the CUDA EP prefers the CPU for such tiny int64 subgraphs); float compute there is a defect.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import type { BuiltModel, Precision } from '../../src/onnx/graph.js';
import { Checkpoint } from '../../src/onnx/safetensors.js';
import { precisionFor } from '../../src/onnx/precision.js';
import { nest } from '../../src/runtime/protocol.js';
import { buildLlama } from '../../src/nets/llama.js';
import { buildClipText } from '../../src/nets/clip.js';
import { buildSiglipVision } from '../../src/nets/siglip.js';
import { buildDecoderHead, buildDecoderTail, buildEncoderHead, buildEncoderTail, buildMidAttention } from '../../src/nets/vae.js';
import { buildDitGraphs } from '../../src/nets/dit.js';
import { tinyModels } from '../../test/fixtures.js';


async function create(m: BuiltModel, config: Record<string, string>, verbose: boolean): Promise<ort.InferenceSession> {
  const flat = { ...(m.sessionConfig ?? {}), ...config };
  if (m.externalFolder) flat['session.model_external_initializers_file_folder_path'] = m.externalFolder;
  return ort.InferenceSession.create(m.bytes, {
    executionProviders: [{ name: 'cuda', deviceId: 0 }], graphOptimizationLevel: 'all',
    logSeverityLevel: verbose ? 0 : 3, extra: nest(flat),
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { models: { type: 'string' }, precision: { type: 'string', default: 'policy' } } });
  const m = values.models ?? tinyModels();
  const p = (kind: 'dit' | 'encoder' | 'vae'): Precision => (values.precision === 'float32' ? 'float32' : precisionFor('cuda', kind));
  const ck = (d: string) => Checkpoint.open(join(m, d));
  const vae = await ck('hunyuanvideo-community/HunyuanVideo/vae');
  const dit = buildDitGraphs(await ck('lllyasviel/FramePackI2V_HY'), { precision: p('dit') });
  const graphs: Array<[string, BuiltModel]> = [
    ['llama', buildLlama(await ck('hunyuanvideo-community/HunyuanVideo/text_encoder'), { precision: p('encoder') })],
    ['clip', buildClipText(await ck('hunyuanvideo-community/HunyuanVideo/text_encoder_2'), { precision: p('encoder') })],
    ['siglip', buildSiglipVision(await ck('lllyasviel/flux_redux_bfl/image_encoder'), { precision: p('encoder') })],
    ['vae-encoder-head', buildEncoderHead(vae, { precision: p('vae') })],
    ['vae-encoder-attention', buildMidAttention(vae, 'encoder', 1, { precision: p('vae') })],
    ['vae-encoder-tail', buildEncoderTail(vae, { precision: p('vae') })],
    ['vae-decoder-head', buildDecoderHead(vae, { precision: p('vae') })],
    ['vae-decoder-attention', buildMidAttention(vae, 'decoder', 5, { precision: p('vae') })],
    ['vae-decoder-tail', buildDecoderTail(vae, { precision: p('vae') })],
    ['dit-embed', dit.embed], ['dit-blocks', dit.blocks], ['dit-head', dit.head],
  ];
  for (const [name, model] of graphs) {
    process.stderr.write(`@graph ${name}\n`);
    let placed = 'created';
    try {
      const s = await create(model, {}, true);
      await s.release();
    } catch (e) {
      placed = `FAILED even with CPU fallback: ${(e as Error).message.split('\n')[0]}`;
    }
    let strict = 'accepted';
    try {
      const s = await create(model, { 'session.disable_cpu_ep_fallback': '1' }, false);
      await s.release();
    } catch (e) {
      strict = `refused: ${(e as Error).message.split('\n')[0].slice(0, 200)}`;
    }
    console.log(`${name} (${values.precision}): ${placed}; with disable_cpu_ep_fallback ${strict}`);
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
