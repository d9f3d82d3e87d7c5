/**
 * Output files as the prediction's `output`: a `data:` URL, or with --upload-url a raw PUT of the file to
 * `<upload-url>/<basename>` whose final URL (the `Location` header, else the URL after redirects, query
 * stripped: it may carry signing parameters) becomes the output. Retried like Cog on connection errors and
 * 408/429/5xx.
 */
import { readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { appError, errorMessage } from '../errors.js';

const MIME: Record<string, string> = {
  '.mp4': 'video/mp4', '.webm': 'video/webm', '.gif': 'image/gif', '.png': 'image/png', '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg', '.webp': 'image/webp', '.txt': 'text/plain', '.json': 'application/json',
  '.wav': 'audio/wav', '.mp3': 'audio/mpeg', '.safetensors': 'application/octet-stream',
};

export function mimeOf(path: string): string {
  return MIME[extname(path).toLowerCase()] ?? 'application/octet-stream';
}

/**
 * Base64 in slices (a multiple of 3 bytes, so the pieces concatenate exactly), yielding to the event loop
 * between them: one call on a large video would stall health checks for tens of milliseconds.
 */
export async function toDataUrl(path: string): Promise<string> {
  const bytes = await readFile(path);
  const slice = 768 * 1024; // 1 MB of base64: a few milliseconds
  const parts: string[] = [`data:${mimeOf(path)};base64,`];
  for (let i = 0; i < bytes.length; i += slice) {
    parts.push(bytes.subarray(i, i + slice).toString('base64'));
    if (i + slice < bytes.length) await yieldToLoop();
  }
  return parts.join('');
}

export interface UploadOptions {
  predictionId: string;
  traceHeaders: Record<string, string>;
  retries?: number;
  backoffMs?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);

function stripQuery(url: string): string {
  const u = new URL(url);
  u.search = '';
  u.hash = '';
  return u.toString();
}

/** PUTs `path` under `base`; returns the URL of the uploaded file. */
export async function uploadFile(path: string, base: string, opts: UploadOptions): Promise<string> {
  const target = new URL(encodeURIComponent(basename(path)), base.endsWith('/') ? base : `${base}/`).toString();
  const body = await readFile(path);
  const headers = {
    'content-type': mimeOf(path),
    'x-prediction-id': opts.predictionId,
    'user-agent': 'framepack-cog',
    ...opts.traceHeaders,
  };
  const attempts = (opts.retries ?? 3) + 1;
  let backoff = opts.backoffMs ?? 100;
  let problem = '';
  for (let attempt = 1; attempt <= attempts; attempt++) {
    let retryable: boolean;
    try {
      const signals = [AbortSignal.timeout(opts.timeoutMs ?? 25_000)];
      if (opts.signal) signals.push(opts.signal);
      const res = await fetch(target, { method: 'PUT', headers, body, signal: AbortSignal.any(signals), redirect: 'follow' });
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) {
        const location = res.headers.get('location');
        return stripQuery(location ? new URL(location, res.url || target).toString() : (res.url || target));
      }
      retryable = RETRY_STATUS.has(res.status);
      problem = `HTTP ${res.status} from ${stripQuery(target)}`;
    } catch (err) {
      retryable = !opts.signal?.aborted;
      problem = `${errorMessage(err)} (${stripQuery(target)})`;
    }
    if (!retryable || attempt === attempts) break;
    await new Promise((r) => setTimeout(r, backoff));
    backoff *= 2;
  }
  throw appError('UPLOAD_FAILED', { detail: problem });
}
