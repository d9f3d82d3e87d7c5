/**
 * A placement for each GPU of a host, for serving one prediction per GPU at once. Every card is sized on its
 * own free memory (placement.ts), so a mixed host gets a placement per card: `high` on a 141 GB card beside
 * `low` on an 80 GB one. A card that could not hold the model on CUDA (too little free memory) is left out.
 *
 * Empty when the model does not run on CUDA here: FRAMEPACK_EP=cpu|webgpu, FRAMEPACK_PLACEMENT=cpu, no
 * visible GPU, no CUDA provider, MIG instances in CUDA_VISIBLE_DEVICES (nvidia-smi cannot size them).
 * FRAMEPACK_DEVICE_ID pins the model to that one card.
 */
import { choosePlacement, type Placement, type PlacementInputs } from './placement.js';
import { cudaProviderStatus } from './providers.js';
import { cudaVisible, probeVram } from './vram.js';

export interface GpuPlacements {
  /** The cards that can serve, in CUDA's order. */
  placements: Placement[];
  /** The cards left out, each with why (for the logs). */
  skipped: { deviceId: number; reason: string }[];
}

export async function gpuPlacements(inputs: PlacementInputs = {}): Promise<GpuPlacements> {
  const env = inputs.env ?? process.env;
  const none: GpuPlacements = { placements: [], skipped: [] };
  if ((env.FRAMEPACK_DEVICE_ID ?? '').trim() !== '') {
    const pinned = await choosePlacement(inputs);
    return pinned.ep === 'cuda' ? { placements: [pinned], skipped: [] } : none;
  }
  if (/(?:^|,)\s*MIG-/.test(env.CUDA_VISIBLE_DEVICES ?? '')) return none;
  const vram = inputs.vram ?? await probeVram({ env });
  const count = cudaVisible(vram.gpus, env.CUDA_VISIBLE_DEVICES).length;
  if (count === 0) return none;
  const cuda = inputs.cuda ?? await cudaProviderStatus({ env });
  const all: Placement[] = [];
  for (let deviceId = 0; deviceId < count; deviceId++) {
    all.push(await choosePlacement({ ...inputs, env: { ...env, FRAMEPACK_DEVICE_ID: String(deviceId) }, vram, cuda }));
  }
  // a provider or setting that keeps every card off CUDA is not a per-card matter: nothing to list
  if (!all.some((p) => p.ep === 'cuda')) return none;
  return {
    placements: all.filter((p) => p.ep === 'cuda'),
    skipped: all.flatMap((p, deviceId) => (p.ep === 'cuda' ? [] : [{ deviceId, reason: p.reason }])),
  };
}
