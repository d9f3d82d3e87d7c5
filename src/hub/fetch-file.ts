/**
 * One file from the Hub into a cache blob: resumable, verified, with progress.
 *
 * @huggingface/hub rewrites `.incomplete` files from scratch and has no progress hook, so the bytes are
 * fetched here from the same `resolve/<commit>/<path>` URL it uses, with `Range: bytes=<have>-` to resume
 * (the Hub redirects large files to a CDN that honours ranges). The content is hashed while it is written and
 * compared with what the Hub lists for that commit: sha256 for LFS files, the git blob id for small ones.
 * Only a verified file is renamed to its blob name.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { appError, AppError } from '../errors.js';
import { sizeOf } from './cache.js';
import { formatBytes, type Progress } from './progress.js';
import type { HubSettings } from './settings.js';

export interface RemoteFile {
  repo: string;        // "org/name"
  revision: string;    // commit
  path: string;        // path inside the repository
  size: number;        // bytes of the real content (the LFS size for LFS files)
  etag: string;        // sha256 (LFS) or git blob id: the blob's name in the cache
  lfs: boolean;
}

export interface FetchOptions {
  settings: HubSettings;
  fetch: typeof fetch;
  progress: Progress;
  signal?: AbortSignal;
  /** Attempts after a dropped connection or a server error before giving up (each resumes). */
  retries?: number;
  /** Wait before retry n is backoffMs * 2^n. */
  backoffMs?: number;
}

export function resolveUrl(endpoint: string, f: Pick<RemoteFile, 'repo' | 'revision' | 'path'>): string {
  return `${endpoint}/${f.repo}/resolve/${encodeURIComponent(f.revision)}/${f.path.split('/').map(encodeURIComponent).join('/')}`;
}

/** The digest the Hub publishes for a file: sha256 of LFS content, else git's sha1 of "blob <size>\0" + content. */
function newDigest(f: RemoteFile): Hash {
  if (f.lfs) return createHash('sha256');
  return createHash('sha1').update(`blob ${f.size}\0`);
}

async function hashPrefix(file: string, digest: Hash): Promise<void> {
  for await (const chunk of createReadStream(file)) digest.update(chunk as Buffer);
}

class Restart extends Error {}

/** Errors worth another attempt: dropped or refused connections, timeouts, 429 and 5xx answers. */
function retryable(err: unknown): boolean {
  if (err instanceof AppError) return false;
  if (err instanceof Restart) return true;
  if ((err as { name?: string }).name === 'AbortError') return false;
  return err instanceof TypeError || (err as { retry?: boolean }).retry === true;
}

function describe(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const base = err instanceof Error ? err.message : String(err);
  return cause ? `${base}: ${cause.code ?? cause.message ?? String(cause)}` : base;
}

/** Connection never established (as opposed to one that broke mid-transfer). */
function unreachable(err: unknown): boolean {
  const code = (err as { cause?: { code?: string } }).cause?.code ?? '';
  return ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'UND_ERR_CONNECT_TIMEOUT'].includes(code);
}

/** Maps an HTTP answer that is not content to the catalogue, or marks it retryable. */
async function httpError(res: Response, f: RemoteFile, endpoint: string): Promise<Error> {
  await res.body?.cancel().catch(() => {});
  if (res.status === 401 || res.status === 403) return appError('HUB_AUTH', { repo: f.repo, status: res.status });
  if (res.status === 404) return appError('HUB_NOT_FOUND', { repo: f.repo, revision: f.revision, what: f.path, endpoint });
  const err = new Error(`HTTP ${res.status} ${res.statusText}`);
  (err as { retry?: boolean }).retry = res.status === 429 || res.status >= 500;
  return err;
}

/**
 * Downloads `f` into `blob` (its final cache path). Leaves `<blob>.incomplete` behind on interruption so that
 * the next call resumes; removes it when the content does not verify.
 */
