/**
 * A session worker: owns the ONNX Runtime sessions of one device. `InferenceSession.create` and `run` are
 * synchronous native calls, so they run here and never on the main thread's event loop.
 * Requests arrive one at a time (see protocol.ts); each gets exactly one response.
 */
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { prepareQuantized } from '../onnx/quantize.js';
import type { HostDType, HostTensor } from '../onnx/safetensors.js';
import { buffersOf, nest, type CreatePayload, type CreateResult, type Request, type Response } from './protocol.js';

// On Linux a priority set with pid 0 applies to the calling thread only (and to threads it starts later,
// ONNX Runtime's pool included): the main thread's event loop then wins the CPU whenever both want it, so
// health checks and cancels are answered promptly even while inference saturates every core.
const nice = (workerData as { nice?: number } | undefined)?.nice ?? 0;
if (nice) {
  try {
    setPriority(0, nice);
  } catch {
    // not permitted (or not Linux): run at normal priority
  }
}

interface Held {
  session: ort.InferenceSession;
  required: string[];
  optional: string[];
  /** what a run gets for the optional inputs it does not feed: the defaults, then the fixed feeds over them */
  preset: Record<string, ort.Tensor>;
  defaults: Record<string, ort.Tensor>;
}

const sessions = new Map<number, Held>();
let nextSession = 1;


function providers(p: CreatePayload): ort.InferenceSession.ExecutionProviderConfig[] {
  switch (p.ep) {
    case 'cpu': return ['cpu'];
    case 'cuda': return [{ name: 'cuda', deviceId: p.deviceId }];
    case 'webgpu': return ['webgpu'];
  }
}

async function create(p: CreatePayload): Promise<CreateResult> {
  const prepared: CreateResult['prepared'] = [];
  for (const job of p.prepare) prepared.push({ file: job.file, status: await prepareQuantized(job) });
  const config = { ...p.config };
  if (p.externalFolder) config['session.model_external_initializers_file_folder_path'] = p.externalFolder;
  const session = await ort.InferenceSession.create(p.bytes, {
    executionProviders: providers(p),
    graphOptimizationLevel: 'all',
    ...(p.intraOpThreads ? { intraOpNumThreads: p.intraOpThreads } : {}),
    ...(p.memoryArena === false ? { enableCpuMemArena: false, enableMemPattern: false } : {}),
    ...(p.logSeverityLevel !== undefined ? { logSeverityLevel: p.logSeverityLevel } : {}),
    extra: nest(config),
  });
  const id = nextSession++;
  const defaults: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(p.inputDefaults ?? {})) defaults[name] = toOrt(name, t);
  const optional = Object.keys(defaults);
  const required = session.inputNames.filter((n) => !(n in defaults));
  sessions.set(id, { session, required, optional, defaults, preset: defaults });
  return { session: id, inputs: required, optionalInputs: optional, outputs: [...session.outputNames], prepared };
}

function toOrt(name: string, t: HostTensor): ort.Tensor {
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (t.data.length !== n) throw new Error(`input "${name}": ${t.data.length} values for dims [${t.dims.join(', ')}]`);
  return new ort.Tensor(t.dtype, t.data as any, t.dims);
}

function fromOrt(t: ort.Tensor): HostTensor {
  const dtype = t.type as string;
  const ok: HostDType[] = ['float32', 'float16', 'int64', 'int32', 'uint8', 'bool'];
  if (!ok.includes(dtype as HostDType)) throw new Error(`output of type ${dtype} cannot cross to JavaScript; cast it in the graph`);
  const data = t.data as HostTensor['data'];
  // Own the bytes (the binding may hand out views of memory it manages) so the buffer can be transferred.
  const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer ? data : data.slice();
  return { dtype: dtype as HostDType, dims: [...t.dims], data: own as HostTensor['data'] };
}

function held(id: number): Held {
  const h = sessions.get(id);
  if (!h) throw new Error(`session ${id} was released`);
  return h;
}

function checkNames(h: Held, names: string[]): void {
  const extra = names.filter((n) => !h.required.includes(n) && !h.optional.includes(n));
  if (extra.length) throw new Error(`unknown inputs: ${extra.join(', ')} (the model takes ${[...h.required, ...h.optional].join(', ')})`);
}

async function run(id: number, feeds: Record<string, HostTensor>, wanted?: string[]) {
  const h = held(id);
  const missing = h.required.filter((n) => !(n in feeds));
  if (missing.length) throw new Error(`missing inputs: ${missing.join(', ')} (the model takes ${h.required.join(', ')})`);
  checkNames(h, Object.keys(feeds));
  const ortFeeds: Record<string, ort.Tensor> = { ...h.preset };
  for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = toOrt(k, v);
  const s = h.session;
  const res = wanted ? await s.run(ortFeeds, wanted) : await s.run(ortFeeds);
  const out: Record<string, HostTensor> = {};
  for (const [k, v] of Object.entries(res)) {
    out[k] = fromOrt(v);
    v.dispose();
  }
  return out;
}

async function handle(req: Request): Promise<{ result: any; transfer: ArrayBuffer[] }> {
  switch (req.op) {
    case 'create': return { result: await create(req.payload), transfer: [] };
    case 'run': {
      const out = await run(req.session, req.feeds, req.outputs);
      return { result: out, transfer: buffersOf(out) };
    }
    case 'fix': {
      const h = held(req.session);
      const notOptional = Object.keys(req.feeds).filter((n) => !h.optional.includes(n));
      if (notOptional.length) throw new Error(`not optional inputs: ${notOptional.join(', ')} (optional: ${h.optional.join(', ') || 'none'})`);
      const preset = { ...h.defaults };
      for (const [k, v] of Object.entries(req.feeds)) preset[k] = toOrt(k, v);
      h.preset = preset;
      return { result: null, transfer: [] };
    }
    case 'release': {
      const h = sessions.get(req.session);
      sessions.delete(req.session);
      await h?.session.release();
      return { result: null, transfer: [] };
    }
  }
}

parentPort!.on('message', async (req: Request) => {
  let msg: Response;
  let transfer: ArrayBuffer[] = [];
  try {
    const r = await handle(req);
    msg = { id: req.id, ok: true, result: r.result };
    transfer = r.transfer;
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    msg = { id: req.id, ok: false, error: { name: err.name, message: err.message, stack: err.stack } };
  }
  parentPort!.postMessage(msg, transfer);
});
