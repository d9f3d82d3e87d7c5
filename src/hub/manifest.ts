/**
 * models/manifest.json: which Hub repositories FramePack reads, at which commit, and which subfolder holds
 * each component. Pinning commits (not `main`) makes a deployment reproducible and lets a filled cache
 * start with no network at all, as Python's huggingface_hub does for commit revisions.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The component folders a FramePack predictor opens (each usable by Checkpoint.open or a tokenizer loader). */
export const COMPONENTS = [
  'textEncoder', 'tokenizer', 'textEncoder2', 'tokenizer2', 'vae', 'featureExtractor', 'imageEncoder', 'transformer',
] as const;
/** Components resolved (and downloaded) only when asked for: the F1 transformer of `sampling_mode` f1. */
export const OPTIONAL_COMPONENTS = ['transformerF1'] as const;
export type RequiredComponent = (typeof COMPONENTS)[number];
export type OptionalComponent = (typeof OPTIONAL_COMPONENTS)[number];
export type Component = RequiredComponent | OptionalComponent;
export type ModelDirs = Record<RequiredComponent, string> & Partial<Record<OptionalComponent, string>>;

const KNOWN: readonly string[] = [...COMPONENTS, ...OPTIONAL_COMPONENTS];

export interface ManifestRepo {
  id: string;               // "org/name"
  revision: string;         // 40-hex commit
  revisionSource: string;   // how the commit was chosen
  components: Partial<Record<Component, string>>;   // component -> subfolder ("" = repository root)
}

export interface Manifest {
  include: string[];        // basename globs of the files downloaded from each component folder
  repos: ManifestRepo[];
}

/** models/manifest.json of this checkout: the nearest one above this module (it runs from src/ or dist/src/). */
export const DEFAULT_MANIFEST = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++, dir = dirname(dir)) {
    const candidate = join(dir, 'models', 'manifest.json');
    if (existsSync(candidate)) return candidate;
  }
  return resolve('models', 'manifest.json');
})();

const COMMIT = /^[0-9a-f]{40}$/;

export function parseManifest(json: unknown, source = 'manifest'): Manifest {
  const m = json as Manifest;
  if (!m || !Array.isArray(m.repos) || !Array.isArray(m.include)) throw new Error(`${source}: expected { include: [], repos: [] }`);
  const seen = new Set<string>();
  for (const r of m.repos) {
    if (typeof r.id !== 'string' || !/^[\w.-]+\/[\w.-]+$/.test(r.id)) throw new Error(`${source}: bad repo id ${JSON.stringify(r.id)}`);
    if (!COMMIT.test(r.revision)) throw new Error(`${source}: ${r.id} revision must be a 40-hex commit, got ${JSON.stringify(r.revision)}`);
    for (const c of Object.keys(r.components)) {
      if (!KNOWN.includes(c)) throw new Error(`${source}: ${r.id} names unknown component ${c}`);
      if (seen.has(c)) throw new Error(`${source}: component ${c} is listed twice`);
      seen.add(c);
    }
  }
  const missing = COMPONENTS.filter((c) => !seen.has(c));
  if (missing.length) throw new Error(`${source}: no repository provides ${missing.join(', ')}`);
  return m;
}

export function loadManifest(file = DEFAULT_MANIFEST): Manifest {
  return parseManifest(JSON.parse(readFileSync(file, 'utf8')), file);
}

/**
 * The manifest reduced to what a run needs: every required component plus the optional ones asked for.
 * Repositories that provide nothing of that are left out (so they are neither checked nor downloaded).
 */
export function selectComponents(manifest: Manifest, optional: readonly OptionalComponent[] = []): Manifest {
  const wanted = new Set<string>([...COMPONENTS, ...optional]);
  const repos = manifest.repos
    .map((r) => ({ ...r, components: Object.fromEntries(Object.entries(r.components).filter(([c]) => wanted.has(c))) }))
    .filter((r) => Object.keys(r.components).length > 0);
  return { ...manifest, repos };
}

/** Shell-style match of a basename against `*`-globs (the only wildcard the manifest uses). */
export function included(manifest: Manifest, path: string): boolean {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return manifest.include.some((glob) => {
    const re = new RegExp('^' + glob.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$');
    return re.test(base);
  });
}

/** The plain-folder layout (`--models <dir>`): <dir>/<org>/<name>/<subfolder>, like the repositories. */
export function folderDirs(manifest: Manifest, root: string): ModelDirs {
  const dirs = {} as ModelDirs;
  for (const r of manifest.repos) {
    for (const [c, sub] of Object.entries(r.components) as [Component, string][]) {
      dirs[c] = resolve(root, ...r.id.split('/'), sub);
    }
  }
  return dirs;
}
