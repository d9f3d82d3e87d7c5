/**
 * The generated tiny FramePack must be read exactly like the reference fixture: same key names, shapes and
 * stored dtypes in every component (only the vocabulary rows differ: the tokenizers are its own), the same
 * config fields, and tokenizers that load with the project's loaders and apply the HunyuanVideo template.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Tokenizer } from 'tokenizers';
import { ensureTinyModel, makeTinyModel } from '../../scripts/make-tiny-model.js';
import { Checkpoint } from '../../src/onnx/safetensors.js';
import { loadClipTokenizer, loadLlamaTokenizer, LLAMA_TEMPLATE } from '../../src/framepack/text.js';
import { folderDirs, loadManifest } from '../../src/hub/manifest.js';
import { tinyModels } from '../fixtures.js';

let out: string;
before(async () => { out = await makeTinyModel(await mkdtemp(join(tmpdir(), 'tiny-model-'))); });
after(async () => { await rm(out, { recursive: true, force: true }); });

const manifest = loadManifest();
const WEIGHTS = ['textEncoder', 'textEncoder2', 'vae', 'imageEncoder', 'transformer'] as const;
/** Embedding tables whose first dimension is the tokenizer's vocabulary. */
const VOCAB_KEYS = new Set(['embed_tokens.weight', 'text_model.embeddings.token_embedding.weight']);

for (const component of WEIGHTS) {
  test(`${component}: same keys, shapes and dtypes as the fixture`, async () => {
    const ref = await Checkpoint.open(folderDirs(manifest, tinyModels())[component]);
    const ours = await Checkpoint.open(folderDirs(manifest, out)[component]);
    assert.deepEqual(ours.keys().sort(), ref.keys().sort());
    for (const key of ref.keys()) {
      const a = ours.entry(key);
      const b = ref.entry(key);
      assert.equal(a.dtype, b.dtype, `${key} dtype`);
      if (VOCAB_KEYS.has(key)) {
        assert.deepEqual(a.shape.slice(1), b.shape.slice(1), `${key} width`);
        assert.equal(a.shape[0], ours.config.vocab_size, `${key} rows = config vocab_size`);
      } else {
        assert.deepEqual(a.shape, b.shape, `${key} shape`);
      }
    }
  });

  test(`${component}: config has the fixture's fields and architecture values`, async () => {
    const ref = (await Checkpoint.open(folderDirs(manifest, tinyModels())[component])).config;
    const ours = (await Checkpoint.open(folderDirs(manifest, out)[component])).config;
    // token ids, vocabulary and library versions belong to the generator, everything else must agree
    const own = new Set(['vocab_size', 'bos_token_id', 'eos_token_id', 'pad_token_id', '_diffusers_version', 'transformers_version']);
    for (const [k, v] of Object.entries(ref)) {
      assert.ok(k in ours, `config lacks ${k}`);
      if (!own.has(k)) assert.deepEqual(ours[k], v, `config ${k}`);
    }
  });
}

test('weights are random around the fixtures\' scales, never zero', async () => {
  const ckpt = await Checkpoint.open(folderDirs(manifest, out).transformer);
  const w = await ckpt.readFloat32('transformer_blocks.0.attn.to_q.weight');   // fan-in 32
  const norm = await ckpt.readFloat32('transformer_blocks.0.attn.norm_q.weight');
  const std = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length);
  assert.ok(Math.abs(std - 1 / Math.sqrt(32)) < 0.03, `linear std ${std}`);
  assert.ok(Math.abs(norm.reduce((s, x) => s + x, 0) / norm.length - 1) < 0.1, 'norm scales around 1');
  assert.ok(w.every((x) => x !== 0));
});

test('the same seed writes the same bytes; another seed other weights', async () => {
  const again = await makeTinyModel(await mkdtemp(join(tmpdir(), 'tiny-model-')));
  const other = await makeTinyModel(await mkdtemp(join(tmpdir(), 'tiny-model-')), { seed: 7 });
  try {
    const file = join('lllyasviel', 'FramePackI2V_HY', 'diffusion_pytorch_model-00001-of-00002.safetensors');
    assert.deepEqual(await readFile(join(again, file)), await readFile(join(out, file)));
    assert.notDeepEqual(await readFile(join(other, file)), await readFile(join(out, file)));
  } finally {
    await rm(again, { recursive: true, force: true });
    await rm(other, { recursive: true, force: true });
  }
});

test('LLaMA tokenizer: BOS post-processor and the template\'s special tokens as single ids', async () => {
  const dir = folderDirs(manifest, out).tokenizer;
  const config = JSON.parse(await readFile(join(folderDirs(manifest, out).textEncoder, 'config.json'), 'utf8'));
  const raw = Tokenizer.fromFile(join(dir, 'tokenizer.json'));
  const header = raw.tokenToId('<|start_header_id|>');
  const eot = raw.tokenToId('<|eot_id|>');
  assert.equal(raw.tokenToId('<|begin_of_text|>'), config.bos_token_id);
  assert.equal(raw.tokenToId('<|end_of_text|>'), config.eos_token_id);
  assert.equal(raw.getVocabSize(true), config.vocab_size);

  const tok = loadLlamaTokenizer(dir);
  const enc = await tok.encode(LLAMA_TEMPLATE.replace('{}', 'A cat jumps onto the table.'));
  const ids = enc.ids.slice(0, enc.length);
  assert.equal(ids[0], config.bos_token_id);
  assert.equal(ids[1], header);
  assert.equal(ids[ids.length - 1], eot);
  assert.equal(ids.filter((i) => i === header).length, 2);
  assert.ok(ids.every((i) => i < config.vocab_size));
  assert.equal(enc.ids.length, 351);   // 95 + 256, padded
});

test('CLIP tokenizer: vocab.json + merges.txt, lower-cased, <|endoftext|> the highest id', async () => {
  const dir = folderDirs(manifest, out).tokenizer2;
  const config = JSON.parse(await readFile(join(folderDirs(manifest, out).textEncoder2, 'config.json'), 'utf8'));
  const vocab = JSON.parse(await readFile(join(dir, 'vocab.json'), 'utf8')) as Record<string, number>;
  const max = Math.max(...Object.values(vocab));
  assert.equal(vocab['<|endoftext|>'], max);
  assert.equal(vocab['<|startoftext|>'], config.bos_token_id);
  assert.equal(Object.keys(vocab).length, config.vocab_size);

  const tok = loadClipTokenizer(dir);
  const a = await tok.encode('A Cat jumps');
  const b = await tok.encode('a cat   jumps');
  assert.deepEqual(a.ids, b.ids);
  assert.equal(a.ids.length, 77);
  assert.equal(a.ids[0], vocab['<|startoftext|>']);
  assert.equal(a.ids[a.length - 1], max);
  assert.ok(a.length > 2 && a.length < 12, `few tokens for three words, got ${a.length}`);
});

test('ensureTinyModel writes a missing model once and keeps a complete one', async () => {
  const dir = join(await mkdtemp(join(tmpdir(), 'tiny-model-')), 'tiny');
  try {
    await ensureTinyModel(dir);
    const config = join(dir, 'lllyasviel', 'FramePackI2V_HY', 'config.json');
    const first = (await stat(config)).mtimeMs;
    await new Promise((r) => setTimeout(r, 20));
    await ensureTinyModel(dir);
    assert.equal((await stat(config)).mtimeMs, first);
    await rm(config);
    await ensureTinyModel(dir);
    assert.ok((await stat(config)).mtimeMs > first);
  } finally {
    await rm(dirname(dir), { recursive: true, force: true });
  }
});
