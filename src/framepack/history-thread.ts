/**
 * The latent history of one generation, kept in a worker thread (history-worker.ts): the same history as
 * sections.ts createHistory, with every method asynchronous. The event loop only moves buffers; what it
 * receives is its own, and what it hands in is gone (transferred). close() ends the worker.
 */
import { ThreadClient } from '../runtime/thread-rpc.js';
import type { Conditioning, Float32Tensor, SamplingMode, SectionPlan } from './sections.js';

type Reply = Partial<Conditioning> & { generated?: number; chunk?: Float32Tensor; latents?: Float32Tensor };

export class HistoryThread {
  private readonly thread: ThreadClient<Reply>;
  /** Latent frames generated so far (as SectionHistory.generated), as of the last push. */
  generated: number;

  /** `start` is copied (it stays the caller's). */
  constructor(mode: SamplingMode, start: Float32Tensor) {
    this.thread = new ThreadClient(new URL('./history-worker.js', import.meta.url), 'latent history', { mode, start });
    this.generated = mode === 'f1' ? 1 : 0;
  }

  /** The DiT's clean inputs for the next section (new tensors, the caller's); `post` is copied. */
  async conditioning(post?: Float32Tensor): Promise<Conditioning> {
    const r = await this.thread.call({ op: 'conditioning', post });
    return { cleanLatents: r.cleanLatents!, cleanLatents2x: r.cleanLatents2x!, cleanLatents4x: r.cleanLatents4x! };
  }

  /**
   * Adds a section's sampler output, which is transferred (`generated` must not be used afterwards). With
   * `chunk`, returns the chunk added (as SectionHistory.push); otherwise null.
   */
  async push(generated: Float32Tensor, plan: SectionPlan, opts: { chunk?: boolean } = {}): Promise<Float32Tensor | null> {
    const r = await this.thread.call({ op: 'push', generated, plan, chunk: !!opts.chunk }, [generated.data.buffer as ArrayBuffer]);
    this.generated = r.generated!;
    return r.chunk ?? null;
  }

  /** The latents to decode after `plan`'s section (a new tensor, the caller's). */
  async decodeSlice(plan: SectionPlan, lws: number): Promise<Float32Tensor> {
    return (await this.thread.call({ op: 'decodeSlice', plan, lws })).latents!;
  }

  close(): Promise<void> {
    return this.thread.close();
  }
}
