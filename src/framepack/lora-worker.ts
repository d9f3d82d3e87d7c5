/** Worker thread of `combineLoras` (lora-files.ts): reads the LoRA files and builds the DiT's LoRA inputs. */
import { parentPort, workerData } from 'node:worker_threads';
import { buffersOf } from '../runtime/protocol.js';
import { loadTensors, readHeader } from '../onnx/safetensors.js';
import { loraFeeds, parseLora } from '../nets/dit-lora.js';
import type { LoraJob, LoraResult } from './lora-files.js';

const { files, config } = workerData as LoraJob;
try {
  const parsed = [];
  const lines: string[] = [];
  for (const f of files) {
    const file = parseLora(await loadTensors(f.path), (await readHeader(f.path)).metadata, config, f.name);
    const ranks = [...new Set([...file.values()].map((u) => u.rank))].sort((a, b) => a - b);
    lines.push(`${f.name}: ${file.size} layers, rank ${ranks.join('/')}, weight ${f.weight}`);
    parsed.push({ file, weight: f.weight });
  }
  const feeds = loraFeeds(parsed, config);
  parentPort!.postMessage({ feeds, lines } satisfies LoraResult, buffersOf(feeds));
} catch (err) {
  parentPort!.postMessage({ error: err instanceof Error ? err.message : String(err) } satisfies LoraResult);
}
