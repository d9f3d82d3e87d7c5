/**
 * What clients watching a FramePack prediction see while it runs (the seam's PredictionEvents): the
 * progress of every sampling step, a preview of the denoised latents at most once per step
 * (preview-renderer.ts: a step whose preview would wait behind another's gets none), and after each decoded
 * section the video so far as an MP4.
 *
 * A section's video costs an encode of every frame so far, so it is made only while someone watches. The
 * encodes run one after another with x264's `veryfast` preset while sampling goes on; the prediction waits
 * for the last one before it encodes its own output, so every section event comes before the final one.
 */
import { join } from 'node:path';
import { errorMessage } from '../errors.js';
import type { PredictionEvents } from '../predictor.js';
import { PreviewRenderer } from './preview-renderer.js';
import type { StepProgress } from './progress.js';
import type { Float32Tensor } from './sections.js';
import type { VideoPixels } from './video-pixels.js';
import { writeMp4 } from './video.js';

export interface LiveOptions {
  tmpDir: string;
  crf: number;
  signal: AbortSignal;
  log(line: string): void;
}

export class LiveEvents {
  private readonly previews: PreviewRenderer<{ section: number; step: number }>;
  private videos: Promise<void> = Promise.resolve();

  constructor(private readonly events: PredictionEvents, private readonly opts: LiveOptions) {
    this.previews = new PreviewRenderer(
      ({ section, step }, p) => events.preview({ section, step, width: p.width, height: p.height, mime: 'image/jpeg', image: p.jpeg }),
      (err) => opts.log(`preview failed: ${errorMessage(err)}`),
    );
  }

  step(progress: StepProgress, denoised: Float32Tensor): void {
    this.events.progress(progress);
    this.previews.offer({ section: progress.section, step: progress.step }, denoised);
  }

  section(section: number, sections: number, pixels: VideoPixels): void {
    if (!this.events.watched) return;
    const { width, height, frameCount } = pixels;
    const frames = pixels.chunks(); // the frames now; the next section may be blended in while this encodes
    const { tmpDir, crf, signal, log } = this.opts;
    this.videos = this.videos.then(async () => {
      if (signal.aborted) return;
      const path = join(tmpDir, `section-${section}.mp4`);
      try {
        await writeMp4(path, frames, { width, height, crf, preset: 'veryfast', signal });
        await this.events.section({ section, sections, frames: frameCount, path });
      } catch (err) {
        if (!signal.aborted) log(`the video of section ${section}/${sections} failed: ${errorMessage(err)}`);
      }
    });
  }

  /** Resolves once every section video asked for so far was handed over. */
  sectionsDone(): Promise<void> {
    return this.videos;
  }

  /** Stops previews and waits for a section video still being encoded (a cancel stops it). */
  async close(): Promise<void> {
    await Promise.all([this.previews.close(), this.videos]);
  }
}
