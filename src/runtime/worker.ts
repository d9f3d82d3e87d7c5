/**
 * A session worker: owns the ONNX Runtime sessions of one device. `InferenceSession.create` and `run` are
 * synchronous native calls, so they run here and never on the main thread's event loop.
 * Requests arrive one at a time (see protocol.ts); each gets exactly one response.
 */
import { statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parentPort } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { prepareQuantized } from '../onnx/quantize.js';
import type { HostDType, HostTensor } from '../onnx/safetensors.js';
import { lowerThisThread } from './priority.js';
import { buffersOf, nest, type CreatePayload, type CreateResult, type Request, type Response } from './protocol.js';

// Below the main thread, ONNX Runtime's thread pool included (started later by this thread): see priority.ts.
lowerThisThread();

const sessions = new Map<number, ort.InferenceSession>();
let nextSession = 1;


function providers(p: CreatePayload): ort.InferenceSession.ExecutionProviderConfig[] {
  switch (p.ep) {
    case 'cpu': return ['cpu'];
    case 'cuda': return [{ name: 'cuda', deviceId: p.deviceId }];
    case 'webgpu': return ['webgpu'];
  }
}

/**
 * ONNX Runtime's telemetry layer creates an empty `mat-debug-<pid>.log` in the temp directory when its
 * environment starts (the first session of the process) and writes to it only when tracing is on: one
 * stray file per process started. Removed once, if empty.
 */
let telemetryLogChecked = false;
function removeTelemetryLog(): void {
  if (telemetryLogChecked) return;
  telemetryLogChecked = true;
  const file = join(tmpdir(), `mat-debug-${process.pid}.log`);
  try {
    if (statSync(file).size === 0) unlinkSync(file);
  } catch {
    // not there (or already removed by another session worker)
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
    ...(p.memoryPattern === false ? { enableMemPattern: false } : {}),
    ...(p.logSeverityLevel !== undefined ? { logSeverityLevel: p.logSeverityLevel } : {}),
    extra: nest(config),
  }).finally(removeTelemetryLog);
  const id = nextSession++;
  sessions.set(id, session);
  return { session: id, inputs: [...session.inputNames], outputs: [...session.outputNames], prepared };
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

async function run(id: number, feeds: Record<string, HostTensor>, wanted?: string[]) {
  const s = sessions.get(id);
  if (!s) throw new Error(`session ${id} was released`);
  const missing = s.inputNames.filter((n) => !(n in feeds));
  if (missing.length) throw new Error(`missing inputs: ${missing.join(', ')} (the model takes ${s.inputNames.join(', ')})`);
  const extra = Object.keys(feeds).filter((n) => !s.inputNames.includes(n));
  if (extra.length) throw new Error(`unknown inputs: ${extra.join(', ')} (the model takes ${s.inputNames.join(', ')})`);
  const ortFeeds: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = toOrt(k, v);
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
    case 'release': {
      const s = sessions.get(req.session);
      sessions.delete(req.session);
      await s?.release();
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
