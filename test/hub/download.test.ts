/**
 * Downloads from a local fake Hub serving the tiny FramePack under the real repository names and the
 * manifest's pinned commits: cache layout, selection of files, verification, resume after a cut, checksum
 * failure, offline reuse and the error paths, each with the catalogue code a user would see.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, lstatSync, readlinkSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { downloadFileToCacheDir } from '@huggingface/hub';
import { makeTinyModel } from '../../scripts/make-tiny-model.js';
import { main as downloadMain } from '../../src/cli/download.js';
import { AppError } from '../../src/errors.js';
import { cacheRepoRoot, repoFolder } from '../../src/hub/cache.js';
import { lockPath } from '../../src/hub/lock.js';
import { loadManifest, type Manifest } from '../../src/hub/manifest.js';
import { resolveModels, type ResolveOptions } from '../../src/hub/resolve.js';
import { hubSettings } from '../../src/hub/settings.js';
import { Checkpoint } from '../../src/onnx/safetensors.js';
import { tinyModels } from '../fixtures.js';
import { FakeHub } from './fake-hub.js';

const manifest = loadManifest();
let work: string;
let tiny: string;
let hub: FakeHub;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'hub-test-'));
  tiny = await makeTinyModel(join(work, 'tiny'));
  // files the repositories have but FramePack must not download
  const extra = [
    ['hunyuanvideo-community/HunyuanVideo/transformer/diffusion_pytorch_model.safetensors', 'x'.repeat(5000)],
    ['hunyuanvideo-community/HunyuanVideo/model_index.json', '{}'],
    ['hunyuanvideo-community/HunyuanVideo/text_encoder/pytorch_model.bin', 'pickle'],
    ['lllyasviel/FramePackI2V_HY/README.md', '# FramePack'],
    ['lllyasviel/FramePackI2V_HY/.gitattributes', '*.safetensors filter=lfs'],
  ];
  for (const [p, text] of extra) {
    await mkdir(dirname(join(tiny, p)), { recursive: true });
    await writeFile(join(tiny, p), text);
  }
  hub = await new FakeHub(manifest.repos.map((r) => ({ id: r.id, revision: r.revision, dir: join(tiny, ...r.id.split('/')) }))).start();
});

after(async () => {
  await hub.close();
  await rm(work, { recursive: true, force: true });
});

function reset(): void {
  hub.token = undefined;
  hub.cut = undefined;
  hub.corrupt.clear();
  hub.ignoreRange = false;
  hub.requests.length = 0;
}

async function freshCache(): Promise<string> {
  return mkdtemp(join(work, 'cache-'));
}

/** resolveModels against the fake Hub, isolated from this machine's HF_* variables. */
function fromHub(cacheDir: string, logs: string[] = [], extra: Partial<ResolveOptions> = {}) {
  return resolveModels({
    models: null, cacheDir, env: { HF_HOME: join(work, 'hf-home') }, settings: { endpoint: hub.url },
    log: (l) => logs.push(l), ...extra,
    transfer: { retries: 0, backoffMs: 0, progressIntervalMs: 0, ...extra.transfer },
  });
}

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((p) => !lstatSync(join(dir, p)).isDirectory());
}

const code = (c: string) => (err: unknown) => err instanceof AppError && err.code === c;
const SHARD = 'diffusion_pytorch_model-00001-of-00002.safetensors';
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

