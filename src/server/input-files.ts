/**
 * Fetches file inputs into a prediction's temp directory before the model runs: `data:` URLs are decoded,
 * `http(s):` URLs downloaded (redirects followed and re-checked, a 10 s read timeout, a size limit), and
 * `file:` URLs (local command line only) used in place. The model then sees local paths; the prediction's
 * echoed `input` keeps the URLs the client sent.
 *
 * Every address a download connects to goes through the policy of ssrf.ts: the DNS answer is checked inside
 * the socket's `lookup`, so no connection is ever opened to a refused address, whatever name or redirect
 * led there.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { createWriteStream } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { basename, extname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { appError, AppError, errorMessage } from '../errors.js';
import type { JsonSchema } from './openapi.js';
import { ipLiteralHost, refusal, refusedRange, type UrlPolicy } from './ssrf.js';

export interface FetchOptions extends UrlPolicy {
  maxBytes: number;
  signal: AbortSignal;
  /** Idle time allowed between two chunks of a download. */
  readTimeoutMs?: number;
  userAgent?: string;
  maxRedirects?: number;
}

const MIME_EXT: Record<string, string> = {
  'image/png': '.png', 'image/jpeg': '.jpg', 'image/jpg': '.jpg', 'image/webp': '.webp', 'image/gif': '.gif',
  'image/bmp': '.bmp', 'image/tiff': '.tiff', 'image/avif': '.avif', 'video/mp4': '.mp4', 'text/plain': '.txt',
  'application/json': '.json', 'audio/wav': '.wav', 'audio/mpeg': '.mp3',
};

/** `data:image/png;base64,...` -> `{mime, bytes}`; tolerates spaces, parameters and percent-encoded payloads. */
export function decodeDataUrl(url: string): { mime: string; bytes: Buffer } {
  const comma = url.indexOf(',');
  if (!/^data:/i.test(url) || comma < 0) throw appError('DATA_URL_INVALID', { detail: 'no comma before the payload' });
  const params = url.slice(5, comma).split(';').map((p) => p.trim());
  const base64 = params.length > 1 && params.at(-1)!.toLowerCase() === 'base64';
  const mime = (params[0] ?? '').toLowerCase() || 'text/plain';
  const payload = url.slice(comma + 1);
  if (base64) return { mime, bytes: Buffer.from(payload.replace(/\s+/g, ''), 'base64') };
  // Percent-decoding to bytes (decodeURIComponent would re-encode bytes >= 0x80 as UTF-8).
  const bytes: number[] = [];
  for (let i = 0; i < payload.length; i++) {
    const c = payload.charCodeAt(i);
    if (c === 0x25 && /^[0-9a-fA-F]{2}$/.test(payload.slice(i + 1, i + 3))) {
      bytes.push(parseInt(payload.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c < 0x80) {
      bytes.push(c);
    } else {
      bytes.push(...Buffer.from(payload[i]!, 'utf8'));
    }
  }
  return { mime, bytes: Buffer.from(bytes) };
}

/** A safe local name for a downloaded URL: its path's basename, percent-decoded, at most 200 bytes. */
export function filenameFromUrl(url: URL): string {
  let name = basename(url.pathname);
  try {
    name = decodeURIComponent(name);
  } catch { /* keep the raw name */ }
  name = name.replace(/[/\\\0]/g, '_').replace(/^\.+/, '');
  if (name === '') name = 'file';
  if (Buffer.byteLength(name) > 200) {
    const ext = extname(name).slice(0, 20);
    let stem = name.slice(0, name.length - ext.length);
    while (Buffer.byteLength(stem) + ext.length + 1 > 200) stem = stem.slice(0, -1);
    name = `${stem}~${ext}`;
  }
  return name;
}

function guardedLookup(policy: UrlPolicy) {
  return (hostname: string, options: { all?: boolean; family?: number }, callback: (...args: any[]) => void): void => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err);
      for (const a of addresses) {
        const range = refusedRange(a.address, policy);
        if (range !== null) return callback(refusal(hostname, a.address, range));
      }
      if (addresses.length === 0) return callback(new Error(`no address for ${hostname}`));
      if (options.all) callback(null, addresses);
      else callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

function checkUrl(url: URL, policy: UrlPolicy): void {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw appError('URL_SCHEME', { scheme: url.protocol.slice(0, -1) });
  const literal = ipLiteralHost(url);
  if (literal !== null) {
    const range = refusedRange(literal, policy);
    if (range !== null) throw refusal(url.origin, literal, range);
  }
}

/** One GET; resolves with the response (status not yet checked). */
function get(url: URL, opts: FetchOptions): Promise<http.IncomingMessage> {
  checkUrl(url, opts);
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.get(url, {
      headers: { 'user-agent': opts.userAgent ?? process.env.COG_USER_AGENT ?? 'framepack-cog', accept: '*/*' },
      lookup: guardedLookup(opts) as never,
      signal: opts.signal,
      agent: false,
    });
    let response: http.IncomingMessage | undefined;
    const timeoutMs = opts.readTimeoutMs ?? 10_000;
    req.setTimeout(timeoutMs, () => {
      // After the headers the body stream is what the caller reads: fail that one with the reason.
      const err = new Error(`no data for ${timeoutMs / 1000} s`);
      if (response) response.destroy(err);
      else req.destroy(err);
    });
    req.once('response', (res) => {
      response = res;
      resolve(res);
    });
    req.once('error', reject);
  });
}

