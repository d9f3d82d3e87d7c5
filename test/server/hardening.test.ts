/**
 * What a careless or hostile client tries, over real sockets: out-of-range seeds, deep JSON, over-long and
 * non-Latin-1 ids, malformed retries, empty or bad headers, IPv6 spellings of refused addresses, slow
 * senders; and what a stopped server leaves (stopping state, temp directories) and what prediction logs
 * may contain (no stack traces).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  json, listDir, pngDataUrl, post, put, startReceiver, startServer, tempDir, waitFor, waitReady,
  type Receiver, type TestServer,
} from './helpers.js';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

const raw = (url: string, method: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  fetch(url, { method, headers, body });

/** `[[[...]]]`, `depth` arrays deep. */
const nested = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;

describe('requests a careless or hostile client sends', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer('slow');
    await waitReady(s.url);
  });
  after(() => s.close());

  it('publishes the seed bounds the predictor enforces and refuses seeds outside them with a 422', async () => {
    const seed = (await json(await fetch(`${s.url}/openapi.json`))).components.schemas.Input.properties.seed;
    assert.deepEqual([seed.minimum, seed.maximum], [-MAX_SAFE, MAX_SAFE]);
    const outside: [string, string][] = [
      ['9007199254740992', 'less_than_equal'], // 2^53
      ['1e20', 'less_than_equal'],
      ['"12345678901234567890"', 'less_than_equal'],
      ['-9223372036854775808', 'greater_than_equal'],
    ];
    for (const [text, type] of outside) {
      const res = await raw(`${s.url}/predictions`, 'POST', `{"input": {"prompt": "x", "seed": ${text}}}`);
      assert.equal(res.status, 422, text);
      const [entry] = (await json(res)).detail;
      assert.deepEqual([entry.type, entry.loc], [type, ['body', 'input', 'seed']], text);
    }
    assert.equal((await json(await fetch(`${s.url}/health-check`))).status, 'READY');
    for (const v of [MAX_SAFE, -MAX_SAFE]) {
      const p = await json(await post(`${s.url}/predictions`, { input: { prompt: 'x', steps: 1, seed: v } }));
      assert.equal(p.status, 'succeeded', p.error);
      assert.equal(p.input.seed, v);
    }
  });

  it('answers JSON nested deeper than the limit with a 422 in the usual shape', async () => {
    for (const body of [
      `{"input": {"prompt": "x", "extra": ${nested(5000)}}}`, // an unknown input: echoed by the "missing" check of other fields
      `{"input": {"prompt": ${nested(5000)}}}`,
      `{"context": ${nested(100_000)}}`,
    ]) {
      const res = await raw(`${s.url}/predictions`, 'POST', body);
      assert.equal(res.status, 422);
      const text = await res.text();
      assert.doesNotMatch(text, /call stack|FST_/);
      const [entry] = JSON.parse(text).detail;
      assert.deepEqual([entry.type, entry.loc, entry.msg], ['json_invalid', ['body'], 'JSON decode error']);
    }
    // moderate nesting in an ignored input is fine
    const ok = await raw(`${s.url}/predictions`, 'POST', `{"input": {"prompt": "x", "steps": 1, "extra": ${nested(40)}}}`);
    assert.equal((await json(ok)).status, 'succeeded');
  });

  it('refuses over-long ids in the path and the body with a 422 that does not echo them', async () => {
    const long = 'a'.repeat(1001);
    for (const res of [await put(`${s.url}/predictions/${long}`, { input: { prompt: 'x' } }), await post(`${s.url}/predictions`, { id: long, input: { prompt: 'x' } })]) {
      assert.equal(res.status, 422);
      const text = await res.text();
      assert.ok(!text.includes(long.slice(0, 100)), 'the id is not echoed');
      assert.doesNotMatch(text, /FST_/);
      const [entry] = JSON.parse(text).detail;
      assert.equal(entry.type, 'string_too_long');
      assert.ok(['prediction_id', 'id'].includes(entry.loc[1]), String(entry.loc));
    }
    const longest = 'b'.repeat(1000);
    const p = await json(await put(`${s.url}/predictions/${longest}`, { input: { prompt: 'x', steps: 1 } }));
    assert.deepEqual([p.status, p.id], ['succeeded', longest]);
  });

  it('answers errors of the router in the contract shape, without internal codes or echoes', async () => {
    const res = await put(`${s.url}/predictions/%zz-echo-me`, { input: { prompt: 'x' } });
    assert.equal(res.status, 400);
    assert.deepEqual(await json(res), { detail: 'Bad Request' });
  });

  it('validates a PUT retry of the running prediction before answering 202', async () => {
    const first = await put(`${s.url}/predictions/retry-me`, { input: { prompt: 'x', steps: 10, step_ms: 50 } }, { prefer: 'respond-async' });
    assert.equal(first.status, 202);
    const invalid = await put(`${s.url}/predictions/retry-me`, { input: { prompt: 'x', steps: 'many' } });
    assert.equal(invalid.status, 422);
    assert.deepEqual((await json(invalid)).detail[0].loc, ['body', 'input', 'steps']);
    const retry = await put(`${s.url}/predictions/retry-me`, { input: { prompt: 'x', steps: 10, step_ms: 50 } });
    assert.equal(retry.status, 202);
    assert.equal((await json(retry)).id, 'retry-me');
    await waitFor(async () => (await json(await fetch(`${s.url}/health-check`))).status === 'READY', 'READY');
  });

  it('takes an empty Content-Type header as a missing one (JSON), as FastAPI does', async () => {
    const body = JSON.stringify({ input: { prompt: 'x', steps: 1 } });
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request(`${s.url}/predictions`, { method: 'POST', headers: { 'content-type': '', 'content-length': Buffer.byteLength(body) } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { text += d; });
        res.on('end', () => resolve({ status: res.statusCode!, text }));
      });
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(status, 200, text);
    assert.equal(JSON.parse(text).status, 'succeeded');
  });
});

