/**
 * Prompt conditioning: the two tokenizers and the text encoders, exactly as FramePack's
 * `diffusers_helper/hunyuan.py::encode_prompt_conds` does it.
 *
 * LLaMA branch: the prompt goes into HunyuanVideo's system template (diffusers `DEFAULT_PROMPT_TEMPLATE`),
 * is tokenized to at most 95 + 256 tokens (BOS from the tokenizer's post-processor, the template's
 * `<|...|>` markers as special tokens), the first 95 tokens (BOS + template prefix) are cropped from
 * hidden_states[-3], and the rest (prompt + trailing `<|eot_id|>`) is zero-padded to 512 rows with a mask.
 * CLIP branch: the raw prompt, BOS + at most 75 tokens + EOS, padded to 77 with `<|endoftext|>`;
 * the pooled output is the final-layer-normed state at the first EOS.
 *
 * Tokenizers: Hugging Face's Rust `tokenizers` (the same crate and version as the Python reference).
 * LLaMA loads the repository's tokenizer.json. CLIP loads tokenizer.json when the repository has one,
 * otherwise a tokenizer.json equal to what transformers' CLIP converter makes is assembled from
 * vocab.json + merges.txt.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from 'tokenizers';
import type { BuiltModel, Precision } from '../onnx/graph.js';
import { Checkpoint, type HostTensor } from '../onnx/safetensors.js';
import { buildClipText } from '../nets/clip.js';
import { buildLlama } from '../nets/llama.js';
import { Session, type ExecutionProvider } from '../runtime/session.js';

/** diffusers 0.33.1 `DEFAULT_PROMPT_TEMPLATE["template"]`; `{}` is replaced by the prompt. */
export const LLAMA_TEMPLATE =
  '<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: ' +
  '1. The main content and theme of the video.' +
  '2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects.' +
  '3. Actions, events, behaviors temporal relationships, physical movement changes of the objects.' +
  '4. background environment, light, style and atmosphere.' +
  '5. camera angles, movements, and transitions used in the video:<|eot_id|>' +
  '<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>';

/** Tokens of BOS + template prefix, cropped from the LLaMA output (a constant in the original, not measured). */
export const CROP_START = 95;
/** Most prompt tokens kept after the crop (the tokenizer's max_length is CROP_START + this). */
export const LLAMA_MAX_PROMPT_TOKENS = 256;
/** Rows of the padded LLaMA conditioning handed to the transformer. */
export const LLAMA_PADDED_LENGTH = 512;
/** CLIP context length. */
export const CLIP_MAX_LENGTH = 77;

export interface TokenizedPrompt {
  /** token ids, padded on the right to the tokenizer's max length */
  ids: number[];
  /** 1 for real tokens, 0 for padding */
  mask: number[];
  /** number of real tokens (the mask's sum) */
  length: number;
}

/** A tokenizer with the original's truncation and padding settings baked in. */
export interface PromptTokenizer {
  readonly maxLength: number;
  readonly padId: number;
  encode(text: string): Promise<TokenizedPrompt>;
}

// ------------------------------------------------------------------------------------------------------
// Loading

/** Reads a special-token name from tokenizer_config.json, whose values are strings or `{content}` objects. */
function configToken(config: Record<string, unknown>, name: string): string | undefined {
  const v = config[name];
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return undefined;
}

function readConfig(dir: string): Record<string, unknown> {
  const p = join(dir, 'tokenizer_config.json');
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>) : {};
}

function tokenId(tok: Tokenizer, token: string, dir: string): number {
  const id = tok.tokenToId(token);
  if (id === null || id === undefined) throw new Error(`tokenizer in ${dir} has no token ${JSON.stringify(token)}`);
  return id;
}

/**
 * Right truncation then right padding with `padId`, as transformers' `padding="max_length", truncation=True`.
 * Truncation is done by the tokenizer itself (before its post-processor adds special tokens, so BOS/EOS
 * survive), padding here so the mask is explicit.
 */
function promptTokenizer(tok: Tokenizer, maxLength: number, padId: number): PromptTokenizer {
  tok.setTruncation(maxLength);
  tok.disablePadding();
  return {
    maxLength,
    padId,
    async encode(text: string): Promise<TokenizedPrompt> {
      const enc = await tok.encode(text, null, { addSpecialTokens: true });
      const real = enc.getIds();
      if (real.length > maxLength) throw new Error(`tokenizer returned ${real.length} > ${maxLength} tokens`);
      const ids = real.concat(new Array<number>(maxLength - real.length).fill(padId));
      const mask = ids.map((_, i) => (i < real.length ? 1 : 0));
      return { ids, mask, length: real.length };
    },
  };
}

