/**
 * `GET /predictions/{id}/events` (Server-Sent Events) and the section videos, on an in-process server with
 * a predictor that reports events as FramePack does (predictors/live.ts): order, several listeners, late
 * listeners, retention, the outcome events, a client that never reads, disconnects; and `GET /playground`.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { json, post, put, startServer, waitFor, waitReady, type TestServer } from './helpers.js';
import { collectEvents, readEvents, type SseEvent } from './sse-client.js';
import { readdir } from 'node:fs/promises';

const eventsUrl = (s: TestServer, id: string) => `${s.url}/predictions/${id}/events`;
const names = (events: SseEvent[]) => events.map((e) => e.event);

/** Starts `input` under `id` (async) and collects the events of `listeners` clients. */
async function runWatched(s: TestServer, id: string, input: Record<string, unknown>, listeners = 1): Promise<SseEvent[][]> {
  const res = await put(`${s.url}/predictions/${id}`, { input: { watchers: listeners, ...input } }, { prefer: 'respond-async' });
  assert.equal(res.status, 202, await res.text());
  return Promise.all(Array.from({ length: listeners }, () => collectEvents(eventsUrl(s, id))));
}

describe('live events', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer('live');
    await waitReady(s.url);
  });
  after(async () => { await s.close(); });

  it('answers 404 for an unknown prediction and 405 for other methods', async () => {
    const res = await fetch(eventsUrl(s, 'nobody'));
    assert.equal(res.status, 404);
    assert.deepEqual(await res.json(), { detail: 'Not Found' });
    assert.equal((await fetch(`${s.url}/predictions/nobody/sections/1.mp4`)).status, 404);
    assert.equal((await fetch(eventsUrl(s, 'nobody'), { method: 'POST' })).status, 405);
  });

  it('sends every listener the steps in order, a section per section and the final prediction last', async () => {
    const [a, b] = await runWatched(s, 'ordered', { prompt: 'p', sections: 3, steps: 4 }, 2);
    assert.deepEqual(a, b, 'both listeners saw the same stream');
    const expected: string[] = [];
    for (let section = 1; section <= 3; section++) {
      for (let step = 1; step <= 4; step++) expected.push(`progress ${section}.${step}`, `preview ${section}.${step}`);
      expected.push(`section ${section}`);
    }
    expected.push('done');
    assert.deepEqual(a.map((e) => (e.event === 'section' ? `section ${e.data.section}`
      : e.event === 'done' ? 'done' : `${e.event} ${e.data.section}.${e.data.step}`)), expected);
    const progress = a.find((e) => e.event === 'progress')!.data;
    assert.deepEqual(progress, { section: 1, sections: 3, step: 1, steps: 4, percent: 100 / 12, eta_seconds: null });
    const preview = a.find((e) => e.event === 'preview')!.data;
    assert.deepEqual({ ...preview, image: undefined }, { section: 1, step: 1, width: 4, height: 2, image: undefined });
    assert.equal(preview.image, `data:image/jpeg;base64,${Buffer.alloc(100, 17).toString('base64')}`);
    const sections = a.filter((e) => e.event === 'section').map((e) => e.data);
    assert.deepEqual(sections[2], { section: 3, sections: 3, frames: 30, url: '/predictions/ordered/sections/3.mp4' });
    const done = a.at(-1)!.data;
    assert.equal(done.id, 'ordered');
    assert.equal(done.status, 'succeeded');
    assert.equal(done.output, `data:video/mp4;base64,${Buffer.from('video of p').toString('base64')}`);
    assert.match(done.logs, /section 3 done; watched true/);
    // the section videos outlive the prediction's temp directory
    const video = await fetch(`${s.url}${sections[1].url}`);
    assert.equal(video.status, 200);
    assert.equal(video.headers.get('content-type'), 'video/mp4');
    assert.equal(await video.text(), 'video of 2 section(s)');
    assert.equal((await fetch(`${s.url}/predictions/ordered/sections/9.mp4`)).status, 404);
  });

  it('gives a late listener the state so far; finished predictions stay listenable, the last three of them', async () => {
    const late = await collectEvents(eventsUrl(s, 'ordered'));
    assert.deepEqual(names(late), ['progress', 'preview', 'section', 'section', 'section', 'done']);
    assert.deepEqual([late[0].data.section, late[0].data.step, late[1].data.step], [3, 4, 4]);
    for (const id of ['r1', 'r2', 'r3']) await runWatched(s, id, { prompt: id, sections: 1, steps: 1 });
    assert.equal((await fetch(eventsUrl(s, 'ordered'))).status, 404, 'the oldest finished prediction was let go');
    assert.equal((await fetch(`${s.url}/predictions/ordered/sections/1.mp4`)).status, 404);
    assert.deepEqual(names(await collectEvents(eventsUrl(s, 'r1'))), ['progress', 'preview', 'section', 'done']);
    await waitFor(async () => (await readdir(s.tmpRoot)).filter((d) => d.startsWith('prediction-events-')).length === 3,
      'section videos of the three retained predictions only');
  });

  it('makes no section videos nobody watches, but keeps progress and preview for whoever comes', async () => {
    const p = await json(await post(`${s.url}/predictions`, { id: 'unwatched', input: { prompt: 'u', sections: 2, steps: 2 } }));
    assert.equal(p.status, 'succeeded');
    assert.match(p.logs, /section 2 done; watched false/);
    const events = await collectEvents(eventsUrl(s, 'unwatched'));
    assert.deepEqual(names(events), ['progress', 'preview', 'done']);
  });

  it('ends the stream with `failed` or `canceled`', async () => {
    const [failed] = await runWatched(s, 'breaks', { prompt: 'f', sections: 3, steps: 1, fail: true });
    assert.deepEqual(names(failed), ['progress', 'preview', 'section', 'failed']);
    assert.equal(failed.at(-1)!.data.status, 'failed');
    assert.equal(failed.at(-1)!.data.error, 'the model broke after a section');

    const res = await put(`${s.url}/predictions/stopped`, { input: { prompt: 'c', steps: 1000, step_ms: 20, watchers: 1 } }, { prefer: 'respond-async' });
    assert.equal(res.status, 202, await res.text());
    const seen: SseEvent[] = [];
    for await (const e of readEvents(await fetch(eventsUrl(s, 'stopped')))) {
      seen.push(e);
      if (seen.length === 2) assert.equal((await fetch(`${s.url}/predictions/stopped/cancel`, { method: 'POST' })).status, 200);
    }
    assert.equal(seen.at(-1)!.event, 'canceled');
    assert.equal(seen.at(-1)!.data.status, 'canceled');
    assert.ok(seen.filter((e) => e.event === 'progress').length < 1000);
  });

  it('holds a bounded buffer for a client that never reads, never waits for it, and frees it when it goes', async () => {
    const previewBytes = 256 * 1024;
    const steps = 120; // about 40 MB of previews: far more than the sockets' buffers take
    const res = await put(`${s.url}/predictions/flood`, {
      input: { prompt: 'x', sections: 2, steps: steps / 2, step_ms: 0, preview_bytes: previewBytes, watchers: 2 },
    }, { prefer: 'respond-async' });
    assert.equal(res.status, 202, await res.text());
    // a client that sends its request and never reads a byte of the answer
    const stalled = connect(Number(new URL(s.url).port), '127.0.0.1');
    stalled.pause();
    stalled.write('GET /predictions/flood/events HTTP/1.1\r\nHost: x\r\n\r\n');
    const hub = s.server.events.get('flood')!;
    await waitFor(() => hub.streams.size === 1, 'the stalled listener');
    const stream = [...hub.streams][0];
    let most = 0;
    const sampler = setInterval(() => { most = Math.max(most, stream.bufferedBytes); }, 1);
    const reader = await collectEvents(eventsUrl(s, 'flood')); // the second watcher: sampling starts now
    clearInterval(sampler);
    most = Math.max(most, stream.bufferedBytes);
    assert.equal(reader.at(-1)!.event, 'done', 'the prediction finished while a client read nothing');
    assert.equal(reader.filter((e) => e.event === 'section').length, 2);
    const event = Math.ceil(previewBytes / 3) * 4 + 200; // one preview event in base64
    assert.ok(stream.dropped > 0, 'stale previews and progress were dropped, not queued');
    assert.ok(most <= 3 * event + 64 * 1024, `the stalled client held ${most} bytes (one event is ${event})`);
    assert.ok(!stream.isClosed, 'it is still connected');
    stalled.destroy();
    await waitFor(() => stream.isClosed && hub.streams.size === 0, 'the listener to be dropped');
    assert.equal(stream.bufferedBytes, 0);
  });

  it('drops a listener that disconnects while the prediction goes on', async () => {
    const res = await put(`${s.url}/predictions/leaver`, { input: { prompt: 'l', sections: 2, steps: 20, step_ms: 10, watchers: 1 } }, { prefer: 'respond-async' });
    assert.equal(res.status, 202, await res.text());
    // a client that reads the start of the stream and goes away
    const leaver = connect(Number(new URL(s.url).port), '127.0.0.1');
    leaver.write('GET /predictions/leaver/events HTTP/1.1\r\nHost: x\r\n\r\n');
    let received = '';
    await new Promise<void>((resolve) => leaver.on('data', (d) => { received += d; if (received.includes('event: progress')) resolve(); }));
    const hub = s.server.events.get('leaver')!;
    assert.equal(hub.streams.size, 1);
    leaver.destroy();
    await waitFor(() => hub.streams.size === 0, 'the listener to be dropped');
    const rest = await collectEvents(eventsUrl(s, 'leaver'));
    assert.equal(rest.at(-1)!.event, 'done');
    assert.equal(rest.at(-1)!.data.status, 'succeeded');
  });
});

