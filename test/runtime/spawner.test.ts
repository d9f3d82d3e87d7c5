/**
 * The spawn helper: children start in the helper process (not in this one), their stdin is a pipe from
 * here, exits and stderr come back, kills and aborts reach them, a missing program is an error, and the
 * helper never keeps this process alive on its own.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { spawnFromHelper, startSpawner } from '../../src/runtime/spawner.js';

const parentOf = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
};

test('a child runs under the helper, reads what this process writes to its stdin, reports its exit', async () => {
  startSpawner();
  const child = await spawnFromHelper('sh', ['-c', 'wc -c >&2; exit 3']);
  const helperPid = parentOf(child.pid);
  assert.notEqual(helperPid, process.pid);
  assert.equal(parentOf(helperPid), process.pid, 'the helper is a child of this process');
  assert.match(readFileSync(`/proc/${helperPid}/cmdline`, 'utf8'), /spawner-process\.js/);
  child.stdin.end(Buffer.alloc(300_000, 1));
  const exit = await child.exited;
  assert.equal(exit.code, 3);
  assert.equal(exit.stderr.trim(), '300000');
});

test('kill() and an aborted signal stop the child; a missing program is an error', async () => {
  const a = await spawnFromHelper('sleep', ['30']);
  a.kill('SIGTERM');
  assert.equal((await a.exited).signal, 'SIGTERM');

  const ac = new AbortController();
  const b = await spawnFromHelper('sleep', ['30'], { signal: ac.signal });
  ac.abort();
  assert.equal((await b.exited).signal, 'SIGKILL');

  await assert.rejects(spawnFromHelper('/nonexistent/program', []), /ENOENT/);
});

test('a helper that died is replaced on the next spawn; what it was running is reported gone', async () => {
  const running = await spawnFromHelper('sleep', ['30']);
  const first = parentOf(running.pid);
  process.kill(first, 'SIGKILL');
  assert.match((await running.exited).stderr, /spawn helper exited/);
  const next = await spawnFromHelper('sleep', ['30']);
  assert.notEqual(parentOf(next.pid), first);
  next.kill('SIGTERM');
  assert.equal((await next.exited).signal, 'SIGTERM');
  process.kill(running.pid, 'SIGKILL'); // orphaned by the killed helper
});