/** LLaMA tokenizer from a folder holding tokenizer.json (+ tokenizer_config.json for the pad token). */
export function loadLlamaTokenizer(dir: string): PromptTokenizer {
  const file = join(dir, 'tokenizer.json');
  if (!existsSync(file)) throw new Error(`LLaMA tokenizer: ${file} not found`);
  const tok = Tokenizer.fromFile(file);
  const config = readConfig(dir);
  // LLaMA-3 has no dedicated pad token; the repositories set pad = eos = <|end_of_text|>.
  const pad = configToken(config, 'pad_token') ?? configToken(config, 'eos_token') ?? '<|end_of_text|>';
  return promptTokenizer(tok, CROP_START + LLAMA_MAX_PROMPT_TOKENS, tokenId(tok, pad, dir));
}

/** CLIP's pre-tokenizer pattern as transformers' fast converter writes it (special tokens first). */
const CLIP_SPLIT_REGEX =
  "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

/**
 * The tokenizer.json that transformers' `CLIPConverter` produces from vocab.json + merges.txt: NFC,
 * whitespace runs to one space, lower-case; split on CLIP's regex (keeping the matches), byte-level;
 * BPE with `</w>` word ends; `<|startoftext|> ... <|endoftext|>` around the text.
 * (The slow CLIPTokenizer without ftfy gives the same ids; the fixtures check this on real vocabularies.)
 */
export function clipTokenizerJson(vocab: Record<string, number>, merges: string[], bos: string, eos: string,
  unk: string): string {
  const special = (content: string) => ({
    id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  for (const t of [bos, eos, unk]) {
    if (vocab[t] === undefined) throw new Error(`CLIP vocab.json has no ${t}`);
  }
  const added = [special(bos), special(eos)];
  if (unk !== bos && unk !== eos) added.push(special(unk));
  return JSON.stringify({
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'NFC' },
        { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
        { type: 'Lowercase' },
      ],
    },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: CLIP_SPLIT_REGEX }, behavior: 'Removed', invert: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    post_processor: {
      type: 'RobertaProcessing',
      sep: [eos, vocab[eos]],
      cls: [bos, vocab[bos]],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: 'BPEDecoder', suffix: '</w>' },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  });
}

/** merges.txt lines without the `#version` header and blank lines. */
function readMerges(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l, i) => l.length > 0 && !(i === 0 && l.startsWith('#version')));
}

/** CLIP tokenizer from tokenizer.json, or from vocab.json + merges.txt (what `CLIPTokenizer` reads). */
export function loadClipTokenizer(dir: string): PromptTokenizer {
  const config = readConfig(dir);
  const bos = configToken(config, 'bos_token') ?? '<|startoftext|>';
  const eos = configToken(config, 'eos_token') ?? '<|endoftext|>';
  const pad = configToken(config, 'pad_token') ?? eos;
  let tok: Tokenizer;
  if (existsSync(join(dir, 'tokenizer.json'))) {
    tok = Tokenizer.fromFile(join(dir, 'tokenizer.json'));
  } else if (existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt'))) {
    const vocab = JSON.parse(readFileSync(join(dir, 'vocab.json'), 'utf8')) as Record<string, number>;
    const unk = configToken(config, 'unk_token') ?? eos;
    tok = Tokenizer.fromString(clipTokenizerJson(vocab, readMerges(join(dir, 'merges.txt')), bos, eos, unk));
  } else {
    throw new Error(`CLIP tokenizer: ${dir} has neither tokenizer.json nor vocab.json + merges.txt`);
  }
  return promptTokenizer(tok, CLIP_MAX_LENGTH, tokenId(tok, pad, dir));
}

// ------------------------------------------------------------------------------------------------------
// Tokenization as FramePack does it

/** The LLaMA input: template applied, 351 ids right-padded, mask. */
export function tokenizeLlama(tok: PromptTokenizer, prompt: string): Promise<TokenizedPrompt> {
  // split/join rather than String.replace: a `$&` in the prompt must stay literal.
  return tok.encode(LLAMA_TEMPLATE.split('{}').join(prompt));
}

/** The CLIP input: 77 ids (BOS, text, EOS, EOS padding). */
export function tokenizeClip(tok: PromptTokenizer, prompt: string): Promise<TokenizedPrompt> {
  return tok.encode(prompt);
}

// ------------------------------------------------------------------------------------------------------
// Encoding

/** Prompt conditioning as the transformer takes it. */
export interface PromptConditioning {
  llamaVec: HostTensor; // (1, 512, D) float32: the L kept tokens, then zero rows
  llamaMask: HostTensor; // (1, 512) int64: L ones, then zeros
  clipPooler: HostTensor; // (1, Dc) float32
}

export interface TextEncoderDirs {
  textEncoder: string; // LLaMA: config.json + safetensors
  tokenizer: string; // tokenizer.json (+ tokenizer_config.json)
  textEncoder2: string; // CLIP text
  tokenizer2: string; // tokenizer.json or vocab.json + merges.txt
}

export interface EncoderSessionOptions {
  ep: ExecutionProvider;
  precision: Precision;
  deviceId?: number;
  quantize?: { bits: 4 | 8; blockSize?: number; cacheDir?: string };
  /** see graph.ts: 'run' keeps host RAM near the checkpoint size when weights must be cast */
  castWeightsAt?: 'load' | 'run';
}

