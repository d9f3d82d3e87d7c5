/**
 * Child processes started by a small helper process instead of this one.
 *
 * Node starts a child by forking the calling process, synchronously, on the event loop: the kernel copies
 * the caller's page tables, so the cost grows with the caller's memory. A server holding a model (gigabytes)
 * stalls for ~100 ms per spawn, which health checks and cancels see. The helper is forked once, while this
 * process is still small (`startSpawner()`, called before the model loads), stays small, and spawns on
 * request; it hands the child's stdin back over its IPC channel, so the data (an MP4's raw frames) flows
 * from this process straight into the child, never through the helper.
 *
 * The helper exits with this process (its IPC channel closes), killing what it started.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';

/** Messages to the helper. */
export type SpawnerRequest =
  | { op: 'spawn'; id: number; command: string; args: string[]; background: boolean }
  | { op: 'kill'; id: number; signal: NodeJS.Signals };

/** Messages from the helper; `spawned` comes with the child's stdin as the IPC handle. */
export type SpawnerEvent =
  | { op: 'spawned'; id: number; pid: number }
  | { op: 'exit'; id: number; code: number | null; signal: NodeJS.Signals | null; stderr: string; error?: string };

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last few kilobytes the child wrote to stderr. */
  stderr: string;
}

/** A child started by the helper: stdin is a pipe into it; stdout is discarded, stderr collected. */
export interface SpawnedChild {
  pid: number;
  stdin: Socket;
  exited: Promise<ChildExit>;
  kill(signal?: NodeJS.Signals): void;
}

interface Pending {
  helper: ChildProcess;
  spawned: (child: { pid: number; stdin: Socket }) => void;
  failed: (err: Error) => void;
  exited: (exit: ChildExit) => void;
}

const helperPath = new URL('./spawner-process.js', import.meta.url);
let helper: ChildProcess | null = null;
let nextId = 1;
const pending = new Map<number, Pending>();

/** Fails what was asked of a helper that is gone. */
function settleAll(gone: ChildProcess, reason: string): void {
  for (const [id, p] of pending) {
    if (p.helper !== gone) continue;
    pending.delete(id);
    p.failed(new Error(reason));
    p.exited({ code: null, signal: null, stderr: reason });
  }
}

/** The helper's channel keeps this process alive only while a child of it runs. */
function refWhileBusy(): void {
  const channel = helper?.channel as { ref(): void; unref(): void } | undefined;
  if (pending.size > 0) channel?.ref();
  else channel?.unref();
}

/** Forks the helper now if it is not running (cheap while this process is small: call it early). */
export function startSpawner(): void {
  if (helper?.connected) return;
  const h = fork(helperPath, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [], serialization: 'json' });
  helper = h;
  h.on('message', (msg: SpawnerEvent, handle?: Socket) => {
    const p = pending.get(msg.id);
    if (!p) return;
    if (msg.op === 'spawned') {
      if (handle) p.spawned({ pid: msg.pid, stdin: handle });
      else p.failed(new Error('the spawn helper sent no stdin'));
      return;
    }
    pending.delete(msg.id);
    if (msg.error) p.failed(new Error(msg.error));
    p.exited({ code: msg.code, signal: msg.signal, stderr: msg.stderr });
    refWhileBusy();
  });
  h.on('exit', (code, signal) => {
    if (helper === h) helper = null;
    settleAll(h, `the spawn helper exited (${signal ?? `code ${code}`})`);
    refWhileBusy();
  });
  h.on('error', () => undefined); // 'exit' follows and settles what was pending
  h.unref();
  refWhileBusy();
}

/**
 * Runs `command` with `args` through the helper. Resolves once the child runs; rejects when it cannot be
 * started (e.g. ENOENT). Aborting `signal` kills the child. `background` runs it at the niceness of
 * workers (priority.ts), below the event loop.
 */
export async function spawnFromHelper(command: string, args: string[], opts: { signal?: AbortSignal; background?: boolean } = {}): Promise<SpawnedChild> {
  opts.signal?.throwIfAborted();
  startSpawner();
  const h = helper!;
  const id = nextId++;
  let onExit!: (exit: ChildExit) => void;
  const exited = new Promise<ChildExit>((r) => { onExit = r; });
  const started = new Promise<{ pid: number; stdin: Socket }>((spawned, failed) => {
    pending.set(id, { helper: h, spawned, failed, exited: onExit });
  });
  refWhileBusy();
  h.send({ op: 'spawn', id, command, args, background: opts.background ?? false } satisfies SpawnerRequest);
  const kill = (signal: NodeJS.Signals = 'SIGKILL') => {
    if (pending.has(id) && helper === h && h.connected) h.send({ op: 'kill', id, signal } satisfies SpawnerRequest);
  };
  const onAbort = () => kill('SIGKILL');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  void exited.then(() => opts.signal?.removeEventListener('abort', onAbort));
  const { pid, stdin } = await started;
  return { pid, stdin, exited, kill };
}

/** Stops the helper (tests, or a command that is done); it is started again on the next spawn. */
export function stopSpawner(): void {
  const h = helper;
  helper = null;
  if (h?.connected) h.disconnect();
}
