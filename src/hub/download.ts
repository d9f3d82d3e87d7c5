/**
 * Fills the Hugging Face cache with the files FramePack reads, at the commits of models/manifest.json.
 *
 * Per repository: if every component folder of the pinned snapshot is already complete, nothing touches the
 * network (a pinned commit cannot change). Otherwise the Hub's tree listing of each component folder at that
 * commit (through @huggingface/hub) gives the files, their sizes and digests; the manifest's `include` globs
 * keep only what the networks and tokenizers read (the community HunyuanVideo repository also holds a 25 GB
 * transformer FramePack does not use). Missing blobs are fetched (resumable, verified), then linked into the
 * snapshot, the component's anchor file last.
 */
import { statfs, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { listFiles } from '@huggingface/hub';
import { appError, AppError } from '../errors.js';
import { anchorOf, blobPath, folderProblem, linkSnapshot, sizeOf, snapshotDir } from './cache.js';
import { fetchBlob, type RemoteFile } from './fetch-file.js';
import { lockPath, withLock } from './lock.js';
import { included, type Component, type Manifest, type ManifestRepo } from './manifest.js';
import { formatBytes, Progress } from './progress.js';
import type { HubSettings } from './settings.js';

export interface DownloadOptions {
  settings: HubSettings;
  log: (line: string) => void;
  signal?: AbortSignal;
  /** Replaces global fetch (tests); the Authorization header is added here either way. */
  fetch?: typeof fetch;
  /** Files downloaded at the same time (one connection each). */
  concurrency?: number;
  progressIntervalMs?: number;
  retries?: number;
  backoffMs?: number;
  /** Free bytes where `dir` lives (statfs unless replaced, e.g. by tests). */
  freeBytes?: (dir: string) => Promise<number>;
}

/** Bytes kept free besides the download itself, so the machine does not end at 0 bytes. */
const DISK_MARGIN = 256 * 1024 ** 2;

/** Component folders of `repo` in the pinned snapshot that are not complete yet (see cache.ts). */
export function incompleteComponents(repo: ManifestRepo, cacheDir: string): { component: Component; problem: string }[] {
  const snap = snapshotDir(cacheDir, repo.id, repo.revision);
  const out: { component: Component; problem: string }[] = [];
  for (const [component, sub] of Object.entries(repo.components) as [Component, string][]) {
    const problem = folderProblem(join(snap, sub));
    if (problem) out.push({ component, problem });
  }
  return out;
}

function withAuth(settings: HubSettings, base: typeof fetch): typeof fetch {
  if (!settings.token) return base;
  return (input, init) => {
    const headers = new Headers(init?.headers);
    if (!headers.has('Authorization')) headers.set('Authorization', `Bearer ${settings.token}`);
    return base(input, { ...init, headers });
  };
}

/** Maps what @huggingface/hub throws for a listing to the catalogue. */
function listingError(err: unknown, repo: ManifestRepo, sub: string, settings: HubSettings): Error {
  if (err instanceof AppError || (err as { name?: string }).name === 'AbortError') return err as Error;
  const status = (err as { statusCode?: number }).statusCode;
  if (status === 401 || status === 403) return appError('HUB_AUTH', { repo: repo.id, status }, err);
  if (status === 404) {
    return appError('HUB_NOT_FOUND', { repo: repo.id, revision: repo.revision, what: `folder "${sub || '/'}"`, endpoint: settings.endpoint }, err);
  }
  const cause = (err as { cause?: { code?: string } }).cause;
  const detail = cause?.code ?? (err instanceof Error ? err.message : String(err));
  return appError('HUB_UNREACHABLE', { endpoint: settings.endpoint, detail }, err);
}

/** The files of each component folder at the pinned commit, as the Hub lists them. */
export async function listRemote(repo: ManifestRepo, manifest: Manifest, opts: DownloadOptions): Promise<Map<string, RemoteFile[]>> {
  const fetchImpl = withAuth(opts.settings, opts.fetch ?? fetch);
  const byFolder = new Map<string, RemoteFile[]>();
  for (const sub of new Set(Object.values(repo.components))) {
    const files: RemoteFile[] = [];
    try {
      for await (const e of listFiles({
        repo: { type: 'model', name: repo.id }, revision: repo.revision, path: sub || undefined,
        recursive: sub !== '', hubUrl: opts.settings.endpoint, fetch: fetchImpl,
      })) {
        if (e.type !== 'file' || !included(manifest, e.path)) continue;
        const etag = e.lfs?.oid ?? e.oid;
        if (!etag) throw new Error(`the Hub lists no digest for ${e.path}`);
        files.push({ repo: repo.id, revision: repo.revision, path: e.path, size: e.lfs?.size ?? e.size, etag, lfs: !!e.lfs });
      }
    } catch (err) {
      throw listingError(err, repo, sub, opts.settings);
    }
    if (files.length === 0) {
      throw appError('HUB_NOT_FOUND', { repo: repo.id, revision: repo.revision, what: `any model file in "${sub || '/'}"`, endpoint: opts.settings.endpoint });
    }
    byFolder.set(sub, files);
  }
  return byFolder;
}

/** Free bytes on the filesystem that holds (or will hold) `dir`. */
async function freeBytes(dir: string): Promise<number> {
  let d = dir;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  const s = await statfs(d);
  return s.bavail * s.bsize;
}

/** Runs `fn` over `items` with at most `n` at once; the first error stops new work and is rethrown. */
async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const item = items[next++];
      try { await fn(item); } catch (err) { failed ??= err; }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (failed !== undefined) throw failed;
}

