/**
 * A small typed ONNX graph builder over onnx-buf, used by every network in src/nets.
 *
 * Values carry a dtype and a shape (numbers, or strings for symbolic dims such as "batch"); every helper
 * infers both, so a network file reads like PyTorch with shapes in comments and mistakes surface while the
 * graph is built, not inside ONNX Runtime.
 *
 * Weights: `param()` adds an initializer whose data is *external*, pointing straight into the checkpoint's
 * safetensors bytes (offset = 8 + header length + begin). The model proto itself holds no weights, stays a
 * few hundred KB, and is built in memory. `toModel()` picks one folder for all referenced files
 * (`session.model_external_initializers_file_folder_path`): the component folder for a plain checkpoint,
 * the `models--org--name` folder for a Hugging Face cache, where files are addressed as `blobs/<sha256>`
 * because ONNX Runtime rejects symlinks that leave the folder.
 *
 * Precision: a float param is stored as BF16/F16/F32 in the file and cast inside the graph to the graph's
 * precision (float32 on CPU, float16/bfloat16 on CUDA). No cast is emitted when the stored dtype already
 * matches (bf16 DiT on CUDA, fp16 encoders on CUDA), so weights are used in place.
 *
 * Memory choice, `castWeightsAt`:
 *   'load' (default): ONNX Runtime's constant folding evaluates Cast(W) once at session creation. Runs are
 *          fastest, but the cast copy lives in host RAM for the session's lifetime (a bf16 checkpoint run in
 *          float32 on the CPU costs twice its size on top of the mapped file; on CUDA the folded copy is made
 *          on the host before upload).
 *   'run': the model asks the session to skip constant folding and weight pre-packing, so casts run per
 *          inference on one weight at a time: host RAM stays near the mapped file size at the cost of
 *          re-casting every run. Use it for multi-GB checkpoints whose stored dtype differs from the
 *          precision. Shapes in these graphs are static or computed by tiny subgraphs, so skipping folding
 *          costs nothing else.
 *
 * Quantization (`quantize: {bits, blockSize}`): `linear()` emits com.microsoft.MatMulNBits. The packed
 * weights are prepared once per source tensor into a cache folder keyed by the source file's hash and
 * reused; preparation happens off the main thread when the session is created (see BuiltModel.prepare).
 *
 * FP8 (`fp8`, for the linears a caller marks with `linear(..., {fp8: true})`): weights float8 E4M3FN with a
 * per-tensor scale, prepared into the same cache; activations quantized per tensor on every run (amax ->
 * scale amax/448 -> Cast to E4M3FN). mode 'gemm' multiplies with com.microsoft.GemmFloat8 (cuBLASLt, CUDA
 * sm89+); 'emulate' dequantizes both operands to float32 and multiplies with Gemm, the same quantization
 * on any provider, so its error can be measured on the CPU.
 *
 * Ops use the default domain at opset 23 (RMSNormalization, Gelu with `approximate`, Resize/Pad as inputs)
 * and com.microsoft v1 for MultiHeadAttention, RotaryEmbedding, MatMulNBits, SkipLayerNormalization and
 * FastGelu.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { basename, dirname, join, relative, sep } from 'node:path';
import {
  AttributeProto_AttributeType as AT, ModelProtoSchema, TensorProto_DataLocation, TensorProto_DataType as TP,
} from 'onnx-buf';
import { float32ToBFloat16 as float32ToBf16, float32ToFloat16 as float32ToHalf, float32ToFloat8e4m3 } from './half.js';
import type { Checkpoint, HostTensor, StDType, TensorEntry } from './safetensors.js';
import { FP8_MAX, fp8Layout, quantizedLayout, type QuantJob } from './quantize.js';

export type DType = 'float32' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool' | 'float8e4m3fn';
export type Dim = number | string;
export interface Value { readonly name: string; readonly dtype: DType; readonly shape: Dim[] }
export type Precision = 'float32' | 'float16' | 'bfloat16';

/**
 * FP8 linears (see the file comment). `output`: the dtype GemmFloat8 writes (bfloat16 default; float32 for a
 * cuBLASLt that refuses bf16 output), cast to the input's dtype after. `amax`: how an activation's absolute
 * maximum is reduced, always over a float32 copy (exact for every input dtype): 'reduce' (ReduceMax and
 * ReduceMin, the default) or 'pool' (GlobalMaxPool of |x|, per row then over the rows' maxima) for a provider
 * that does not place ReduceMax at the graph's opset.
 */
export interface Fp8Options {
  mode: 'gemm' | 'emulate';
  /** which linears (by checkpoint prefix) go FP8 when `linear()` is not told; default none */
  layers?: (prefix: string) => boolean;
  output?: 'bfloat16' | 'float32';
  amax?: 'reduce' | 'pool';
  cacheDir?: string;
}

export interface GraphOptions {
  name: string;
  precision: Precision;
  quantize?: { bits: 4 | 8; blockSize?: number; cacheDir?: string };
  fp8?: Fp8Options;
  /** when stored-dtype casts of weights are evaluated; see the file comment. Default 'load'. */
  castWeightsAt?: 'load' | 'run';
}

export interface BuiltModel {
  bytes: Uint8Array;
  /** value for session.model_external_initializers_file_folder_path (null when the model has no external data) */
  externalFolder: string | null;
  inputs: string[];
  outputs: string[];
  name: string;
  /** session config entries the model needs (e.g. folding switched off for castWeightsAt 'run') */
  sessionConfig?: Record<string, string>;
  /** quantized weight files to write (if absent) before the session is created */
  prepare?: QuantJob[];
  /** inputs with a default value (Graph.optionalInput): a session binds them to it until bound otherwise */
  inputDefaults?: Record<string, HostTensor>;
  /** domains of custom operators (runtime/ort-custom-ops.ts) the session must be given */
  customDomains?: string[];
}

export class GraphError extends Error {
  override name = 'GraphError';
}

const ONNX_TYPE: Record<DType, number> = {
  float32: TP.FLOAT, float16: TP.FLOAT16, bfloat16: TP.BFLOAT16, int64: TP.INT64, int32: TP.INT32,
  int8: TP.INT8, uint8: TP.UINT8, bool: TP.BOOL, float8e4m3fn: TP.FLOAT8E4M3FN,
};
const ST_ONNX: Record<StDType, number> = {
  F64: TP.DOUBLE, F32: TP.FLOAT, F16: TP.FLOAT16, BF16: TP.BFLOAT16, I64: TP.INT64, I32: TP.INT32,
  I16: TP.INT16, I8: TP.INT8, U8: TP.UINT8, BOOL: TP.BOOL, F8_E4M3: TP.FLOAT8E4M3FN,
};
const ST_DTYPE: Partial<Record<StDType, DType>> = {
  F32: 'float32', F16: 'float16', BF16: 'bfloat16', I64: 'int64', I32: 'int32', I8: 'int8', U8: 'uint8', BOOL: 'bool',
  F8_E4M3: 'float8e4m3fn',
};
export const isFloat = (d: DType): boolean => d === 'float32' || d === 'float16' || d === 'bfloat16';

type AttrValue = number | string | number[] | string[] | bigint | boolean | Float32Array;

interface ExternalInit { name: string; dataType: number; dims: number[]; file: string; offset: number; length: number }

const OPSET = 23;
/** LayerNormalization epsilon when only its row statistics are used: keeps 1/sqrt(var + eps) finite for a constant row. */
const ROW_EPS = 1e-20;

/** Graph.linear's choices. */
export interface LinearOptions {
  /** default true when the checkpoint has `<prefix>.bias` */
  bias?: boolean;
  /** false: this linear stays unquantized in a graph with 8-bit weights */
  quantize?: boolean;
  /** FP8 for this linear, overriding GraphOptions.fp8.layers */
  fp8?: boolean;
  /** only the weight's input features [from, to): x W[:, from:to]^T (plain Gemm only) */
  columns?: [number, number];
  /** a (..., out) tensor added by the Gemm itself (its C input, beta 1) in place of the bias (plain Gemm only) */
  accumulate?: Value;
}

export class Graph {
  readonly name: string;
  readonly precision: Precision;
  readonly quantize?: GraphOptions['quantize'];
  readonly fp8?: Fp8Options;
  readonly castWeightsAt: 'load' | 'run';

