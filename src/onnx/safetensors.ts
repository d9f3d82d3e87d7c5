/**
 * Safetensors: the checkpoint format of every network here.
 *
 * File layout (https://github.com/huggingface/safetensors): u64 little-endian header length N, N bytes of
 * JSON `{key: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the data block;
 * offsets are relative to the data block, so a tensor's absolute offset is 8 + N + begin.
 *
 * `Checkpoint` reads only headers: the graph builder points ONNX external-data initializers straight at the
 * tensor bytes, so multi-GB shards are never read into memory. A checkpoint folder holds config.json and
 * either one or more `*.safetensors` files or a `*.safetensors.index.json` naming the shards. Folders inside a
 * Hugging Face cache snapshot hold symlinks into `../../blobs/<sha256>`; entries record the resolved file.
 *
 * `loadTensors`/`saveTensors` read and write small named-tensor files (inputs, outputs, fixtures) whole.
 */
import { open, readFile, readdir, realpath, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { bfloat16ToFloat32, float16ToFloat32, float8e4m3ToFloat32 } from './half.js';

export type StDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL' | 'F8_E4M3';

export const ST_ITEM_SIZE: Record<StDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1, F8_E4M3: 1,
};

export interface TensorEntry {
  key: string;
  dtype: StDType;
  shape: number[];
  /** absolute path of the file holding the bytes (symlinks resolved) */
  file: string;
  /** absolute byte offset of the tensor data in `file` */
  offset: number;
  length: number;
}

export type HostDType = 'float32' | 'float16' | 'int64' | 'int32' | 'uint8' | 'bool';
export interface HostTensor {
  dtype: HostDType;
  dims: number[];
  data: Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;
}

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Header of one safetensors file, as parsed from its first bytes. */
export interface SafetensorsHeader {
  file: string;
  dataStart: number; // 8 + header length
  fileSize: number;
  tensors: Map<string, { dtype: StDType; shape: number[]; begin: number; end: number }>;
  metadata: Record<string, string>;
}

const MAX_HEADER = 100 * 1024 * 1024;

/** Reads and validates the header of `file` (only its first 8 + N bytes). */
export async function readHeader(file: string): Promise<SafetensorsHeader> {
  const fh = await open(file, 'r').catch((e: NodeJS.ErrnoException) => {
    throw new SafetensorsError(`cannot open safetensors file ${file}: ${e.code ?? e.message}`);
  });
  try {
    const { size } = await fh.stat();
    if (size < 8) throw new SafetensorsError(`${file}: truncated safetensors file (${size} bytes, no header length)`);
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER)) throw new SafetensorsError(`${file}: bad safetensors header length ${n} (not a safetensors file?)`);
    const headerLen = Number(n);
    if (8 + headerLen > size) {
      throw new SafetensorsError(`${file}: truncated safetensors file (header of ${headerLen} bytes, file has ${size})`);
    }
    const hb = Buffer.alloc(headerLen);
    await fh.read(hb, 0, headerLen, 8);
    return parseHeader(file, hb, size);
  } finally {
    await fh.close();
  }
}