test('downloads only the files FramePack reads into the HF cache layout, verified, with progress', async () => {
  reset();
  const cache = await freshCache();
  const logs: string[] = [];
  const dirs = await fromHub(cache, logs);

  assert.equal(dirs.source, 'hub-cache');
  const fp = manifest.repos.find((r) => r.id === 'lllyasviel/FramePackI2V_HY')!;
  assert.equal(dirs.transformer, join(repoFolder(cache, fp.id), 'snapshots', fp.revision));
  assert.equal(cacheRepoRoot(dirs.vae), repoFolder(cache, 'hunyuanvideo-community/HunyuanVideo'));

  for (const [component, dir] of Object.entries(dirs)) {
    if (component === 'source') continue;
    const names = files(dir);
    assert.ok(names.length > 0, component);
    for (const name of names) {
      const link = join(dir, name);
      assert.ok(lstatSync(link).isSymbolicLink(), `${link} is a symlink`);
      const target = resolve(dirname(link), readlinkSync(link));
      assert.match(target, /\/blobs\/[0-9a-f]{40,64}$/);
    }
  }
  // every downloaded file equals the served one; LFS blobs are named by their sha256
  const shard = join(dirs.transformer, SHARD);
  assert.deepEqual(readFileSync(shard), readFileSync(join(tiny, 'lllyasviel/FramePackI2V_HY', SHARD)));
  assert.ok(readlinkSync(shard).endsWith(sha256(shard)));
  assert.deepEqual(readFileSync(join(dirs.tokenizer2, 'merges.txt')), readFileSync(join(tiny, 'hunyuanvideo-community/HunyuanVideo/tokenizer_2/merges.txt')));

  // nothing FramePack does not read, nothing left half-written
  assert.equal(hub.count('README.md') + hub.count('model_index.json') + hub.count('/transformer/') + hub.count('pytorch_model.bin'), 0);
  assert.ok(!existsSync(join(repoFolder(cache, 'hunyuanvideo-community/HunyuanVideo'), 'snapshots', manifest.repos[0].revision, 'transformer')));
  assert.ok(files(cache).every((f) => !f.endsWith('.incomplete')));

  // the toolkit opens the snapshot folders as they are
  const ckpt = await Checkpoint.open(dirs.transformer);
  assert.equal(ckpt.config.num_layers, 2);
  assert.ok(ckpt.has('x_embedder.proj.weight'));
  assert.ok(ckpt.entry('x_embedder.proj.weight').file.includes('/blobs/'));

  assert.ok(logs.some((l) => /^download \S+ \S+ \/ \S+ \S+ \(\d+\.\d%\) at \S+ \S+\/s, ETA \S+: /.test(l)), logs.join('\n'));
  assert.ok(logs.some((l) => /\(100\.0%\)/.test(l)));
  assert.ok(logs.some((l) => l.startsWith('models: verified lllyasviel/FramePackI2V_HY')));
});

test('the cache it writes is the one @huggingface/hub and Python read: same blob and snapshot paths', async () => {
  reset();
  const cache = await freshCache();
  const dirs = await fromHub(cache);
  const fp = manifest.repos.find((r) => r.id === 'lllyasviel/FramePackI2V_HY')!;
  const other = await freshCache();
  const path = await downloadFileToCacheDir({ repo: fp.id, path: SHARD, revision: fp.revision, hubUrl: hub.url, cacheDir: other });
  assert.equal(path.replace(other, ''), join(dirs.transformer, SHARD).replace(cache, ''));
  assert.equal(readlinkSync(path), readlinkSync(join(dirs.transformer, SHARD)));
});

