/**
 * Summaries of ONNX Runtime's profiler output (the JSON array of trace events a session writes when created
 * with FRAMEPACK_ORT_PROFILE, session.ts): where a run's time goes, per operator type and per graph place.
 *
 * Events used: `Session`/`model_run` (one per run, its wall time) and `Node`/`<node>_kernel_time` (one per node
 * per run; `args.op_name`, `args.provider`). A node event belongs to the run whose span holds its start. The
 * first `skip` runs are left out (warm-up: cuDNN/cuBLAS plans, arena growth). Node names carry the graph
 * builder's scopes (`transformer_blocks.3.attn.to_q/Gemm`); `place` folds the block index out of them
 * (`transformer_blocks.*.attn.to_q/Gemm`), so the same node of every block sums into one line.
 *
 * Node times are host-side. On the CPU they are the kernels' times; on CUDA launches are asynchronous, so
 * they measure kernels only when every launch waits for its kernel (CUDA_LAUNCH_BLOCKING=1, which adds a few
 * microseconds per node). A build of ONNX Runtime with its CUDA profiler also writes `Kernel` events (the
 * device's own kernel times): those are summed by kernel name in `byKernel`.
 */

export interface TraceEvent {
  cat?: string;
  name?: string;
  ts?: number;
  dur?: number;
  args?: { op_name?: string; provider?: string };
}

export interface ProfileLine {
  key: string;
  /** milliseconds per run */
  ms: number;
  /** share of the summed node time */
  share: number;
  /** nodes per run */
  nodes: number;
}

export interface ProfileSummary {
  /** runs summed (after `skip`) */
  runs: number;
  /** mean wall time of those runs (model_run), ms */
  runMs: number;
  /** summed node time per run, ms */
  nodeMs: number;
  byOp: ProfileLine[];
  byProvider: ProfileLine[];
  /** the `top` heaviest graph places */
  byPlace: ProfileLine[];
  /** the `top` heaviest device kernels, when the profile has `Kernel` events (else empty) */
  byKernel: ProfileLine[];
}

/**
 * `transformer_blocks.12.attn.to_q/Gemm_4711` -> `transformer_blocks.*.attn.to_q/Gemm`: block indices, the
 * builder's node counter and ONNX Runtime's suffixes dropped.
 */
export function place(node: string): string {
  return node.replace(/_kernel_time$/, '').replace(/\.\d+(?=[./])/g, '.*').replace(/(_token_\d+|:\d+)$/, '').replace(/_\d+$/, '');
}

export function summarizeProfile(events: readonly TraceEvent[], opts: { skip?: number; top?: number } = {}): ProfileSummary {
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run' && e.ts !== undefined && e.dur !== undefined)
    .sort((a, b) => a.ts! - b.ts!).slice(opts.skip ?? 0);
  const within = (ts: number) => runs.some((r) => ts >= r.ts! && ts <= r.ts! + r.dur!);
  const nodes = events.filter((e) => e.cat === 'Node' && e.name?.endsWith('_kernel_time') && e.ts !== undefined && within(e.ts));
  const kernels = events.filter((e) => e.cat === 'Kernel' && e.name && e.ts !== undefined && within(e.ts));
  const n = Math.max(runs.length, 1);
  const group = (keyOf: (e: TraceEvent) => string, of = nodes): ProfileLine[] => {
    const total = of.reduce((a, e) => a + (e.dur ?? 0), 0);
    const sums = new Map<string, { us: number; count: number }>();
    for (const e of of) {
      const k = keyOf(e);
      const s = sums.get(k) ?? { us: 0, count: 0 };
      s.us += e.dur ?? 0;
      s.count++;
      sums.set(k, s);
    }
    return [...sums].map(([key, s]) => ({ key, ms: s.us / n / 1e3, share: total ? s.us / total : 0, nodes: s.count / n }))
      .sort((a, b) => b.ms - a.ms);
  };
  return {
    runs: runs.length,
    runMs: runs.reduce((a, r) => a + r.dur!, 0) / n / 1e3,
    nodeMs: nodes.reduce((a, e) => a + (e.dur ?? 0), 0) / n / 1e3,
    byOp: group((e) => e.args?.op_name ?? '?'),
    byProvider: group((e) => e.args?.provider ?? '?'),
    byPlace: group((e) => place(e.name!)).slice(0, opts.top ?? 25),
    byKernel: group((e) => e.name!.slice(0, 120), kernels).slice(0, opts.top ?? 25),
  };
}
