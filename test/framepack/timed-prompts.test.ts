/**
 * Timestamped prompts against FramePack-Studio's own parser and worker blocks
 * (test/fixtures/timed-prompts/studio.json, made by scripts/references/studio-prompts.py).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseTimedPrompt, PromptSyntaxError, sectionPrompts, distinctPrompts } from '../../src/framepack/timed-prompts.js';
import { sectionCount } from '../../src/framepack/sections.js';

interface Row { time_position: number; prompt: string; blend: { from: string; to: string; alpha: number } | null }
interface ByType {
  parsed: Array<{ prompt: string; start: number; end: number | null }>;
  per_section: Record<string, Row[]>;
  per_section_at_changes: Record<string, Row[]>;
}
interface Case { name: string; prompt: string; seconds: number; latent_window_size: number; expect: 'ok' | 'malformed'; sections: number; by_type: Record<'Original' | 'F1', ByType> }

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const studio = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'timed-prompts', 'studio.json'), 'utf8')) as { blend_sections: number[]; cases: Case[] };

const before = (type: 'Original' | 'F1', n: number, lws: number) => Array.from({ length: n }, (_, k) => (type === 'F1' ? 1 : 0) + k * lws);

test('the fixture covers at least 15 prompts, malformed ones included', () => {
  assert.ok(studio.cases.length >= 15);
  assert.ok(studio.cases.filter((c) => c.expect === 'malformed').length >= 8);
});

for (const c of studio.cases.filter((x) => x.expect === 'ok')) {
  test(`${c.name}: tags, snapped times and each section's prompt as Studio`, () => {
    assert.equal(sectionCount(c.seconds, c.latent_window_size), c.sections);
    for (const type of ['Original', 'F1'] as const) {
      const ref = c.by_type[type];
      const ours = parseTimedPrompt(c.prompt, { seconds: c.seconds, latentWindowSize: c.latent_window_size, inverted: type === 'Original' });
      if (ours === null) {
        // a plain prompt: Studio trims it and uses it everywhere; it is used unchanged here
        assert.deepEqual(ref.parsed.map((p) => p.prompt), [c.prompt.trim()]);
        for (const rows of Object.values(ref.per_section)) assert.ok(rows.every((r) => r.prompt === c.prompt.trim() && r.blend === null));
        continue;
      }
      assert.deepEqual(ours, ref.parsed, `${type}: parsed sections`);
      for (const blend of studio.blend_sections) {
        const got = sectionPrompts(ours, before(type, c.sections, c.latent_window_size), blend);
        const atChanges = ref.per_section_at_changes[String(blend)];
        assert.deepEqual(got, atChanges.map((r) => ({ prompt: r.prompt, blend: r.blend })), `${type}, blend ${blend}`);
        // the chosen prompt never depends on where Studio puts its blend
        assert.deepEqual(got.map((s) => s.prompt), ref.per_section[String(blend)].map((r) => r.prompt), `${type}, blend ${blend}: chosen prompts`);
      }
    }
  });
}

for (const c of studio.cases.filter((x) => x.expect === 'malformed')) {
  test(`${c.name}: refused with a message (Studio reads it silently)`, () => {
    assert.throws(() => parseTimedPrompt(c.prompt, { seconds: c.seconds, latentWindowSize: c.latent_window_size }), (err: unknown) => {
      assert.ok(err instanceof PromptSyntaxError, String(err));
      assert.ok(err.message.length > 20, err.message);
      return true;
    });
  });
}

test('error messages name the problem', () => {
  const msg = (p: string, seconds = 5) => {
    try {
      parseTimedPrompt(p, { seconds, latentWindowSize: 9 });
    } catch (err) {
      return (err as Error).message;
    }
    return '';
  };
  assert.match(msg('[0: a] [2: b]'), /"\[0:" looks like a timestamp/);
  assert.match(msg('intro [0s: a] [2s: b]'), /text outside the timestamp tags: "intro"/);
  assert.match(msg('[0s: a] [2s: ]'), /"\[2s: \]" has no text/);
  assert.match(msg('[0s: a] [0s: b]'), /start at the same time/);
  assert.match(msg('[3s-1s: a]'), /ends before it starts/);
  assert.match(msg('[0s: a] [10s: b]', 3), /starts at or after the end of the 3 s video/);
  assert.match(msg('[0s: a [b] c] [2s: d]'), /cannot contain \[ or \]|text outside/);
});

test('a plain prompt is returned as null and used unchanged, brackets and spaces included', () => {
  for (const p of ['  a cat  ', 'a [red] balloon', '[1girl, smiling] waves', '', 'ratio 16:9 [wide]']) {
    assert.equal(parseTimedPrompt(p, { seconds: 3, latentWindowSize: 9 }), null, p);
  }
});

test('blend weights and the prompts to encode', () => {
  const schedule = parseTimedPrompt('[0s: a] [2s: b]', { seconds: 5, latentWindowSize: 9 })!;
  const s = sectionPrompts(schedule, before('Original', 4, 9), 4);
  assert.deepEqual(s.map((x) => x.prompt), ['b', 'b', 'b', 'a']);
  assert.deepEqual(s[3].blend, { from: 'b', to: 'a', alpha: 0.25 });
  assert.deepEqual(distinctPrompts(s), ['b', 'a']);
  assert.ok(sectionPrompts(schedule, before('Original', 4, 9), 0).every((x) => x.blend === null));
});
