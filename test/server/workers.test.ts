/**
 * One worker per GPU, through real HTTP requests on fake GPUs (an nvidia-smi on PATH): discovery with
 * CUDA_VISIBLE_DEVICES and a placement per card, the concurrency limit, routing to free workers, BUSY and 409
 * only when every worker is busy, cancel / idempotent PUT / webhooks per prediction, a failing GPU taken out
 * of rotation while the others serve, and a worker whose setup fails left out.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { concurrencyFromEnv } from '../../src/server/pool.js';
import { gpuLine, installFakeSmi, type FakeSmi } from '../fake-gpus.js';
import {
  cliPath, json, post, predictorPath, put, repoRoot, startReceiver, startServer, waitFor, waitReady, type TestServer,
} from './helpers.js';

// Physical GPUs: 0 an A100 40GB with 39 GiB free, 1 an H200 with 137 GiB free, 2 an H100 another process has
// filled (10 GB free), 3 an A100 40GB with 39 GiB free. CUDA_VISIBLE_DEVICES=1,2,3 makes them CUDA's 0, 1, 2.
const A100_40 = 'NVIDIA A100-SXM4-40GB';
const HOST = gpuLine(0, 40960, 40000, A100_40) + gpuLine(1, 143771, 140000, 'NVIDIA H200') + gpuLine(2, 81559, 10000) + gpuLine(3, 40960, 40000, A100_40);

let smi: FakeSmi;
const savedEnv = { ...process.env };
before(async () => {
  smi = await installFakeSmi();
  for (const name of ['FRAMEPACK_DEVICE_ID', 'FRAMEPACK_EP', 'FRAMEPACK_PLACEMENT', 'FRAMEPACK_VAE_TILING']) delete process.env[name];
  process.env.PATH = `${smi.bin}:${savedEnv.PATH}`;
  process.env.FAKE_SMI_OUT = HOST;
  process.env.CUDA_VISIBLE_DEVICES = '1,2,3';
});
after(async () => {
  process.env = savedEnv;
  await smi.remove();
});

interface Logged { msg: string; worker?: string; [k: string]: unknown }

/** A server with the fake-GPU predictor whose log lines are kept in `lines`. */
async function gpuServer(maxConcurrency: number | undefined, options: Record<string, unknown> = {}) {
  const lines: Logged[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => { lines.push(JSON.parse(s) as Logged); } });
  const s = await startServer('gpus', options, { logger, ...(maxConcurrency === undefined ? {} : { maxConcurrency }) });
  return { ...s, lines };
}

const health = async (s: { url: string }) => json(await fetch(`${s.url}/health-check`));
const output = (p: { output: string }) => Buffer.from(p.output.slice(p.output.indexOf(',') + 1), 'base64').toString();
const async = { prefer: 'respond-async' };

/** The `completed` webhook of prediction `id`, once it has arrived. */
async function finished(id: string, receiver: { requests: { body: Buffer }[] }) {
  return waitFor(() => receiver.requests.map((r) => JSON.parse(r.body.toString()))
    .find((b) => b.id === id && ['succeeded', 'failed', 'canceled'].includes(b.status)), `${id} completed`);
}