describe('live events at shutdown', () => {
  it('closes the streams of clients that stopped reading, so the server can stop', async () => {
    const s = await startServer('live');
    const stalled = connect(Number(new URL(s.url).port), '127.0.0.1');
    try {
      const res = await put(`${s.url}/predictions/last`, { input: { prompt: 'x', steps: 40, step_ms: 0, preview_bytes: 256 * 1024, watchers: 1 } },
        { prefer: 'respond-async' });
      assert.equal(res.status, 202, await res.text());
      stalled.pause();
      stalled.write('GET /predictions/last/events HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor(() => s.server.events.get('last')?.finished, 'the prediction to finish', 30_000);
      const stream = [...s.server.events.get('last')!.streams][0];
      assert.ok(stream && !stream.isClosed, 'the stalled client is still attached after the end');
      await s.close(); // would wait for that client forever if its stream were left open
      assert.ok(stream.isClosed);
    } finally {
      stalled.destroy();
    }
  });
});

describe('playground', () => {
  it('serves one self-contained page whose policy allows this origin only', async () => {
    const s = await startServer('live');
    try {
      const res = await fetch(`${s.url}/playground`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
      const html = await res.text();
      const csp = res.headers.get('content-security-policy')!;
      const script = /<script type="module">([\s\S]*)<\/script>/.exec(html)![1];
      const style = /<style>([\s\S]*)<\/style>/.exec(html)![1];
      const sha = (t: string) => `'sha256-${createHash('sha256').update(t).digest('base64')}'`;
      assert.match(csp, /default-src 'none'/);
      assert.ok(csp.includes(`script-src ${sha(script)}`), 'the inline script is allowed by its hash');
      assert.ok(csp.includes(`style-src ${sha(style)}`));
      assert.match(csp, /connect-src 'self'/);
      assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, 'nothing loaded from elsewhere');
      assert.match(script, /\/openapi\.json/);
      assert.match(html, /without any authentication/);
      assert.equal((await fetch(`${s.url}/playground`, { method: 'POST' })).status, 405);
    } finally {
      await s.close();
    }
  });

  it('is not served with playground: false; the Cog routes stay as they are', async () => {
    const s = await startServer('live', {}, { playground: false });
    try {
      const res = await fetch(`${s.url}/playground`);
      assert.equal(res.status, 404);
      assert.deepEqual(await res.json(), { detail: 'Not Found' });
      assert.equal((await fetch(`${s.url}/health-check`)).status, 200);
    } finally {
      await s.close();
    }
  });
});