test('a filled cache is reused without any request, online or with HF_HUB_OFFLINE=1', async () => {
  reset();
  const cache = await freshCache();
  const first = await fromHub(cache);
  const before = hub.requests.length;
  assert.ok(before > 0);
  const again = await fromHub(cache);
  assert.equal(hub.requests.length, before);
  assert.deepEqual(again, first);

  const offline = await resolveModels({
    models: null, cacheDir: cache, env: { HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:1' },
  });
  assert.deepEqual(offline, first);
  assert.equal(hub.requests.length, before);
});

test('a cut connection leaves a partial file that the next run resumes with a Range request', async () => {
  reset();
  const cache = await freshCache();
  const full = statSync(join(tiny, 'lllyasviel/FramePackI2V_HY', SHARD)).size;
  hub.cut = { path: SHARD, afterBytes: 100_000, times: 1 };
  await assert.rejects(fromHub(cache), (err: AppError) =>
    err.code === 'DOWNLOAD_INTERRUPTED' && err.message.includes(SHARD) && /resumes/.test(err.message));

  const blobs = join(repoFolder(cache, 'lllyasviel/FramePackI2V_HY'), 'blobs');
  const partial = readdirSync(blobs).find((f) => f.endsWith('.incomplete'));
  assert.ok(partial, 'partial file kept');
  const have = statSync(join(blobs, partial)).size;
  assert.ok(have > 0 && have < full, `partial ${have} of ${full}`);

  const logs: string[] = [];
  const dirs = await fromHub(cache, logs);
  const ranged = hub.requests.filter((r) => r.url.startsWith('/cdn/') && r.range);
  assert.deepEqual(ranged.map((r) => r.range), [`bytes=${have}-`]);
  assert.deepEqual(readFileSync(join(dirs.transformer, SHARD)), readFileSync(join(tiny, 'lllyasviel/FramePackI2V_HY', SHARD)));
  assert.ok(logs.some((l) => l.includes('already there from an earlier attempt')));
  assert.ok(!readdirSync(blobs).some((f) => f.endsWith('.incomplete')));
});

test('within one run, dropped connections are retried from where they stopped', async () => {
  reset();
  const cache = await freshCache();
  hub.cut = { path: SHARD, afterBytes: 50_000, times: 1 };
  const dirs = await fromHub(cache, [], { transfer: { retries: 2, backoffMs: 0 } });
  assert.equal(hub.requests.filter((r) => r.url.startsWith('/cdn/') && r.range === 'bytes=50000-').length, 1);
  const shard = join(dirs.transformer, SHARD);
  assert.ok(readlinkSync(shard).endsWith(sha256(shard)));
});

test('a server that ignores Range: the file starts over and still verifies', async () => {
  reset();
  const cache = await freshCache();
  hub.cut = { path: SHARD, afterBytes: 80_000, times: 1 };
  await assert.rejects(fromHub(cache), code('DOWNLOAD_INTERRUPTED'));
  hub.ignoreRange = true;
  const dirs = await fromHub(cache);
  const shard = join(dirs.transformer, SHARD);
  assert.ok(readlinkSync(shard).endsWith(sha256(shard)));
});

test('a corrupted file fails verification, is removed, and the next run fetches it afresh', async () => {
  reset();
  const cache = await freshCache();
  hub.corrupt.add('vae/diffusion_pytorch_model.safetensors');
  await assert.rejects(fromHub(cache), (err: AppError) =>
    err.code === 'DOWNLOAD_CORRUPT' && err.message.includes('vae/diffusion_pytorch_model.safetensors') && /sha256 [0-9a-f]{64}, expected/.test(err.message));
  const hv = repoFolder(cache, 'hunyuanvideo-community/HunyuanVideo');
  const good = createHash('sha256').update(readFileSync(join(tiny, 'hunyuanvideo-community/HunyuanVideo/vae/diffusion_pytorch_model.safetensors'))).digest('hex');
  assert.ok(!existsSync(join(hv, 'blobs', good)));
  assert.ok(!existsSync(join(hv, 'blobs', `${good}.incomplete`)));
  await assert.rejects(resolveModels({ models: null, cacheDir: cache, env: { HF_HUB_OFFLINE: '1' } }), code('MODELS_MISSING'));

  // small files are checked against their git blob id
  hub.corrupt.clear();
  hub.corrupt.add('vae/config.json');
  await assert.rejects(fromHub(await freshCache()), (err: AppError) => err.code === 'DOWNLOAD_CORRUPT' && /git blob id/.test(err.message));

  hub.corrupt.clear();
  const dirs = await fromHub(cache);
  assert.ok(readlinkSync(join(dirs.vae, 'diffusion_pytorch_model.safetensors')).endsWith(good));
});

test('errors: unreachable Hub, offline with an empty cache, refused token, unknown revision, full disk', async () => {
  reset();
  await assert.rejects(
    resolveModels({ models: null, cacheDir: await freshCache(), env: {}, settings: { endpoint: 'http://127.0.0.1:1' }, transfer: { retries: 0 } }),
    (err: AppError) => err.code === 'HUB_UNREACHABLE' && /HF_ENDPOINT/.test(err.message) && /HF_HUB_OFFLINE=1/.test(err.message));

  await assert.rejects(resolveModels({ models: null, cacheDir: await freshCache(), env: { HF_HUB_OFFLINE: 'true' } }),
    (err: AppError) => err.code === 'MODELS_MISSING' && /HF_HUB_OFFLINE/.test(err.message) && /textEncoder/.test(err.message));

  hub.token = 'hf_secret';
  await assert.rejects(fromHub(await freshCache()), (err: AppError) => err.code === 'HUB_AUTH' && /HF_TOKEN/.test(err.message));
  hub.requests.length = 0;
  const dirs = await resolveModels({
    models: null, cacheDir: await freshCache(), env: { HF_TOKEN: 'hf_secret', HF_ENDPOINT: hub.url }, transfer: { retries: 0 },
  });
  assert.equal(dirs.source, 'hub-cache');
  assert.ok(hub.requests.filter((r) => !r.url.startsWith('/cdn/')).every((r) => r.auth === 'Bearer hf_secret'));
  hub.token = undefined;

  const moved: Manifest = { ...manifest, repos: manifest.repos.map((r) => (r.id === 'lllyasviel/FramePackI2V_HY' ? { ...r, revision: 'f'.repeat(40) } : r)) };
  await assert.rejects(fromHub(await freshCache(), [], { manifest: moved }),
    (err: AppError) => err.code === 'HUB_NOT_FOUND' && err.message.includes('f'.repeat(40)) && /manifest/.test(err.message));

  hub.requests.length = 0;
  await assert.rejects(fromHub(await freshCache(), [], { transfer: { freeBytes: async () => 1000 } }),
    (err: AppError) => err.code === 'DISK_FULL' && /1000 B free/.test(err.message) && /resume/.test(err.message));
  assert.equal(hub.count('/resolve/') + hub.count('/cdn/'), 0);
});

test('a plain folder (--models / FRAMEPACK_MODELS) is used as it is, and checked', async () => {
  const dirs = await resolveModels({ models: tiny, env: {} });
  assert.equal(dirs.source, 'folder');
  assert.equal(dirs.tokenizer2, join(tiny, 'hunyuanvideo-community', 'HunyuanVideo', 'tokenizer_2'));
  assert.equal(dirs.transformer, join(tiny, 'lllyasviel', 'FramePackI2V_HY'));
  const viaEnv = await resolveModels({ env: { FRAMEPACK_MODELS: tiny } });
  assert.deepEqual(viaEnv, dirs);

  const partial = join(work, 'partial');
  await makeTinyModel(partial);
  await rm(join(partial, 'hunyuanvideo-community', 'HunyuanVideo', 'vae'), { recursive: true });
  await rm(join(partial, 'lllyasviel', 'FramePackI2V_HY', 'diffusion_pytorch_model-00002-of-00002.safetensors'));
  await assert.rejects(resolveModels({ models: partial, env: {} }), (err: AppError) =>
    err.code === 'MODELS_MISSING' && /vae: .*does not exist/.test(err.message) &&
    /transformer: .*lacks diffusion_pytorch_model-00002-of-00002/.test(err.message) && /<org>\/<name>\/<subfolder>/.test(err.message));
});

test('settings follow huggingface_hub: HF_HUB_CACHE > HF_HOME, HF_ENDPOINT, HF_TOKEN or the token file, HF_HUB_OFFLINE', async () => {
  assert.equal(hubSettings({ HF_HOME: '/data/hf' }).cacheDir, '/data/hf/hub');
  assert.equal(hubSettings({ HF_HOME: '/data/hf', HF_HUB_CACHE: '/fast/hub' }).cacheDir, '/fast/hub');
  assert.equal(hubSettings({ XDG_CACHE_HOME: '/xdg' }).cacheDir, '/xdg/huggingface/hub');
  assert.equal(hubSettings({ HF_ENDPOINT: 'https://hf-mirror.example/' }).endpoint, 'https://hf-mirror.example');
  assert.equal(hubSettings({ HF_HOME: '/nonexistent' }).endpoint, 'https://huggingface.co');
  const home = await mkdtemp(join(work, 'home-'));
  await writeFile(join(home, 'token'), 'hf_fromfile\n');
  assert.equal(hubSettings({ HF_HOME: home }).token, 'hf_fromfile');
  assert.equal(hubSettings({ HF_HOME: home, HF_TOKEN: 'hf_env' }).token, 'hf_env');
  for (const v of ['1', 'true', 'YES', 'on']) assert.equal(hubSettings({ HF_HUB_OFFLINE: v }).offline, true);
  for (const v of ['0', 'false', '']) assert.equal(hubSettings({ HF_HUB_OFFLINE: v }).offline, false);
});

test('`framepack download --models-cache <dir>` fills the cache and prints the component folders', async () => {
  reset();
  const cache = await freshCache();
  const saved = { ...process.env };
  const write = process.stdout.write;
  const errWrite = process.stderr.write;
  let out = '';
  let err = '';
  try {
    for (const k of ['HF_TOKEN', 'HF_HUB_OFFLINE', 'FRAMEPACK_MODELS', 'HF_HUB_CACHE']) delete process.env[k];
    process.env.HF_ENDPOINT = hub.url;
    process.env.HF_HOME = join(work, 'cli-home');
    process.stdout.write = ((s: string) => { out += s; return true; }) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => { err += s; return true; }) as typeof process.stderr.write;
    await downloadMain(['--models-cache', cache]);
  } finally {
    process.stdout.write = write;
    process.stderr.write = errWrite;
    process.env = saved;
  }
  const dirs = JSON.parse(out) as Record<string, string>;
  assert.ok(dirs.transformer.startsWith(cache));
  assert.ok(existsSync(join(dirs.textEncoder, 'config.json')));
  assert.equal(dirs.transformerF1, undefined, 'the F1 transformer only with --f1');
  assert.equal(hub.count('FramePack_F1_I2V_HY'), 0);
  assert.match(err, /models: verified/);
  await assert.rejects(downloadMain(['--bogus']), code('CLI_USAGE'));
});

