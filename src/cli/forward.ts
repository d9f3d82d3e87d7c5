/**
 * `framepack forward <net> --weights <dir> --inputs in.safetensors --output out.safetensors [--ep cpu|cuda]`
 *
 * Runs one network on named input tensors and writes its named outputs: how a network is checked against a
 * reference (the fixtures' components/*.safetensors hold inputs and expected outputs under the same names).
 */
import { parseArgs } from 'node:util';
import { appError } from '../errors.js';
import { getNet, netNames } from '../nets/registry.js';
import { parsePrecision, precisionFor } from '../onnx/precision.js';
import { loadTensors, saveTensors, type HostTensor } from '../onnx/safetensors.js';
import type { ExecutionProvider } from '../runtime/protocol.js';
import { terminateWorkers } from '../runtime/session.js';

const USAGE = `usage: framepack forward <net> --weights <dir> --inputs in.safetensors --output out.safetensors
                         [--ep cpu|cuda|webgpu] [--precision float32|float16|bfloat16] [--quantize 8|4]
  <net>        one of the registered networks (llama, clip, siglip, vae-encode, vae-decode, dit)
  --weights    the component folder: config.json + safetensors (plain folder or Hugging Face snapshot)
  --inputs     safetensors file holding the network's inputs by name (extra tensors are ignored)
  --output     safetensors file to write the outputs to (float32)`;

export async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        weights: { type: 'string' }, inputs: { type: 'string' }, output: { type: 'string' },
        ep: { type: 'string', default: 'cpu' }, precision: { type: 'string' }, quantize: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
  } catch (err) {
    throw appError('CLI_USAGE', { detail: `${(err as Error).message}\n${USAGE}` });
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\nnetworks: ${netNames().join(', ') || 'none registered'}\n`);
    return;
  }
  const usage = (msg: string) => appError('CLI_USAGE', { detail: `${msg}\n${USAGE}` });
  if (positionals.length !== 1) throw usage('name exactly one network');
  if (!values.weights || !values.inputs || !values.output) throw usage('--weights, --inputs and --output are required');
  const ep = values.ep as ExecutionProvider;
  if (!['cpu', 'cuda', 'webgpu'].includes(ep)) throw usage(`--ep must be cpu, cuda or webgpu, got "${ep}"`);
  let quantize: { bits: 4 | 8 } | undefined;
  if (values.quantize !== undefined) {
    if (values.quantize !== '8' && values.quantize !== '4') throw usage('--quantize must be 8 or 4');
    quantize = { bits: Number(values.quantize) as 4 | 8 };
  }

  let net;
  try {
    net = await getNet(positionals[0]);
  } catch (e) {
    throw usage((e as Error).message);
  }
  const precision = values.precision ? parsePrecision(values.precision) : precisionFor(ep, net.kind ?? 'encoder');
  const all = await loadTensors(values.inputs);
  const missing = net.inputs.filter((n) => !(n in all));
  if (missing.length) {
    throw usage(`${values.inputs} lacks ${missing.join(', ')} (${positionals[0]} takes ${net.inputs.join(', ')}; found ${Object.keys(all).join(', ')})`);
  }
  const feeds: Record<string, HostTensor> = {};
  for (const n of net.inputs) feeds[n] = all[n];

  const t0 = performance.now();
  try {
    const out = await net.forward(values.weights, feeds, { precision, ep, ...(quantize ? { quantize } : {}) });
    await saveTensors(values.output, out);
    const ms = performance.now() - t0;
    const shapes = Object.entries(out).map(([k, t]) => `${k} [${t.dims.join(', ')}]`).join(', ');
    process.stdout.write(`${positionals[0]} on ${ep} in ${precision}: ${shapes} -> ${values.output} (${ms.toFixed(0)} ms)\n`);
  } finally {
    await terminateWorkers();
  }
}
