/**
 * The server as a process, the way containers run it: flags, PORT, signals, exit codes, /shutdown,
 * the Kubernetes ready file, the default FramePack predictor's schema, and the `python` shim.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cliPath, json, post, predictorPath, repoRoot, startReceiver, tempDir, waitFor, waitReady } from './helpers.js';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

interface Proc { child: ChildProcess; url: string; exit: Promise<number | null>; output: () => string }

const children: ChildProcess[] = [];
after(() => { for (const c of children) if (c.exitCode === null) c.kill('SIGKILL'); });

async function serve(args: string[], env: Record<string, string> = {}, command: string[] = [process.execPath, cliPath, 'serve']): Promise<Proc> {
  const port = await freePort();
  const child = spawn(command[0]!, [...command.slice(1), ...args], {
    env: { ...process.env, PORT: String(port), COG_LOG_LEVEL: 'warning', FRAMEPACK_HOME: repoRoot, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => fetch(`${url}/health-check`).then(() => true, () => false), `server on ${port}: ${out}`, 10_000);
  return { child, url, exit, output: () => out };
}

const status = async (url: string) => (await json(await fetch(`${url}/health-check`))).status as string;

describe('framepack serve (process)', () => {
  it('serves /playground unless --no-playground or FRAMEPACK_NO_PLAYGROUND=1', async () => {
    const served = await serve(['--predictor', predictorPath('slow')]);
    const off = await serve(['--predictor', predictorPath('slow'), '--no-playground']);
    const offByEnv = await serve(['--predictor', predictorPath('slow')], { FRAMEPACK_NO_PLAYGROUND: '1' });
    try {
      assert.equal((await fetch(`${served.url}/playground`)).status, 200);
      assert.equal((await fetch(`${off.url}/playground`)).status, 404);
      assert.equal((await fetch(`${offByEnv.url}/playground`)).status, 404);
      assert.doesNotMatch(off.output(), /passing unrecognised flags/, '--no-playground is the server\'s own flag');
    } finally {
      for (const p of [served, off, offByEnv]) {
        p.child.kill('SIGTERM');
        await p.exit;
      }
    }
  });

  it('prints its version with -v', () => {
    const r = spawnSync(process.execPath, [cliPath, 'serve', '-v'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /framepack-cog/);
  });

  it('listens on PORT and --host, exits 0 on SIGTERM by default', async () => {
    const p = await serve(['--host', '127.0.0.1', '--predictor', predictorPath('slow'), '--x-mode', 'predict', '--threads', '4']);
    await waitReady(p.url);
    p.child.kill('SIGTERM');
    assert.equal(await p.exit, 0);
  });

  it('cancels a running prediction on SIGTERM and still delivers its completed webhook', async () => {
    const hook = await startReceiver();
    try {
      const p = await serve(['--predictor', predictorPath('slow')]);
      await waitReady(p.url);
      await post(`${p.url}/predictions`, { id: 't', input: { prompt: 'x', steps: 500 }, webhook: hook.url }, { prefer: 'respond-async' });
      await waitFor(() => hook.requests.length > 0, 'start webhook');
      p.child.kill('SIGTERM');
      assert.equal(await p.exit, 0);
      assert.equal(JSON.parse(hook.requests.at(-1)!.body.toString()).status, 'canceled');
    } finally {
      await hook.close();
    }
  });

  it('with --await-explicit-shutdown=true ignores SIGTERM and exits 0 on POST /shutdown after the running prediction', async () => {
    const hook = await startReceiver();
    try {
      const marker = join(tempDir('dispose'), 'disposed');
      const p = await serve(['--await-explicit-shutdown=true', '--predictor', predictorPath('slow'), '--dispose-marker', marker]);
      await waitReady(p.url);
      p.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await status(p.url), 'READY');
      await post(`${p.url}/predictions`, { id: 's', input: { prompt: 'x', steps: 10, step_ms: 30 }, webhook: hook.url, webhook_events_filter: ['completed'] }, { prefer: 'respond-async' });
      const res = await fetch(`${p.url}/shutdown`, { method: 'POST' });
      assert.equal(res.status, 200);
      assert.deepEqual(await json(res), {});
      assert.equal(await p.exit, 0);
      assert.equal(JSON.parse(hook.requests.at(-1)!.body.toString()).status, 'succeeded');
      assert.ok(existsSync(marker), 'the predictor was disposed');
    } finally {
      await hook.close();
    }
  });

  it('exits non-zero when setup fails, unless --await-explicit-shutdown (then SETUP_FAILED until SIGINT)', async () => {
    const failing = spawnSync(process.execPath, [cliPath, 'serve', '--predictor', predictorPath('slow'), '--fail-setup'], {
      env: { ...process.env, PORT: String(await freePort()), COG_LOG_LEVEL: 'error' }, encoding: 'utf8', timeout: 10_000,
    });
    assert.equal(failing.status, 1, failing.stdout + failing.stderr);
    const waiting = await serve(['--await-explicit-shutdown', 'true', '--predictor', predictorPath('slow'), '--fail-setup']);
    await waitFor(async () => (await status(waiting.url)) === 'SETUP_FAILED', 'SETUP_FAILED');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await status(waiting.url), 'SETUP_FAILED');
    waiting.child.kill('SIGINT');
    assert.equal(await waiting.exit, 0);
  });

  it('turns an uncaught error during a prediction into a failed prediction and DEFUNCT', async () => {
    const p = await serve(['--await-explicit-shutdown', '--predictor', predictorPath('failing'), '--uncaught']);
    await waitReady(p.url);
    const res = await json(await post(`${p.url}/predictions`, { input: {} }));
    assert.equal(res.status, 'failed');
    assert.equal(res.error, 'stray timer error');
    assert.equal(await status(p.url), 'DEFUNCT');
    assert.equal((await post(`${p.url}/predictions`, { input: {} })).status, 503);
    p.child.kill('SIGINT');
    assert.equal(await p.exit, 0);
  });

  it('writes the ready file once READY under Kubernetes', async () => {
    const file = join(tempDir('ready'), 'cog', 'ready');
    const p = await serve(['--predictor', predictorPath('slow'), '--setup-ms', '200'], { KUBERNETES_SERVICE_HOST: '10.0.0.1', FRAMEPACK_READY_FILE: file });
    assert.equal(existsSync(file), false);
    await waitReady(p.url);
    await waitFor(() => existsSync(file), 'ready file');
    p.child.kill('SIGTERM');
    await p.exit;
  });

  it('serves FramePack\'s schema before its model is loaded, identical to `framepack openapi`', async () => {
    const printed = spawnSync(process.execPath, [cliPath, 'openapi'], { encoding: 'utf8' });
    assert.equal(printed.status, 0, printed.stderr);
    const p = await serve(['--await-explicit-shutdown', '--models', join(tmpdir(), 'no-models-here')]);
    const served = await json(await fetch(`${p.url}/openapi.json`));
    assert.deepEqual(served, JSON.parse(printed.stdout));
    assert.deepEqual(served.components.schemas.Input.required, ['input_image', 'prompt']);
    assert.ok(['STARTING', 'SETUP_FAILED', 'READY'].includes(await status(p.url)));
    p.child.kill('SIGINT');
    assert.equal(await p.exit, 0);
  });
});

describe('shutdown with a webhook receiver that is down', () => {
  /** A prediction whose completed webhook goes to a port nobody listens on (retried for minutes). */
  async function stoppingServer(args: string[], graceSeconds: number): Promise<Proc> {
    const dead = await freePort();
    const p = await serve(['--predictor', predictorPath('slow'), ...args], { FRAMEPACK_SHUTDOWN_GRACE: String(graceSeconds) });
    await waitReady(p.url);
    await post(`${p.url}/predictions`, { input: { prompt: 'x', steps: 2 }, webhook: `http://127.0.0.1:${dead}/hook` }, { prefer: 'respond-async' });
    assert.equal((await fetch(`${p.url}/shutdown`, { method: 'POST' })).status, 200);
    await waitFor(async () => (await status(p.url)) === 'STOPPING', 'STOPPING');
    return p;
  }

  const exitWithin = async (p: Proc, ms: number) => {
    const t0 = performance.now();
    const code = await Promise.race([p.exit, new Promise((r) => setTimeout(() => r('still running'), ms))]);
    return { code, seconds: (performance.now() - t0) / 1000 };
  };

  it('POST /shutdown exits 0 once the grace period for webhooks is over', async () => {
    const p = await stoppingServer([], 1);
    const { code, seconds } = await exitWithin(p, 8000);
    assert.equal(code, 0, p.output());
    assert.ok(seconds < 8, `exited after ${seconds} s`);
  });

  it('SIGTERM ends the waiting at once, with --await-explicit-shutdown too', async () => {
    const p = await stoppingServer(['--await-explicit-shutdown=true'], 600);
    p.child.kill('SIGTERM');
    const { code } = await exitWithin(p, 5000);
    assert.equal(code, 0, p.output());
  });
});