describe('discovery: CUDA_VISIBLE_DEVICES, a placement per card, cards that cannot serve left out', () => {
  let s: Awaited<ReturnType<typeof gpuServer>>;
  before(async () => { s = await gpuServer(8); await waitReady(s.url); });
  after(() => s.close());

  it('makes one worker per usable visible GPU, each with the placement of its card', async () => {
    const h = await health(s);
    assert.deepEqual(h.concurrency, { max: 2, current: 0 });
    const logs: string = h.setup.logs;
    assert.match(logs, /cuda:1 left out: NVIDIA H100 80GB HBM3, 9\.8 GiB free .*too little/);
    assert.match(logs, /concurrency limit 8 \(COG_MAX_CONCURRENCY\), but only 2 GPU\(s\) can serve: one worker on each of cuda:0, cuda:2/);
    assert.match(logs, /\[cuda:0\] placement high on cuda:0\n/);   // physical GPU 1, the H200
    assert.match(logs, /\[cuda:2\] placement low on cuda:2\n/);    // physical GPU 3, an A100 40GB
    assert.ok(s.lines.some((l) => l.worker === 'cuda:2' && l.msg === 'placement low on cuda:2'), 'server log names the worker');
  });

  it('runs two predictions at once, one per GPU; BUSY and 409 only when both run', async () => {
    const slow = post(`${s.url}/predictions`, { input: { prompt: 'slow', steps: 60, step_ms: 20 } });
    await waitFor(async () => (await health(s)).concurrency.current === 1, 'first running');
    assert.equal((await health(s)).status, 'READY', 'one of two workers is free');
    const quick = post(`${s.url}/predictions`, { input: { prompt: 'quick', steps: 50, step_ms: 20 } });
    await waitFor(async () => (await health(s)).status === 'BUSY', 'BUSY');
    assert.deepEqual((await health(s)).concurrency, { max: 2, current: 2 });
    const refused = await post(`${s.url}/predictions`, { input: { prompt: 'third' } });
    assert.equal(refused.status, 409);
    assert.deepEqual(await json(refused), { detail: 'All workers are busy: already running 2 predictions' });
    const [a, b] = [await json(await slow), await json(await quick)];
    assert.deepEqual([a.status, b.status], ['succeeded', 'succeeded']);
    assert.deepEqual([output(a), output(b)].sort(), ['device=0 policy=high prompt=slow', 'device=2 policy=low prompt=quick'].sort());
    assert.equal((await health(s)).status, 'READY');
  });

  it('gives the next prediction to the worker that is free', async () => {
    const long = post(`${s.url}/predictions`, { input: { prompt: 'long', steps: 100, step_ms: 20 } });
    await waitFor(async () => (await health(s)).concurrency.current === 1, 'long running');
    const first = await json(await post(`${s.url}/predictions`, { input: { prompt: 'short', steps: 1 } }));
    const second = await json(await post(`${s.url}/predictions`, { input: { prompt: 'again', steps: 1 } }));
    const longDevice = output(await json(await long)).split(' ')[0];
    assert.equal(output(first).split(' ')[0], output(second).split(' ')[0]);
    assert.notEqual(output(first).split(' ')[0], longDevice);
  });
});

describe('the concurrency limit', () => {
  it('is one prediction by default, with Cog\'s 409, whatever the GPUs', async () => {
    const s = await gpuServer(undefined);
    try {
      await waitReady(s.url);
      const h = await health(s);
      assert.deepEqual(h.concurrency, { max: 1, current: 0 });
      assert.doesNotMatch(h.setup.logs, /\[cuda:|COG_MAX_CONCURRENCY/);   // the single worker, set up as always
      const running = post(`${s.url}/predictions`, { input: { steps: 50 } });
      await waitFor(async () => (await health(s)).status === 'BUSY', 'BUSY');
      const refused = await post(`${s.url}/predictions`, { input: {} });
      assert.equal(refused.status, 409);
      assert.deepEqual(await json(refused), { detail: 'Already running a prediction' });
      assert.equal(output(await json(await running)), 'device=0 policy=high prompt=x'); // CUDA's device 0
    } finally {
      await s.close();
    }
  });

  it('caps the workers below the number of GPUs', async () => {
    process.env.CUDA_VISIBLE_DEVICES = '0,1,3';
    const s = await gpuServer(2);
    try {
      await waitReady(s.url);
      const h = await health(s);
      assert.deepEqual(h.concurrency, { max: 2, current: 0 });
      assert.match(h.setup.logs, /concurrency limit 2 \(COG_MAX_CONCURRENCY\): one worker on each of cuda:0, cuda:1\n/);
      assert.doesNotMatch(h.setup.logs, /\[cuda:2\]/);
    } finally {
      await s.close();
      process.env.CUDA_VISIBLE_DEVICES = '1,2,3';
    }
  });

  it('is what COG_MAX_CONCURRENCY says for `framepack serve`', async () => {
    for (const [value, max] of [['2', 2], ['several', 1]] as const) {
      const child = spawn(process.execPath, [cliPath, 'serve', '--host', '127.0.0.1', '--port', '0', '--predictor', predictorPath('gpus')],
        { env: { ...process.env, COG_MAX_CONCURRENCY: value, LOG_FORMAT: 'json' }, stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        const url = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).on('line', (line) => {
          const address = /"address":"([^"]+)"/.exec(line)?.[1];
          if (address) resolve(address);
        }));
        await waitReady(url);
        assert.equal((await health({ url })).concurrency.max, max, `COG_MAX_CONCURRENCY=${value}`);
      } finally {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
    }
  });

  it('reads COG_MAX_CONCURRENCY as Cog does: unset 1, a positive integer, anything else 1', () => {
    assert.equal(concurrencyFromEnv(undefined), 1);
    assert.equal(concurrencyFromEnv(' '), 1);
    assert.equal(concurrencyFromEnv('4'), 4);
    for (const bad of ['0', '-2', '2.5', 'all']) assert.equal(concurrencyFromEnv(bad), 1, bad);
  });

  it('agrees with cog.yaml: the image bakes concurrency.max into COG_MAX_CONCURRENCY', async () => {
    const { parseCogYaml } = await import(join(repoRoot, 'docker', 'cog-config.mjs')) as { parseCogYaml(s: string): { concurrency?: { max?: number } } };
    const max = parseCogYaml(readFileSync(join(repoRoot, 'cog.yaml'), 'utf8')).concurrency?.max;
    const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
    assert.equal(typeof max, 'number');
    assert.match(dockerfile, new RegExp(`^ARG COG_MAX_CONCURRENCY=${max}$`, 'm'));
    assert.match(dockerfile, /COG_MAX_CONCURRENCY=\$\{COG_MAX_CONCURRENCY\}/);
    assert.match(readFileSync(join(repoRoot, 'docker', 'build.sh'), 'utf8'), /--build-arg "COG_MAX_CONCURRENCY=/);
  });
});