  private nodes: any[] = [];
  private inits: any[] = [];
  private externals: ExternalInit[] = [];
  private inputInfos: any[] = [];
  private outputInfos: any[] = [];
  private inputNames: string[] = [];
  private outputNames: string[] = [];
  private names = new Set<string>();
  private scopes: string[] = [];
  private counter = 0;
  private params = new Map<string, Value>();
  private quantized = new Map<string, { b: Value; scales: Value; zeros: Value }>();
  private fp8Weights = new Map<string, { w: Value; scale: Value }>();
  /** per activation value: its E4M3FN codes (2-D) and float32 scale, shared by the linears that read it */
  private fp8Inputs = new Map<string, { q: Value; scale: Value }>();
  private defaults: Record<string, HostTensor> = {};
  /** the main graph's nodes; `nodes` is another list while an If branch is built */
  private readonly rootNodes = this.nodes;
  /** integer/float data of small constants, so Reshape/Slice/... can infer shapes */
  private constData = new Map<string, number[]>();
  private jobs: QuantJob[] = [];
  /** domains of custom operators the nodes use (BuiltModel.customDomains) */
  private customDomains = new Set<string>();

  constructor(opts: GraphOptions) {
    this.name = opts.name;
    this.precision = opts.precision;
    this.quantize = opts.quantize;
    this.fp8 = opts.fp8;
    this.castWeightsAt = opts.castWeightsAt ?? 'load';
  }

  // ---------------------------------------------------------------- graph I/O, params, constants

  input(name: string, dtype: DType, shape: Dim[]): Value {
    this.claim(name);
    this.inputNames.push(name);
    this.inputInfos.push(valueInfo(name, dtype, shape));
    return { name, dtype, shape: [...shape] };
  }

  /** Marks `v` as a graph output called `name` (unique among inputs, outputs and checkpoint keys used). */
  output(v: Value, name: string): void {
    this.claim(name);
    this.nodes.push({ opType: 'Identity', input: [v.name], output: [name], name: this.nodeName('output') });
    this.outputNames.push(name);
    this.outputInfos.push(valueInfo(name, v.dtype, v.shape));
  }

  /** A float32 (or float16) graph input, cast to the graph precision: what JavaScript can feed. */
  floatInput(name: string, shape: Dim[], hostDtype: 'float32' | 'float16' = 'float32'): Value {
    return this.cast(this.input(name, hostDtype, shape));
  }

  /** An output cast to a dtype JavaScript can read (default float32). */
  floatOutput(v: Value, name: string, hostDtype: 'float32' | 'float16' = 'float32'): void {
    this.output(this.cast(v, hostDtype), name);
  }

  /**
   * A checkpoint tensor as an external-data initializer, cast in-graph to `opts.dtype` (default: the
   * graph precision for float tensors, the stored type for integers). `opts.shape` checks the stored shape.
   * The same key asked twice returns the same value.
   */
  param(ckpt: Checkpoint, key: string, opts: { shape?: number[]; dtype?: DType } = {}): Value {
    const e = ckpt.entry(key, opts.shape);
    const storedFloat = ['F64', 'F32', 'F16', 'BF16', 'F8_E4M3'].includes(e.dtype);
    const target: DType = opts.dtype ?? (storedFloat ? this.precision : ST_DTYPE[e.dtype] ?? (e.dtype === 'I16' ? 'int32' : 'int64'));
    const cacheKey = `${e.file}\0${e.offset}\0${target}`;
    const hit = this.params.get(cacheKey);
    if (hit) return hit;
    const raw = this.externalInit(e, key);
    let v: Value;
    if (ST_DTYPE[e.dtype] === target) {
      v = { name: raw, dtype: target, shape: [...e.shape] };
    } else {
      // in the main graph even while an If branch is built: one cast serves both branches
      v = this.atRoot(() => this.emit('Cast', [raw], { to: ONNX_TYPE[target] }, target, [...e.shape], `${key}:cast`));
    }
    this.params.set(cacheKey, v);
    return v;
  }

  /**
   * A graph input with a default value, to which the session binds it when created (BuiltModel.inputDefaults;
   * not an ONNX overridable initializer: onnxruntime-node feeds only the inputs a session lists). It is left
   * out of BuiltModel.inputs, the inputs every run must feed.
   */
  optionalInput(name: string, shape: Dim[], init: HostTensor): Value {
    this.claim(name);
    const dtype = init.dtype as DType;
    this.inputInfos.push(valueInfo(name, dtype, shape));
    this.defaults[name] = init;
    return { name, dtype, shape: [...shape] };
  }

  /**
   * ONNX If: the bool scalar `cond` chooses which builder's outputs the node returns. Each builder emits into
   * its own subgraph and may use any value and weight of the graph around it; weights stay initializers of the
   * main graph, so both branches read the same ones. Outputs pair up by position (same count and dtypes).
   */
  ifElse(cond: Value, then: () => Value[], otherwise: () => Value[]): Value[] {
    const build = (fn: () => Value[], label: string) => {
      const saved = this.nodes;
      const name = `${label}_${this.counter++}`;
      this.nodes = [];
      try {
        const outs = fn();
        const names = outs.map((v) => {
          const out = this.claimUnique(`${name}/out`);
          this.nodes.push({ opType: 'Identity', input: [v.name], output: [out], name: this.nodeName('Identity') });
          return out;
        });
        return { outs, graph: { name, node: this.nodes, output: names.map((n, i) => typeOnlyInfo(n, outs[i].dtype)) } };
      } finally {
        this.nodes = saved;
      }
    };
    const a = build(then, 'then'), b = build(otherwise, 'else');
    if (a.outs.length !== b.outs.length || a.outs.some((v, i) => v.dtype !== b.outs[i].dtype)) {
      throw new GraphError(`ifElse: branches return ${a.outs.map((v) => v.dtype)} and ${b.outs.map((v) => v.dtype)}`);
    }
    const nodeName = this.nodeName('If');
    const outs = a.outs.map((v, i) => ({
      name: this.claimUnique(`${nodeName}:${i}`),
      dtype: v.dtype,
      shape: v.shape.length === b.outs[i].shape.length ? v.shape.map((d, k) => (d === b.outs[i].shape[k] ? d : this.unknownDim())) : [],
    }));
    this.nodes.push({
      opType: 'If', domain: '', name: nodeName, input: [cond.name], output: outs.map((o) => o.name),
      attribute: [{ name: 'then_branch', type: AT.GRAPH, g: a.graph }, { name: 'else_branch', type: AT.GRAPH, g: b.graph }],
    });
    return outs;
  }

  /** A constant tensor embedded in the model (small data only). Default dtype: float32, or int64 for BigInt64Array. */
  constant(data: number[] | Float32Array | BigInt64Array | Int32Array, shape: number[], dtype?: DType): Value {
    const dt: DType = dtype ?? (data instanceof BigInt64Array ? 'int64' : data instanceof Int32Array ? 'int32' : 'float32');
    const values = Array.from(data as ArrayLike<number | bigint>, Number);
    if (values.length !== shape.reduce((a, b) => a * b, 1)) {
      throw new GraphError(`constant: ${values.length} values for shape [${shape.join(', ')}]`);
    }
    const name = this.valueName('const');
    this.inits.push({ name, dataType: ONNX_TYPE[dt], dims: shape.map(BigInt), rawData: encodeRaw(values, dt) });
    if (values.length <= 64) this.constData.set(name, values);
    return { name, dtype: dt, shape: [...shape] };
  }

  /** A scalar constant of the given dtype. */
  scalar(x: number, dtype: DType = this.precision): Value {
    return this.constant([x], [], dtype);
  }

  /** int64 1-D constant (shapes, axes, pads). */
  ints(values: number[]): Value {
    return this.constant(BigInt64Array.from(values.map(BigInt)), [values.length], 'int64');
  }

  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  /**
   * Any ONNX node. Outputs get a dtype and shape from `opts`, else from the inference of known ops, else the
   * first input's (right for element-wise ops only: pass `opts.shape` for anything else).
   */
  op(type: string, inputs: (Value | null)[], attrs: Record<string, unknown> = {}, opts: { domain?: string; outputs?: number; dtype?: DType; shape?: Dim[] } = {}): Value[] {
    const n = opts.outputs ?? 1;
    let inferred: { dtype: DType; shape: Dim[] }[] | null = null;
    if (!opts.domain && (opts.dtype === undefined || opts.shape === undefined)) {
      inferred = this.infer(type, inputs, attrs as Record<string, AttrValue>, n);
    }
    const first = inputs.find((x): x is Value => !!x);
    const outs: { dtype: DType; shape: Dim[] }[] = [];
    for (let i = 0; i < n; i++) {
      outs.push({
        dtype: opts.dtype ?? inferred?.[i]?.dtype ?? first?.dtype ?? this.precision,
        shape: opts.shape ?? inferred?.[i]?.shape ?? [...(first?.shape ?? [])],
      });
    }
    return this.emitMany(type, inputs.map((x) => x?.name ?? ''), attrs as Record<string, AttrValue>, outs, opts.domain);
  }

