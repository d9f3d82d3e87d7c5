/** The `loras` input's files: references, the download into the cache, the worker that combines them. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ditConfig } from '../../src/nets/dit.js';
import { Checkpoint } from '../../src/onnx/safetensors.js';
import { combineLoras, fetchLora, loraCacheFile, loraRefProblem, loraUrl } from '../../src/framepack/lora-files.js';
import { inputSchema } from '../../src/framepack/inputs.js';
import { tinyModels } from '../fixtures.js';

const LORA_DIR = new URL('../../../test/fixtures/lora/', import.meta.url).pathname;

test('references: http(s) URLs and Hub files are accepted, anything else is named', () => {
  assert.equal(loraRefProblem('https://example.com/a/b.safetensors'), null);
  assert.equal(loraRefProblem('lllyasviel/FramePack_LoRA/dir/x.safetensors'), null);
  assert.match(loraRefProblem('just-a-name') ?? '', /expected an http\(s\) URL or a Hugging Face file/);
  assert.match(loraRefProblem('a/b/../../etc/passwd') ?? '', /expected/);
  for (const local of ['/etc/passwd', 'file:///etc/passwd', '/home/u/lora.safetensors']) assert.match(loraRefProblem(local) ?? '', /expected/, local);
  assert.equal(loraUrl('owner/repo/sub dir/x.safetensors', {}), 'https://huggingface.co/owner/repo/resolve/main/sub%20dir/x.safetensors');
  assert.equal(loraUrl('owner/repo/x.safetensors', { HF_ENDPOINT: 'https://mirror.example/' }), 'https://mirror.example/owner/repo/resolve/main/x.safetensors');
  assert.equal(loraUrl('https://example.com/x.safetensors', {}), 'https://example.com/x.safetensors');
});

test('the input schema takes a list of {url, scale}, scale 1 by default, and names bad entries', () => {
  const base = { input_image: 'https://example.com/a.png', prompt: 'x' };
  assert.deepEqual(inputSchema.parse(base).loras, []);
  assert.deepEqual(inputSchema.parse({ ...base, loras: [{ url: 'o/r/f.safetensors' }] }).loras, [{ url: 'o/r/f.safetensors', scale: 1 }]);
  const bad = inputSchema.safeParse({ ...base, loras: [{ url: 'o/r/f.safetensors', scale: 9 }, { url: 'nope' }] });
  assert.ok(!bad.success);
  assert.deepEqual(bad.error.issues.map((i) => i.path.join('.')), ['loras.0.scale', 'loras.1.url']);
});

test('a LoRA is downloaded once into the cache, then found there', async () => {
  const cache = await mkdtemp(join(tmpdir(), 'lora-cache-'));
  const env = { FRAMEPACK_LORA_CACHE: cache, FRAMEPACK_MAX_LORA_BYTES: '12345' };
  const downloads: Array<{ url: string; name: string; maxBytes: number }> = [];
  const logs: string[] = [];
  const ctx = {
    log: (l: string) => logs.push(l),
    async download(url: string, file: string, o: { name: string; maxBytes: number }) {
      downloads.push({ url, name: o.name, maxBytes: o.maxBytes });
      await writeFile(file, 'bytes');
    },
  };
  try {
    const a = await fetchLora('owner/repo/x.safetensors', 2, ctx, env);
    const b = await fetchLora('owner/repo/x.safetensors', 0, ctx, env);
    assert.equal(a, b);
    // where a file placed ahead of a request is found (scripts/make-random-lora.ts --cache-for)
    assert.equal(a, loraCacheFile('https://huggingface.co/owner/repo/resolve/main/x.safetensors', env));
    assert.deepEqual(downloads, [{ url: 'https://huggingface.co/owner/repo/resolve/main/x.safetensors', name: 'loras.2', maxBytes: 12345 }]);
    assert.match(logs[0], /^LoRA 3: owner\/repo\/x\.safetensors downloaded \(0\.0 MB\) in /);
    assert.match(logs[1], /^LoRA 1: owner\/repo\/x\.safetensors from the cache/);
    // a failed download leaves nothing behind
    await assert.rejects(fetchLora('https://example.com/y.safetensors', 0, { ...ctx, download: async (_u, f) => { await writeFile(f, 'x'); throw new Error('boom'); } }, env), /boom/);
    assert.deepEqual((await readdir(cache)).length, 1);
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('the worker combines files and reports a bad key by name', async () => {
  const config = ditConfig((await Checkpoint.open(join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY'))).config);
  const r = await combineLoras({ config, files: [{ path: join(LORA_DIR, 'musubi_framepack.safetensors'), name: 'm', weight: 0.5 }] });
  assert.deepEqual(r.lines, ['m: 40 layers, rank 4, weight 0.5']);
  assert.deepEqual(r.feeds['lora_a:transformer_blocks.0.attn.to_q'].dims, [32, 4]);
  const dir = await mkdtemp(join(tmpdir(), 'lora-bad-'));
  try {
    await copyFile(join(tinyModels(), 'lllyasviel', 'FramePackI2V_HY', 'diffusion_pytorch_model-00001-of-00002.safetensors'), join(dir, 'not-a-lora.safetensors'));
    await assert.rejects(combineLoras({ config, files: [{ path: join(dir, 'not-a-lora.safetensors'), name: 'weights.safetensors', weight: 1 }] }),
      /^Error: LoRA weights\.safetensors: key "[^"]+": not a lora_A\/lora_B, lora_down\/lora_up or alpha key$/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
