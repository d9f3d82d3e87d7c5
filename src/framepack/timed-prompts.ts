/**
 * Timestamped prompts in FramePack-Studio's syntax: `[0s: a cat sits] [2s: the cat jumps] [4s-5s: it lands]`.
 * Each section of the video is conditioned on the prompt whose time covers it.
 *
 * Reference: FramePack-Studio 0.5.1, modules/prompt_handler.py (`parse_timestamped_prompt`,
 * `snap_to_section_boundaries`) and the prompt choice / blending of modules/pipelines/worker.py. Studio's rules,
 * as reproduced here:
 *   - a tag is `[<start>s: text]` or `[<start>s-<end>s: text]`, times are plain decimals with the unit `s`
 *     (no space before it, none around `-`), spaces are allowed around the colon, the text is trimmed and
 *     cannot span lines;
 *   - tags are sorted by start; a tag without an end lasts until the next tag's start, the last one until
 *     the requested video length;
 *   - start and end are snapped to multiples of one section's duration (4 lws - 3 frames at 30 fps), with
 *     Python's half-to-even round; an end that snaps onto or before its start becomes start + one section;
 *   - for the inverted sampler (sections generated from the end of the video) times are mirrored:
 *     [total - end, total - start], and sorted again;
 *   - section k uses the first prompt whose [start, end) holds (latent frames generated before it x 4 - 3) / 30
 *     seconds (0.01 when that is negative), the first prompt when none does;
 *   - blending (`blend_sections` B > 0): the section where the chosen prompt changes is conditioned on
 *     (1 - 1/B) x previous + (1/B) x new (LLaMA states and CLIP pooler; the previous prompt's mask).
 *     Deviation: Studio finds "where the prompt changes" by the position of the prompt in its parsed list
 *     and compares that with the section counter, so its blend lands on the section whose index equals the
 *     list position, whatever the times say (test/fixtures/timed-prompts/studio.json keeps both results).
 *     Here the change is the section whose chosen prompt differs from the previous section's, which is what
 *     Studio's comment ("start_section_idx") describes; the blend itself is Studio's.
 *
 * Stricter than Studio (which reads anything silently): once a prompt has a tag, text outside tags, an empty
 * tag, a bracket inside a tag, two tags with the same start, an end not after its start and a start at or
 * after the video's end are errors, and so is a bracket group that looks like a timestamp but is not one
 * (`[2: ...]`, `[2 s: ...]`, `[1m: ...]`). A prompt with no tag is used exactly as given (Studio trims it).
 */
import { roundHalfEven } from './sections.js';

/** One prompt and the time it covers, in the order the sections are generated. */
export interface TimedPrompt {
  prompt: string;
  start: number;
  end: number;
}

/** What conditions one section: a prompt, or a blend of two (weight `alpha` on `to`). */
export interface SectionPrompt {
  prompt: string;
  blend: { from: string; to: string; alpha: number } | null;
}

export class PromptSyntaxError extends Error {
  override name = 'PromptSyntaxError';
}