  toModel(): BuiltModel {
    if (this.outputNames.length === 0) throw new GraphError(`graph ${this.name} has no outputs`);
    const folder = commonFolder(this.externals.map((e) => e.file));
    const initializer = [...this.inits];
    for (const e of this.externals) {
      const location = relative(folder!, e.file).split(sep).join('/');
      initializer.push({
        name: e.name, dataType: e.dataType, dims: e.dims.map(BigInt),
        dataLocation: TensorProto_DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: location },
          { key: 'offset', value: String(e.offset) },
          { key: 'length', value: String(e.length) },
        ],
      });
    }
    const model = create(ModelProtoSchema, {
      irVersion: 11n,
      producerName: 'framepack',
      opsetImport: [{ domain: '', version: BigInt(OPSET) }, { domain: 'com.microsoft', version: 1n },
        ...[...this.customDomains].map((domain) => ({ domain, version: 1n }))],
      graph: { name: this.name, node: this.nodes, initializer, input: this.inputInfos, output: this.outputInfos },
    });
    const sessionConfig: Record<string, string> = {};
    if (this.castWeightsAt === 'run') {
      sessionConfig['optimization.disable_specified_optimizers'] = 'ConstantFolding';
      sessionConfig['session.disable_prepacking'] = '1';
    }
    return {
      bytes: toBinary(ModelProtoSchema, model),
      externalFolder: folder,
      inputs: [...this.inputNames],
      outputs: [...this.outputNames],
      name: this.name,
      ...(Object.keys(sessionConfig).length ? { sessionConfig } : {}),
      ...(this.jobs.length ? { prepare: [...this.jobs] } : {}),
      ...(Object.keys(this.defaults).length ? { inputDefaults: { ...this.defaults } } : {}),
      ...(this.customDomains.size ? { customDomains: [...this.customDomains] } : {}),
    };
  }

  // ---------------------------------------------------------------- element-wise

  add(a: Value, b: Value | number): Value { return this.binary('Add', a, b); }
  sub(a: Value, b: Value | number): Value { return this.binary('Sub', a, b); }
  mul(a: Value, b: Value | number): Value { return this.binary('Mul', a, b); }
  div(a: Value, b: Value | number): Value { return this.binary('Div', a, b); }
  pow(a: Value, b: Value | number): Value { return this.binary('Pow', a, b); }
  /** a - b with `a` a number: (c - x) */
  rsub(c: number, x: Value): Value { return this.op('Sub', [this.scalar(c, x.dtype), x])[0]; }
  sqrt(x: Value): Value { return this.op('Sqrt', [x])[0]; }
  neg(x: Value): Value { return this.op('Neg', [x])[0]; }
  exp(x: Value): Value { return this.op('Exp', [x])[0]; }
  sin(x: Value): Value { return this.op('Sin', [x])[0]; }
  cos(x: Value): Value { return this.op('Cos', [x])[0]; }
  reciprocal(x: Value): Value { return this.op('Reciprocal', [x])[0]; }
  sigmoid(x: Value): Value { return this.op('Sigmoid', [x])[0]; }
  tanh(x: Value): Value { return this.op('Tanh', [x])[0]; }
  relu(x: Value): Value { return this.op('Relu', [x])[0]; }
  /** x * sigmoid(x) */
  silu(x: Value): Value { return this.mul(x, this.sigmoid(x)); }
  /** GELU, exact (erf) or the tanh approximation ("gelu_pytorch_tanh"). */
  gelu(x: Value, approximate: 'none' | 'tanh' = 'none'): Value {
    return this.op('Gelu', [x], { approximate })[0];
  }
  /**
   * GELU, tanh approximation, of x + bias (com.microsoft.FastGelu; bias (D) over the last axis, optional): a
   * GEMM's bias added on the way instead of broadcast into the GEMM's output first.
   */
  fastGelu(x: Value, bias: Value | null): Value {
    return this.op('FastGelu', bias ? [x, bias] : [x], {}, { domain: 'com.microsoft', dtype: x.dtype, shape: [...x.shape] })[0];
  }
  where(cond: Value, a: Value, b: Value): Value { return this.op('Where', [cond, a, b])[0]; }

  // ---------------------------------------------------------------- linear algebra

  matmul(a: Value, b: Value): Value { return this.op('MatMul', [a, b])[0]; }

  /**
   * y = x W^T + b with W = `${prefix}.weight` of shape [out, in] and optional `${prefix}.bias` [out], as in
   * torch.nn.Linear. Float path: Gemm with transB (no transposed copy of W is ever made), x flattened to 2-D
   * and reshaped back. With `quantize` set on the graph: MatMulNBits over prepared packed weights.
   * `opts.bias: false` ignores a bias present in the checkpoint. With `fp8` set on the graph, the linears it
   * names (or `opts.fp8`) are FP8 products (linearFp8).
   */
  linear(x: Value, ckpt: Checkpoint, prefix: string, opts: LinearOptions = {}): Value {
    const we = ckpt.entry(`${prefix}.weight`);
    if (we.shape.length !== 2) throw new GraphError(`linear ${prefix}: weight is [${we.shape}], expected [out, in]`);
    const [out, inAll] = we.shape;
    const [from, to] = opts.columns ?? [0, inAll];
    if (from < 0 || to > inAll || from >= to) throw new GraphError(`linear ${prefix}: columns [${from}, ${to}) outside the weight's ${inAll}`);
    const inF = to - from;
    const k = x.shape[x.shape.length - 1];
    if (typeof k === 'number' && k !== inF) {
      throw new GraphError(`linear ${prefix}: input last dim ${k}, weight ${prefix}.weight in ${we.file} is [${out}, ${inAll}]${opts.columns ? ` (columns ${from}..${to})` : ''}`);
    }
    const useBias = opts.bias !== false && ckpt.has(`${prefix}.bias`);
    const bias = useBias ? this.param(ckpt, `${prefix}.bias`, { shape: [out], dtype: x.dtype }) : null;
    if ((opts.columns || opts.accumulate) && !this.plainLinear(prefix, opts)) throw new GraphError(`linear ${prefix}: columns and accumulate need a plain Gemm (no 8-bit or FP8 weights)`);
    if (opts.accumulate && bias) throw new GraphError(`linear ${prefix}: accumulate takes the place of the bias`);
    return this.scope(prefix, () => {
      if (this.quantize && opts.quantize !== false) {
        const y = this.matmulNBits(x, we, `${prefix}.weight`);
        return bias ? this.add(y, bias) : y;
      }
      const lead = x.shape.slice(0, -1);
      const flat = () => (x.shape.length === 2 ? x : this.reshape(x, [-1, inF]));
      if (this.fp8 && (opts.fp8 ?? this.fp8.layers?.(prefix))) {
        let y2 = this.linearFp8(x, flat, we, `${prefix}.weight`);
        if (bias) y2 = this.add(y2, bias);
        return x.shape.length === 2 ? y2 : this.reshapeTo(y2, [...lead, out], x, x.shape.length - 1);
      }
      const x2 = flat();
      let w = this.param(ckpt, `${prefix}.weight`, { dtype: x.dtype });
      // constant folding slices the stored weight once, at session creation ('load')
      if (opts.columns) w = this.slice(w, [from], [to], [1]);
      const c = opts.accumulate ? (opts.accumulate.shape.length === 2 ? opts.accumulate : this.reshape(opts.accumulate, [-1, out])) : bias;
      const y2 = this.op('Gemm', c ? [x2, w, c] : [x2, w], { transB: 1 })[0];
      if (x.shape.length === 2) return y2;
      return this.reshapeTo(y2, [...lead, out], x, x.shape.length - 1);
    });
  }

  /** Whether linear(..., prefix, opts) is one plain Gemm: neither 8-bit (MatMulNBits) nor FP8 weights. */
  plainLinear(prefix: string, opts: Pick<LinearOptions, 'quantize' | 'fp8'> = {}): boolean {
    return !(this.quantize && opts.quantize !== false) && !(this.fp8 && (opts.fp8 ?? this.fp8.layers?.(prefix)));
  }

  /**
   * Reshape `x` to `shape`, where symbolic dims in `shape` are copied at run time from dims [0, upto) of
   * `like` (numeric ones are constants).
   */
  reshapeTo(x: Value, shape: Dim[], like: Value, upto: number): Value {
    if (shape.every((d) => typeof d === 'number')) return this.reshape(x, shape as number[]);
    const head = this.op('Shape', [like], { start: 0, end: upto }, { dtype: 'int64', shape: [upto] })[0];
    const tail = this.ints(shape.slice(upto).map((d) => (typeof d === 'number' ? d : -1)));
    const target = this.concat([head, tail], 0);
    return this.op('Reshape', [x, target], {}, { shape: [...shape] })[0];
  }

  // ---------------------------------------------------------------- shape ops

  /** ONNX Reshape semantics: 0 copies the input dim, -1 is inferred. */
  reshape(x: Value, shape: number[]): Value {
    return this.op('Reshape', [x, this.ints(shape)])[0];
  }
  transpose(x: Value, perm: number[]): Value { return this.op('Transpose', [x], { perm })[0]; }
  concat(values: Value[], axis: number): Value { return this.op('Concat', values, { axis })[0]; }
  /** x[starts:ends:steps] along `axes` (default 0..n-1); ends may exceed the dim (clamped). */
  slice(x: Value, starts: number[], ends: number[], axes?: number[], steps?: number[]): Value {
    const ins = [x, this.ints(starts), this.ints(ends), this.ints(axes ?? starts.map((_, i) => i))];
    if (steps) ins.push(this.ints(steps));
    return this.op('Slice', ins)[0];
  }
  /** Split into pieces of the given sizes, or into `sizes` equal pieces when a number. */
  split(x: Value, sizes: number[] | number, axis: number): Value[] {
    if (typeof sizes === 'number') return this.op('Split', [x], { axis, num_outputs: sizes }, { outputs: sizes });
    return this.op('Split', [x, this.ints(sizes)], { axis }, { outputs: sizes.length });
  }
  /** Gather along `axis`; a number index drops the axis, an array keeps it. */
  gather(x: Value, indices: Value | number[] | number, axis = 0): Value {
    const idx = typeof indices === 'number' ? this.constant(BigInt64Array.of(BigInt(indices)), [], 'int64')
      : Array.isArray(indices) ? this.ints(indices) : indices;
    return this.op('Gather', [x, idx], { axis })[0];
  }
  unsqueeze(x: Value, axes: number[]): Value { return this.op('Unsqueeze', [x, this.ints(axes)])[0]; }
  squeeze(x: Value, axes: number[]): Value { return this.op('Squeeze', [x, this.ints(axes)])[0]; }
  expand(x: Value, shape: number[]): Value { return this.op('Expand', [x, this.ints(shape)])[0]; }
  /** Cast to `dtype` (default: the graph precision); no node when already of that type. */
  cast(x: Value, dtype: DType = this.precision): Value {
    if (x.dtype === dtype) return x;
    return this.op('Cast', [x], { to: ONNX_TYPE[dtype] }, { dtype })[0];
  }
  softmax(x: Value, axis = -1): Value { return this.op('Softmax', [x], { axis })[0]; }
  reduceMean(x: Value, axes: number[], keepdims = true): Value {
    return this.op('ReduceMean', [x, this.ints(axes)], { keepdims: keepdims ? 1 : 0 })[0];
  }
  reduceSum(x: Value, axes: number[], keepdims = true): Value {
    return this.op('ReduceSum', [x, this.ints(axes)], { keepdims: keepdims ? 1 : 0 })[0];
  }

  /**
   * Pads per axis: `pads` = [begin_0, ..., begin_n-1, end_0, ..., end_n-1] (ONNX order).
   * mode 'edge' replicates the border (torch 'replicate'), 'reflect' mirrors it.
   */
  pad(x: Value, pads: number[], mode: 'constant' | 'edge' | 'reflect' = 'constant', value = 0): Value {
    if (pads.length !== 2 * x.shape.length) throw new GraphError(`pad: ${pads.length} pads for rank ${x.shape.length}`);
    const ins: (Value | null)[] = [x, this.ints(pads)];
    if (mode === 'constant' && value !== 0) ins.push(this.scalar(value, x.dtype));
    return this.op('Pad', ins, { mode })[0];
  }

  /**
   * Resize by `scales` (one per axis) or to `sizes`. mode 'nearest' uses floor indices with 'asymmetric'
   * coordinates (torch F.interpolate(mode='nearest')); 'linear'/'cubic' default to 'half_pixel'
   * (align_corners=False).
   */
  resize(x: Value, opts: { scales?: number[]; sizes?: number[]; mode?: 'nearest' | 'linear' | 'cubic'; coordinateTransformationMode?: string; nearestMode?: string; cubicCoeffA?: number; antialias?: boolean }): Value {
    const mode = opts.mode ?? 'nearest';
    const ctm = opts.coordinateTransformationMode ?? (mode === 'nearest' ? 'asymmetric' : 'half_pixel');
    const attrs: Record<string, AttrValue> = { mode, coordinate_transformation_mode: ctm };
    if (mode === 'nearest') attrs.nearest_mode = opts.nearestMode ?? 'floor';
    if (mode === 'cubic') attrs.cubic_coeff_a = opts.cubicCoeffA ?? -0.75;
    if (opts.antialias) attrs.antialias = 1;
    let ins: (Value | null)[];
    let shape: Dim[];
    if (opts.sizes) {
      ins = [x, null, null, this.ints(opts.sizes)];
      shape = [...opts.sizes];
    } else if (opts.scales) {
      const s = opts.scales;
      ins = [x, null, this.constant(Float32Array.from(s), [s.length], 'float32')];
      shape = x.shape.map((d, i) => (typeof d === 'number' ? Math.floor(d * s[i]) : s[i] === 1 ? d : this.unknownDim()));
    } else {
      throw new GraphError('resize: give scales or sizes');
    }
    return this.op('Resize', ins, attrs, { shape })[0];
  }

  // ---------------------------------------------------------------- normalisation

  /** LayerNorm over the last axis. weight/bias null = no affine (ones / zeros). */
  layerNorm(x: Value, weight: Value | null, bias: Value | null, eps = 1e-5): Value {
    const w = weight ?? this.ones(this.lastDim(x, 'layerNorm'), x.dtype);
    return this.op('LayerNormalization', bias ? [x, w, bias] : [x, w], { axis: -1, epsilon: eps }, { outputs: 1 })[0];
  }

  /**
   * s = x + skip and LayerNorm(s) * gamma + beta over the last axis in one pass (com.microsoft
   * SkipLayerNormalization, statistics in float32): x, skip (B, S, D), gamma, beta (D). Returns [normalised, s].
   */
  skipLayerNorm(x: Value, skip: Value, gamma: Value, beta: Value, eps: number): [Value, Value] {
    const name = this.nodeName('SkipLayerNormalization');
    const [y, sum] = [0, 3].map((i) => ({ name: this.claimUnique(`${name}:${i}`), dtype: x.dtype, shape: [...x.shape] }));
    // outputs 1 and 2 (mean, inverse deviation) are left out: only the normalised value and the sum are used
    this.nodes.push({
      opType: 'SkipLayerNormalization', domain: 'com.microsoft', name, input: [x.name, skip.name, gamma.name, beta.name],
      output: [y.name, '', '', sum.name], attribute: [attribute('epsilon', eps)],
    });
    return [y, sum];
  }

  /** RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight (ONNX RMSNormalization, computed in float32). */
  rmsNorm(x: Value, weight: Value | null, eps = 1e-6): Value {
    const w = weight ?? this.ones(this.lastDim(x, 'rmsNorm'), x.dtype);
    return this.op('RMSNormalization', [x, w], { axis: -1, epsilon: eps })[0];
  }

  /**
   * GroupNorm on (N, C, ...) as torch.nn.GroupNorm: statistics per (sample, group), then per-channel affine.
   * float32: InstanceNormalization over (N, groups, C/groups * rest), whose CPU kernel accumulates precisely
   * over the ~1 M-value rows of a video frame. Half precision (the GPU policy) or `method: 'rows'`: see
   * groupNormByRows. (At opset 23 the CUDA EP has no InstanceNormalization kernel.)
   */
  groupNorm(x: Value, groups: number, weight: Value | null, bias: Value | null, eps = 1e-5, method?: 'instance' | 'rows'): Value {
    const c = x.shape[1];
    if (typeof c !== 'number' || c % groups) throw new GraphError(`groupNorm: channels ${c} not divisible by ${groups} groups`);
    return this.scope('group_norm', () => {
      if ((method ?? (x.dtype === 'float32' ? 'instance' : 'rows')) === 'rows') return this.groupNormByRows(x, groups, c, weight, bias, eps);
      const xg = this.reshape(x, [0, groups, -1]); // (N, G, L)
      const ones = this.ones(groups, x.dtype);
      const zeros = this.constant(new Array(groups).fill(0), [groups], x.dtype);
      let y = this.reshapeTo(this.op('InstanceNormalization', [xg, ones, zeros], { epsilon: eps })[0], x.shape, x, x.shape.length);
      const bshape = [c, ...x.shape.slice(2).map(() => 1)]; // (C, 1, 1, ...)
      if (weight) y = this.mul(y, this.reshape(weight, bshape));
      if (bias) y = this.add(y, this.reshape(bias, bshape));
      return y;
    });
  }

  /**
   * GroupNorm of a batch-1 (1, C, ..., W) tensor without a float32 copy of it, in two passes over x:
   *  1. LayerNormalization over rows of W values (the group's data is contiguous, so (1, G, R, W) rows) for
   *     its optional float32 Mean and InvStdDev outputs only; its normalised output is discarded. Many
   *     short rows keep the kernel's one-block-per-row parallel, and nothing is reduced in half precision
   *     (a float16 sum of squares over a group of a 640-px video overflows).
   *  2. The rows' statistics combine per group in float32 (mean of means; variance = mean of the rows'
   *     variances + the spread of their means), fold with the affine into a per-channel scale a and shift
   *     b, and BatchNormalization (mean 0, variance 1) computes x a + b in one pass.
   * BatchNormalization's epsilon is 0 here; the CUDA EP may raise it to cuDNN's minimum (1e-5), which scales
   * the output by 1/sqrt(1 + 1e-5): far below half-precision rounding.
   */
  private groupNormByRows(x: Value, groups: number, c: number, weight: Value | null, bias: Value | null, eps: number): Value {
    if (x.shape[0] !== 1) throw new GraphError(`groupNorm by rows: batch must be 1, got ${x.shape[0]}`);
    const rank = x.shape.length;
    const w = this.op('Shape', [x], { start: rank - 1 }, { dtype: 'int64', shape: [1] })[0]; // [W]
    const rows = this.op('Reshape', [x, this.concat([this.ints([1, groups, -1]), w], 0)], {}, { shape: [1, groups, this.unknownDim(), x.shape[rank - 1]] })[0]; // (1, G, R, W)
    const ones = this.op('Expand', [this.scalar(1, x.dtype), w], {}, { shape: [x.shape[rank - 1]] })[0];
    const [, mean, inv] = this.op('LayerNormalization', [rows, ones], { axis: -1, epsilon: ROW_EPS, stash_type: 1 },
      { outputs: 3, dtype: 'float32', shape: [1, groups, this.unknownDim(), 1] }); // Mean, InvStdDev: (1, G, R, 1)
    const rowVar = this.sub(this.reciprocal(this.mul(inv, inv)), ROW_EPS);
    const m = this.reduceMean(mean, [2, 3]); // (1, G, 1, 1)
    const spread = this.sub(mean, m);
    const variance = this.reduceMean(this.add(rowVar, this.mul(spread, spread)), [2, 3]);
    const invStd = this.reciprocal(this.sqrt(this.add(variance, eps))); // (1, G, 1, 1)
    const perChannel = (t: Value) => this.reshape(this.expand(t, [1, groups, c / groups, 1]), [c]); // (C) float32
    const gamma = weight ? this.cast(weight, 'float32') : this.ones(c, 'float32');
    const a = this.mul(perChannel(invStd), gamma);
    let b = this.neg(this.mul(perChannel(m), a));
    if (bias) b = this.add(b, this.cast(bias, 'float32'));
    const zeros = this.constant(new Array(c).fill(0), [c], x.dtype);
    return this.op('BatchNormalization', [x, this.cast(a, x.dtype), this.cast(b, x.dtype), zeros, this.ones(c, x.dtype)], { epsilon: 0 })[0];
  }

  // ---------------------------------------------------------------- convolution

  /** 2-D convolution, NCHW, weight (out, in/groups, kh, kw). */
  conv2d(x: Value, weight: Value, bias: Value | null, opts: ConvOptions = {}): Value {
    return this.conv(x, weight, bias, 2, opts);
  }

  /** 3-D convolution, NCTHW, weight (out, in/groups, kt, kh, kw). */
  conv3d(x: Value, weight: Value, bias: Value | null, opts: ConvOptions = {}): Value {
    return this.conv(x, weight, bias, 3, opts);
  }

  /**
   * Causal 3-D convolution as HunyuanVideo's VAE: replicate-pad kt-1 frames in front (none behind) and
   * k//2 on both sides of H and W, then an unpadded Conv.
   */
  causalConv3d(x: Value, weight: Value, bias: Value | null, opts: { stride?: number | number[]; dilation?: number | number[] } = {}): Value {
    const [kt, kh, kw] = weight.shape.slice(2) as number[];
    let xp = this.replicatePad(x, 2, kt - 1, 0);
    xp = this.replicatePad(xp, 3, Math.floor(kh / 2), Math.floor(kh / 2));
    xp = this.replicatePad(xp, 4, Math.floor(kw / 2), Math.floor(kw / 2));
    return this.conv3d(xp, weight, bias, { stride: opts.stride, dilation: opts.dilation });
  }

  /**
   * Replicate padding of one axis as a Concat of the border slices: the CUDA EP's Pad in 'edge' mode takes
   * ~230 ms on a (1, 128, 33, 640, 608) float16 video, a Concat is a plain copy.
   */
  replicatePad(x: Value, axis: number, before: number, after: number): Value {
    if (before === 0 && after === 0) return x;
    const first = this.slice(x, [0], [1], [axis]);
    const last = this.slice(x, [-1], [Number.MAX_SAFE_INTEGER], [axis]);
    return this.concat([...new Array(before).fill(first), x, ...new Array(after).fill(last)], axis);
  }

  private conv(x: Value, weight: Value, bias: Value | null, nd: number, o: ConvOptions): Value {
    const arr = (v: number | number[] | undefined, d: number) => (v === undefined ? new Array(nd).fill(d) : typeof v === 'number' ? new Array(nd).fill(v) : v);
    const pads = o.padding === undefined ? new Array(2 * nd).fill(0)
      : typeof o.padding === 'number' ? new Array(2 * nd).fill(o.padding)
      : o.padding.length === nd ? [...o.padding, ...o.padding] : o.padding;
    const attrs = { strides: arr(o.stride, 1), pads, dilations: arr(o.dilation, 1), group: o.groups ?? 1 };
    return this.op('Conv', bias ? [x, weight, bias] : [x, weight], attrs)[0];
  }

  // ---------------------------------------------------------------- attention

  /**
   * Multi-head attention (com.microsoft.MultiHeadAttention) on packed heads:
   * q (B, S, heads*dk), k (B, L, heads*dk), v (B, L, heads*dv) -> (B, S, heads*dv).
   * keyPaddingMask: int32 (B, L), 1 = attend, 0 = masked. bias: additive (B|1, heads|1, S, L) in q's dtype.
   * scale defaults to 1/sqrt(dk).
   */
  attention(q: Value, k: Value, v: Value, opts: { heads: number; scale?: number; keyPaddingMask?: Value; bias?: Value }): Value {
    const attrs: Record<string, AttrValue> = { num_heads: opts.heads };
    if (opts.scale !== undefined) attrs.scale = opts.scale;
    const ins: (Value | null)[] = [q, k, v, null, opts.keyPaddingMask ?? null, opts.bias ?? null];
    while (ins[ins.length - 1] === null) ins.pop();
    const shape: Dim[] = [q.shape[0], q.shape[1], v.shape[2]];
    return this.op('MultiHeadAttention', ins, attrs, { domain: 'com.microsoft', dtype: q.dtype, shape })[0];
  }

  /**
   * Rotary embedding (com.microsoft.RotaryEmbedding) on x (B, S, heads*dim) or (B, heads, S, dim):
   * positions int64 (B, S) index rows of cos/sin (maxPos, rotaryDim/2). interleaved = pairs (x0,x1),(x2,x3)...
   * rotate together (GPT-J / HunyuanVideo); false = halves (GPT-NeoX / LLaMA).
   */
  rotary(x: Value, positions: Value, cos: Value, sin: Value, opts: { interleaved: boolean; heads?: number; rotaryDim?: number }): Value {
    const attrs: Record<string, AttrValue> = { interleaved: opts.interleaved ? 1 : 0 };
    if (opts.heads !== undefined) attrs.num_heads = opts.heads;
    if (opts.rotaryDim !== undefined) attrs.rotary_embedding_dim = opts.rotaryDim;
    return this.op('RotaryEmbedding', [x, positions, cos, sin], attrs, { domain: 'com.microsoft', dtype: x.dtype, shape: [...x.shape] })[0];
  }

  // ---------------------------------------------------------------- internals

  private ones(n: number, dtype: DType): Value {
    return this.constant(new Array(n).fill(1), [n], dtype);
  }

  private lastDim(x: Value, what: string): number {
    const d = x.shape[x.shape.length - 1];
    if (typeof d !== 'number') throw new GraphError(`${what}: last dim of ${x.name} must be static without a weight`);
    return d;
  }

  private binary(type: string, a: Value, b: Value | number): Value {
    const bv = typeof b === 'number' ? this.scalar(b, a.dtype) : b;
    return this.op(type, [a, bv])[0];
  }

  private matmulNBits(x: Value, we: TensorEntry, key: string): Value {
    const q = this.quantize!;
    const bits = q.bits;
    const blockSize = q.blockSize ?? 32;
    const [n, k] = we.shape;
    const cacheDir = q.cacheDir ?? process.env.FRAMEPACK_QUANT_CACHE ?? join(homedir(), '.cache', 'framepack', 'quantized');
    const L = quantizedLayout(n, k, bits, blockSize);
    const file = join(cacheDir, sourceHash(we.file), `${key.replace(/[^A-Za-z0-9._-]/g, '_')}.q${bits}b${blockSize}.bin`);
    let w = this.quantized.get(`${file}\0${x.dtype}`);
    if (!w) {
      this.jobs.push({ source: { ...we }, bits, blockSize, file, size: L.total });
      const bName = this.valueName(`${key}:q${bits}`);
      this.externals.push({ name: bName, dataType: TP.UINT8, dims: [n, L.blocks, L.blobSize], file, offset: 0, length: L.bBytes });
      const sName = this.valueName(`${key}:scales`);
      this.externals.push({ name: sName, dataType: TP.FLOAT, dims: [n, L.blocks], file, offset: L.bBytes, length: L.scaleBytes });
      const zName = this.valueName(`${key}:zero_points`);
      this.externals.push({ name: zName, dataType: TP.UINT8, dims: [n, L.zpCols], file, offset: L.bBytes + L.scaleBytes, length: L.zpBytes });
      w = {
        b: { name: bName, dtype: 'uint8', shape: [n, L.blocks, L.blobSize] },
        scales: this.atRoot(() => this.cast({ name: sName, dtype: 'float32', shape: [n, L.blocks] }, x.dtype)),
        zeros: { name: zName, dtype: 'uint8', shape: [n, L.zpCols] },
      };
      this.quantized.set(`${file}\0${x.dtype}`, w);
    }
    const { b: packed, scales, zeros } = w;
    const y = this.op('MatMulNBits', [x, packed, scales, zeros],
      { K: k, N: n, bits, block_size: blockSize, accuracy_level: 0 },
      { domain: 'com.microsoft', dtype: x.dtype, shape: [...x.shape.slice(0, -1), n] })[0];
    return y;
  }

  /**
   * x (..., K) W^T as (M, K) x (K, N) in FP8 (`flat` gives x as (M, K)): W's E4M3FN codes and scale from the
   * cache, x quantized once per value `x` (the linears reading the same activation share its codes).
   * y = (xq wq^T) sx sw in float32 accumulation.
   * GemmFloat8 (ORT 1.29, float8 operands): row-major Y = op(A) op(B) computed as the column-major
   * transpose; cuBLASLt's FP8 kernels take only the "TN" form, which is A (M, K) with transA 0 and B = W
   * (N, K) with transB 1: W is used as stored. Its optional bias must be a full (M, N) matrix, so the bias
   * is added after (as Gemm's broadcast would).
   */
  private linearFp8(x: Value, flat: () => Value, we: TensorEntry, key: string): Value {
    const o = this.fp8!;
    const n = we.shape[0];
    const w = this.fp8Weight(we, key, o);
    let a = this.fp8Inputs.get(x.name);
    if (!a) {
      a = this.scope('fp8_input', () => this.quantizeFp8(flat(), o.amax));
      this.fp8Inputs.set(x.name, a);
    }
    const m = a.q.shape[0];
    if (o.mode === 'gemm') {
      const out = o.output ?? 'bfloat16';
      const y = this.op('GemmFloat8', [a.q, w.w, null, a.scale, w.scale], { transA: 0, transB: 1, dtype: ONNX_TYPE[out] },
        { domain: 'com.microsoft', dtype: out, shape: [m, n] })[0];
      return this.cast(y, x.dtype);
    }
    const wf = this.atRoot(() => this.cast(w.w, 'float32'));
    const y = this.op('Gemm', [this.cast(a.q, 'float32'), wf], { transB: 1 })[0];
    return this.cast(this.mul(y, this.mul(a.scale, w.scale)), x.dtype);
  }

  /**
   * Per-tensor activation quantization of x2 (M, K): scale = amax / 448, codes = E4M3FN(x2 / scale), the amax
   * reduced as Fp8Options.amax says. What linearFp8 multiplies; public for the GEMM benchmark.
   */
  quantizeFp8(x2: Value, amaxBy: Fp8Options['amax'] = 'reduce'): { q: Value; scale: Value } {
    const xf = x2.dtype === 'float32' ? x2 : this.cast(x2, 'float32');
    const amax = this.op('Max', [amaxBy === 'pool' ? this.poolAmax(xf) : this.reduceAmax(xf), this.scalar(1e-30, 'float32')])[0];
    const scale = this.div(amax, FP8_MAX);
    const scaled = this.mul(x2, this.cast(this.div(this.scalar(FP8_MAX, 'float32'), amax), x2.dtype));
    // ONNX Runtime's CUDA Cast to float8 reads float32 and float16 only (bfloat16 fails at run time). Scaled
    // values lie within +-448, where float16 holds every bfloat16 exactly.
    const src = x2.dtype === 'bfloat16' ? this.cast(scaled, 'float16') : scaled;
    const q = this.op('Cast', [src], { to: TP.FLOAT8E4M3FN, saturate: 1 }, { dtype: 'float8e4m3fn' })[0];
    return { q, scale };
  }

  /** max |x| as max(max(x), -min(x)): two reads of x, where Abs would also write a copy. */
  private reduceAmax(xf: Value): Value {
    const hi = this.op('ReduceMax', [xf], { keepdims: 0 }, { shape: [] })[0];
    const lo = this.op('ReduceMin', [xf], { keepdims: 0 }, { shape: [] })[0];
    return this.op('Max', [hi, this.neg(lo)])[0];
  }

  /** max |x| of (M, K) by GlobalMaxPool: (1, M, K) -> (1, M, 1) row maxima -> (1, 1, M) -> (1, 1, 1). */
  private poolAmax(xf: Value): Value {
    const k = xf.shape[1];
    const rows = this.op('GlobalMaxPool', [this.reshape(this.op('Abs', [xf])[0], [1, -1, k as number])], {}, { shape: [1, xf.shape[0], 1] })[0];
    const all = this.op('GlobalMaxPool', [this.reshape(rows, [1, 1, -1])], {}, { shape: [1, 1, 1] })[0];
    return this.reshape(all, []);
  }

  /** W's E4M3FN codes (N, K) and float32 scale, external initializers over the prepared cache file. */
  private fp8Weight(we: TensorEntry, key: string, o: Fp8Options): { w: Value; scale: Value } {
    const [n, k] = we.shape;
    const cacheDir = o.cacheDir ?? process.env.FRAMEPACK_QUANT_CACHE ?? join(homedir(), '.cache', 'framepack', 'quantized');
    const file = join(cacheDir, sourceHash(we.file), `${key.replace(/[^A-Za-z0-9._-]/g, '_')}.fp8e4m3.bin`);
    let w = this.fp8Weights.get(file);
    if (!w) {
      const L = fp8Layout(n, k);
      this.jobs.push({ source: { ...we }, bits: 'fp8', blockSize: 0, file, size: L.total });
      const wName = this.valueName(`${key}:fp8`);
      this.externals.push({ name: wName, dataType: TP.FLOAT8E4M3FN, dims: [n, k], file, offset: 0, length: L.codeBytes });
      const sName = this.valueName(`${key}:fp8_scale`);
      this.externals.push({ name: sName, dataType: TP.FLOAT, dims: [], file, offset: L.codeBytes, length: 4 });
      w = { w: { name: wName, dtype: 'float8e4m3fn', shape: [n, k] }, scale: { name: sName, dtype: 'float32', shape: [] } };
      this.fp8Weights.set(file, w);
    }
    return w;
  }

  /** Emits what `fn` builds into the main graph even while an If branch is built (weights' casts, shared by both). */
  private atRoot<T>(fn: () => T): T {
    const saved = this.nodes;
    this.nodes = this.rootNodes;
    try {
      return fn();
    } finally {
      this.nodes = saved;
    }
  }

  private externalInit(e: TensorEntry, key: string): string {
    const name = this.claimUnique(key);
    this.externals.push({ name, dataType: ST_ONNX[e.dtype], dims: e.shape, file: e.file, offset: e.offset, length: e.length });
    return name;
  }

  private emit(type: string, inputs: string[], attrs: Record<string, AttrValue>, dtype: DType, shape: Dim[], hint?: string): Value {
    return this.emitMany(type, inputs, attrs, [{ dtype, shape }], undefined, hint)[0];
  }

  private emitMany(type: string, inputs: string[], attrs: Record<string, AttrValue>, outs: { dtype: DType; shape: Dim[] }[], domain?: string, hint?: string): Value[] {
    const nodeName = this.nodeName(type);
    const values = outs.map((o, i) => ({ name: hint && outs.length === 1 ? this.claimUnique(hint) : this.claimUnique(`${nodeName}${outs.length > 1 ? `:${i}` : ''}`), dtype: o.dtype, shape: o.shape }));
    while (inputs.length && inputs[inputs.length - 1] === '') inputs.pop();
    if (domain && domain !== 'com.microsoft') this.customDomains.add(domain);
    this.nodes.push({
      opType: type, domain: domain ?? '', name: nodeName, input: inputs, output: values.map((v) => v.name),
      attribute: Object.entries(attrs).filter(([, v]) => v !== undefined).map(([k, v]) => attribute(k, v)),
    });
    return values;
  }

  private nodeName(type: string): string {
    return [...this.scopes, `${type}_${this.counter++}`].join('/');
  }

  private valueName(hint: string): string {
    return this.claimUnique([...this.scopes, hint].join('/'));
  }

  private claim(name: string): void {
    if (this.names.has(name)) throw new GraphError(`duplicate value name ${name}`);
    this.names.add(name);
  }

  private claimUnique(base: string): string {
    let name = base;
    for (let i = 1; this.names.has(name); i++) name = `${base}_${i}`;
    this.names.add(name);
    return name;
  }

  private unknownDim(): string {
    return `d${this.counter++}`;
  }

  // ---------------------------------------------------------------- shape inference of default-domain ops

  private infer(type: string, ins: (Value | null)[], attrs: Record<string, AttrValue>, nOut: number): { dtype: DType; shape: Dim[] }[] | null {
    const x = ins[0];
    if (!x) return null;
    const same = (shape: Dim[] = x.shape, dtype: DType = x.dtype) => [{ dtype, shape: [...shape] }];
    const axis = (a: number, rank: number) => (a < 0 ? a + rank : a);
    const cval = (v: Value | null | undefined) => (v ? this.constData.get(v.name) : undefined);
    switch (type) {
      case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Pow': case 'Max': case 'Min':
        return same(this.broadcast(ins.map((v) => v!.shape)));
      case 'Equal': case 'Less': case 'Greater': case 'LessOrEqual': case 'GreaterOrEqual': case 'And': case 'Or':
        return same(this.broadcast(ins.map((v) => v!.shape)), 'bool');
      case 'Where':
        return same(this.broadcast(ins.map((v) => v!.shape)), ins[1]!.dtype);
      case 'Sqrt': case 'Neg': case 'Exp': case 'Sigmoid': case 'Tanh': case 'Relu': case 'Gelu': case 'Erf': case 'Abs':
      case 'Reciprocal': case 'Sin': case 'Cos': case 'Softmax': case 'Identity': case 'LayerNormalization':
      case 'RMSNormalization': case 'InstanceNormalization': case 'Not': case 'Log': case 'Floor': case 'Clip':
        return same();
      case 'Cast': {
        const to = Object.entries(ONNX_TYPE).find(([, c]) => c === attrs.to)?.[0] as DType | undefined;
        return same(x.shape, to ?? x.dtype);
      }
      case 'MatMul': return same(this.matmulShape(x.shape, ins[1]!.shape));
      case 'Gemm': {
        const a = attrs.transA ? [x.shape[1], x.shape[0]] : x.shape;
        const b = ins[1]!.shape;
        const bn = attrs.transB ? b[0] : b[1];
        if (typeof a[1] === 'number' && typeof (attrs.transB ? b[1] : b[0]) === 'number' && a[1] !== (attrs.transB ? b[1] : b[0])) {
          throw new GraphError(`Gemm: inner dims differ: [${x.shape}] x [${b}]${attrs.transB ? '^T' : ''}`);
        }
        return same([a[0], bn]);
      }
      case 'Transpose': {
        const perm = (attrs.perm as number[]) ?? x.shape.map((_, i) => x.shape.length - 1 - i);
        if (perm.length !== x.shape.length) throw new GraphError(`Transpose: perm [${perm}] for rank ${x.shape.length}`);
        return same(perm.map((p) => x.shape[p]));
      }
      case 'Reshape': {
        const target = cval(ins[1]);
        const r = ins[1]!.shape[0];
        if (!target) return typeof r === 'number' ? same(Array.from({ length: r }, () => this.unknownDim())) : null;
        return same(this.reshapeShape(x.shape, target));
      }
      case 'Concat': {
        const a = axis(attrs.axis as number, x.shape.length);
        const shape = [...x.shape];
        let total: Dim = 0;
        for (const v of ins) {
          if (v!.shape.length !== x.shape.length) throw new GraphError(`Concat: ranks differ ([${x.shape}] vs [${v!.shape}])`);
          const d = v!.shape[a];
          total = typeof total === 'number' && typeof d === 'number' ? total + d : this.unknownDim();
        }
        shape[a] = total;
        return same(shape);
      }
      case 'Slice': {
        const starts = cval(ins[1]), ends = cval(ins[2]);
        const axes = cval(ins[3]) ?? starts?.map((_, i) => i);
        const steps = cval(ins[4]) ?? starts?.map(() => 1);
        if (!starts || !ends || !axes || !steps) return null;
        const shape = [...x.shape];
        axes.forEach((ax, i) => {
          const a = axis(ax, shape.length);
          const d = shape[a];
          if (typeof d !== 'number') { shape[a] = this.unknownDim(); return; }
          const step = steps[i];
          const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
          let s = starts[i] < 0 ? starts[i] + d : starts[i];
          let e = ends[i] < 0 ? ends[i] + d : ends[i];
          if (step > 0) { s = clamp(s, 0, d); e = clamp(e, 0, d); shape[a] = Math.max(0, Math.ceil((e - s) / step)); }
          else { s = clamp(s, 0, d - 1); e = clamp(e, -1, d - 1); shape[a] = Math.max(0, Math.ceil((e - s) / step)); }
        });
        return same(shape);
      }
      case 'Split': {
        const a = axis(attrs.axis as number, x.shape.length);
        const sizes = cval(ins[1]);
        const d = x.shape[a];
        const parts = sizes ?? (typeof d === 'number' ? new Array(nOut).fill(Math.ceil(d / nOut)).map((s, i) => (i === nOut - 1 ? d - s * (nOut - 1) : s)) : null);
        if (sizes && typeof d === 'number' && sizes.reduce((p, q) => p + q, 0) !== d) {
          throw new GraphError(`Split: sizes [${sizes}] do not sum to dim ${d} of [${x.shape}]`);
        }
        return Array.from({ length: nOut }, (_, i) => {
          const s = [...x.shape];
          s[a] = parts ? parts[i] : this.unknownDim();
          return { dtype: x.dtype, shape: s };
        });
      }
      case 'Gather': {
        const a = axis((attrs.axis as number) ?? 0, x.shape.length);
        return same([...x.shape.slice(0, a), ...ins[1]!.shape, ...x.shape.slice(a + 1)]);
      }
      case 'Unsqueeze': {
        const axes = cval(ins[1]);
        if (!axes) return null;
        const rank = x.shape.length + axes.length;
        const set = new Set(axes.map((a) => axis(a, rank)));
        const shape: Dim[] = [];
        let j = 0;
        for (let i = 0; i < rank; i++) shape.push(set.has(i) ? 1 : x.shape[j++]);
        return same(shape);
      }
      case 'Squeeze': {
        const axes = cval(ins[1]);
        if (!axes) return same(x.shape.filter((d) => d !== 1));
        const set = new Set(axes.map((a) => axis(a, x.shape.length)));
        for (const a of set) if (typeof x.shape[a] === 'number' && x.shape[a] !== 1) throw new GraphError(`Squeeze: dim ${a} of [${x.shape}] is not 1`);
        return same(x.shape.filter((_, i) => !set.has(i)));
      }
      case 'Expand': {
        const target = cval(ins[1]);
        if (!target) return null;
        return same(this.broadcast([x.shape, target]));
      }
      case 'Pad': {
        const pads = cval(ins[1]);
        if (!pads) return null;
        const r = x.shape.length;
        return same(x.shape.map((d, i) => (typeof d === 'number' ? d + pads[i] + pads[i + r] : pads[i] + pads[i + r] === 0 ? d : this.unknownDim())));
      }
      case 'ReduceMean': case 'ReduceSum': case 'ReduceMax': {
        const axes = cval(ins[1]);
        if (!axes) return null;
        const set = new Set(axes.map((a) => axis(a, x.shape.length)));
        const keep = attrs.keepdims !== 0;
        return same(keep ? x.shape.map((d, i) => (set.has(i) ? 1 : d)) : x.shape.filter((_, i) => !set.has(i)));
      }
      case 'Shape': {
        const r = x.shape.length;
        const s = axis((attrs.start as number) ?? 0, r), e = attrs.end === undefined ? r : axis(attrs.end as number, r);
        return same([Math.max(0, e - s)], 'int64');
      }
      case 'Conv': {
        const w = ins[1]!.shape;
        const nd = w.length - 2;
        const strides = attrs.strides as number[], pads = attrs.pads as number[], dil = attrs.dilations as number[];
        const cin = x.shape[1], wc = w[1];
        if (typeof cin === 'number' && typeof wc === 'number' && cin !== wc * ((attrs.group as number) ?? 1)) {
          throw new GraphError(`Conv: input has ${cin} channels, weight [${w}] expects ${wc} x ${attrs.group ?? 1} groups`);
        }
        const spatial = x.shape.slice(2).map((d, i) => {
          const k = w[2 + i];
          if (typeof d !== 'number' || typeof k !== 'number') return this.unknownDim();
          return Math.floor((d + pads[i] + pads[i + nd] - dil[i] * (k - 1) - 1) / strides[i]) + 1;
        });
        return same([x.shape[0], w[0], ...spatial]);
      }
      default:
        return null;
    }
  }

  private broadcast(shapes: Dim[][]): Dim[] {
    const rank = Math.max(...shapes.map((s) => s.length));
    const out: Dim[] = [];
    for (let i = 0; i < rank; i++) {
      let d: Dim = 1;
      for (const s of shapes) {
        const v = s[s.length - rank + i] ?? 1;
        if (v === 1) continue;
        if (d === 1) d = v;
        else if (typeof d === 'number' && typeof v === 'number' && d !== v) {
          throw new GraphError(`cannot broadcast shapes ${shapes.map((x) => `[${x.join(', ')}]`).join(' and ')}`);
        } else if (typeof d === 'string' && typeof v === 'number') d = v;
      }
      out.push(d);
    }
    return out;
  }

  private matmulShape(a: Dim[], b: Dim[]): Dim[] {
    const a2 = a.length === 1 ? [1, a[0]] : a;
    const b2 = b.length === 1 ? [b[0], 1] : b;
    const k1 = a2[a2.length - 1], k2 = b2[b2.length - 2];
    if (typeof k1 === 'number' && typeof k2 === 'number' && k1 !== k2) {
      throw new GraphError(`MatMul: inner dims differ: [${a.join(', ')}] x [${b.join(', ')}]`);
    }
    const batch = this.broadcast([a2.slice(0, -2), b2.slice(0, -2)]);
    const out = [...batch, a2[a2.length - 2], b2[b2.length - 1]];
    if (a.length === 1) out.splice(out.length - 2, 1);
    if (b.length === 1) out.pop();
    return out;
  }

  private reshapeShape(input: Dim[], target: number[]): Dim[] {
    const out: Dim[] = target.map((t, i) => (t === 0 ? input[i] : t));
    const neg = out.indexOf(-1);
    if (neg >= 0) {
      const total = input.every((d) => typeof d === 'number') ? (input as number[]).reduce((a, b) => a * b, 1) : null;
      const known = out.filter((d, i) => i !== neg);
      if (total !== null && known.every((d) => typeof d === 'number')) {
        const k = (known as number[]).reduce((a, b) => a * b, 1);
        if (k === 0 || total % k) throw new GraphError(`Reshape: cannot reshape [${input}] to [${target}]`);
        out[neg] = total / k;
      } else {
        out[neg] = this.unknownDim();
      }
    } else if (input.every((d) => typeof d === 'number') && out.every((d) => typeof d === 'number')) {
      const a = (input as number[]).reduce((p, q) => p * q, 1), b = (out as number[]).reduce((p, q) => p * q, 1);
      if (a !== b) throw new GraphError(`Reshape: cannot reshape [${input}] (${a} elements) to [${target}] (${b})`);
    }
    return out;
  }
}

