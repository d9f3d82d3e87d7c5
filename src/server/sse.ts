/**
 * One Server-Sent Events response that never buffers without bound. While the socket takes data, events are
 * written as they come. While it does not (a slow or stalled client: `write` returned false), they wait in
 * a queue in which an event of a latest-only kind (progress, preview) replaces the one of its kind still
 * waiting, since a newer one makes it worthless; the other events (sections, the final one) are few and kept
 * in order. So a client that never reads holds at most the socket's buffers, one event of each latest-only
 * kind and the handful of others, and the prediction never waits for it.
 */
import type { ServerResponse } from 'node:http';

interface Queued {
  event: string;
  text: string;
  bytes: number;
  latestOnly: boolean;
}

export class SseStream {
  private readonly queue: Queued[] = [];
  private queuedBytes = 0;
  /** Latest-only events replaced before they could be written. */
  dropped = 0;
  private waiting = false; // for 'drain'
  private ending = false;
  private closed = false;

  /** `onClose` runs once, when the response is finished or the client went away. */
  constructor(private readonly res: ServerResponse, onClose: () => void) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no', // proxies (nginx) must pass events on at once
      // A stream ends with its prediction; its connection goes with it rather than idling in keep-alive,
      // where one that ends while the server shuts down would hold the shutdown for the keep-alive timeout.
      connection: 'close',
    });
    res.flushHeaders();
    res.on('drain', () => {
      this.waiting = false;
      this.flush();
    });
    res.once('close', () => {
      this.closed = true;
      this.queue.length = 0;
      this.queuedBytes = 0;
      onClose();
    });
  }

  /** Bytes held for this client: queued events and what the response has not handed to the socket yet. */
  get bufferedBytes(): number {
    return this.queuedBytes + this.res.writableLength;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends `data` (already JSON) as `event`. */
  send(event: string, data: string, opts: { latestOnly?: boolean } = {}): void {
    if (this.closed || this.ending) return;
    const text = `event: ${event}\ndata: ${data}\n\n`;
    const item = { event, text, bytes: Buffer.byteLength(text), latestOnly: opts.latestOnly === true };
    if (item.latestOnly) {
      const old = this.queue.findIndex((q) => q.latestOnly && q.event === event);
      if (old >= 0) {
        this.queuedBytes -= this.queue[old].bytes;
        this.queue.splice(old, 1);
        this.dropped++;
      }
    }
    this.queue.push(item);
    this.queuedBytes += item.bytes;
    this.flush();
  }

  /** A comment line (keep-alive for proxies that close idle connections); skipped while events wait. */
  comment(text: string): void {
    if (!this.closed && !this.ending && !this.waiting && this.queue.length === 0) this.write(`: ${text}\n\n`);
  }

  /** Ends the response once the queued events are written. */
  end(): void {
    if (this.closed || this.ending) return;
    this.ending = true;
    this.flush();
  }

  /** Closes the connection at once, dropping what is queued. */
  destroy(): void {
    if (!this.closed) this.res.destroy();
  }

  private flush(): void {
    while (!this.closed && !this.waiting && this.queue.length > 0) {
      const item = this.queue.shift()!;
      this.queuedBytes -= item.bytes;
      this.write(item.text);
    }
    if (this.ending && !this.closed && !this.waiting && this.queue.length === 0) this.res.end();
  }

  private write(text: string): void {
    if (!this.res.write(text)) this.waiting = true;
  }
}
