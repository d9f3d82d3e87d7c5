/** Small pieces of the server: timestamps, env parsing, address policy, data URLs, file names, flags. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { camel, flagBool, parseArgs } from '../../src/cli/flags.js';
import { decodeDataUrl, filenameFromUrl } from '../../src/server/input-files.js';
import { Prediction } from '../../src/server/runner.js';
import { refusedRange } from '../../src/server/ssrf.js';
import { isoMicros, secondsBetween } from '../../src/server/time.js';
import { throttleFromEnv } from '../../src/server/webhooks.js';
import { mimeOf, toDataUrl } from '../../src/server/uploads.js';
import { tempDir } from './helpers.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

describe('server units', () => {
  it('writes timestamps with microseconds and +00:00', () => {
    assert.equal(isoMicros(Date.UTC(2026, 7, 1, 12, 0, 0) * 1000 + 123456), '2026-08-01T12:00:00.123456+00:00');
    assert.match(isoMicros(), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/);
    assert.equal(secondsBetween('2026-08-01T12:00:00.000001+00:00', '2026-08-01T12:01:10.654321+00:00'), 70.65432);
  });

  it('parses COG_THROTTLE_RESPONSE_INTERVAL (seconds; invalid -> 0.5 s)', () => {
    assert.deepEqual([undefined, '', 'abc', '-1', '0', '0.1', '2'].map(throttleFromEnv), [500, 500, 500, 500, 0, 100, 2000]);
  });

  it('classifies addresses', () => {
    const open = { denyPrivate: false };
    const strict = { denyPrivate: true };
    const cases: [string, string | null, string | null][] = [
      ['169.254.169.254', 'link-local', 'link-local'],
      ['fd00:ec2::254', 'cloud-metadata', 'cloud-metadata'],
      ['::ffff:169.254.1.1', 'link-local', 'link-local'],
      ['fe80::1', 'link-local', 'link-local'],
      ['224.0.0.1', 'multicast', 'multicast'],
      ['127.0.0.1', null, 'loopback'],
      ['::1', null, 'loopback'],
      ['10.0.0.1', null, 'private'],
      ['172.31.255.255', null, 'private'],
      ['192.168.1.1', null, 'private'],
      ['fd12::1', null, 'private'],
      ['0.0.0.0', null, 'unspecified'],
      ['8.8.8.8', null, null],
      ['2606:4700::1111', null, null],
      ['172.32.0.1', null, null],
      // IPv6 forms that carry an IPv4 address are judged as that address
      ['::ffff:a9fe:a9fe', 'link-local', 'link-local'],
      ['::ffff:0:169.254.169.254', 'link-local', 'link-local'],
      ['64:ff9b::a9fe:a9fe', 'link-local', 'link-local'],
      ['64:ff9b::169.254.169.254', 'link-local', 'link-local'],
      ['2002:a9fe:a9fe::', 'link-local', 'link-local'],
      ['2002:a9fe:a9fe:1:2:3:4:5', 'link-local', 'link-local'],
      ['::a9fe:a9fe', 'link-local', 'link-local'],
      ['::169.254.169.254', 'link-local', 'link-local'],
      ['2001:0:4136:e378:8000:63bf:5601:5601', 'link-local', 'link-local'], // Teredo client 169.254.169.254 (inverted)
      ['64:ff9b::6464:64c8', 'cloud-metadata', 'cloud-metadata'], // 100.100.100.200
      ['64:ff9b::7f00:1', null, 'loopback'],
      ['2002:0a00:0001::1', null, 'private'],
      ['64:ff9b::808:808', null, null],
      ['2002:808:808::1', null, null],
    ];
    for (const [ip, a, b] of cases) {
      assert.equal(refusedRange(ip, open), a, ip);
      assert.equal(refusedRange(ip, strict), b, ip);
    }
  });

  it('decodes data URLs with parameters, spaces and percent-encoding', () => {
    assert.deepEqual(decodeDataUrl('data:text/plain; charset=utf-8;base64,aGVs bG8='), { mime: 'text/plain', bytes: Buffer.from('hello') });
    assert.deepEqual(decodeDataUrl('data:,a%20b%FF').bytes, Buffer.from([0x61, 0x20, 0x62, 0xff]));
    assert.equal(decodeDataUrl('data:,x').mime, 'text/plain');
  });

  it('derives safe local file names from URLs', () => {
    assert.equal(filenameFromUrl(new URL('https://x/a/my%20cat.png?sig=1')), 'my cat.png');
    assert.equal(filenameFromUrl(new URL('https://x/')), 'file');
    assert.equal(filenameFromUrl(new URL('https://x/..%2F..%2Fetc%2Fpasswd')), '.._.._etc_passwd'.replace(/^\.+/, ''));
    const long = filenameFromUrl(new URL(`https://x/${'a'.repeat(300)}.png`));
    assert.ok(Buffer.byteLength(long) <= 200);
    assert.ok(long.endsWith('~.png'));
  });

  it('encodes outputs as data URLs in slices that concatenate exactly', async () => {
    const dir = tempDir('dataurl');
    const bytes = Buffer.alloc(7 * 1024 * 1024 + 5);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) & 255;
    writeFileSync(join(dir, 'v.mp4'), bytes);
    const url = await toDataUrl(join(dir, 'v.mp4'));
    assert.ok(url.startsWith('data:video/mp4;base64,'));
    assert.equal(url.slice('data:video/mp4;base64,'.length), bytes.toString('base64'));
    assert.equal(mimeOf('x.unknown'), 'application/octet-stream');
  });

  it('a prediction snapshot is a copy later changes of the prediction do not reach', () => {
    const p = new Prediction('id', isoMicros(), { prompt: 'a', loras: [{ url: 'x', scale: 1 }] });
    p.state.metrics = { predict_time: 1 };
    const before = p.snapshot();
    const copy = structuredClone(before);
    p.appendLog('line');
    p.state.status = 'succeeded';
    p.state.output = 'data:video/mp4;base64,AAAA';
    (p.state.input.loras as { scale: number }[])[0].scale = 2;
    (p.state.input as Record<string, unknown>).prompt = 'b';
    p.state.metrics.predict_time = 2;
    assert.deepEqual(before, copy);
    assert.deepEqual(p.snapshot(), structuredClone(p.state));
  });

    it('parses flags the way Cog passes them', () => {
    const a = parseArgs(['--await-explicit-shutdown=true', '--upload-url=http://x/', '--setup-ms', '30', '-i', 'a=1', '-i', 'b=2', 'pos'],
      { optionalBooleans: ['await-explicit-shutdown'], aliases: { i: 'input' } });
    assert.equal(a.flags.get('await-explicit-shutdown'), 'true');
    assert.equal(a.flags.get('upload-url'), 'http://x/');
    assert.deepEqual(a.all.get('input'), ['a=1', 'b=2']);
    assert.deepEqual(a.positionals, ['pos']);
    const b = parseArgs(['--await-explicit-shutdown', 'false', '--x'], { optionalBooleans: ['await-explicit-shutdown'] });
    assert.equal(flagBool(b.flags.get('await-explicit-shutdown')), false);
    assert.equal(flagBool(parseArgs(['--await-explicit-shutdown', '--host', 'h'], { optionalBooleans: ['await-explicit-shutdown'] }).flags.get('await-explicit-shutdown')), true);
    assert.equal(b.flags.get('x'), true);
    assert.equal(camel('setup-ms'), 'setupMs');
  });
});
