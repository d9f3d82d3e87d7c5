/**
 * The `loras` input: LoRA files fetched once into a cache, read and combined in a worker thread into the
 * DiT's LoRA inputs (src/nets/dit-lora.ts), which the DiT keeps for one request (transformer.ts `setLora`).
 *
 * A LoRA is named by an http(s) URL, or as `<owner>/<repo>/<path in the repo>` on the Hugging Face Hub (its
 * main revision, `HF_ENDPOINT` or huggingface.co; public repositories). Downloads go through the server's
 * rules for file inputs (PredictorContext.download: refused address ranges, redirects re-checked, read
 * timeout) with their own size limit, FRAMEPACK_MAX_LORA_BYTES (default 2 GiB: LoRAs of this 13 B model
 * are often several hundred MB). The cache, FRAMEPACK_LORA_CACHE (default ~/.cache/framepack/loras), keeps
 * each URL's file under a name derived from the URL; a file only appears there once complete. Local paths are
 * not accepted: the server must not read files of its own machine on a client's behalf.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { HostTensor } from '../onnx/safetensors.js';
import type { DitConfig } from '../nets/dit.js';
import type { PredictorContext } from '../predictor.js';

export interface LoraInput {
  url: string;
  scale: number;
}

/** `<owner>/<repo>/<path>` on the Hub. */
const HUB_REF = /^([A-Za-z0-9][\w.-]*)\/([\w.-]+)\/(.+)$/;

/** Why `ref` names no LoRA this server can fetch, or null (checked when a request arrives). */
export function loraRefProblem(ref: string): string | null {
  if (/^https?:\/\//i.test(ref)) {
    try {
      new URL(ref);
      return null;
    } catch {
      return 'not a valid URL';
    }
  }
  if (HUB_REF.test(ref) && !ref.includes('..') && !ref.startsWith('/') && !/^[a-z]+:/i.test(ref)) return null;
  return 'expected an http(s) URL or a Hugging Face file as <owner>/<repo>/<path>';
}

/** The URL a LoRA reference is downloaded from. */
export function loraUrl(ref: string, env: NodeJS.ProcessEnv = process.env): string {
  const m = HUB_REF.exec(ref);
  if (/^https?:\/\//i.test(ref) || !m) return ref;
  const endpoint = (env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  return `${endpoint}/${m[1]}/${m[2]}/resolve/main/${m[3].split('/').map(encodeURIComponent).join('/')}`;
}

export const loraCacheDir = (env: NodeJS.ProcessEnv = process.env): string =>
  env.FRAMEPACK_LORA_CACHE || join(homedir(), '.cache', 'framepack', 'loras');

export function maxLoraBytes(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.FRAMEPACK_MAX_LORA_BYTES;
  if (v === undefined || v === '') return 2 * 1024 ** 3;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`FRAMEPACK_MAX_LORA_BYTES must be a positive integer, got ${v}`);
  return n;
}

const mb = (n: number) => `${(n / 1024 ** 2).toFixed(1)} MB`;

/** Where the cache keeps the download of `url`. */
export function loraCacheFile(url: string, env: NodeJS.ProcessEnv = process.env): string {
  const leaf = basename(new URL(url).pathname).replace(/[^\w.-]/g, '_').slice(-100) || 'lora';
  return join(loraCacheDir(env), `${createHash('sha256').update(url).digest('hex').slice(0, 16)}-${leaf}`);
}

/** The local file of LoRA `index`: found in the cache, or downloaded into it. */
export async function fetchLora(ref: string, index: number, ctx: Pick<PredictorContext, 'download' | 'log'>,
  env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const url = loraUrl(ref, env);
  const name = `loras.${index}`;
  const file = loraCacheFile(url, env);
  if (existsSync(file)) {
    ctx.log(`LoRA ${index + 1}: ${ref} from the cache (${mb((await stat(file)).size)})`);
    return file;
  }
  if (!ctx.download) throw new Error(`LoRA ${index + 1}: ${ref} is not cached and this caller cannot download`);
  await mkdir(dirname(file), { recursive: true });
  // unique per download: predictions on several GPUs may fetch the same LoRA at once (the last rename wins)
  const partial = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.partial`;
  const t0 = performance.now();
  try {
    await ctx.download(url, partial, { name, maxBytes: maxLoraBytes(env) });
    await rename(partial, file);
  } finally {
    await rm(partial, { force: true });
  }
  ctx.log(`LoRA ${index + 1}: ${ref} downloaded (${mb((await stat(file)).size)}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return file;
}

/** What lora-worker.ts is given. */
export interface LoraJob {
  files: Array<{ path: string; name: string; weight: number }>;
  config: DitConfig;
}

/** What lora-worker.ts answers: the DiT's LoRA inputs and one line per file, or the error. */
export type LoraResult = { feeds: Record<string, HostTensor>; lines: string[] } | { error: string };

/**
 * Reads and combines the files in a worker thread (a few hundred MB of float conversion and transposes
 * must not stall the event loop). Rejects with the loader's error, which names the first bad key.
 */
export function combineLoras(job: LoraJob): Promise<{ feeds: Record<string, HostTensor>; lines: string[] }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./lora-worker.js', import.meta.url), { workerData: job });
    let settled = false;
    worker.once('message', (r: LoraResult) => {
      settled = true;
      if ('error' in r) reject(new Error(r.error));
      else resolve(r);
    });
    worker.once('error', (err) => {
      settled = true;
      reject(err);
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`LoRA worker exited with code ${code}`));
    });
  });
}
