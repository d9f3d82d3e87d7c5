/**
 * Webhook delivery for one prediction, as Cog does it: POST the whole prediction object for the events the
 * request asked for (`start`, `output`, `logs`, `completed`; absent, null or empty filter = all), at most one
 * non-terminal event per throttle interval (COG_THROTTLE_RESPONSE_INTERVAL, default 0.5 s; events inside the
 * window are dropped: the next one carries the newer state), in order, `completed` last and retried with
 * exponential backoff on connection errors and 429/5xx. Delivery problems are logged, never change the
 * prediction.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import type { WebhookEvent } from './validation.js';

export interface WebhookOptions {
  url: string;
  filter?: WebhookEvent[];
  throttleMs: number;
  /** traceparent/tracestate of the request that created the prediction. */
  traceHeaders: Record<string, string>;
  authToken?: string;
  logger: Logger;
  /** Retries of the terminal event (Cog: 12) and the first backoff (Cog: 0.1 s, doubling, capped at 120 s). */
  retries?: number;
  backoffMs?: number;
  timeoutMs?: number;
  /** Aborted: nothing more is sent or retried (the server is stopping). */
  signal?: AbortSignal;
}

const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);

/** COG_THROTTLE_RESPONSE_INTERVAL in milliseconds (invalid -> the default 0.5 s). */
export function throttleFromEnv(value: string | undefined): number {
  const s = Number(value);
  return value !== undefined && value.trim() !== '' && Number.isFinite(s) && s >= 0 ? s * 1000 : 500;
}

export class WebhookSender {
  private readonly events: Set<WebhookEvent> | null;
  private lastSent = -Infinity;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly opts: WebhookOptions) {
    this.events = opts.filter && opts.filter.length > 0 ? new Set(opts.filter) : null;
  }

  /**
   * Queues `event` with the prediction state `payload()` (taken and serialised now, only when the event is
   * actually sent). Non-terminal events inside the throttle window are dropped; `start` is the first send,
   * so it is never dropped.
   */
  send(event: WebhookEvent, payload: () => unknown): void {
    if (this.events !== null && !this.events.has(event)) return;
    const terminal = event === 'completed';
    const now = performance.now();
    if (!terminal && event !== 'start' && now - this.lastSent < this.opts.throttleMs) return;
    this.lastSent = now;
    const body = JSON.stringify(payload());
    this.chain = this.chain.then(() => this.deliver(event, body, terminal));
  }

  /** Resolves when everything queued so far was delivered or given up. */
  flush(): Promise<void> {
    return this.chain;
  }

  private async deliver(event: WebhookEvent, body: string, terminal: boolean): Promise<void> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'framepack-cog',
      ...this.opts.traceHeaders,
    };
    if (this.opts.authToken) headers.authorization = `Bearer ${this.opts.authToken}`;
    const attempts = terminal ? (this.opts.retries ?? 12) + 1 : 1;
    let backoff = this.opts.backoffMs ?? 100;
    const giveUp = this.opts.signal;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (giveUp?.aborted) {
        this.opts.logger.warn({ event, attempts: attempt - 1 }, 'webhook not delivered: the server stopped');
        return;
      }
      let retryable: boolean;
      let problem: string;
      try {
        const timeout = AbortSignal.timeout(this.opts.timeoutMs ?? 30_000);
        const res = await fetch(this.opts.url, {
          method: 'POST', headers, body, signal: giveUp ? AbortSignal.any([timeout, giveUp]) : timeout,
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) return;
        retryable = RETRY_STATUS.has(res.status);
        problem = `HTTP ${res.status}`;
      } catch (err) {
        retryable = true;
        problem = errorMessage(err);
      }
      if (!retryable || attempt === attempts) {
        this.opts.logger.warn({ event, problem, attempts: attempt }, 'webhook not delivered');
        return;
      }
      this.opts.logger.debug({ event, problem, attempt }, 'webhook failed, retrying');
      await sleep(backoff, undefined, giveUp ? { signal: giveUp } : undefined).catch(() => undefined);
      backoff = Math.min(backoff * 2, 120_000);
    }
  }
}
