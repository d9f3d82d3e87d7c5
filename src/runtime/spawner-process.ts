/**
 * The spawn helper (see spawner.ts): a small process that starts children for its parent and reports their
 * exit. Each child's stdin goes back to the parent with the `spawned` message; its stdout is discarded and
 * the tail of its stderr comes with `exit`. When the parent goes away, the children are killed and the
 * helper exits. Imports little (node:child_process, node:os through priority.ts), to stay small.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { lowerProcess } from './priority.js';
import type { SpawnerEvent, SpawnerRequest } from './spawner.js';

const STDERR_KEPT = 4000;
const children = new Map<number, ChildProcess>();

function report(event: SpawnerEvent, handle?: ChildProcess['stdin']): void {
  if (!process.connected) return;
  if (handle) process.send!(event, handle as Socket);
  else process.send!(event);
}

function start(id: number, command: string, args: string[], background: boolean): void {
  const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'pipe'] });
  children.set(id, child); // a kill may come before 'spawn'
  if (background && child.pid !== undefined) lowerProcess(child.pid);
  let stderr = '';
  let started = false;
  let failure: string | undefined;
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => { stderr = (stderr + d).slice(-STDERR_KEPT); });
  child.once('spawn', () => {
    started = true;
    report({ op: 'spawned', id, pid: child.pid! }, child.stdin);
  });
  // Before 'spawn': the child could not be started (ENOENT, EACCES...); 'close' follows either way.
  child.once('error', (err) => { if (!started) failure ??= err.message; });
  child.once('close', (code, signal) => {
    children.delete(id);
    report({ op: 'exit', id, code: failure ? null : code, signal, stderr, ...(failure ? { error: failure } : {}) });
  });
}

process.on('message', (req: SpawnerRequest) => {
  if (req.op === 'spawn') start(req.id, req.command, req.args, req.background);
  else children.get(req.id)?.kill(req.signal);
});

process.on('disconnect', () => {
  for (const child of children.values()) child.kill('SIGKILL');
  process.exit(0);
});
