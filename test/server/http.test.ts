/**
 * The HTTP contract against a real socket: every endpoint and state, sync/async/idempotent predictions,
 * cancel, webhooks, uploads and input files, with the test predictors and a receiver on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  json, listDir, pngDataUrl, tempDir, PNG_1x1, post, put, startReceiver, startServer, waitFor, waitReady,
  type Receiver, type TestServer,
} from './helpers.js';

const TS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$/;
const decode = (dataUrl: string) => Buffer.from(dataUrl.slice(dataUrl.indexOf(',') + 1), 'base64').toString();

describe('slow predictor: endpoints, states, sync/async, cancel, PUT', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer('slow', { setupMs: 300 });
  });
  after(() => s.close());

  it('reports STARTING with the coglet setup object while setup runs, and 503 for predictions', async () => {
    const health = await json(await fetch(`${s.url}/health-check`));
    assert.equal(health.status, 'STARTING');
    assert.equal(health.setup.status, 'starting');
    assert.match(health.setup.started_at, TS);
    assert.equal(health.setup.completed_at, undefined);
    // The schema of a --predictor module is known once it is loaded; until then no predictions.
    const res = await post(`${s.url}/predictions`, { input: { prompt: 'x' } });
    assert.equal(res.status, 503);
    assert.deepEqual(Object.keys(await json(res)).sort(), ['error', 'status']);
  });

  it('becomes READY with setup logs and completed_at', async () => {
    await waitReady(s.url);
    const health = await json(await fetch(`${s.url}/health-check`));
    assert.deepEqual(health.setup.status, 'succeeded');
    assert.match(health.setup.completed_at, TS);
    assert.equal(health.setup.logs, 'loading the slow model\nslow model ready\n');
  });

  it('serves the discovery document and the openapi document', async () => {
    const root = await json(await fetch(`${s.url}/`));
    assert.deepEqual(Object.keys(root).sort(), ['cog_version', 'docs_url', 'healthcheck_url', 'openapi_url', 'predictions_cancel_url',
      'predictions_idempotent_url', 'predictions_url', 'shutdown_url']);
    for (const v of Object.values(root)) assert.equal(typeof v, 'string');
    const doc = await json(await fetch(`${s.url}/openapi.json`));
    assert.deepEqual(doc.components.schemas.Input.required, ['prompt']);
    assert.equal(doc.components.schemas.Input.properties.steps['x-order'], 1);
  });

  it('runs a sync prediction with the full prediction object', async () => {
    const res = await post(`${s.url}/predictions`, { input: { prompt: 'hi', steps: '2', foo: 1 }, context: {}, created_at: '2026-08-01T12:00:00.123456+00:00' });
    assert.equal(res.status, 200);
    const p = await json(res);
    assert.equal(p.status, 'succeeded');
    assert.equal(typeof p.id, 'string');
    assert.equal(p.id.length, 26);
    assert.equal(p.version, null);
    assert.equal(p.created_at, '2026-08-01T12:00:00.123456+00:00');
    assert.match(p.started_at, TS);
    assert.match(p.completed_at, TS);
    assert.deepEqual(p.input, { prompt: 'hi', steps: 2, step_ms: 20, ratio: 0.5, flag: true, seed: null });
    assert.equal(p.logs, 'step 1/2\nstep 2/2\n');
    assert.equal(p.error, null);
    assert.ok(p.metrics.predict_time > 0.03 && p.metrics.predict_time < 5, String(p.metrics.predict_time));
    assert.match(p.output, /^data:video\/mp4;base64,/);
    assert.match(decode(p.output), /^fake video for hi /);
    assert.deepEqual(await listDir(s.tmpRoot), [], 'temp files removed');
  });

  it('answers 202 for Prefer: respond-async, reports BUSY, refuses a second prediction with 409', async () => {
    const res = await post(`${s.url}/predictions`, { id: 'async-1', input: { prompt: 'a', steps: 20, step_ms: 20 } }, { prefer: 'wait=5, Respond-Async' });
    assert.equal(res.status, 202);
    const p = await json(res);
    assert.deepEqual([p.id, p.status, p.output, p.logs, p.completed_at], ['async-1', 'processing', null, '', null]);
    assert.match(p.started_at, TS);
    assert.equal((await json(await fetch(`${s.url}/health-check`))).status, 'BUSY');
    const busy = await post(`${s.url}/predictions`, { input: { prompt: 'b' } });
    assert.equal(busy.status, 409);
    assert.deepEqual(await json(busy), { detail: 'Already running a prediction' });
    const sameId = await post(`${s.url}/predictions`, { id: 'async-1', input: { prompt: 'b' } });
    assert.equal(sameId.status, 409);
    // Validation comes first: an invalid request is a 422 even while busy.
    assert.equal((await post(`${s.url}/predictions`, { input: {} })).status, 422);
    // Idempotent PUT of the running id: 202 with its current state, body ignored.
    const again = await put(`${s.url}/predictions/async-1`, { input: { prompt: 'different' } });
    assert.equal(again.status, 202);
    assert.equal((await json(again)).input.prompt, 'a');
    // PUT of another id while busy: 409.
    assert.equal((await put(`${s.url}/predictions/other`, { input: { prompt: 'x' } })).status, 409);
    // Cancel: 200 {}, repeated 200, then canceled and READY again.
    const cancel = await fetch(`${s.url}/predictions/async-1/cancel`, { method: 'POST' });
    assert.equal(cancel.status, 200);
    assert.deepEqual(await json(cancel), {});
    assert.equal((await fetch(`${s.url}/predictions/async-1/cancel`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status, 200);
    await waitReady(s.url);
    assert.equal((await fetch(`${s.url}/predictions/async-1/cancel`, { method: 'POST' })).status, 404);
    assert.deepEqual(await json(await fetch(`${s.url}/predictions/nope/cancel`, { method: 'POST' })), {});
    assert.deepEqual(await listDir(s.tmpRoot), []);
  });

  it('returns 200 canceled to a sync request canceled by id', async () => {
    const pending = post(`${s.url}/predictions`, { id: 'sync-cancel', input: { prompt: 'x', steps: 100, step_ms: 20 } });
    await waitFor(async () => (await json(await fetch(`${s.url}/health-check`))).status === 'BUSY', 'BUSY');
    assert.equal((await fetch(`${s.url}/predictions/sync-cancel/cancel`, { method: 'POST' })).status, 200);
    const res = await pending;
    assert.equal(res.status, 200);
    const p = await json(res);
    assert.equal(p.status, 'canceled');
    assert.equal(p.error, null);
    assert.equal(p.output, null);
    assert.match(p.completed_at, TS);
    assert.equal(typeof p.metrics.predict_time, 'number');
  });

  it('runs an idempotent PUT: path id, 422 on mismatch, a new run after completion', async () => {
    const mismatch = await put(`${s.url}/predictions/p1`, { id: 'p2', input: { prompt: 'x' } });
    assert.equal(mismatch.status, 422);
    assert.deepEqual(await json(mismatch), { detail: [{ loc: ['body', 'id'], msg: 'prediction ID must match the ID supplied in the URL', type: 'value_error' }] });
    const first = await json(await put(`${s.url}/predictions/p1`, { input: { prompt: 'x', steps: 1 } }));
    assert.deepEqual([first.id, first.status], ['p1', 'succeeded']);
    const second = await json(await put(`${s.url}/predictions/p1`, { id: 'p1', input: { prompt: 'y', steps: 1 } }));
    assert.deepEqual([second.id, second.status, second.input.prompt], ['p1', 'succeeded', 'y']);
    // A missing body is an empty request: 422 for the required prompt.
    const empty = await fetch(`${s.url}/predictions/p3`, { method: 'PUT' });
    assert.equal(empty.status, 422);
    assert.deepEqual((await json(empty)).detail[0].loc, ['body', 'input', 'prompt']);
  });

  it('answers bad requests in FastAPI shapes', async () => {
    const bad = await fetch(`${s.url}/predictions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"input": {' });
    assert.equal(bad.status, 422);
    const [entry] = (await json(bad)).detail;
    assert.equal(entry.type, 'json_invalid');
    assert.equal(entry.loc[0], 'body');
    assert.equal(typeof entry.loc[1], 'number');
    assert.equal(entry.msg, 'JSON decode error');

    const noType = await fetch(`${s.url}/predictions`, { method: 'POST', body: JSON.stringify({ input: { prompt: 'no content type', steps: 1 } }) });
    // fetch sends text/plain for a string body: FastAPI validates it as raw text -> 422.
    assert.equal(noType.status, 422);
    assert.equal((await json(noType)).detail[0].type, 'model_attributes_type');

    const charset = await fetch(`${s.url}/predictions`, { method: 'POST', headers: { 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify({ input: { prompt: 'x', steps: 1 } }) });
    assert.equal((await json(charset)).status, 'succeeded');
    const plusJson = await fetch(`${s.url}/predictions`, { method: 'POST', headers: { 'content-type': 'application/vnd.cog+json' }, body: JSON.stringify({ input: { prompt: 'x', steps: 1 } }) });
    assert.equal((await json(plusJson)).status, 'succeeded');

    const array = await post(`${s.url}/predictions`, [1, 2]);
    assert.equal(array.status, 422);
    const emptyBody = await fetch(`${s.url}/predictions`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(emptyBody.status, 422);
    assert.equal((await json(emptyBody)).detail[0].type, 'missing');

    const badInput = await post(`${s.url}/predictions`, { input: { prompt: 'x', steps: 0, ratio: 'abc', flag: 'maybe' } });
    assert.equal(badInput.status, 422);
    assert.deepEqual((await json(badInput)).detail.map((d: any) => d.loc), [['body', 'input', 'steps'], ['body', 'input', 'ratio'], ['body', 'input', 'flag']]);

    const notFound = await fetch(`${s.url}/nope`);
    assert.equal(notFound.status, 404);
    assert.deepEqual(await json(notFound), { detail: 'Not Found' });
    assert.equal((await fetch(`${s.url}/predictions/a/b`)).status, 404);
    const wrongMethod = await fetch(`${s.url}/predictions`);
    assert.equal(wrongMethod.status, 405);
    assert.deepEqual(await json(wrongMethod), { detail: 'Method Not Allowed' });
    assert.equal((await fetch(`${s.url}/health-check`, { method: 'POST' })).status, 405);
    assert.equal((await fetch(`${s.url}/shutdown`)).status, 405);

    const sse = await post(`${s.url}/predictions`, { input: { prompt: 'x' } }, { accept: 'text/event-stream' });
    assert.equal(sse.status, 406);
    assert.equal((await json(await fetch(`${s.url}/health-check`))).status, 'READY');
  });

  it('answers 413 above the body limit', async () => {
    const small = await startServer('slow', {}, { bodyLimit: 1024 });
    try {
      await waitReady(small.url);
      const res = await post(`${small.url}/predictions`, { input: { prompt: 'x'.repeat(4096) } });
      assert.equal(res.status, 413);
      assert.match((await json(res)).detail, /larger than 1024 bytes/);
    } finally {
      await small.close();
    }
  });
});

describe('webhooks', () => {
  let s: TestServer;
  let hook: Receiver;
  before(async () => {
    hook = await startReceiver();
    s = await startServer('slow', {}, { webhookAuthToken: 'sekrit', throttleMs: 0, webhookRetries: 3 });
    await waitReady(s.url);
  });
  after(async () => {
    await s.close();
    await hook.close();
  });

  const bodies = () => hook.requests.map((r) => JSON.parse(r.body.toString()));

  it('sends start, logs and completed with auth and trace headers, for sync requests too', async () => {
    hook.requests.length = 0;
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const res = await post(`${s.url}/predictions`, { input: { prompt: 'w', steps: 2 }, webhook: `${hook.url}/hook?x=1` },
      { traceparent, tracestate: 'congo=t61rcWkgMzE' });
    const final = await json(res);
    await waitFor(() => bodies().some((b) => b.status === 'succeeded'), 'completed webhook');
    const events = bodies();
    assert.equal(events[0].status, 'processing');
    assert.equal(events[0].logs, '');
    assert.equal(events.at(-1).status, 'succeeded');
    assert.deepEqual(events.at(-1), final);
    assert.ok(events.some((b) => b.status === 'processing' && b.logs.includes('step 1/2')));
    for (const r of hook.requests) {
      assert.equal(r.method, 'POST');
      assert.equal(r.url, '/hook?x=1');
      assert.equal(r.headers.authorization, 'Bearer sekrit');
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(r.headers.traceparent, traceparent);
      assert.equal(r.headers.tracestate, 'congo=t61rcWkgMzE');
    }
  });

  it('sends only the events in webhook_events_filter ([] means all)', async () => {
    hook.requests.length = 0;
    await post(`${s.url}/predictions`, { input: { prompt: 'w', steps: 3 }, webhook: hook.url, webhook_events_filter: ['completed'] });
    await waitFor(() => hook.requests.length >= 1, 'completed');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(bodies().map((b) => b.status), ['succeeded']);

    hook.requests.length = 0;
    await post(`${s.url}/predictions`, { input: { prompt: 'w', steps: 2 }, webhook: hook.url, webhook_events_filter: ['start', 'logs'] });
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(bodies().length >= 2);
    assert.ok(bodies().every((b) => b.status === 'processing'));

    hook.requests.length = 0;
    await post(`${s.url}/predictions`, { input: { prompt: 'w', steps: 1 }, webhook: hook.url, webhook_events_filter: [] });
    await waitFor(() => bodies().some((b) => b.status === 'succeeded'), 'completed');
    assert.equal(bodies()[0].status, 'processing');
  });

  it('throttles non-terminal events and always delivers completed last', async () => {
    const throttled = await startServer('chatty', {}, { throttleMs: 200 });
    try {
      await waitReady(throttled.url);
      hook.requests.length = 0;
      const p = await json(await post(`${throttled.url}/predictions`, { input: { lines: 100, spread_ms: 600 }, webhook: hook.url }));
      assert.equal(p.status, 'succeeded');
      await waitFor(() => bodies().some((b) => b.status === 'succeeded'), 'completed');
      const sent = hook.requests.length;
      // start + at most one event per 200 ms of a ~600 ms prediction + completed.
      assert.ok(sent >= 3 && sent <= 7, `sent ${sent}`);
      assert.equal(bodies().at(-1).status, 'succeeded');
      assert.equal(bodies().at(-1).logs.split('\n').length, 101);
      const gaps = hook.requests.slice(1, -1).map((r, i) => r.at - hook.requests[i]!.at);
      for (const g of gaps) assert.ok(g > 150, `gap ${g}`);
    } finally {
      await throttled.close();
    }
  });

  it('retries the terminal webhook on 5xx and gives up on other 4xx', async () => {
    hook.requests.length = 0;
    let failures = 2;
    hook.respond = (req, res) => {
      const body = JSON.parse(req.body.toString());
      if (body.status === 'succeeded' && failures-- > 0) res.statusCode = 503;
      res.end();
    };
    await post(`${s.url}/predictions`, { input: { prompt: 'w', steps: 1 }, webhook: hook.url, webhook_events_filter: ['completed'] });
    await waitFor(() => hook.requests.length === 3, 'three attempts');

    hook.requests.length = 0;
    hook.respond = (_req, res) => { res.statusCode = 400; res.end(); };
    await post(`${s.url}/predictions`, { input: { prompt: 'w', steps: 1 }, webhook: hook.url, webhook_events_filter: ['completed'] });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(hook.requests.length, 1);
    hook.respond = (_req, res) => { res.end(); };
  });

  it('keeps the server READY when the webhook is unreachable', async () => {
    const p = await json(await post(`${s.url}/predictions`, { input: { prompt: 'w', steps: 1 }, webhook: 'http://127.0.0.1:9/hook' }));
    assert.equal(p.status, 'succeeded');
    assert.equal((await json(await fetch(`${s.url}/health-check`))).status, 'READY');
  });
});

describe('uploads (--upload-url)', () => {
  let up: Receiver;
  before(async () => { up = await startReceiver(); });
  after(() => up.close());

  it('PUTs the raw output and reports the Location URL without its query', async () => {
    up.respond = (req, res) => {
      res.setHeader('location', `https://cdn.example.com/files${req.url}?X-Amz-Signature=abc`);
      res.statusCode = 201;
      res.end();
    };
    const s = await startServer('slow', {}, { uploadUrl: `${up.url}/upload` });
    try {
      await waitReady(s.url);
      const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      const res = await post(`${s.url}/predictions`, { id: 'up-1', input: { prompt: 'u', steps: 1 } }, { prefer: 'respond-async', traceparent });
      assert.equal(res.status, 202);
      await waitReady(s.url);
      // A sync prediction uploads too.
      const p = await json(await post(`${s.url}/predictions`, { id: 'up-2', input: { prompt: 'v', steps: 1 } }));
      assert.equal(p.output, 'https://cdn.example.com/files/upload/output.mp4');
      const first = up.requests[0]!;
      assert.equal(first.method, 'PUT');
      assert.equal(first.url, '/upload/output.mp4');
      assert.equal(first.headers['content-type'], 'video/mp4');
      assert.equal(first.headers['x-prediction-id'], 'up-1');
      assert.equal(first.headers.traceparent, traceparent);
      assert.match(first.body.toString(), /^fake video for u /);
    } finally {
      await s.close();
    }
  });

  it('uses the request URL without Location, retries 5xx, fails the prediction when uploads keep failing', async () => {
    let failures = 1;
    up.requests.length = 0;
    up.respond = (_req, res) => { res.statusCode = failures-- > 0 ? 502 : 200; res.end(); };
    const s = await startServer('slow', {}, { uploadUrl: `${up.url}/u/?token=1` });
    try {
      await waitReady(s.url);
      const p = await json(await post(`${s.url}/predictions`, { input: { prompt: 'u', steps: 1 } }));
      assert.equal(p.status, 'succeeded');
      assert.equal(p.output, `${up.url}/u/output.mp4`);
      assert.equal(up.requests.length, 2);

      up.respond = (_req, res) => { res.statusCode = 500; res.end(); };
      const failed = await json(await post(`${s.url}/predictions`, { input: { prompt: 'u', steps: 1 } }));
      assert.equal(failed.status, 'failed');
      assert.match(failed.error, /Got error trying to upload output files: HTTP 500/);
      assert.equal(failed.output, null);
      assert.equal((await json(await fetch(`${s.url}/health-check`))).status, 'READY');
      assert.deepEqual(await listDir(s.tmpRoot), []);
    } finally {
      await s.close();
    }
  });
});

describe('file inputs', () => {
  let s: TestServer;
  let files: Receiver;
  before(async () => {
    files = await startReceiver();
    files.respond = (req, res) => {
      if (req.url === '/in.png') { res.setHeader('content-type', 'image/png'); res.end(PNG_1x1); }
      else if (req.url === '/redirect') { res.statusCode = 302; res.setHeader('location', '/in.png'); res.end(); }
      else if (req.url === '/to-metadata') { res.statusCode = 302; res.setHeader('location', 'http://169.254.169.254/latest/meta-data/'); res.end(); }
      else if (req.url === '/big.png') { res.end(Buffer.alloc(2048)); }
      else if (req.url === '/text.png') { res.end('not an image'); }
      else { res.statusCode = 404; res.end('nope'); }
    };
    s = await startServer('file-input', {}, { maxInputBytes: 1024 });
    await waitReady(s.url);
  });
  after(async () => {
    await s.close();
    await files.close();
  });

  const predict = async (input_image: unknown, extra: Record<string, unknown> = {}) =>
    post(`${s.url}/predictions`, { input: { input_image, ...extra } });

  it('decodes data URLs, echoes the URL and gives the model a local file', async () => {
    const p = await json(await predict(pngDataUrl));
    assert.equal(p.status, 'succeeded', p.error);
    assert.equal(p.input.input_image, pngDataUrl);
    assert.match(p.logs, /got .*input_image-file\.png/);
    assert.equal(p.output, `data:image/png;base64,${PNG_1x1.toString('base64')}`);
  });

  it('downloads http URLs, following redirects', async () => {
    for (const path of ['/in.png', '/redirect']) {
      const p = await json(await predict(`${files.url}${path}`));
      assert.equal(p.status, 'succeeded', p.error);
      assert.equal(p.input.input_image, `${files.url}${path}`);
    }
  });

  it('fails the prediction (not the server) for unreachable, missing, oversized or undecodable files', async () => {
    const cases: [string, RegExp][] = [
      [`${files.url}/missing.png`, /could not fetch input_image .*HTTP 404/],
      ['http://127.0.0.1:9/in.png', /could not fetch input_image .*ECONNREFUSED/],
      ['http://nonexistent.invalid/in.png', /could not fetch input_image .*ENOTFOUND/],
      [`${files.url}/big.png`, /larger than the limit of 1024 bytes/],
      [`data:image/png;base64,${Buffer.alloc(2000).toString('base64')}`, /larger than the limit of 1024 bytes/],
      [`${files.url}/text.png`, /not a PNG image/],
      [`${files.url}/to-metadata`, /refusing to fetch .*169\.254\.169\.254 is a link-local address/],
    ];
    for (const [url, error] of cases) {
      const res = await predict(url);
      assert.equal(res.status, 200);
      const p = await json(res);
      assert.equal(p.status, 'failed', url);
      assert.match(p.error, error);
      assert.ok(p.logs.includes(p.error));
      assert.equal((await json(await fetch(`${s.url}/health-check`))).status, 'READY');
    }
    assert.deepEqual(await listDir(s.tmpRoot), []);
  });

  it('refuses bad schemes and metadata addresses with a 422 before any connection', async () => {
    for (const url of ['ftp://example.com/a.png', 'file:///etc/passwd', 'http://169.254.169.254/latest/meta-data/', 'http://[fd00:ec2::254]/']) {
      const res = await predict(url);
      assert.equal(res.status, 422, url);
      assert.deepEqual((await json(res)).detail[0].loc, ['body', 'input', 'input_image']);
    }
  });

  it('refuses DNS names resolving to loopback when private addresses are denied', async () => {
    const strict = await startServer('file-input', {}, { policy: { denyPrivate: true } });
    try {
      await waitReady(strict.url);
      files.requests.length = 0;
      const p = await json(await post(`${strict.url}/predictions`, { input: { input_image: `http://localhost:${new URL(files.url).port}/in.png` } }));
      assert.equal(p.status, 'failed');
      assert.match(p.error, /refusing to fetch localhost: .* is a loopback address/);
      assert.equal(files.requests.length, 0, 'no connection made');
      assert.equal((await post(`${strict.url}/predictions`, { input: { input_image: `${files.url}/in.png` } })).status, 422);
    } finally {
      await strict.close();
    }
  });

  it('keeps input files only while the prediction runs', async () => {
    const res = await post(`${s.url}/predictions`, { id: 'hold', input: { input_image: pngDataUrl, hold_ms: 5000 } }, { prefer: 'respond-async' });
    assert.equal(res.status, 202);
    const dir = await waitFor(async () => (await listDir(s.tmpRoot))[0], 'temp dir');
    await waitFor(async () => (await listDir(`${s.tmpRoot}/${dir}`)).includes('input_image-file.png'), 'input file');
    await fetch(`${s.url}/predictions/hold/cancel`, { method: 'POST' });
    await waitReady(s.url);
    assert.equal(existsSync(`${s.tmpRoot}/${dir}`), false);
  });
});

describe('failures, DEFUNCT and SETUP_FAILED', () => {
  it('reports a failed prediction with the error in error and logs, and stays READY', async () => {
    const s = await startServer('failing');
    try {
      await waitReady(s.url);
      const p = await json(await post(`${s.url}/predictions`, { input: {} }));
      assert.equal(p.status, 'failed');
      assert.equal(p.error, 'the model exploded');
      assert.match(p.logs, /about to fail\n.*the model exploded/s);
      assert.equal(typeof p.metrics.predict_time, 'number');
      assert.equal((await json(await fetch(`${s.url}/health-check`))).status, 'READY');
    } finally {
      await s.close();
    }
  });

  it('goes DEFUNCT after a fatal error and refuses predictions', async () => {
    const s = await startServer('failing', { fatal: true });
    try {
      await waitReady(s.url);
      const p = await json(await post(`${s.url}/predictions`, { input: {} }));
      assert.equal(p.status, 'failed');
      assert.equal((await json(await fetch(`${s.url}/health-check`))).status, 'DEFUNCT');
      assert.equal((await post(`${s.url}/predictions`, { input: {} })).status, 503);
    } finally {
      await s.close();
    }
  });

  it('exits with code 1 after DEFUNCT without --await-explicit-shutdown', async () => {
    const s = await startServer('failing', { fatal: true }, { awaitExplicitShutdown: false });
    await waitReady(s.url);
    await post(`${s.url}/predictions`, { input: {} });
    assert.equal(await s.server.exited, 1);
  });

  it('reports SETUP_FAILED with the error in setup.logs', async () => {
    const s = await startServer('slow', { failSetup: true });
    try {
      const health = await waitFor(async () => {
        const h = await json(await fetch(`${s.url}/health-check`));
        return h.status === 'SETUP_FAILED' ? h : null;
      }, 'SETUP_FAILED');
      assert.equal(health.setup.status, 'failed');
      assert.match(health.setup.completed_at, TS);
      assert.match(health.setup.logs, /loading the slow model\nPredictor errored during setup: Error: weights not found in \/nowhere/);
      assert.equal((await post(`${s.url}/predictions`, { input: { prompt: 'x' } })).status, 503);
    } finally {
      await s.close();
    }
  });

  it('reports SETUP_FAILED when the predictor module cannot be loaded, exiting 1 unless told to wait', async () => {
    const s = await startServer('does-not-exist', {}, { awaitExplicitShutdown: false });
    assert.equal(await s.server.exited, 1);
    assert.equal(s.server.runner.status, 'SETUP_FAILED');
    assert.match(s.server.runner.setupInfo.logs ?? '', /^Error while loading predictor:\n\n/);
  });

  it('waits for COG_WAIT_FILE before setup, and fails setup when it never appears', async () => {
    const dir = tempDir('wait');
    const file = join(dir, 'weights-ready');
    const s = await startServer('slow', {}, { waitFile: file });
    const never = await startServer('slow', {}, { waitFile: join(dir, 'never'), waitFileTimeoutMs: 150 });
    try {
      await new Promise((r) => setTimeout(r, 250));
      assert.equal(s.server.runner.status, 'STARTING');
      writeFileSync(file, '');
      await waitReady(s.url);
      await waitFor(() => never.server.runner.status === 'SETUP_FAILED', 'wait-file timeout');
      assert.match(never.server.runner.setupInfo.logs ?? '', /COG_WAIT_FILE .*never did not appear within 0.15 seconds/);
    } finally {
      await s.close();
      await never.close();
    }
  });

  it('fails setup after COG_SETUP_TIMEOUT', async () => {
    const s = await startServer('slow', { setupMs: 5000 }, { setupTimeoutMs: 100 });
    try {
      await waitFor(() => s.server.runner.status === 'SETUP_FAILED', 'timeout');
      assert.match(s.server.runner.setupInfo.logs ?? '', /did not finish within COG_SETUP_TIMEOUT=0.1 seconds/);
    } finally {
      await s.close();
    }
  });
});

describe('chatty and CPU-busy predictors', () => {
  it('collects every log line of ctx.log and ctx.logger, and setup logs of ctx.logger', async () => {
    const s = await startServer('chatty');
    try {
      await waitReady(s.url);
      assert.equal((await json(await fetch(`${s.url}/health-check`))).setup.logs, 'setup line 0\nsetup line 1\nsetup line 2\n');
      const p = await json(await post(`${s.url}/predictions`, { input: { lines: 5000 } }));
      assert.equal(p.status, 'succeeded');
      const lines = p.logs.trimEnd().split('\n');
      assert.equal(lines.length, 5000);
      assert.equal(lines[4999], 'line 4999');
      assert.equal(decode(p.output), '5000 lines');
    } finally {
      await s.close();
    }
  });

  it('answers health checks and cancels within milliseconds while a prediction keeps a core busy', async () => {
    const s = await startServer('cpu-busy');
    try {
      await waitReady(s.url);
      await post(`${s.url}/predictions`, { id: 'busy', input: { ms: 20_000 } }, { prefer: 'respond-async' });
      await new Promise((r) => setTimeout(r, 100));
      const times: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        const h = await json(await fetch(`${s.url}/health-check`));
        times.push(performance.now() - t0);
        assert.equal(h.status, 'BUSY');
      }
      times.sort((a, b) => a - b);
      assert.ok(times[times.length - 1]! < 250, `slowest health check ${times.at(-1)} ms`);
      const t0 = performance.now();
      assert.equal((await fetch(`${s.url}/predictions/busy/cancel`, { method: 'POST' })).status, 200);
      await waitReady(s.url);
      assert.ok(performance.now() - t0 < 2000);
    } finally {
      await s.close();
    }
  });
});

describe('input downloads that stall', () => {
  it('fail after the read timeout, and can be canceled while downloading', async () => {
    const stall = await startReceiver();
    stall.respond = (_req, res) => { res.writeHead(200, { 'content-type': 'image/png' }); res.write(PNG_1x1.subarray(0, 8)); };
    const s = await startServer('file-input', {}, { inputReadTimeoutMs: 200 });
    try {
      await waitReady(s.url);
      const t0 = performance.now();
      const p = await json(await post(`${s.url}/predictions`, { input: { input_image: `${stall.url}/slow.png` } }));
      assert.equal(p.status, 'failed');
      assert.match(p.error, /could not fetch input_image .*no data for 0.2 s/);
      assert.ok(performance.now() - t0 < 3000);

      const pending = post(`${s.url}/predictions`, { id: 'dl', input: { input_image: `${stall.url}/slow.png` } });
      await waitFor(() => stall.requests.length === 2, 'second download');
      assert.equal((await fetch(`${s.url}/predictions/dl/cancel`, { method: 'POST' })).status, 200);
      const canceled = await json(await pending);
      assert.equal(canceled.status, 'canceled');
      assert.doesNotMatch(canceled.logs, /got /, 'the model never started');
      assert.deepEqual(await listDir(s.tmpRoot), []);
    } finally {
      await s.close();
      await stall.close();
    }
  });
});

describe("FramePack's own input rules over HTTP", () => {
  let s: TestServer;
  before(async () => {
    s = await startServer('echo-framepack');
    await waitReady(s.url);
  });
  after(async () => { await s.close(); });

  it('answers a malformed timestamped prompt with 422 at input.prompt, and runs a good one', async () => {
    const bad = await post(`${s.url}/predictions`, { input: { input_image: pngDataUrl, prompt: '[0s: a cat] [2: it jumps]', total_video_length_seconds: 5 } });
    assert.equal(bad.status, 422);
    const [issue] = (await json(bad)).detail;
    assert.deepEqual(issue.loc, ['body', 'input', 'prompt']);
    assert.match(issue.msg, /timestamped prompt: "\[2:" looks like a timestamp/);
    const good = await json(await post(`${s.url}/predictions`, { input: { input_image: pngDataUrl, prompt: '[0s: a cat] [2s: it jumps]', total_video_length_seconds: 5 } }));
    assert.equal(good.status, 'succeeded', good.error);
    assert.equal(JSON.parse(decode(good.output)).prompt_blend_sections, 4);
  });
});
