/**
 * Resolution buckets against the upstream rule's tables (test/fixtures/buckets/buckets.json, written by
 * scripts/references/buckets.py from FramePack's and kijai's bucket_tools.py), and what a class costs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BUCKETS_640, RESOLUTION, bucketsFor, findNearestBucket } from '../../src/framepack/buckets.js';
import { imageTokens } from '../../src/framepack/sections.js';
import { largestDecodeTensor } from '../../src/framepack/vae-decode.js';
import { vaeConfig } from '../../src/nets/vae.js';

const ref = JSON.parse(readFileSync(new URL('../../../test/fixtures/buckets/buckets.json', import.meta.url), 'utf8')) as {
  table_640: [number, number][];
  tables: Record<string, [number, number][]>;
  choices: Array<{ height: number; width: number; bucket_640: [number, number]; by_class: Record<string, [number, number]> }>;
};

const classes = Array.from({ length: (RESOLUTION.max - RESOLUTION.min) / RESOLUTION.step + 1 }, (_, i) => RESOLUTION.min + i * RESOLUTION.step);

test('the 640 table is FramePack\'s, and the classes are those the reference covers', () => {
  assert.deepEqual(BUCKETS_640, ref.table_640);
  assert.deepEqual(classes.map(String), Object.keys(ref.tables));
  assert.equal(RESOLUTION.default, 640);
});

test('every class\'s table equals the upstream rule\'s', () => {
  for (const r of classes) assert.deepEqual(bucketsFor(r), ref.tables[String(r)], `class ${r}`);
});

test('bucket choices for image sizes (ties included) equal the upstream rule\'s at every class', () => {
  for (const c of ref.choices) {
    assert.deepEqual(findNearestBucket(c.height, c.width), c.bucket_640, `${c.width}x${c.height}`);
    for (const r of classes) assert.deepEqual(findNearestBucket(c.height, c.width, r), c.by_class[String(r)], `${c.width}x${c.height} at ${r}`);
  }
});

test('every bucket of every class is a whole number of 2 x 2 latent patches', () => {
  for (const r of classes) for (const [h, w] of bucketsFor(r)) assert.ok(h % 16 === 0 && w % 16 === 0, `${w}x${h} at ${r}`);
});

test('image tokens per transformer call (the spec\'s table at 640, lws 9) and how they grow', () => {
  assert.equal(imageTokens(80, 76, 9), 17500); // 640x608
  assert.equal(imageTokens(52, 120, 9), 17970); // 416x960
  assert.equal(imageTokens(64, 96, 9), 17664); // 512x768
  const at = (r: number) => imageTokens(...(findNearestBucket(640, 640, r).map((d) => d / 8) as [number, number]), 9);
  assert.ok(at(960) / at(640) > 2.2 && at(960) / at(640) < 2.4, String(at(960) / at(640)));
});

test('the real VAE decodes untiled on a GPU up to class 704 and in tiles above (32-bit indexing)', () => {
  const real = vaeConfig({});
  assert.equal(largestDecodeTensor(real, 80, 76), 256 * 17 * 640 * 608);
  const fits = (r: number) => bucketsFor(r).every(([h, w]) => largestDecodeTensor(real, h / 8, w / 8) < 2 ** 31);
  assert.ok(fits(640) && fits(704));
  assert.ok(!fits(736) && !fits(960));
});