describe('cancel, idempotent PUT and webhooks, per prediction', () => {
  it('keeps each prediction its own while two run', async () => {
    const s = await gpuServer(2);
    const receiver = await startReceiver();
    try {
      await waitReady(s.url);
      const [a, b] = await Promise.all(['pa', 'pb'].map((id) =>
        put(`${s.url}/predictions/${id}`, { input: { prompt: id, steps: 1000, step_ms: 10 }, webhook: `${receiver.url}/hook/${id}` }, async)));
      assert.deepEqual([a!.status, b!.status], [202, 202]);
      assert.equal((await health(s)).status, 'BUSY');
      // a retry of either id answers its own state; a POST reusing a running id is refused even with a worker free
      const retry = await put(`${s.url}/predictions/pb`, { input: { prompt: 'other' } });
      assert.equal(retry.status, 202);
      assert.equal((await json(retry)).input.prompt, 'pb');
      assert.equal((await fetch(`${s.url}/predictions/pa/cancel`, { method: 'POST' })).status, 200);
      const canceled = await finished('pa', receiver);
      assert.equal(canceled.status, 'canceled');
      assert.equal((await health(s)).status, 'READY');
      const duplicate = await post(`${s.url}/predictions`, { id: 'pb', input: { prompt: 'dup' } });
      assert.equal(duplicate.status, 409);
      assert.deepEqual(await json(duplicate), { detail: 'Prediction pb is already running' });
      assert.equal((await json(await put(`${s.url}/predictions/pb`, {}))).status, 'processing', 'pb still runs');
      assert.equal((await fetch(`${s.url}/predictions/pb/cancel`, { method: 'POST' })).status, 200);
      await finished('pb', receiver);
      // every webhook went to its own prediction's URL and carried its id
      for (const id of ['pa', 'pb']) {
        const mine = receiver.requests.filter((r) => r.url === `/hook/${id}`).map((r) => JSON.parse(r.body.toString()));
        assert.ok(mine.length >= 2, `${id}: start and completed`);
        assert.ok(mine.every((m) => m.id === id && m.input.prompt === id), id);
        assert.equal(mine.at(-1).status, 'canceled');
      }
    } finally {
      await receiver.close();
      await s.close();
    }
  });

  it('drains every running prediction on POST /shutdown', async () => {
    const s = await gpuServer(2);
    await waitReady(s.url);
    const running = ['one', 'two'].map((prompt) => post(`${s.url}/predictions`, { input: { prompt, steps: 50 } }));
    await waitFor(async () => (await health(s)).status === 'BUSY', 'BUSY');
    assert.equal((await fetch(`${s.url}/shutdown`, { method: 'POST' })).status, 200);
    const done = await Promise.all(running.map(async (r) => json(await r)));
    assert.deepEqual(done.map((p) => p.status), ['succeeded', 'succeeded']);
    assert.equal(await s.server.exited, 0);
  });
});