test('the F1 transformer is fetched when asked for (`optional`), beside the others already there', async () => {
  reset();
  const cache = await freshCache();
  await fromHub(cache);
  const f1 = manifest.repos.find((r) => r.id === 'lllyasviel/FramePack_F1_I2V_HY_20250503')!;
  assert.ok(!existsSync(repoFolder(cache, f1.id)));
  hub.requests.length = 0;
  const logs: string[] = [];
  const dirs = await fromHub(cache, logs, { optional: ['transformerF1'] });
  assert.equal(dirs.transformerF1, join(repoFolder(cache, f1.id), 'snapshots', f1.revision));
  assert.deepEqual(readFileSync(join(dirs.transformerF1!, SHARD)), readFileSync(join(tiny, 'lllyasviel/FramePack_F1_I2V_HY_20250503', SHARD)));
  // only the F1 repository is listed and fetched (LFS files through the CDN redirect)
  assert.ok(hub.requests.every((r) => r.url.includes('FramePack_F1_I2V_HY') || r.url.startsWith('/cdn/')), hub.requests.map((r) => r.url).join('\n'));
  assert.ok(logs.some((l) => l.startsWith('models: verified lllyasviel/FramePack_F1_I2V_HY_20250503')), logs.join('\n'));
  // a plain folder without it names the missing component
  await assert.rejects(resolveModels({ models: tinyModels(), env: {}, optional: ['transformerF1'] }),
    (err: unknown) => err instanceof AppError && err.code === 'MODELS_MISSING' && /transformerF1: /.test(err.message));
});

