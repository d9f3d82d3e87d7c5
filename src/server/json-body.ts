/**
 * JSON responses whose values hold long strings (an output or input `data:` URL: megabytes) are sent as a
 * stream of slices instead of one serialised string: serialising, encoding and writing a 4 MB body at once
 * held the event loop for 20-40 ms (plus the garbage collection of the copies). Each slice is escaped on its
 * own, which is exact: JSON.stringify escapes per code unit, and a surrogate pair cut in two becomes two
 * escapes that a parser joins again.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';

/** Strings from this length on are streamed in slices of this length. */
export const LONG_STRING = 256 * 1024;

/**
 * The JSON text of `value` as pieces: the text around the long strings, and each long string's escaped
 * slices. null when `value` holds no long string (then JSON.stringify is the cheaper way).
 */
export function jsonPieces(value: unknown, slice = LONG_STRING): Iterable<string> | null {
  const long: string[] = [];
  // a marker no other string can serialise to: a fresh nonce per call
  const tag = `\u0000${randomBytes(6).toString('hex')}:`;
  const text = JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v !== 'string' || v.length < slice) return v;
    long.push(v);
    return `${tag}${long.length - 1}`;
  });
  if (!long.length) return null;
  const escapedTag = JSON.stringify(tag).slice(1, -1);
  const marker = new RegExp(`"${escapedTag.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&')}(\\d+)"`, 'g');
  return (function* () {
    let at = 0;
    for (const m of text.matchAll(marker)) {
      yield `${text.slice(at, m.index)}"`;
      const s = long[Number(m[1])];
      for (let i = 0; i < s.length; i += slice) yield JSON.stringify(s.slice(i, i + slice)).slice(1, -1);
      yield '"';
      at = m.index + m[0].length;
    }
    yield text.slice(at);
  })();
}

/**
 * Sends `value` as JSON with status `code`: a body with long strings as a stream, one slice per write, so
 * that the event loop turns between them (the socket asks for the next once it took the last).
 */
export function sendJson(reply: FastifyReply, code: number, value: unknown): FastifyReply {
  const pieces = jsonPieces(value);
  if (!pieces) return reply.code(code).send(value);
  const body = Readable.from((function* () { for (const p of pieces) yield Buffer.from(p, 'utf8'); })(), { highWaterMark: 1 });
  return reply.code(code).type('application/json; charset=utf-8').send(body);
}