describe('a failing GPU', () => {
  const failOn = (s: TestServer, fail: string, device: number) =>
    post(`${s.url}/predictions`, { input: { prompt: `${fail}-${device}`, steps: 1, fail, fail_on: device } }).then(json);

  it('lost: fails its prediction, leaves rotation with a log line; the others serve; the last one lost is DEFUNCT', async () => {
    const s = await gpuServer(2);
    try {
      await waitReady(s.url);
      // fill cuda:0 so that the failing request lands on cuda:2
      const busy = post(`${s.url}/predictions`, { input: { prompt: 'busy', steps: 50 } });
      await waitFor(async () => (await health(s)).concurrency.current === 1, 'cuda:0 busy');
      const lost = await failOn(s, 'lost', 2);
      assert.equal(lost.status, 'failed');
      assert.match(lost.error, /^The GPU failed and cannot run predictions any more \(CUDA failure 700: an illegal memory access/);
      const line = s.lines.find((l) => /taken out of rotation/.test(l.msg));
      assert.ok(line, 'log line');
      assert.match(line.msg, /^GPU cuda:2 taken out of rotation \(lost: The GPU failed .*\); 1 of 2 workers still serve$/);
      assert.equal(line.worker, 'cuda:2');
      assert.equal(output(await json(await busy)), 'device=0 policy=high prompt=busy');
      let h = await health(s);
      assert.deepEqual([h.status, h.concurrency], ['READY', { max: 1, current: 0 }]);
      // one worker left: every prediction runs on cuda:0, a second at once is refused
      const next = post(`${s.url}/predictions`, { input: { prompt: 'next', steps: 50 } });
      await waitFor(async () => (await health(s)).status === 'BUSY', 'BUSY with one worker');
      assert.equal((await post(`${s.url}/predictions`, { input: {} })).status, 409);
      assert.equal(output(await json(await next)), 'device=0 policy=high prompt=next');
      // the last GPU lost: nothing can run any more
      assert.equal((await failOn(s, 'lost', 0)).status, 'failed');
      h = await health(s);
      assert.deepEqual([h.status, h.concurrency.max], ['DEFUNCT', 0]);
      assert.equal((await post(`${s.url}/predictions`, { input: {} })).status, 503);
    } finally {
      await s.close();
    }
  });

  it('out of memory: leaves rotation while another GPU serves; the last one keeps serving', async () => {
    const s = await gpuServer(2);
    try {
      await waitReady(s.url);
      const busy = post(`${s.url}/predictions`, { input: { prompt: 'busy', steps: 50 } });
      await waitFor(async () => (await health(s)).concurrency.current === 1, 'cuda:0 busy');
      const oom = await failOn(s, 'oom', 2);
      assert.match(oom.error, /^The GPU ran out of memory \(CUDA failure 2: out of memory/);
      await busy;
      assert.deepEqual((await health(s)).concurrency.max, 1);
      assert.ok(s.lines.some((l) => /^GPU cuda:2 taken out of rotation \(out-of-memory: /.test(l.msg)));
      assert.equal((await failOn(s, 'oom', 0)).status, 'failed');
      const h = await health(s);
      assert.deepEqual([h.status, h.concurrency.max], ['READY', 1]);
      assert.equal(s.lines.filter((l) => /taken out of rotation/.test(l.msg)).length, 1);
      assert.equal((await json(await post(`${s.url}/predictions`, { input: { steps: 1 } }))).status, 'succeeded');
    } finally {
      await s.close();
    }
  });

  it('an error that is not the device\'s leaves the worker in rotation', async () => {
    const s = await gpuServer(2);
    try {
      await waitReady(s.url);
      const busy = post(`${s.url}/predictions`, { input: { prompt: 'busy', steps: 50 } });
      await waitFor(async () => (await health(s)).concurrency.current === 1, 'cuda:0 busy');
      const p = await failOn(s, 'plain', 2);
      assert.deepEqual([p.status, p.error], ['failed', 'Invalid input name: foo']);
      await busy;
      assert.deepEqual((await health(s)).concurrency.max, 2);
      assert.ok(!s.lines.some((l) => /taken out of rotation/.test(l.msg)));
    } finally {
      await s.close();
    }
  });

  it('a GPU whose setup fails is left out; setup fails only when every GPU does', async () => {
    const one = await gpuServer(2, { failSetupOn: 2 });
    try {
      await waitReady(one.url);
      const h = await health(one);
      assert.deepEqual(h.concurrency, { max: 1, current: 0 });
      assert.match(h.setup.logs, /\[cuda:2\] setup failed, this worker is left out: no response from GPU 2\n/);
      assert.match(h.setup.logs, /1 of 2 workers ready\n/);
      assert.equal(output(await json(await post(`${one.url}/predictions`, { input: { steps: 1 } }))), 'device=0 policy=high prompt=x');
    } finally {
      await one.close();
    }
    const all = await gpuServer(2, { failSetupOn: '0,2' });
    try {
      const h = await waitFor(async () => { const x = await health(all); return x.status === 'SETUP_FAILED' ? x : null; }, 'SETUP_FAILED');
      assert.match(h.setup.logs, /\[cuda:0\] setup failed, this worker is left out: no response from GPU 0\n/);
      assert.match(h.setup.logs, /\[cuda:2\] setup failed, this worker is left out: no response from GPU 2\n/);
      assert.match(h.setup.logs, /Predictor errored during setup: Error: no response from GPU 0/);
    } finally {
      await all.close();
    }
  });
});
