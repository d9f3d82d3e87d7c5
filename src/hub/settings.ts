/**
 * Where the Hub is and how to talk to it, read from the same environment variables the Python
 * `huggingface_hub` uses, so a cache filled by Python tools is shared as is:
 *
 *   HF_HUB_CACHE > HUGGINGFACE_HUB_CACHE > $HF_HOME/hub > $XDG_CACHE_HOME/huggingface/hub > ~/.cache/huggingface/hub
 *   HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (or $HF_HOME/token, as `hf auth login` writes it),
 *   HF_HUB_OFFLINE=1 (never touch the network; use what the cache holds).
 *
 * @huggingface/hub reads only the cache variables itself; the rest is passed to it explicitly.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export interface HubSettings {
  cacheDir: string;
  endpoint: string;
  token: string | undefined;
  offline: boolean;
}

/** huggingface_hub's truthy spellings for boolean variables. */
const TRUE_VALUES = new Set(['1', 'on', 'yes', 'true']);

export function envFlag(value: string | undefined): boolean {
  return value !== undefined && TRUE_VALUES.has(value.trim().toLowerCase());
}

function hfHome(env: NodeJS.ProcessEnv): string {
  return env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
}

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.HF_HUB_CACHE ?? env.HUGGINGFACE_HUB_CACHE ?? join(hfHome(env), 'hub'));
}

function readToken(env: NodeJS.ProcessEnv): string | undefined {
  const fromEnv = env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN;
  if (fromEnv?.trim()) return fromEnv.trim();
  const file = env.HF_TOKEN_PATH ?? join(hfHome(env), 'token');
  if (!existsSync(file)) return undefined;
  const token = readFileSync(file, 'utf8').trim();
  return token || undefined;
}

export function hubSettings(env: NodeJS.ProcessEnv = process.env, overrides: Partial<HubSettings> = {}): HubSettings {
  return {
    cacheDir: overrides.cacheDir ? resolve(overrides.cacheDir) : defaultCacheDir(env),
    endpoint: (overrides.endpoint ?? env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    token: overrides.token ?? readToken(env),
    offline: overrides.offline ?? (envFlag(env.HF_HUB_OFFLINE) || envFlag(env.TRANSFORMERS_OFFLINE)),
  };
}
