/**
 * Long tasks in V8 CPU profiles: stretches in which the thread was busy for longer than a threshold, each
 * with the functions that took most of it (self time) and the stack they were called from. Used to find
 * synchronous work that holds a server's event loop (health checks wait behind it).
 *
 *   node dist/scripts/soak.js --predictions 4 --every 1 --profile /tmp/prof     (or: node --cpu-prof ...)
 *   node dist/scripts/long-tasks.js /tmp/prof/CPU.*.0.001.cpuprofile [--stalls /tmp/prof/stalls.<pid>.json] [--over 15] [--top 6]
 *
 * Without --stalls a task is a run of samples without an idle one between them; a loop that yields between
 * slices never idles, so its whole run reads as one task. With --stalls (scripts/loop-stalls.ts, which
 * `soak --profile` preloads) the tasks are the windows in which the event loop's timer came late, each slice
 * on its own. Node writes one profile per thread (the main one is `.0.`); `(program)` is native code outside
 * JavaScript and `(garbage collector)` counts as busy: both hold the event loop too. Samples are wall-clock:
 * on a loaded machine a window also holds time the thread waited for a core.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile { nodes: ProfileNode[]; startTime: number; samples: number[]; timeDeltas: number[] }

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { over: { type: 'string', default: '15' }, top: { type: 'string', default: '6' }, stalls: { type: 'string' } },
});
const overMs = Number(values.over);
const top = Number(values.top);

const frameName = (n: ProfileNode) => {
  const { functionName, url, lineNumber } = n.callFrame;
  const file = url.replace(/^.*\/(dist|node_modules)\//, '$1/').replace(/^file:\/\//, '');
  return `${functionName || '(anonymous)'}${file ? ` ${file}:${lineNumber + 1}` : ''}`;
};

for (const path of positionals) {
  const p = JSON.parse(readFileSync(path, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const stack = (id: number) => {
    const out: string[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = byId.get(at)!;
      if (n.callFrame.functionName !== '(root)') out.push(frameName(n));
    }
    return out;
  };
  const idle = (id: number) => byId.get(id)!.callFrame.functionName === '(idle)';

  // Sample i covers the time until sample i + 1.
  const times: number[] = [];
  let t = p.startTime;
  for (const d of p.timeDeltas) times.push((t += d));
  const tasks: { start: number; end: number; self: Map<number, number> }[] = [];
  let cur: (typeof tasks)[number] | null = null;
  for (let i = 0; i + 1 < p.samples.length; i++) {
    const id = p.samples[i]!;
    const dt = times[i + 1]! - times[i]!;
    if (idle(id)) {
      if (cur && (cur.end - cur.start) / 1000 > overMs) tasks.push(cur);
      cur = null;
      continue;
    }
    cur ??= { start: times[i]!, end: times[i]!, self: new Map() };
    cur.end = times[i + 1]!;
    cur.self.set(id, (cur.self.get(id) ?? 0) + dt);
  }
  if (cur && (cur.end - cur.start) / 1000 > overMs) tasks.push(cur);
  if (values.stalls) {
    // [from, to] µs windows in which the timer came late: the samples inside them
    tasks.length = 0;
    for (const [from, to] of JSON.parse(readFileSync(values.stalls, 'utf8')) as [number, number][]) {
      const task = { start: from, end: to, self: new Map<number, number>() };
      for (let i = 0; i + 1 < p.samples.length; i++) {
        if (times[i]! < from || times[i]! >= to) continue;
        const id = p.samples[i]!;
        task.self.set(id, (task.self.get(id) ?? 0) + times[i + 1]! - times[i]!);
      }
      tasks.push(task);
    }
  }

  console.log(`${path}: ${tasks.length} tasks over ${overMs} ms in ${((times.at(-1)! - p.startTime) / 1e6).toFixed(1)} s`);
  for (const task of tasks) {
    console.log(`\n  ${((task.end - task.start) / 1000).toFixed(1)} ms at +${((task.start - p.startTime) / 1e6).toFixed(3)} s`);
    const heavy = [...task.self].sort((a, b) => b[1] - a[1]).slice(0, top);
    for (const [id, us] of heavy) {
      const s = stack(id);
      console.log(`    ${(us / 1000).toFixed(1).padStart(6)} ms  ${s.slice(0, 12).join(' < ')}`);
    }
  }
}
