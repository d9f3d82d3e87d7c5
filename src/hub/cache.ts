/**
 * The Hugging Face cache layout, shared with Python's huggingface_hub:
 *
 *   <cache>/models--<org>--<name>/blobs/<etag>                 file contents, named by sha256 (LFS) or git blob id
 *   <cache>/models--<org>--<name>/blobs/<etag>.incomplete      a download in progress (resumed from its size)
 *   <cache>/models--<org>--<name>/snapshots/<commit>/<path>    relative symlink to ../../blobs/<etag>
 *
 * A snapshot link is made only after its blob is verified, so a link means "this file is whole". Within a
 * component folder the anchor file (config.json, or tokenizer_config.json / preprocessor_config.json for
 * folders without one) is linked last, so its presence means the whole folder is there.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, rm, symlink } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';

/** Files whose presence marks a finished component folder, in order of preference. */
export const ANCHORS = ['config.json', 'tokenizer_config.json', 'preprocessor_config.json'] as const;

export function repoFolder(cacheDir: string, repoId: string): string {
  return join(cacheDir, `models--${repoId.replace('/', '--')}`);
}

export function snapshotDir(cacheDir: string, repoId: string, revision: string): string {
  return join(repoFolder(cacheDir, repoId), 'snapshots', revision);
}

export function blobPath(cacheDir: string, repoId: string, etag: string): string {
  return join(repoFolder(cacheDir, repoId), 'blobs', etag);
}

/**
 * The `models--org--name` folder above an HF-cache snapshot folder, or null for a plain folder. ORT accepts
 * external data under this folder as `blobs/<sha256>` but rejects the snapshot symlinks.
 */
export function cacheRepoRoot(dir: string): string | null {
  const parts = dir.split(sep);
  const i = parts.lastIndexOf('snapshots');
  if (i < 1 || !parts[i - 1].startsWith('models--')) return null;
  return parts.slice(0, i).join(sep);
}

/** Links snapshots/<commit>/<path> to its blob with a relative symlink, as huggingface_hub does. */
export async function linkSnapshot(link: string, blob: string): Promise<void> {
  await mkdir(dirname(link), { recursive: true });
  await rm(link, { force: true });
  try {
    await symlink(relative(dirname(link), blob), link);
  } catch (err) {
    // Filesystems without symlinks: huggingface_hub copies instead; a hardlink costs no space.
    const { link: hardlink } = await import('node:fs/promises');
    await hardlink(blob, link).catch(() => { throw err; });
  }
}

/** The anchor file of a component, given the names of its files. */
export function anchorOf(names: string[]): string | undefined {
  const bases = new Set(names.map((n) => basename(n)));
  return ANCHORS.find((a) => bases.has(a));
}

/**
 * Why a component folder is not usable, or null when it is: an anchor file, and for model folders (those with
 * config.json) the weights: every shard an index names, or at least one .safetensors file.
 */
export function folderProblem(dir: string): string | null {
  if (!existsSync(dir)) return `${dir} does not exist`;
  const anchor = ANCHORS.find((a) => existsSync(join(dir, a)));
  if (!anchor) {
    const names = ['tokenizer.json', 'vocab.json'].filter((n) => existsSync(join(dir, n)));
    return names.length ? `${dir} has ${names.join(', ')} but no tokenizer_config.json` : `${dir} has none of ${ANCHORS.join(', ')}`;
  }
  if (anchor !== 'config.json') return null;
  const index = ['model.safetensors.index.json', 'diffusion_pytorch_model.safetensors.index.json'].find((n) => existsSync(join(dir, n)));
  if (index) {
    const map = (JSON.parse(readFileSync(join(dir, index), 'utf8')) as { weight_map?: Record<string, string> }).weight_map ?? {};
    const missing = [...new Set(Object.values(map))].filter((f) => !existsSync(join(dir, f)));
    return missing.length ? `${dir} lacks ${missing.join(', ')} (named by ${index})` : null;
  }
  const single = ['model.safetensors', 'diffusion_pytorch_model.safetensors'].find((n) => existsSync(join(dir, n)));
  return single ? null : `${dir} has config.json but no .safetensors weights`;
}

export function sizeOf(file: string): number {
  try { return statSync(file).size; } catch { return 0; }
}
