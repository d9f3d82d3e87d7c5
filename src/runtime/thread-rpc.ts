/**
 * Request/reply over a worker thread, for the helpers that keep megabytes of host memory off the event loop
 * (the latent history, the video's pixels, the VAE's stitching, the DiT's rotary tables). The main thread only
 * moves buffers: requests and replies carry them in the transfer list, so neither side copies (a structured
 * clone of 8 MB holds the sending thread about as long as touching 8 MB of fresh memory: tens of milliseconds
 * on a small machine).
 *
 * Wire: the client posts { id, ...msg } and the worker answers { id, ...reply } or { id, error }; a message
 * without an id gets no answer. The worker is referenced only while a reply is awaited, so an idle helper
 * never keeps the process alive.
 */
import { parentPort, Worker } from 'node:worker_threads';

interface Pending { resolve: (r: any) => void; reject: (e: Error) => void }

export class ThreadClient<Reply extends object = Record<string, unknown>> {
  private readonly worker: Worker;
  private seq = 0;
  private readonly pending = new Map<number, Pending>();
  private failure: Error | null = null;

  /** `what` prefixes the worker's error messages ("assembling the video: ..."). */
  constructor(script: URL, readonly what: string, workerData?: unknown) {
    this.worker = new Worker(script, { workerData });
    this.worker.on('message', (m: { id?: number; error?: string }) => {
      const p = m.id === undefined ? undefined : this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id!);
      if (!this.pending.size) this.worker.unref();
      if (m.error !== undefined) p.reject(new Error(`${what}: ${m.error}`));
      else p.resolve(m);
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', () => this.fail(new Error(`${what}: closed`)));
    this.worker.unref(); // after the listeners, which ref it
  }

  /** Set once the worker failed or ended: every later call is refused with it. */
  get failed(): Error | null { return this.failure; }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Sends `msg` (its `transfer` buffers are detached here) and resolves with the reply. */
  call<R extends Reply = Reply>(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<R> {
    if (this.failure) return Promise.reject(this.failure);
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ id, ...msg }, transfer);
    });
  }

  /** Sends `msg` without waiting for anything (no id: the worker does not answer). */
  post(msg: Record<string, unknown>): void {
    if (!this.failure) this.worker.postMessage(msg);
  }

  /** Ends the worker; what it held is gone. */
  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/** A reply and the buffers it hands over (detached in the worker once posted). */
export interface ThreadReply { reply: Record<string, unknown>; transfer?: ArrayBuffer[] }

/**
 * The worker's side: runs `handle` for each message and posts its reply (none for messages without an id).
 * A throw (or a rejection, for a handler that does I/O) is answered as { id, error } after `onError` (e.g. to
 * drop the state the message named). A synchronous handler still runs as its message arrives, in order.
 */
export function serveThread<M extends { id?: number }>(
  handle: (msg: M) => ThreadReply | null | Promise<ThreadReply | null>, onError?: (msg: M) => void,
): void {
  parentPort!.on('message', async (msg: M) => {
    try {
      const res = await handle(msg);
      if (res && msg.id !== undefined) parentPort!.postMessage({ id: msg.id, ...res.reply }, res.transfer ?? []);
    } catch (err) {
      onError?.(msg);
      if (msg.id !== undefined) parentPort!.postMessage({ id: msg.id, error: (err as Error).message });
    }
  });
}
