/**
 * Where each FramePack component lives on disk: a plain folder laid out like the Hub repositories
 * (`--models <dir>` or FRAMEPACK_MODELS), or the pinned snapshots of the Hugging Face cache, downloaded
 * first when something is missing. Every returned path is an absolute folder that Checkpoint.open and the
 * tokenizer loaders accept (in the cache, the snapshot subfolder whose files link into blobs/).
 */
import { resolve } from 'node:path';
import { appError } from '../errors.js';
import { folderProblem, snapshotDir } from './cache.js';
import { ensureDownloaded, type DownloadOptions } from './download.js';
import {
  COMPONENTS, folderDirs, loadManifest, selectComponents, type Component, type Manifest, type ModelDirs, type OptionalComponent,
} from './manifest.js';
import { hubSettings, type HubSettings } from './settings.js';

export type { ModelDirs } from './manifest.js';

export interface ResolveOptions {
  /** Plain folder of models; default FRAMEPACK_MODELS; null: the cache even when that is set. */
  models?: string | null;
  /** Hugging Face cache folder; default from HF_HUB_CACHE / HF_HOME. */
  cacheDir?: string;
  /** Optional components to provide too (the F1 transformer); the required ones always are. */
  optional?: readonly OptionalComponent[];
  /** Download what the cache lacks (default true); false only checks. */
  download?: boolean;
  log?: (line: string) => void;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  manifest?: Manifest;
  settings?: Partial<HubSettings>;
  /** Transfer details: fetch, concurrency, retries, progress interval (see DownloadOptions). */
  transfer?: Omit<DownloadOptions, 'settings' | 'log' | 'signal'>;
}

export interface ResolvedModels extends ModelDirs {
  source: 'folder' | 'hub-cache';
}

function checkFolders(dirs: ModelDirs, components: readonly Component[], hint: string): void {
  const problems = components.map((c) => [c, dirs[c] === undefined ? 'no repository in the manifest provides it' : folderProblem(dirs[c])] as const)
    .filter(([, p]) => p);
  if (problems.length) throw appError('MODELS_MISSING', { detail: problems.map(([c, p]) => `${c}: ${p}`).join('; '), hint });
}

export async function resolveModels(opts: ResolveOptions = {}): Promise<ResolvedModels> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => {});
  const optional = opts.optional ?? [];
  const components = [...COMPONENTS, ...optional];
  const manifest = selectComponents(opts.manifest ?? loadManifest(), optional);
  const folder = opts.models === null ? undefined : (opts.models ?? (env.FRAMEPACK_MODELS || undefined));

  if (folder) {
    const dirs = folderDirs(manifest, resolve(folder));
    checkFolders(dirs, components, `--models ${folder} must be laid out like the Hub repositories: <dir>/<org>/<name>/<subfolder>, ` +
      `e.g. <dir>/hunyuanvideo-community/HunyuanVideo/text_encoder/config.json and <dir>/lllyasviel/FramePackI2V_HY/config.json.`);
    log(`models: using the folder ${resolve(folder)}`);
    return { ...dirs, source: 'folder' };
  }

  const settings = hubSettings(env, { ...opts.settings, ...(opts.cacheDir ? { cacheDir: opts.cacheDir } : {}) });
  if (opts.download === false) settings.offline = true;
  await ensureDownloaded(manifest, { ...opts.transfer, settings, log, signal: opts.signal });

  const dirs = {} as ModelDirs;
  for (const r of manifest.repos) {
    for (const [c, sub] of Object.entries(r.components) as [Component, string][]) {
      dirs[c] = resolve(snapshotDir(settings.cacheDir, r.id, r.revision), sub);
    }
  }
  checkFolders(dirs, components, 'The cache changed while it was being read; run `framepack download` again.');
  return { ...dirs, source: 'hub-cache' };
}