function parseHeader(file: string, hb: Buffer, fileSize: number): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(hb.toString('utf8'));
  } catch (e) {
    throw new SafetensorsError(`${file}: bad safetensors header (invalid JSON: ${(e as Error).message})`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new SafetensorsError(`${file}: bad safetensors header (not an object)`);
  const dataStart = 8 + hb.length;
  const dataLen = fileSize - dataStart;
  const tensors: SafetensorsHeader['tensors'] = new Map();
  let metadata: Record<string, string> = {};
  for (const [key, v] of Object.entries(json as Record<string, any>)) {
    if (key === '__metadata__') { metadata = v ?? {}; continue; }
    const where = `${file}: tensor "${key}"`;
    if (!v || typeof v !== 'object') throw new SafetensorsError(`${where}: bad header entry`);
    const { dtype, shape, data_offsets: off } = v;
    if (!(dtype in ST_ITEM_SIZE)) throw new SafetensorsError(`${where}: unsupported dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new SafetensorsError(`${where}: bad shape ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0) || off[1] < off[0]) {
      throw new SafetensorsError(`${where}: bad data_offsets ${JSON.stringify(off)}`);
    }
    const expected = numel(shape) * ST_ITEM_SIZE[dtype as StDType];
    if (off[1] - off[0] !== expected) {
      throw new SafetensorsError(`${where}: data_offsets span ${off[1] - off[0]} bytes, ${dtype}${JSON.stringify(shape)} needs ${expected}`);
    }
    if (off[1] > dataLen) {
      throw new SafetensorsError(`${where}: truncated file (tensor ends at byte ${dataStart + off[1]}, file has ${fileSize})`);
    }
    tensors.set(key, { dtype, shape, begin: off[0], end: off[1] });
  }
  return { file, dataStart, fileSize, tensors, metadata };
}

