/**
 * Live events of predictions, beside the Cog contract (which they leave as it is): `GET
 * /predictions/{id}/events` is a Server-Sent Events stream of
 *
 *   progress  {section, sections, step, steps, percent, eta_seconds}
 *   preview   {section, step, width, height, image: "data:image/jpeg;base64,..."}   at most one per step
 *   section   {section, sections, frames, url: "/predictions/{id}/sections/{n}.mp4"} the video so far
 *   done | failed | canceled   the final prediction object, as the sync response would carry it
 *
 * and the stream ends after the final event. Any number of clients may listen; one that connects late
 * first gets the latest progress and preview and every section so far. An unknown id is a 404. Each client
 * is an SseStream (bounded, see sse.ts); one that disconnects is dropped with its queue.
 *
 * A hub outlives its prediction a little: the last few finished ones keep their final event and section
 * videos (files in a directory of their own, moved out of the prediction's temp directory), so that a page
 * can still load the videos it was shown and a client arriving just after the end gets the outcome.
 */
import { createReadStream } from 'node:fs';
import { copyFile, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { appError } from '../errors.js';
import type { PredictionEvents, PreviewEvent, ProgressEvent, SectionEvent } from '../predictor.js';
import { methodNotAllowed } from './error-handler.js';
import type { PredictionObject } from './runner.js';
import { SseStream } from './sse.js';

/** Finished predictions whose events stay available. */
const RETAINED = 3;
/** Proxies close connections idle for a minute or so; a comment every 15 s keeps a quiet stream open. */
const KEEP_ALIVE_MS = 15_000;

export interface EventHubsOptions {
  logger: Logger;
  /** Where section videos are kept (the system temp dir by default). */
  tmpRoot?: string;
}

/** Moves a file, copying when it lives on another file system. */
async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await copyFile(from, to);
    await rm(from, { force: true });
  }
}

/** The events of one prediction: what was seen so far, its listeners, its section videos. */
export class PredictionEventHub implements PredictionEvents {
  readonly streams = new Set<SseStream>();
  private progressJson?: string;
  private previewJson?: string;
  private readonly sections: { n: number; json: string; file: string }[] = [];
  private outcome?: { event: string; prediction: PredictionObject; json?: string };
  private dir?: Promise<string>;
  private disposed = false;

  constructor(readonly id: string, private readonly opts: EventHubsOptions) {}

  get watched(): boolean {
    return this.streams.size > 0;
  }

  get finished(): boolean {
    return this.outcome !== undefined;
  }

  progress(e: ProgressEvent): void {
    if (this.finished) return;
    const json = JSON.stringify({
      section: e.section, sections: e.sections, step: e.step, steps: e.steps, percent: e.percent, eta_seconds: e.eta_seconds,
    });
    this.progressJson = json;
    for (const s of this.streams) s.send('progress', json, { latestOnly: true });
  }

  preview(e: PreviewEvent): void {
    if (this.finished) return;
    const json = JSON.stringify({
      section: e.section, step: e.step, width: e.width, height: e.height,
      image: `data:${e.mime};base64,${Buffer.from(e.image.buffer, e.image.byteOffset, e.image.byteLength).toString('base64')}`,
    });
    this.previewJson = json;
    for (const s of this.streams) s.send('preview', json, { latestOnly: true });
  }

  async section(e: SectionEvent): Promise<void> {
    if (this.finished || this.disposed) return;
    this.dir ??= mkdtemp(join(this.opts.tmpRoot ?? tmpdir(), 'prediction-events-'));
    const file = join(await this.dir, `${e.section}.mp4`);
    await moveFile(e.path, file);
    if (this.disposed) return; // dispose() removed the directory meanwhile, or will
    const json = JSON.stringify({
      section: e.section, sections: e.sections, frames: e.frames,
      url: `/predictions/${encodeURIComponent(this.id)}/sections/${e.section}.mp4`,
    });
    this.sections.push({ n: e.section, json, file });
    for (const s of this.streams) s.send('section', json);
  }

  /**
   * Sends the final event (`done`, `failed` or `canceled`) with the prediction object (a snapshot) and ends
   * every stream. It is serialised only once someone listens: with a data URL output it is megabytes.
   */
  finish(p: PredictionObject): void {
    if (this.finished) return;
    this.outcome = { event: p.status === 'succeeded' ? 'done' : p.status, prediction: p };
    for (const s of this.streams) {
      s.send(this.outcome.event, this.outcomeJson());
      s.end();
    }
  }

