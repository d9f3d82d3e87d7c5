/**
 * The networks `framepack forward` can run, by name. Each entry loads its module lazily so the command
 * only pays for the network it runs. Tensor names are those of the reference fixtures
 * (framepack-tiny/components): llama, clip, siglip, vae-encode, vae-decode, dit.
 */
import type { Precision } from '../onnx/graph.js';
import type { HostTensor } from '../onnx/safetensors.js';
import type { ExecutionProvider } from '../runtime/protocol.js';

export interface NetOptions { precision: Precision; ep: ExecutionProvider; quantize?: { bits: 4 | 8 } }

export interface ForwardNet {
  inputs: string[];
  outputs: string[];
  forward(weightsDir: string, feeds: Record<string, HostTensor>, opts: NetOptions): Promise<Record<string, HostTensor>>;
  /** which precision the network runs in on GPUs (default: 'encoder', i.e. float16 on CUDA) */
  kind?: 'dit' | 'encoder' | 'vae';
}

// One line per network: name -> lazy loader of its ForwardNet.
const nets: Record<string, () => Promise<ForwardNet>> = {
  llama: async () => (await import('./llama.js')).llamaNet,
  clip: async () => (await import('./clip.js')).clipNet,
  siglip: async () => (await import('./siglip.js')).siglipNet,
  'vae-encode': async () => (await import('../framepack/vae-decode.js')).vaeEncodeNet,
  'vae-decode': async () => (await import('../framepack/vae-decode.js')).vaeDecodeNet,
  dit: async () => (await import('../framepack/transformer.js')).ditNet,
};

export function netNames(): string[] {
  return Object.keys(nets).sort();
}

export async function getNet(name: string): Promise<ForwardNet> {
  const load = nets[name];
  if (!load) throw new Error(`unknown network "${name}" (known: ${netNames().join(', ') || 'none'})`);
  return load();
}

/** Adds a network at run time (tests, experiments). */
export function registerNet(name: string, load: () => Promise<ForwardNet>): void {
  nets[name] = load;
}