/** Downloads `url` into `file`, following redirects; returns the final URL. */
async function download(name: string, start: URL, file: string, opts: FetchOptions): Promise<void> {
  let url = start;
  for (let hop = 0; ; hop++) {
    let res: http.IncomingMessage;
    try {
      res = await get(url, opts);
    } catch (err) {
      if (err instanceof AppError || opts.signal.aborted) throw err;
      throw appError('INPUT_FETCH_FAILED', { name, url: url.href, detail: errorMessage(err) }, err);
    }
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location) {
      res.resume();
      if (hop >= (opts.maxRedirects ?? 10)) throw appError('TOO_MANY_REDIRECTS', { url: start.href });
      url = new URL(res.headers.location, url);
      continue;
    }
    if (status < 200 || status >= 300) {
      res.resume();
      throw appError('INPUT_FETCH_FAILED', { name, url: url.href, detail: `HTTP ${status} ${res.statusMessage ?? ''}`.trim() });
    }
    const declared = Number(res.headers['content-length']);
    if (Number.isFinite(declared) && declared > opts.maxBytes) {
      res.destroy();
      throw appError('INPUT_TOO_LARGE', { name, limit: opts.maxBytes });
    }
    let seen = 0;
    const limit = new Transform({
      transform(chunk: Buffer, _enc, done) {
        seen += chunk.length;
        if (seen > opts.maxBytes) done(appError('INPUT_TOO_LARGE', { name, limit: opts.maxBytes }));
        else done(null, chunk);
      },
    });
    try {
      await pipeline(res, limit, createWriteStream(file), { signal: opts.signal });
    } catch (err) {
      if (err instanceof AppError || opts.signal.aborted) throw err;
      throw appError('INPUT_FETCH_FAILED', { name, url: url.href, detail: errorMessage(err) }, err);
    }
    return;
  }
}

/** Downloads an http(s) `url` into `file` under `opts`' rules; errors name the input `name`. */
export async function downloadUrl(name: string, url: string, file: string, opts: FetchOptions): Promise<void> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (err) {
    throw appError('URL_INVALID', { detail: `${name}: ${errorMessage(err)}` }, err);
  }
  await download(name, parsed, file, opts);
}

/** Fetches one file input into `dir`; returns the local path. */
export async function fetchInputFile(name: string, value: string, dir: string, opts: FetchOptions): Promise<string> {
  if (/^data:/i.test(value)) {
    const { mime, bytes } = decodeDataUrl(value);
    if (bytes.length > opts.maxBytes) throw appError('INPUT_TOO_LARGE', { name, limit: opts.maxBytes });
    const file = join(dir, `${name}-file${MIME_EXT[mime] ?? ''}`);
    await writeFile(file, bytes);
    return file;
  }
  if (/^file:/i.test(value)) {
    const path = fileURLToPath(value);
    try {
      await stat(path);
    } catch (err) {
      throw appError('CLI_INPUT_FILE', { path, detail: errorMessage(err) });
    }
    return path;
  }
  const url = new URL(value);
  const file = join(dir, `${name}-${filenameFromUrl(url)}`);
  await download(name, url, file, opts);
  return file;
}

/**
 * Replaces every file input (`format: uri` in the Input component) of `input` by a local path, fetching them
 * in parallel. Other values are returned unchanged.
 */
export async function fetchInputFiles(component: JsonSchema, input: Record<string, unknown>, dir: string, opts: FetchOptions): Promise<Record<string, unknown>> {
  const out = { ...input };
  const jobs: Promise<void>[] = [];
  for (const [name, prop] of Object.entries((component.properties ?? {}) as Record<string, JsonSchema>)) {
    if (prop.format === 'uri' && typeof input[name] === 'string') {
      jobs.push(fetchInputFile(name, input[name] as string, dir, opts).then((p) => { out[name] = p; }));
    }
  }
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return out;
}