const FPS = 30;
/** Studio's default for its "sections to blend between prompts" slider. */
export const DEFAULT_BLEND_SECTIONS = 4;
/** Studio's tag: start, optional end, text (lazily up to the first `]`; `.` stops at line ends). */
const TAG = /\[(\d+(?:\.\d+)?s)(?:-(\d+(?:\.\d+)?s))?\s*:\s*(.*?)\]/g;
/** Something meant as a tag: a bracket, a number, maybe a unit or a range, then a colon. */
const TAG_LIKE = /\[\s*\d+(?:\.\d+)?\s*[a-z]*\s*(?:-\s*(?:\d+(?:\.\d+)?\s*[a-z]*\s*)?)?:/i;

const quote = (s: string) => JSON.stringify(s.length > 60 ? `${s.slice(0, 57)}...` : s);
const notATag = (like: string) => `${quote(like)} looks like a timestamp but is not one: write [2s: text] or [1s-3s: text] ` +
  '(seconds with the unit s, no spaces inside the time)';

/** Seconds of one section: 4 lws - 3 frames at 30 fps. */
export const sectionSeconds = (lws: number): number => (lws * 4 - 3) / FPS;

/**
 * The tags of `text`, or null for a plain prompt (no tag). `seconds` is the requested video length; `inverted`
 * mirrors the times for the inverted sampler (false for forward sampling, where Studio keeps them). Throws
 * PromptSyntaxError for the malformed cases listed above.
 */
export function parseTimedPrompt(text: string, o: { seconds: number; latentWindowSize: number; inverted?: boolean }): TimedPrompt[] | null {
  const tags: Array<{ prompt: string; start: number; end: number | null; raw: string }> = [];
  let rest = text;
  for (const m of text.matchAll(TAG)) {
    tags.push({ prompt: m[3].trim(), start: parseFloat(m[1]), end: m[2] === undefined ? null : parseFloat(m[2]), raw: m[0] });
    rest = rest.split(m[0]).join('');
  }
  if (tags.length === 0) {
    const like = TAG_LIKE.exec(text);
    if (like) throw new PromptSyntaxError(notATag(like[0]));
    return null;
  }
  const outside = rest.trim();
  if (outside) {
    const like = TAG_LIKE.exec(outside);
    throw new PromptSyntaxError(like ? notATag(like[0])
      : `text outside the timestamp tags: ${quote(outside)}; with timestamps every part of the prompt belongs in a tag such as [0s: text]`);
  }
  const starts = new Map<number, string>();
  for (const t of tags) {
    const tag = quote(t.raw);
    if (t.prompt === '') throw new PromptSyntaxError(`${tag} has no text: each tag holds the prompt for its time`);
    if (/[[\]]/.test(t.prompt)) throw new PromptSyntaxError(`${tag}: a tag's text cannot contain [ or ] (a tag left open?)`);
    if (t.end !== null && t.end <= t.start) throw new PromptSyntaxError(`${tag} ends before it starts`);
    if (t.start >= o.seconds) throw new PromptSyntaxError(`${tag} starts at or after the end of the ${o.seconds} s video`);
    const same = starts.get(t.start);
    if (same !== undefined) throw new PromptSyntaxError(`${quote(same)} and ${tag} start at the same time`);
    starts.set(t.start, t.raw);
  }

  const sorted = [...tags].sort((a, b) => a.start - b.start); // stable, as Python's sort
  const ends = sorted.map((t, i) => t.end ?? (i + 1 < sorted.length ? sorted[i + 1].start : o.seconds));
  const dur = sectionSeconds(o.latentWindowSize);
  const snapped = sorted.map((t, i) => {
    const start = roundHalfEven(t.start / dur) * dur;
    let end = roundHalfEven(ends[i] / dur) * dur;
    if (end <= start) end = start + dur;
    return { prompt: t.prompt, start, end };
  });
  if (o.inverted === false) return snapped;
  return snapped.map((t) => ({ prompt: t.prompt, start: o.seconds - t.end, end: o.seconds - t.start }))
    .sort((a, b) => a.start - b.start);
}

/**
 * The prompt of each section in generation order. `generatedBefore[k]` = latent frames generated before
 * section k (the inverted sampler: k lws; forward sampling starts with the start latent: 1 + k lws).
 */
export function sectionPrompts(schedule: TimedPrompt[], generatedBefore: number[], blendSections: number): SectionPrompt[] {
  const chosen = generatedBefore.map((frames) => {
    let t = (frames * 4 - 3) / FPS;
    if (t < 0) t = 0.01;
    return (schedule.find((s) => s.start <= t && t < s.end) ?? schedule[0]).prompt;
  });
  return chosen.map((prompt, k) => {
    const previous = k > 0 ? chosen[k - 1] : prompt;
    const blend = blendSections > 0 && previous !== prompt ? { from: previous, to: prompt, alpha: 1 / blendSections } : null;
    return { prompt, blend };
  });
}

/** The prompts to encode, in order of first use. */
export function distinctPrompts(sections: SectionPrompt[]): string[] {
  const out: string[] = [];
  for (const s of sections) for (const p of s.blend ? [s.blend.from, s.blend.to] : [s.prompt]) if (!out.includes(p)) out.push(p);
  return out;
}