describe('docker/python shim', () => {
  const shim = join(repoRoot, 'docker', 'python');
  const env = { ...process.env, FRAMEPACK_HOME: repoRoot };

  it('answers pip freeze with exit 0 and refuses anything else', () => {
    assert.equal(spawnSync(shim, ['-m', 'pip', 'freeze'], { env }).status, 0);
    assert.notEqual(spawnSync(shim, ['-m', 'pip', 'install', 'x'], { env }).status, 0);
    assert.notEqual(spawnSync(shim, ['-c', 'print(1)'], { env }).status, 0);
  });

  it('prints the schema for cog.command.openapi_schema', () => {
    const r = spawnSync(shim, ['-m', 'cog.command.openapi_schema'], { env, encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.equal(JSON.parse(r.stdout).openapi, '3.0.2');
  });

  it('runs the server for `python --check-hash-based-pycs never -m cog.server.http` with Replicate\'s flags', async () => {
    const up = await startReceiver();
    try {
      const p = await serve(['--await-explicit-shutdown=true', `--upload-url=${up.url}/_internal/file-upload/`, '--predictor', predictorPath('slow')],
        {}, [shim, '--check-hash-based-pycs', 'never', '-m', 'cog.server.http']);
      await waitReady(p.url);
      const res = await post(`${p.url}/predictions`, { id: 'r', input: { prompt: 'x', steps: 1 } });
      assert.equal((await json(res)).output, `${up.url}/_internal/file-upload/output.mp4`);
      await fetch(`${p.url}/shutdown`, { method: 'POST' });
      assert.equal(await p.exit, 0);
    } finally {
      await up.close();
    }
  });
});