export interface TextEncoders {
  llamaTokenizer: PromptTokenizer;
  clipTokenizer: PromptTokenizer;
  llama: Session;
  clip: Session;
  release(): Promise<void>;
}

/**
 * The text encoders' maker: tokenizers and graphs are made on the first call and kept, sessions on every call.
 * A placement that releases the encoders between requests calls it once per request, and loading LLaMA-3's
 * tokenizer.json and building the two graphs are hundreds of milliseconds of blocking JavaScript (0.4-0.8 s
 * for the tokenizer alone on a 2-core machine) that would stall the event loop in every request. What is kept
 * is host memory of a few MB: the weights stay external, in the checkpoint files.
 */
export function textEncoderLoader(dirs: TextEncoderDirs, opts: EncoderSessionOptions): () => Promise<TextEncoders> {
  let made: Promise<{ llamaTokenizer: PromptTokenizer; clipTokenizer: PromptTokenizer; llama: BuiltModel; clip: BuiltModel }> | null = null;
  const make = async () => ({
    llamaTokenizer: loadLlamaTokenizer(dirs.tokenizer),
    clipTokenizer: loadClipTokenizer(dirs.tokenizer2),
    llama: buildLlama(await Checkpoint.open(dirs.textEncoder), opts),
    clip: buildClipText(await Checkpoint.open(dirs.textEncoder2), opts),
  });
  return async () => {
    if (!made) {
      made = make();
      made.catch(() => { made = null; }); // a broken folder is read again next time
    }
    const { llamaTokenizer, clipTokenizer, llama: llamaModel, clip: clipModel } = await made;
    const session = { ep: opts.ep, deviceId: opts.deviceId };
    const llama = await Session.create(llamaModel, session);
    let clip: Session;
    try {
      clip = await Session.create(clipModel, session);
    } catch (err) {
      await llama.release();
      throw err;
    }
    return {
      llamaTokenizer, clipTokenizer, llama, clip,
      async release() {
        await Promise.all([llama.release(), clip.release()]);
      },
    };
  };
}

export function loadTextEncoders(dirs: TextEncoderDirs, opts: EncoderSessionOptions): Promise<TextEncoders> {
  return textEncoderLoader(dirs, opts)();
}

const int64 = (values: number[]): HostTensor =>
  ({ dtype: 'int64', dims: [1, values.length], data: BigInt64Array.from(values, (v) => BigInt(v)) });

/**
 * `crop_or_pad_yield_mask`: the first `length` rows of a (1, L, D) tensor, zero-padded when L is shorter,
 * with a mask of the L (or `length`) real rows.
 */
export function cropOrPadYieldMask(x: HostTensor, length: number): { padded: HostTensor; mask: HostTensor } {
  const [, L, D] = x.dims;
  const keep = Math.min(L, length);
  const data = new Float32Array(length * D);
  data.set((x.data as Float32Array).subarray(0, keep * D));
  const mask = new BigInt64Array(length);
  mask.fill(1n, 0, keep);
  return {
    padded: { dtype: 'float32', dims: [1, length, D], data },
    mask: { dtype: 'int64', dims: [1, length], data: mask },
  };
}

/**
 * The original's `encode_prompt_conds`: LLaMA hidden_states[-3] of the templated prompt without the 95
 * template tokens, padded to 512 rows with a mask, and CLIP's pooled output.
 *
 * The LLaMA runs on the whole padded batch with its mask, as the original does: every prompt gives it the same
 * input shape (95 + 256 tokens). The device's first run of a shape costs (on the H100 the first request after
 * the warm-up encoded its prompt in 0.9 s, a prompt seen before took 0.1 s): one shape is paid for once, by the
 * warm-up. Padding sits on the right and attention is causal, so the real rows are what a shorter run gives.
 */
export async function encodePrompt(enc: TextEncoders, prompt: string, signal?: AbortSignal): Promise<PromptConditioning> {
  const ll = await tokenizeLlama(enc.llamaTokenizer, prompt);
  if (ll.length <= CROP_START) {
    throw new Error(`LLaMA tokenizer produced ${ll.length} tokens for the template; at least ${CROP_START + 1} expected`);
  }
  const out = await enc.llama.run(
    { input_ids: int64(ll.ids), attention_mask: int64(ll.mask) }, { signal, outputs: ['hidden_states_minus_3'] });
  const hidden = out.hidden_states_minus_3; // (1, 95 + 256, D)
  const D = hidden.dims[2];
  const kept: HostTensor = {
    dtype: 'float32',
    dims: [1, ll.length - CROP_START, D],
    data: (hidden.data as Float32Array).subarray(CROP_START * D, ll.length * D),
  };
  const { padded, mask } = cropOrPadYieldMask(kept, LLAMA_PADDED_LENGTH);

  const clipIds = await tokenizeClip(enc.clipTokenizer, prompt);
  const clipOut = await enc.clip.run({ input_ids: int64(clipIds.ids) }, { signal, outputs: ['pooler_output'] });
  return { llamaVec: padded, llamaMask: mask, clipPooler: clipOut.pooler_output };
}
