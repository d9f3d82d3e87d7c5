/**
 * Prompt conditioning: exact token ids against Hugging Face transformers (the real LLaMA-3 and CLIP
 * vocabularies in fixtures/tokenizers, the tiny model's tokenizers in framepack-tiny), and the whole
 * encode_prompt_conds path (template, crop 95, pad to 512, CLIP pooled) against the cases' references.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CLIP_MAX_LENGTH, CROP_START, LLAMA_MAX_PROMPT_TOKENS, LLAMA_PADDED_LENGTH, LLAMA_TEMPLATE, cropOrPadYieldMask,
  encodePrompt, loadClipTokenizer, loadLlamaTokenizer, loadTextEncoders, textEncoderLoader, tokenizeClip, tokenizeLlama, type TextEncoders,
} from '../../src/framepack/text.js';
import { loadTensors, type HostTensor } from '../../src/onnx/safetensors.js';
import { terminateWorkers } from '../../src/runtime/session.js';
import { fixture, tinyModels } from '../fixtures.js';
import { relL2 } from '../numerics.js';

const TOLERANCE = 1e-4; // fixtures README: components, relative L2

interface TokenCase { prompt: string; llama_input_ids: number[]; llama_attention_mask: number[]; clip_input_ids: number[] }

const hunyuan = () => join(tinyModels(), 'hunyuanvideo-community', 'HunyuanVideo');

async function checkTokenCases(cases: TokenCase[], llamaDir: string, clipDir: string): Promise<void> {
  const llama = loadLlamaTokenizer(llamaDir);
  const clip = loadClipTokenizer(clipDir);
  for (const c of cases) {
    const ll = await tokenizeLlama(llama, c.prompt);
    const cl = await tokenizeClip(clip, c.prompt);
    const label = JSON.stringify(c.prompt.slice(0, 40));
    assert.deepEqual(ll.ids, c.llama_input_ids, `LLaMA ids of ${label}`);
    assert.deepEqual(ll.mask, c.llama_attention_mask, `LLaMA mask of ${label}`);
    assert.deepEqual(cl.ids, c.clip_input_ids, `CLIP ids of ${label}`);
  }
}

after(() => terminateWorkers());

describe('tokenization', () => {
  it('uses the original constants and template', () => {
    const expected = JSON.parse(readFileSync(fixture('tokenizers', 'expected.json'), 'utf8'));
    assert.equal(LLAMA_TEMPLATE, expected.llama_template);
    assert.equal(CROP_START, expected.crop_start);
    assert.equal(CROP_START + LLAMA_MAX_PROMPT_TOKENS, expected.llama_max_length);
    assert.equal(CLIP_MAX_LENGTH, expected.clip_max_length);
  });

  it('BOS + template prefix is exactly crop_start tokens with the real LLaMA-3 vocabulary', async () => {
    const llama = loadLlamaTokenizer(fixture('tokenizers', 'llama3'));
    const expected = JSON.parse(readFileSync(fixture('tokenizers', 'expected.json'), 'utf8'));
    const prefix = await llama.encode(LLAMA_TEMPLATE.slice(0, LLAMA_TEMPLATE.indexOf('{}')));
    assert.equal(prefix.length, expected.template_prefix_tokens_with_bos);
    assert.equal(prefix.length, CROP_START);
  });

  it('gives transformers\' ids for every case with the real LLaMA-3 and CLIP vocabularies', async () => {
    const expected = JSON.parse(readFileSync(fixture('tokenizers', 'expected.json'), 'utf8'));
    assert.ok(expected.cases.length >= 21);
    // CLIP comes from vocab.json + merges.txt here (no tokenizer.json), as in the HunyuanVideo repository
    await checkTokenCases(expected.cases, fixture('tokenizers', 'llama3'), fixture('tokenizers', 'clip'));
  });

  it('gives the ids of the tiny model\'s own tokenizers', async () => {
    const tok = JSON.parse(readFileSync(fixture('framepack-tiny', 'components', 'tokenization.json'), 'utf8'));
    assert.equal(tok.llama_template, LLAMA_TEMPLATE);
    await checkTokenCases(tok.cases, join(hunyuan(), 'tokenizer'), join(hunyuan(), 'tokenizer_2'));
  });

  it('keeps the prompt literal (no replacement patterns, no template markers added)', async () => {
    const llama = loadLlamaTokenizer(fixture('tokenizers', 'llama3'));
    const a = await tokenizeLlama(llama, 'price $& and $1 {}');
    const b = await llama.encode(LLAMA_TEMPLATE.slice(0, -'{}<|eot_id|>'.length) + 'price $& and $1 {}<|eot_id|>');
    assert.deepEqual(a.ids, b.ids);
  });
});

describe('crop_or_pad_yield_mask', () => {
  it('zero-pads to the length and marks the real rows', () => {
    const x: HostTensor = { dtype: 'float32', dims: [1, 2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) };
    const { padded, mask } = cropOrPadYieldMask(x, 4);
    assert.deepEqual(padded.dims, [1, 4, 3]);
    assert.deepEqual(Array.from(padded.data as Float32Array), [1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(Array.from(mask.data as BigInt64Array), [1n, 1n, 0n, 0n]);
  });

  it('crops longer inputs with an all-true mask', () => {
    const x: HostTensor = { dtype: 'float32', dims: [1, 3, 1], data: Float32Array.from([1, 2, 3]) };
    const { padded, mask } = cropOrPadYieldMask(x, 2);
    assert.deepEqual(Array.from(padded.data as Float32Array), [1, 2]);
    assert.deepEqual(Array.from(mask.data as BigInt64Array), [1n, 1n]);
  });
});

describe('encodePrompt against the cases', () => {
  let enc: TextEncoders;
  const load = async () => {
    enc ??= await loadTextEncoders({
      textEncoder: join(hunyuan(), 'text_encoder'), tokenizer: join(hunyuan(), 'tokenizer'),
      textEncoder2: join(hunyuan(), 'text_encoder_2'), tokenizer2: join(hunyuan(), 'tokenizer_2'),
    }, { ep: 'cpu', precision: 'float32' });
    return enc;
  };
  after(async () => enc?.release());

  for (const name of ['teacache_cfg1', 'realcfg_rescale']) {
    it(`${name}: llama_vec, mask and clip_l_pooler`, async (t) => {
      const params = JSON.parse(readFileSync(fixture('framepack-tiny', 'cases', name, 'params.json'), 'utf8'));
      const ref = await loadTensors(fixture('framepack-tiny', 'cases', name, 'expected.safetensors'));
      const cond = await encodePrompt(await load(), params.prompt);
      assert.deepEqual(cond.llamaVec.dims, [1, LLAMA_PADDED_LENGTH, ref.llama_vec.dims[2]]);
      assert.deepEqual(Array.from(cond.llamaMask.data as BigInt64Array), Array.from(ref.llama_attention_mask.data as BigInt64Array));
      const vec = relL2(cond.llamaVec, ref.llama_vec);
      const pooled = relL2(cond.clipPooler, ref.clip_l_pooler);
      t.diagnostic(`${name} llama_vec: relative L2 ${vec.toExponential(3)}`);
      t.diagnostic(`${name} clip_l_pooler: relative L2 ${pooled.toExponential(3)}`);
      assert.ok(vec <= TOLERANCE, `llama_vec relative L2 ${vec} > ${TOLERANCE}`);
      assert.ok(pooled <= TOLERANCE, `clip_l_pooler relative L2 ${pooled} > ${TOLERANCE}`);
    });
  }

  it('realcfg_rescale: the negative prompt gives llama_vec_n and clip_l_pooler_n', async (t) => {
    const params = JSON.parse(readFileSync(fixture('framepack-tiny', 'cases', 'realcfg_rescale', 'params.json'), 'utf8'));
    assert.notEqual(params.cfg_scale, 1);
    const ref = await loadTensors(fixture('framepack-tiny', 'cases', 'realcfg_rescale', 'expected.safetensors'));
    const cond = await encodePrompt(await load(), params.negative_prompt);
    const vec = relL2(cond.llamaVec, ref.llama_vec_n);
    const pooled = relL2(cond.clipPooler, ref.clip_l_pooler_n);
    t.diagnostic(`realcfg_rescale llama_vec_n: relative L2 ${vec.toExponential(3)}`);
    t.diagnostic(`realcfg_rescale clip_l_pooler_n: relative L2 ${pooled.toExponential(3)}`);
    assert.ok(vec <= TOLERANCE, `llama_vec_n relative L2 ${vec} > ${TOLERANCE}`);
    assert.ok(pooled <= TOLERANCE, `clip_l_pooler_n relative L2 ${pooled} > ${TOLERANCE}`);
  });

  it('runs the LLaMA on one input shape for every prompt, and its real rows equal a run on them alone', async () => {
    const e = await load();
    const shapes: number[][] = [];
    const spy = { ...e, llama: { run: (feeds: Record<string, HostTensor>, o: object) => {
      shapes.push(feeds.input_ids.dims);
      return e.llama.run(feeds, o);
    } } } as unknown as TextEncoders;
    const prompt = 'a fox trots across the snow';
    const cond = await encodePrompt(spy, prompt);
    await encodePrompt(spy, 'a much longer prompt about a red fox that trots across a snowy clearing at dawn');
    assert.deepEqual(shapes, [[1, e.llamaTokenizer.maxLength], [1, e.llamaTokenizer.maxLength]]);

    const ll = await tokenizeLlama(e.llamaTokenizer, prompt);
    const ids = ll.ids.slice(0, ll.length);
    const int64 = (v: number[]): HostTensor => ({ dtype: 'int64', dims: [1, v.length], data: BigInt64Array.from(v, BigInt) });
    const alone = (await e.llama.run({ input_ids: int64(ids), attention_mask: int64(ids.map(() => 1)) },
      { outputs: ['hidden_states_minus_3'] })).hidden_states_minus_3;
    const D = alone.dims[2];
    const rows = ll.length - CROP_START;
    const expected: HostTensor = { dtype: 'float32', dims: [1, rows, D], data: (alone.data as Float32Array).subarray(CROP_START * D) };
    const got: HostTensor = { dtype: 'float32', dims: [1, rows, D], data: (cond.llamaVec.data as Float32Array).subarray(0, rows * D) };
    assert.ok(relL2(got, expected) <= 1e-6, `padded and unpadded runs differ: ${relL2(got, expected)}`);
  });

  it('the empty prompt keeps only <|eot_id|> (one row)', async () => {
    const cond = await encodePrompt(await load(), '');
    assert.equal((cond.llamaMask.data as BigInt64Array).reduce((n, v) => n + Number(v), 0), 1);
  });
});

describe('text encoders made again (placements that release them between requests)', () => {
  it('keeps the tokenizers and graphs, makes new sessions, and encodes the same', async () => {
    const dirs = {
      textEncoder: join(hunyuan(), 'text_encoder'), tokenizer: join(hunyuan(), 'tokenizer'),
      textEncoder2: join(hunyuan(), 'text_encoder_2'), tokenizer2: join(hunyuan(), 'tokenizer_2'),
    };
    const make = textEncoderLoader(dirs, { ep: 'cpu', precision: 'float32' });
    const first = await make();
    const a = await encodePrompt(first, 'a fox in the snow');
    await first.release();
    const second = await make();
    try {
      assert.equal(second.llamaTokenizer, first.llamaTokenizer);
      assert.equal(second.clipTokenizer, first.clipTokenizer);
      assert.notEqual(second.llama, first.llama);
      const b = await encodePrompt(second, 'a fox in the snow');
      assert.deepEqual(b.llamaVec.data, a.llamaVec.data);
      assert.deepEqual(b.clipPooler.data, a.clipPooler.data);
    } finally {
      await second.release();
    }
  });
});