async function readJson(file: string): Promise<any> {
  const text = await readFile(file, 'utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

/**
 * A component folder: config.json plus its safetensors (one file, several, or shards through an index json).
 * `dir` may also be a single `.safetensors` file. Only headers are read.
 */
export class Checkpoint {
  private constructor(
    readonly dir: string,
    readonly config: Record<string, any>,
    private readonly table: Map<string, TensorEntry>,
    /** resolved path of every safetensors file, in load order */
    readonly files: string[],
  ) {}

  static async open(dir: string): Promise<Checkpoint> {
    const st = await stat(dir).catch(() => {
      throw new SafetensorsError(`checkpoint not found: ${dir}`);
    });
    let names: string[];
    let folder = dir;
    let fromIndex: Map<string, string> | null = null;
    if (st.isFile()) {
      folder = join(dir, '..');
      names = [basename(dir)];
    } else {
      const all = (await readdir(dir)).sort();
      const index = all.find((f) => f.endsWith('.safetensors.index.json'));
      if (index) {
        const idx = await readJson(join(dir, index));
        if (!idx?.weight_map || typeof idx.weight_map !== 'object') {
          throw new SafetensorsError(`${join(dir, index)}: no weight_map`);
        }
        fromIndex = new Map(Object.entries(idx.weight_map as Record<string, string>));
        names = [...new Set(fromIndex.values())].sort();
      } else {
        names = all.filter((f) => f.endsWith('.safetensors'));
      }
      if (names.length === 0) throw new SafetensorsError(`no .safetensors files in ${dir}`);
    }
    let config: Record<string, any> = {};
    const cfgPath = join(folder, 'config.json');
    if (await stat(cfgPath).then((s) => s.isFile(), () => false)) config = await readJson(cfgPath);

    const table = new Map<string, TensorEntry>();
    const files: string[] = [];
    for (const name of names) {
      const linkPath = join(folder, name);
      const file = await realpath(linkPath).catch(() => {
        throw new SafetensorsError(`checkpoint file missing: ${linkPath}${fromIndex ? ' (named in the index json)' : ''}`);
      });
      files.push(file);
      const h = await readHeader(file);
      for (const [key, t] of h.tensors) {
        if (fromIndex && fromIndex.get(key) !== name) continue; // the index is authoritative
        if (table.has(key)) throw new SafetensorsError(`tensor "${key}" appears in both ${table.get(key)!.file} and ${file}`);
        table.set(key, { key, dtype: t.dtype, shape: t.shape, file, offset: h.dataStart + t.begin, length: t.end - t.begin });
      }
    }
    if (fromIndex) {
      for (const [key, name] of fromIndex) {
        if (!table.has(key)) throw new SafetensorsError(`tensor "${key}" is in the index of ${dir} but not in ${name}`);
      }
    }
    return new Checkpoint(dir, config, table, files);
  }

  keys(): string[] {
    return [...this.table.keys()];
  }

  has(key: string): boolean {
    return this.table.has(key);
  }

  /** The entry of `key`; with `expectShape`, checks it (errors name key, file, expected and found shape). */
  entry(key: string, expectShape?: number[]): TensorEntry {
    const e = this.table.get(key);
    if (!e) {
      const near = this.keys().filter((k) => k.startsWith(key.split('.').slice(0, -1).join('.') + '.')).slice(0, 5);
      throw new SafetensorsError(
        `tensor "${key}" not found in checkpoint ${this.dir}` + (near.length ? ` (keys nearby: ${near.join(', ')})` : ''),
      );
    }
    if (expectShape && (expectShape.length !== e.shape.length || expectShape.some((d, i) => d !== e.shape[i]))) {
      throw new SafetensorsError(
        `tensor "${key}" in ${e.file}: expected shape [${expectShape.join(', ')}], found [${e.shape.join(', ')}]`,
      );
    }
    return e;
  }

  /** Raw stored bytes of one tensor. */
  async readBytes(key: string): Promise<Uint8Array> {
    const e = this.entry(key);
    return readRange(e.file, e.offset, e.length);
  }

  /** One tensor decoded to float32 (small tensors only: norms, biases, test weights). */
  async readFloat32(key: string): Promise<Float32Array> {
    const e = this.entry(key);
    return decodeToFloat32(e.dtype, await readRange(e.file, e.offset, e.length));
  }
}

export async function readRange(file: string, offset: number, length: number): Promise<Uint8Array> {
  const fh = await open(file, 'r');
  try {
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw new SafetensorsError(`${file}: truncated (wanted ${length} bytes at ${offset})`);
      done += bytesRead;
    }
    return buf;
  } finally {
    await fh.close();
  }
}

/** Copies bytes into a fresh, aligned ArrayBuffer so typed views are always legal. */
function aligned(bytes: Uint8Array): ArrayBuffer {
  const out = new ArrayBuffer(bytes.length);
  new Uint8Array(out).set(bytes);
  return out;
}

export function decodeToFloat32(dtype: StDType, bytes: Uint8Array): Float32Array {
  const b = aligned(bytes);
  switch (dtype) {
    case 'F32': return new Float32Array(b);
    case 'F16': return float16ToFloat32(new Uint16Array(b));
    case 'BF16': return bfloat16ToFloat32(new Uint16Array(b));
    case 'F64': return Float32Array.from(new Float64Array(b));
    case 'F8_E4M3': return float8e4m3ToFloat32(new Uint8Array(b));
    case 'I64': return Float32Array.from(new BigInt64Array(b), Number);
    case 'I32': return Float32Array.from(new Int32Array(b));
    case 'I16': return Float32Array.from(new Int16Array(b));
    case 'I8': return Float32Array.from(new Int8Array(b));
    case 'U8': case 'BOOL': return Float32Array.from(new Uint8Array(b));
  }
}

/** Host form of stored bytes: floats become float32, integers keep their width (I16/I8 widen to int32). */
export function decodeToHost(dtype: StDType, shape: number[], bytes: Uint8Array): HostTensor {
  const dims = [...shape];
  switch (dtype) {
    case 'I64': return { dtype: 'int64', dims, data: new BigInt64Array(aligned(bytes)) };
    case 'I32': return { dtype: 'int32', dims, data: new Int32Array(aligned(bytes)) };
    case 'I16': return { dtype: 'int32', dims, data: Int32Array.from(new Int16Array(aligned(bytes))) };
    case 'I8': return { dtype: 'int32', dims, data: Int32Array.from(new Int8Array(aligned(bytes))) };
    case 'U8': return { dtype: 'uint8', dims, data: new Uint8Array(aligned(bytes)) };
    case 'BOOL': return { dtype: 'bool', dims, data: new Uint8Array(aligned(bytes)) };
    default: return { dtype: 'float32', dims, data: decodeToFloat32(dtype, bytes) };
  }
}

/** Every tensor of a small safetensors file: F16/BF16/F64/F8 -> float32, integers kept. */
export async function loadTensors(file: string): Promise<Record<string, HostTensor>> {
  const h = await readHeader(file);
  const all = await readFile(file);
  const out: Record<string, HostTensor> = {};
  for (const [key, t] of h.tensors) {
    out[key] = decodeToHost(t.dtype, t.shape, all.subarray(h.dataStart + t.begin, h.dataStart + t.end));
  }
  return out;
}

const HOST_TO_ST: Record<HostDType, StDType> = {
  float32: 'F32', float16: 'F16', int64: 'I64', int32: 'I32', uint8: 'U8', bool: 'BOOL',
};

export interface StSpec { key: string; dtype: StDType; shape: number[] }

/**
 * Encodes a header for `specs` (in the given order, data packed back to back) and returns it with the
 * absolute offset of each tensor. The JSON is padded with spaces to a multiple of 8 bytes, as the reference
 * writer does, so data stays aligned.
 */
export function encodeHeader(specs: StSpec[], metadata?: Record<string, string>): { header: Uint8Array; offsets: number[]; total: number } {
  let pos = 0;
  const placed = specs.map((s) => {
    const begin = pos;
    pos += numel(s.shape) * ST_ITEM_SIZE[s.dtype];
    return { ...s, begin };
  });
  const header = headerAt(placed, metadata);
  return { header, offsets: placed.map((p) => header.length + p.begin), total: header.length + pos };
}

/**
 * The header bytes for tensors at given offsets into the data block (`begin`, in bytes); the JSON is
 * space-padded so the data block starts 8-byte aligned. Ranges may overlap: the benchmark checkpoints let
 * layers share bytes, which this reader and ONNX Runtime accept (the Python safetensors library does not).
 */
export function headerAt(entries: (StSpec & { begin: number })[], metadata?: Record<string, string>): Uint8Array {
  const obj: Record<string, unknown> = {};
  if (metadata) obj.__metadata__ = metadata;
  for (const e of entries) {
    obj[e.key] = { dtype: e.dtype, shape: e.shape, data_offsets: [e.begin, e.begin + numel(e.shape) * ST_ITEM_SIZE[e.dtype]] };
  }
  let json = JSON.stringify(obj);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const jb = Buffer.from(json, 'utf8');
  const header = new Uint8Array(8 + jb.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(jb.length), true);
  header.set(jb, 8);
  return header;
}

/** Writes raw tensors of any stored dtype (tests and scripts build checkpoints with it). */
export async function saveRaw(file: string, tensors: (StSpec & { bytes: Uint8Array })[], metadata?: Record<string, string>): Promise<void> {
  for (const t of tensors) {
    const need = numel(t.shape) * ST_ITEM_SIZE[t.dtype];
    if (t.bytes.byteLength !== need) throw new SafetensorsError(`tensor "${t.key}": ${t.bytes.byteLength} bytes, ${t.dtype}[${t.shape}] needs ${need}`);
  }
  const { header, total } = encodeHeader(tensors, metadata);
  const out = new Uint8Array(total);
  out.set(header);
  let pos = header.length;
  for (const t of tensors) { out.set(t.bytes, pos); pos += t.bytes.byteLength; }
  await writeFile(file, out);
}

export async function saveTensors(file: string, tensors: Record<string, HostTensor>): Promise<void> {
  const list = Object.keys(tensors).sort().map((key) => {
    const t = tensors[key];
    if (!(t.dtype in HOST_TO_ST)) throw new SafetensorsError(`tensor "${key}": unsupported dtype ${t.dtype}`);
    if (t.data.length !== numel(t.dims)) {
      throw new SafetensorsError(`tensor "${key}": ${t.data.length} elements for dims [${t.dims.join(', ')}]`);
    }
    return { key, dtype: HOST_TO_ST[t.dtype], shape: t.dims, bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  });
  await saveRaw(file, list);
}