describe('prediction ids that cannot travel in a header', () => {
  let s: TestServer;
  let uploads: Receiver;
  before(async () => {
    uploads = await startReceiver();
    uploads.respond = (_req, res) => { res.writeHead(201).end(); };
    s = await startServer('slow', {}, { uploadUrl: `${uploads.url}/up/` });
    await waitReady(s.url);
  });
  after(async () => {
    await s.close();
    await uploads.close();
  });

  it('are refused with a 422 before anything runs; Latin-1 ids reach the upload header', async () => {
    const refused = [
      await put(`${s.url}/predictions/${encodeURIComponent('emoji-😀')}`, { input: { prompt: 'x', steps: 1 } }),
      await post(`${s.url}/predictions`, { id: '日本語', input: { prompt: 'x', steps: 1 } }),
      await post(`${s.url}/predictions`, { id: 'line\nbreak', input: { prompt: 'x', steps: 1 } }),
    ];
    for (const res of refused) {
      assert.equal(res.status, 422);
      const [entry] = (await json(res)).detail;
      assert.equal(entry.type, 'value_error');
      assert.match(entry.msg, /Latin-1/);
    }
    assert.equal(uploads.requests.length, 0, 'nothing ran, nothing was uploaded');
    const p = await json(await post(`${s.url}/predictions`, { id: 'café-1', input: { prompt: 'x', steps: 1 } }));
    assert.equal(p.status, 'succeeded', p.error);
    assert.equal(uploads.requests[0]!.headers['x-prediction-id'], 'café-1');
  });
});

describe('input URLs that spell a refused address another way', () => {
  it('refuses NAT64, 6to4 and IPv4-compatible IPv6 forms of link-local addresses with a 422', async () => {
    const s = await startServer('file-input', {}, { policy: { denyPrivate: true } });
    try {
      await waitReady(s.url);
      for (const host of ['[64:ff9b::a9fe:a9fe]', '[2002:a9fe:a9fe::]', '[::a9fe:a9fe]', '[::ffff:a9fe:a9fe]']) {
        const res = await post(`${s.url}/predictions`, { input: { input_image: `http://${host}/latest/meta-data/` } });
        assert.equal(res.status, 422, host);
        assert.match((await json(res)).detail[0].msg, /is a link-local address/, host);
      }
      const unspecified = await post(`${s.url}/predictions`, { input: { input_image: 'http://[::]/x.png' } });
      assert.match((await json(unspecified)).detail[0].msg, /is an unspecified address/);
      const fine = await json(await post(`${s.url}/predictions`, { input: { input_image: pngDataUrl } }));
      assert.equal(fine.status, 'succeeded', fine.error);
    } finally {
      await s.close();
    }
  });
});

