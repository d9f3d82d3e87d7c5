/**
 * Sampling progress of one generation: a log line per step in tqdm's format, one bar per section, which
 * Replicate's log view draws as a progress bar, plus the numbers live watchers get (overall percent and the
 * time the remaining steps should take).
 *
 * Replicate's clients find a bar with `^\s*(\d+)%\s*\|.+?\|\s*(\d+)\/(\d+)` on the newest matching line, so
 * the line has to start with the percentage: the section is named in tqdm's postfix, after the rate
 * (`  40%|####      | 10/25 [00:11<00:16,  1.10s/it, section 1/2]`), not in a leading description.
 */

/** tqdm's ASCII bar: 10 cells, `#` for full ones and a digit 1-9 for the partly filled cell. */
const BAR_CELLS = 10;
const BAR_CHARS = ' 123456789#';

/** tqdm's format_interval: `mm:ss`, or `h:mm:ss` from an hour on. */
export function formatInterval(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function bar(fraction: number): string {
  const steps = BAR_CHARS.length - 1;
  const units = Math.floor(Math.min(1, Math.max(0, fraction)) * BAR_CELLS * steps);
  const full = Math.floor(units / steps);
  if (full >= BAR_CELLS) return BAR_CHARS[steps].repeat(BAR_CELLS);
  return BAR_CHARS[steps].repeat(full) + BAR_CHARS[units % steps] + ' '.repeat(BAR_CELLS - full - 1);
}

/**
 * One tqdm line for `n` of `total` done after `elapsed` seconds: percentage, bar, counts, elapsed<remaining
 * and the rate (`s/it` when an iteration takes over a second, `it/s` otherwise), then `postfix`.
 */
export function tqdmLine(n: number, total: number, elapsed: number, postfix?: string): string {
  const fraction = total > 0 ? n / total : 0;
  const rate = n > 0 && elapsed > 0 ? n / elapsed : undefined; // iterations per second
  const remaining = rate ? formatInterval((total - n) / rate) : '?';
  const rateText = rate === undefined ? '?it/s' : 1 / rate > 1 ? `${(1 / rate).toFixed(2).padStart(5)}s/it` : `${rate.toFixed(2).padStart(5)}it/s`;
  return `${(fraction * 100).toFixed(0).padStart(3)}%|${bar(fraction)}| ${n}/${total} ` +
    `[${formatInterval(elapsed)}<${remaining}, ${rateText}${postfix ? `, ${postfix}` : ''}]`;
}

/** Where sampling stands after a step (section and step count from 1). */
export interface StepProgress {
  section: number;
  sections: number;
  step: number;
  steps: number;
  /** Of every step of every section. */
  percent: number;
  /** Seconds the remaining steps should take at the mean step time so far. */
  eta_seconds: number;
}

export interface SamplingProgressOptions {
  sections: number;
  steps: number;
  log(line: string): void;
  /** Overall steps done of all steps (the command line's bar). */
  progress?(done: number, total: number, label?: string): void;
  now?: () => number;
}

/** Counts the steps of a generation and reports each as a tqdm line, a progress call and a StepProgress. */
export class SamplingProgress {
  private readonly now: () => number;
  private sectionStart = 0;
  private section = 0;
  private done = 0;
  private stepSeconds = 0; // sampling time so far, summed over sections (decoding between them excluded)

  constructor(private readonly opts: SamplingProgressOptions) {
    this.now = opts.now ?? (() => performance.now() / 1000);
  }

  private get label(): string {
    return `section ${this.section}/${this.opts.sections}`;
  }

  /** Starts section `section` (from 1) with an empty bar, as tqdm draws one when it is created. */
  startSection(section: number): void {
    this.section = section;
    this.sectionStart = this.now();
    this.opts.log(tqdmLine(0, this.opts.steps, 0, this.label));
  }

  /** Step `step` (from 1) of the current section is done. */
  step(step: number): StepProgress {
    const { sections, steps } = this.opts;
    const elapsed = this.now() - this.sectionStart;
    this.done++;
    const total = sections * steps;
    const mean = (this.stepSeconds + elapsed) / this.done;
    if (step === steps) this.stepSeconds += elapsed;
    this.opts.log(tqdmLine(step, steps, elapsed, this.label));
    this.opts.progress?.(this.done, total, 'steps');
    return {
      section: this.section, sections, step, steps,
      percent: Math.round((1000 * this.done) / total) / 10,
      eta_seconds: Math.round(mean * (total - this.done) * 10) / 10,
    };
  }
}