/**
 * Makes the pinned snapshot of every manifest repository complete in the cache, downloading what is
 * missing. Offline (HF_HUB_OFFLINE) it only checks, and says what is missing.
 */
export async function ensureDownloaded(manifest: Manifest, opts: DownloadOptions): Promise<void> {
  const { settings, log } = opts;
  const todo = manifest.repos.filter((r) => incompleteComponents(r, settings.cacheDir).length > 0);
  for (const r of manifest.repos) {
    if (!todo.includes(r)) log(`models: ${r.id}@${r.revision.slice(0, 8)} is complete in ${settings.cacheDir}`);
  }
  if (todo.length === 0) return;
  if (settings.offline) {
    const detail = todo.flatMap((r) => incompleteComponents(r, settings.cacheDir).map((c) => `${r.id} ${c.component}: ${c.problem}`)).join('; ');
    throw appError('MODELS_MISSING', {
      detail,
      hint: 'HF_HUB_OFFLINE is set, so nothing is downloaded: unset it to download them, or run `framepack download` where there is network and reuse its cache (HF_HOME / HF_HUB_CACHE), or pass --models <dir>.',
    });
  }

  // Plan: every file of every incomplete repository, with what is already on disk.
  const plan: { repo: ManifestRepo; folders: Map<string, RemoteFile[]> }[] = [];
  for (const repo of todo) {
    log(`models: listing ${repo.id}@${repo.revision.slice(0, 8)} on ${settings.endpoint}`);
    plan.push({ repo, folders: await listRemote(repo, manifest, opts) });
  }
  const files = plan.flatMap((p) => [...p.folders.values()].flat());
  const missing = files.filter((f) => !existsSync(blobPath(settings.cacheDir, f.repo, f.etag)));
  const unique = [...new Map(missing.map((f) => [`${f.repo}/${f.etag}`, f])).values()];
  const total = unique.reduce((s, f) => s + f.size, 0);
  const partial = unique.reduce((s, f) => s + Math.min(f.size, sizeOf(blobPath(settings.cacheDir, f.repo, f.etag) + '.incomplete')), 0);

  await mkdir(settings.cacheDir, { recursive: true });
  const free = await (opts.freeBytes ?? freeBytes)(settings.cacheDir);
  if (total - partial + DISK_MARGIN > free) {
    throw appError('DISK_FULL', { dir: settings.cacheDir, need: formatBytes(total - partial + DISK_MARGIN), free: formatBytes(free) });
  }
  log(`models: ${unique.length} of ${files.length} files to download, ${formatBytes(total)}` +
    (partial > 0 ? ` (${formatBytes(partial)} already there from an earlier attempt)` : ''));

  const progress = new Progress(total, log, opts.progressIntervalMs);
  const fetchImpl = opts.fetch ?? fetch;
  await pool(unique, opts.concurrency ?? 4, async (f) => {
    const blob = blobPath(settings.cacheDir, f.repo, f.etag);
    await mkdir(dirname(blob), { recursive: true });
    await withLock(lockPath(settings.cacheDir, f.repo, f.etag), async () => {
      if (existsSync(blob)) { progress.skip(f.size); return; }     // another process finished it meanwhile
      await fetchBlob(f, blob, { settings, fetch: fetchImpl, progress, signal: opts.signal, retries: opts.retries, backoffMs: opts.backoffMs });
      log(`models: verified ${f.repo} ${f.path} (${formatBytes(f.size)})`);
    }, { signal: opts.signal, onWait: (pid) => log(`models: waiting for process ${pid}, which is downloading ${f.repo} ${f.path}`) });
  });
  if (total > 0) log(progress.line('done'));

  for (const { repo, folders } of plan) {
    const snap = snapshotDir(settings.cacheDir, repo.id, repo.revision);
    for (const list of folders.values()) {
      const anchor = anchorOf(list.map((f) => f.path));
      const ordered = [...list.filter((f) => !f.path.endsWith(`/${anchor}`) && f.path !== anchor),
        ...list.filter((f) => f.path.endsWith(`/${anchor}`) || f.path === anchor)];
      for (const f of ordered) await linkSnapshot(join(snap, f.path), blobPath(settings.cacheDir, f.repo, f.etag));
    }
    const left = incompleteComponents(repo, settings.cacheDir);
    if (left.length) {
      throw appError('MODELS_MISSING', {
        detail: left.map((c) => `${repo.id} ${c.component}: ${c.problem}`).join('; '),
        hint: `The Hub listing of ${repo.id}@${repo.revision} lacks files FramePack needs: check the revision in models/manifest.json.`,
      });
    }
    log(`models: ${repo.id}@${repo.revision.slice(0, 8)} ready in ${snap}`);
  }
}
