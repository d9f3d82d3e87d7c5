/** The predictor's logger: its lines become logs whatever the server's level, and reach the server log. */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import pino from 'pino';
import { levelFromEnv, teeLogger } from '../../src/log.js';

function capture() {
  const lines: string[] = [];
  const stream = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } });
  return { lines, stream };
}

describe('teeLogger', () => {
  it('collects info lines even when the server logs only warnings, and forwards only warnings', () => {
    const { lines, stream } = capture();
    const parent = pino({ level: 'warn' }, stream);
    const collected: string[] = [];
    const log = teeLogger(parent, { prediction_id: 'p' }, (l) => collected.push(l));
    log.info('step %d/%d', 1, 25);
    log.info({ extra: true }, 'with object');
    log.child({ part: 'vae' }).warn('careful');
    log.debug('not collected at info');
    assert.deepEqual(collected, ['step 1/25', 'with object', 'careful']);
    assert.equal(lines.length, 1);
    const rec = JSON.parse(lines[0]!);
    assert.deepEqual([rec.msg, rec.prediction_id, rec.part], ['careful', 'p', 'vae']);
  });

  it('maps Cog level names', () => {
    assert.deepEqual(['debug', 'WARNING', 'warn', 'error', '', 'bogus'].map(levelFromEnv), ['debug', 'warn', 'warn', 'error', 'info', 'info']);
  });
});