export interface ConvOptions {
  stride?: number | number[];
  /** one number, one per spatial axis (symmetric), or ONNX pads [begins..., ends...] */
  padding?: number | number[];
  dilation?: number | number[];
  groups?: number;
}

/**
 * Nodes of a built model per op type (`domain.op` outside the default domain), If branches included; with
 * `scope`, only the nodes built inside Graph.scope(scope) (their names start with `scope/`).
 */
export function opCounts(model: BuiltModel, scope?: string): Record<string, number> {
  const counts: Record<string, number> = {};
  const visit = (nodes: readonly { name: string; opType: string; domain: string; attribute: readonly { g?: { node: readonly any[] } }[] }[]) => {
    for (const n of nodes) {
      const op = n.domain ? `${n.domain}.${n.opType}` : n.opType;
      if (!scope || n.name.startsWith(`${scope}/`)) counts[op] = (counts[op] ?? 0) + 1;
      for (const a of n.attribute) if (a.g) visit(a.g.node);
    }
  };
  visit(fromBinary(ModelProtoSchema, model.bytes).graph?.node ?? []);
  return Object.fromEntries(Object.entries(counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
}

/**
 * Deepest folder holding every file; a folder named `blobs` yields its parent, so a Hugging Face cache
 * model reads `blobs/<sha256>` relative to `models--org--name` as ONNX Runtime expects.
 */
export function commonFolder(files: string[]): string | null {
  if (files.length === 0) return null;
  let parts = dirname(files[0]).split(sep);
  for (const f of files.slice(1)) {
    const p = dirname(f).split(sep);
    let i = 0;
    while (i < parts.length && i < p.length && parts[i] === p[i]) i++;
    parts = parts.slice(0, i);
  }
  let folder = parts.join(sep) || sep;
  if (basename(folder) === 'blobs') folder = dirname(folder);
  return folder;
}

/**
 * Identity of a checkpoint file for the quantization cache: the sha256 a Hugging Face cache already names a
 * blob by; for other files a sha256 of (size, mtime, header bytes), which changes whenever the file is
 * rewritten without reading gigabytes at build time.
 */
export function sourceHash(file: string): string {
  const m = /[\\/]blobs[\\/]([0-9a-f]{64})$/.exec(file);
  if (m) return m[1];
  const st = statSync(file);
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(Math.min(st.size, 1 << 20));
    readSync(fd, head, 0, head.length, 0);
    return createHash('sha256').update(`${st.size}:${st.mtimeMs}:`).update(head).digest('hex');
  } finally {
    closeSync(fd);
  }
}

/** A value's element type without a shape (If branch outputs: their shapes may differ per run). */
function typeOnlyInfo(name: string, dtype: DType) {
  return { name, type: { value: { case: 'tensorType' as const, value: { elemType: ONNX_TYPE[dtype] } } } };
}

function valueInfo(name: string, dtype: DType, shape: Dim[]) {
  return {
    name,
    type: {
      value: {
        case: 'tensorType' as const,
        value: {
          elemType: ONNX_TYPE[dtype],
          shape: { dim: shape.map((d) => ({ value: typeof d === 'number' ? { case: 'dimValue' as const, value: BigInt(d) } : { case: 'dimParam' as const, value: d } })) },
        },
      },
    },
  };
}

function attribute(name: string, v: AttrValue) {
  if (typeof v === 'number') {
    return Number.isInteger(v) && !FLOAT_ATTRS.has(name) ? { name, type: AT.INT, i: BigInt(v) } : { name, type: AT.FLOAT, f: v };
  }
  if (typeof v === 'boolean') return { name, type: AT.INT, i: v ? 1n : 0n };
  if (typeof v === 'bigint') return { name, type: AT.INT, i: v };
  if (typeof v === 'string') return { name, type: AT.STRING, s: new TextEncoder().encode(v) };
  if (v instanceof Float32Array) return { name, type: AT.FLOATS, floats: Array.from(v) };
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return { name, type: AT.STRINGS, strings: (v as string[]).map((s) => new TextEncoder().encode(s)) };
  const nums = v as number[];
  return FLOAT_ATTRS.has(name) ? { name, type: AT.FLOATS, floats: nums } : { name, type: AT.INTS, ints: nums.map((x) => BigInt(x)) };
}

// Attributes that are floats even when given an integral value (epsilon: 1 would otherwise become INT).
const FLOAT_ATTRS = new Set(['epsilon', 'alpha', 'beta', 'scale', 'mask_filter_value', 'cubic_coeff_a', 'extrapolation_value', 'value', 'gamma', 'bias', 'lambd',
  'low', 'high', 'mean', 'seed']);

function encodeRaw(values: number[], dtype: DType): Uint8Array<ArrayBuffer> {
  switch (dtype) {
    case 'float32': return new Uint8Array(Float32Array.from(values).buffer);
    case 'float16': return new Uint8Array(float32ToHalf(values).buffer as ArrayBuffer);
    case 'bfloat16': return new Uint8Array(float32ToBf16(values).buffer as ArrayBuffer);
    case 'int64': return new Uint8Array(BigInt64Array.from(values.map((v) => BigInt(Math.trunc(v)))).buffer);
    case 'int32': return new Uint8Array(Int32Array.from(values).buffer);
    case 'int8': return new Uint8Array(Int8Array.from(values).buffer);
    case 'uint8': case 'bool': return Uint8Array.from(values);
    case 'float8e4m3fn': return float32ToFloat8e4m3(values, new Uint8Array(values.length)) as Uint8Array<ArrayBuffer>;
  }
}
