import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import { jsonPieces, sendJson } from '../../src/server/json-body.js';

const join = (pieces: Iterable<string> | null) => [...pieces!].join('');

test('jsonPieces: the same JSON as JSON.stringify, long strings cut into slices', () => {
  const long = `data:video/mp4;base64,${'QUJD'.repeat(5000)}`;
  // escapes, a surrogate pair across a slice boundary (at 1000), a lone surrogate, a lookalike of the marker
  const tricky = `${'x'.repeat(999)}\u{1F600}"\\\n\u0000${'y'.repeat(3000)}\ud800z`;
  const value = { id: 'p1', output: long, logs: tricky, input: { a: [1, null, 'short', long] }, lookalike: '\u0000abcdef:0' };
  const pieces = [...jsonPieces(value, 1000)!];
  assert.ok(pieces.length > 20, `${pieces.length} pieces`);
  assert.ok(Math.max(...pieces.map((p) => p.length)) <= 6 * 1000 + 200, 'no piece much longer than an escaped slice');
  // the pair cut at a slice boundary is written as two escapes: the same value, other text
  assert.deepEqual(JSON.parse(pieces.join('')), value);
  const plain = { output: long, logs: 'a "quoted" \\ line\n'.repeat(400) };
  assert.ok(join(jsonPieces(plain, 1000)) === JSON.stringify(plain), 'without split pairs, the very text of JSON.stringify');
});

test('jsonPieces: null without long strings', () => {
  assert.equal(jsonPieces({ a: 'short', b: [1, 2] }, 1000), null);
  assert.equal(join(jsonPieces('z'.repeat(1000), 1000)), JSON.stringify('z'.repeat(1000)));
});

test('sendJson: a long body arrives as the same JSON, typed as JSON; a short one as usual', async () => {
  const app = Fastify();
  const value = { status: 'succeeded', output: `data:video/mp4;base64,${'A'.repeat(3 * 1024 * 1024)}` };
  app.get('/long', async (_req, reply) => sendJson(reply, 200, value));
  app.get('/short', async (_req, reply) => sendJson(reply, 202, { status: 'processing' }));
  const long = await app.inject('/long');
  assert.equal(long.statusCode, 200);
  assert.match(String(long.headers['content-type']), /^application\/json/);
  assert.deepEqual(long.json(), value);
  const short = await app.inject('/short');
  assert.equal(short.statusCode, 202);
  assert.deepEqual(short.json(), { status: 'processing' });
  await app.close();
});