test('a blob another live process is downloading is waited for; a dead owner\'s lock is taken over', async () => {
  reset();
  const cache = await freshCache();
  const fp = manifest.repos.find((r) => r.id === 'lllyasviel/FramePackI2V_HY')!;
  const etag = sha256(join(tiny, 'lllyasviel/FramePackI2V_HY', SHARD));
  const other = spawn('sleep', ['30']);
  try {
    await mkdir(dirname(lockPath(cache, fp.id, etag)), { recursive: true });
    await writeFile(lockPath(cache, fp.id, etag), String(other.pid));
    // a lock left by a process that no longer exists
    const vae = sha256(join(tiny, 'hunyuanvideo-community/HunyuanVideo/vae/diffusion_pytorch_model.safetensors'));
    await mkdir(dirname(lockPath(cache, 'hunyuanvideo-community/HunyuanVideo', vae)), { recursive: true });
    await writeFile(lockPath(cache, 'hunyuanvideo-community/HunyuanVideo', vae), '999999999');

    const logs: string[] = [];
    const run = fromHub(cache, logs);
    for (let t = 0; t < 200 && !logs.some((l) => l.includes('waiting for process')); t++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(logs.some((l) => l.includes(`waiting for process ${other.pid}`)), logs.join('\n'));
    assert.equal(hub.requests.filter((r) => r.url.includes(etag)).length, 0);
    other.kill();
    const dirs = await run;
    assert.ok(readlinkSync(join(dirs.transformer, SHARD)).endsWith(etag));
    assert.ok(!existsSync(lockPath(cache, fp.id, etag)));
  } finally {
    other.kill();
  }
});