export async function fetchBlob(f: RemoteFile, blob: string, opts: FetchOptions): Promise<void> {
  const part = `${blob}.incomplete`;
  const { settings, progress } = opts;
  const retries = opts.retries ?? 4;
  const backoffMs = opts.backoffMs ?? 1000;
  const label = `${f.repo} ${f.path}`;

  let digest = newDigest(f);
  let hashed = sizeOf(part);
  if (hashed > f.size) { await rm(part, { force: true }); hashed = 0; }
  if (hashed > 0) await hashPrefix(part, digest);
  progress.skip(hashed);

  for (let attempt = 0; ; attempt++) {
    try {
      if (sizeOf(part) !== hashed) {          // a write failed half-way: trust only what is on disk
        progress.skip(sizeOf(part) - hashed);
        digest = newDigest(f);
        hashed = sizeOf(part);
        await hashPrefix(part, digest);
      }
      if (hashed < f.size) {
        const headers: Record<string, string> = {};
        if (settings.token) headers.Authorization = `Bearer ${settings.token}`;
        if (hashed > 0) headers.Range = `bytes=${hashed}-`;
        const res = await opts.fetch(resolveUrl(settings.endpoint, f), { headers, signal: opts.signal, redirect: 'follow' });
        if (res.status === 416 && hashed > 0) {
          // nothing left after `hashed`: either we have it all (verified below) or the partial file is wrong
          await res.body?.cancel().catch(() => {});
          if (hashed !== f.size) { await rm(part, { force: true }); throw new Restart('range not satisfiable'); }
        } else if (!res.ok) {
          throw await httpError(res, f, settings.endpoint);
        } else {
          if (hashed > 0 && res.status !== 206) {
            // the server ignored the range and sends the whole file: start over
            progress.skip(-hashed);
            digest = newDigest(f);
            hashed = 0;
            await rm(part, { force: true });
          } else if (res.status === 206) {
            const start = Number(/bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1]);
            if (start !== hashed) { await res.body?.cancel().catch(() => {}); throw new Restart(`server resumed at ${start}, not ${hashed}`); }
          }
          const fh = await open(part, 'a');
          try {
            for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
              if (hashed + chunk.byteLength > f.size) throw appError('DOWNLOAD_CORRUPT', { repo: f.repo, path: f.path, detail: `more than the listed ${f.size} bytes` });
              await fh.write(chunk);
              digest.update(chunk);
              hashed += chunk.byteLength;
              progress.add(chunk.byteLength, label);
            }
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
              throw appError('DISK_FULL', { dir: part, need: formatBytes(f.size - hashed), free: '0 B' }, err);
            }
            throw err;
          } finally {
            await fh.close();
          }
          if (hashed < f.size) throw new Restart(`connection closed after ${hashed} of ${f.size} bytes`);
        }
      }
      break;
    } catch (err) {
      if (err instanceof AppError && err.code === 'DOWNLOAD_CORRUPT') await rm(part, { force: true });
      if (!retryable(err)) throw err;
      if (attempt >= retries) {
        if (hashed === 0 && unreachable(err)) {
          throw appError('HUB_UNREACHABLE', { endpoint: settings.endpoint, detail: describe(err) }, err);
        }
        throw appError('DOWNLOAD_INTERRUPTED', {
          repo: f.repo, path: f.path, done: formatBytes(hashed), size: formatBytes(f.size), detail: describe(err),
        }, err);
      }
      await sleep(backoffMs * 2 ** attempt, undefined, { signal: opts.signal });
    }
  }

  const got = digest.digest('hex');
  if (hashed !== f.size || got !== f.etag) {
    await rm(part, { force: true });
    throw appError('DOWNLOAD_CORRUPT', {
      repo: f.repo, path: f.path,
      detail: hashed !== f.size ? `${hashed} bytes, expected ${f.size}` : `${f.lfs ? 'sha256' : 'git blob id'} ${got}, expected ${f.etag}`,
    });
  }
  await rename(part, blob);
}