  private outcomeJson(): string {
    return (this.outcome!.json ??= JSON.stringify(this.outcome!.prediction));
  }

  /** Adds a listener on `res`: the state so far first, then every event until the final one. */
  listen(res: FastifyReply['raw']): SseStream {
    const stream = new SseStream(res, () => this.streams.delete(stream));
    this.streams.add(stream);
    if (this.progressJson) stream.send('progress', this.progressJson, { latestOnly: true });
    if (this.previewJson) stream.send('preview', this.previewJson, { latestOnly: true });
    for (const s of this.sections) stream.send('section', s.json);
    if (this.outcome) {
      stream.send(this.outcome.event, this.outcomeJson());
      stream.end();
    }
    return stream;
  }

  /** The file of section `n`'s video, if there is one. */
  sectionFile(n: number): string | undefined {
    return this.disposed ? undefined : this.sections.find((s) => s.n === n)?.file;
  }

  /**
   * Closes every stream, also one still waiting for a client that stopped reading (it would keep the server
   * from closing), and removes the section videos.
   */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const s of this.streams) s.destroy();
    const dir = this.dir;
    if (dir) await rm(await dir, { recursive: true, force: true }).catch((err) => this.opts.logger.warn({ err }, 'could not remove section videos'));
  }
}

/** Every prediction's hub: opened when it starts, retained a little after it finished. */
export class EventHubs {
  private readonly hubs = new Map<string, PredictionEventHub>();
  private readonly finishedIds: string[] = [];
  private readonly keepAlive: NodeJS.Timeout;

  constructor(private readonly opts: EventHubsOptions) {
    this.keepAlive = setInterval(() => {
      for (const hub of this.hubs.values()) for (const s of hub.streams) s.comment('keep-alive');
    }, KEEP_ALIVE_MS).unref();
  }

  /** A fresh hub for a prediction that starts now (one left from an earlier run of the same id goes). */
  open(id: string): PredictionEventHub {
    this.drop(id);
    const hub = new PredictionEventHub(id, this.opts);
    this.hubs.set(id, hub);
    return hub;
  }

  get(id: string): PredictionEventHub | undefined {
    return this.hubs.get(id);
  }

  finish(id: string, p: PredictionObject): void {
    const hub = this.hubs.get(id);
    if (!hub) return;
    hub.finish(p);
    this.finishedIds.push(id);
    while (this.finishedIds.length > RETAINED) this.drop(this.finishedIds[0]);
  }

  private drop(id: string): void {
    const i = this.finishedIds.indexOf(id);
    if (i >= 0) this.finishedIds.splice(i, 1);
    const hub = this.hubs.get(id);
    if (!hub) return;
    this.hubs.delete(id);
    void hub.dispose();
  }

  /** Ends every stream and removes every section video (server shutdown). */
  async close(): Promise<void> {
    clearInterval(this.keepAlive);
    const hubs = [...this.hubs.values()];
    this.hubs.clear();
    this.finishedIds.length = 0;
    await Promise.all(hubs.map((h) => h.dispose()));
  }
}

export function eventRoutes(app: FastifyInstance, hubs: EventHubs): void {
  app.get<{ Params: { prediction_id: string } }>('/predictions/:prediction_id/events', async (req, reply) => {
    const hub = hubs.get(req.params.prediction_id);
    if (!hub) throw appError('NOT_FOUND');
    reply.hijack(); // the stream writes the response itself, for as long as the prediction runs
    hub.listen(reply.raw);
  });
  methodNotAllowed(app, '/predictions/:prediction_id/events', ['GET']);

  app.get<{ Params: { prediction_id: string; file: string } }>('/predictions/:prediction_id/sections/:file', async (req, reply) => {
    const m = /^(\d+)\.mp4$/.exec(req.params.file);
    const file = m ? hubs.get(req.params.prediction_id)?.sectionFile(Number(m[1])) : undefined;
    const info = file ? await stat(file).catch(() => null) : null;
    if (!file || !info) throw appError('NOT_FOUND');
    return reply.type('video/mp4').header('content-length', info.size).header('cache-control', 'no-cache').send(createReadStream(file));
  });
  methodNotAllowed(app, '/predictions/:prediction_id/sections/:file', ['GET']);
}