describe('connections that never finish their request', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer('slow', {}, { headersTimeoutMs: 300, requestTimeoutMs: 800 });
    await waitReady(s.url);
  });
  after(() => s.close());

  /** Sends `text`, then nothing; resolves with what the server answered once it closed the connection. */
  const stall = (text: string) => new Promise<{ answer: string; ms: number }>((resolve, reject) => {
    const { port } = new URL(s.url);
    const socket = connect(Number(port), '127.0.0.1');
    const t0 = performance.now();
    let answer = '';
    const limit = setTimeout(() => { socket.destroy(); reject(new Error('the server kept the connection open for 5 s')); }, 5000);
    socket.setEncoding('utf8');
    socket.on('data', (d) => { answer += d; });
    socket.on('close', () => { clearTimeout(limit); resolve({ answer, ms: performance.now() - t0 }); });
    socket.on('error', () => undefined);
    socket.write(text);
  });

  it('drops a client that never completes its headers, or its body', async () => {
    const headers = await stall('POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: app');
    assert.match(headers.answer, /^HTTP\/1\.1 408/);
    const body = await stall('POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"input":');
    assert.match(body.answer, /^HTTP\/1\.1 408/);
  });

  it('still answers a synchronous prediction that computes longer than the request timeout', async () => {
    const p = await json(await post(`${s.url}/predictions`, { input: { prompt: 'x', steps: 5, step_ms: 300 } }));
    assert.equal(p.status, 'succeeded');
    assert.ok(p.metrics.predict_time > 1.4, String(p.metrics.predict_time));
  });
});

describe('prediction logs', () => {
  it('hold the messages of errors, never stack traces', async () => {
    const s = await startServer('failing', { logErrors: true });
    try {
      await waitReady(s.url);
      const p = await json(await post(`${s.url}/predictions`, { input: {} }));
      assert.equal(p.status, 'failed');
      assert.equal(p.error, 'the model exploded');
      for (const text of ['retrying after a transient glitch', 'step failed', 'context: a detail', 'the model exploded']) {
        assert.ok(p.logs.includes(text), `${text} in ${p.logs}`);
      }
      assert.doesNotMatch(p.logs, /^\s+at |\.js:\d+|Error: /m);
    } finally {
      await s.close();
    }
  });
});

describe('stopping', () => {
  it('reports STOPPING once POST /shutdown was received, while the running prediction finishes', async () => {
    const s = await startServer('slow');
    await waitReady(s.url);
    await post(`${s.url}/predictions`, { input: { prompt: 'x', steps: 10, step_ms: 50 } }, { prefer: 'respond-async' });
    assert.equal((await fetch(`${s.url}/shutdown`, { method: 'POST' })).status, 200);
    await waitFor(async () => (await json(await fetch(`${s.url}/health-check`))).status === 'STOPPING', 'STOPPING');
    assert.equal((await post(`${s.url}/predictions`, { input: { prompt: 'y' } })).status, 503);
    assert.equal(await s.server.exited, 0);
  });

  it('removes the temp directories of servers that are gone at start-up, and only those', async () => {
    const root = tempDir('sweep');
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const deadPid = Number(gone.stdout);
    const dirs = [`prediction-${deadPid}-abc123`, `prediction-${process.pid}-def456`, 'prediction-1-ghi789', 'prediction-xyz', 'unrelated'];
    for (const d of dirs) {
      mkdirSync(join(root, d));
      writeFileSync(join(root, d, 'input.png'), 'x');
    }
    const s = await startServer('slow', {}, { tmpRoot: root });
    try {
      // pid 1 is running; the unrelated names are not ours to judge
      assert.deepEqual((await listDir(root)).sort(), ['prediction-1-ghi789', 'prediction-xyz', 'unrelated']);
    } finally {
      await s.close();
    }
  });
});
