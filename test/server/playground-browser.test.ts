/**
 * The playground in a real browser: headless Chromium (Debian's `chromium`; CHROMIUM_PATH names another
 * binary) driven over the DevTools protocol by puppeteer-core, against `framepack serve` on the tiny model.
 * A person's steps: open /playground, pick an image, set the inputs, press Generate, watch the preview and
 * the sections arrive, get the final video; and a run canceled halfway.
 *
 * Without Chromium the tests are skipped with a note, unless FRAMEPACK_REQUIRE_BROWSER=1 (as CI sets it),
 * which makes a missing browser a failure. The page must produce no script error or policy violation.
 */
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, stat } from 'node:fs/promises';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { fetchIdempotent, startTinyServer, TINY_INPUT, type TinyServer } from './tiny-server.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const REQUIRED = process.env.FRAMEPACK_REQUIRE_BROWSER === '1';
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
/** Generous: a slow machine only makes the test take longer. */
const WAIT = { timeout: 10 * 60_000 };

describe('playground in Chromium', { skip: !CHROMIUM && !REQUIRED ? 'no chromium (apt-get install chromium, or set CHROMIUM_PATH)' : false }, () => {
  let tiny: TinyServer;
  let browser: Browser;

  before(async () => {
    assert.ok(CHROMIUM, 'FRAMEPACK_REQUIRE_BROWSER=1 but no chromium found: apt-get install chromium');
    tiny = await startTinyServer('playground-browser');
    browser = await puppeteer.launch({
      executablePath: CHROMIUM, headless: true, args: FLAGS, userDataDir: await mkdtemp(join(tiny.work, 'chromium-')),
    });
  });

  after(async () => {
    await browser?.close();
    await tiny?.close();
  });

  /** A fresh page on /playground with the form built, collecting page errors and console errors. */
  async function open(): Promise<{ page: Page; problems: string[] }> {
    const page = await browser.newPage();
    page.setDefaultTimeout(WAIT.timeout);
    await page.setViewport({ width: 1280, height: 1000 });
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`page error: ${(err as Error).message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    await page.goto(`${tiny.url}/playground`);
    await page.waitForSelector('#submit:not([disabled])');
    return { page, problems };
  }

  async function fill(page: Page, values: Record<string, string | number>): Promise<void> {
    const file = await page.$('#in-input_image');
    await (file as unknown as { uploadFile(path: string): Promise<void> }).uploadFile(tiny.imagePath);
    for (const [name, value] of Object.entries(values)) {
      await page.$eval(`#in-${name}`, (el, v) => {
        (el as HTMLInputElement).value = String(v);
        el.dispatchEvent(new Event('input', { bubbles: true }));
      }, value);
    }
  }

  it('builds the form from the schema, runs a prediction with live preview and sections, ends with the video', async (t: TestContext) => {
    const { page, problems } = await open();
    // every input of the published schema, in its order, with its default
    const schema = await (await fetchIdempotent(`${tiny.url}/openapi.json`)).json() as { components: { schemas: { Input: { properties: Record<string, { 'x-order': number }> } } } };
    const order = Object.entries(schema.components.schemas.Input.properties).sort(([, a], [, b]) => a['x-order'] - b['x-order']).map(([k]) => k);
    assert.deepEqual(await page.$$eval('#fields [name]', (els) => els.map((e) => (e as HTMLInputElement).name)), order);
    assert.equal(await page.$eval('#in-steps', (e) => (e as HTMLInputElement).value), '25');
    assert.equal(await page.$eval('#in-use_teacache', (e) => (e as HTMLInputElement).checked), true);

    const { prompt, total_video_length_seconds, latent_window_size, steps, seed } = TINY_INPUT;
    await fill(page, { prompt, total_video_length_seconds, latent_window_size, steps, seed });
    // count the preview pictures as they are shown
    await page.evaluate(() => {
      const w = window as unknown as { previews: number };
      w.previews = 0;
      new MutationObserver(() => { w.previews++; }).observe(document.getElementById('preview')!, { attributes: true, attributeFilter: ['src'] });
    });
    await page.click('#submit');

    await page.waitForFunction(() => {
      const v = document.querySelector<HTMLVideoElement>('#final video');
      return v !== null && v.readyState >= 1 && v.duration > 0;
    }, WAIT);
    const shown = await page.evaluate(() => ({
      previews: (window as unknown as { previews: number }).previews,
      preview: document.querySelector<HTMLImageElement>('#preview')!.src.slice(0, 23),
      sections: [...document.querySelectorAll<HTMLVideoElement>('#sections video')].map((v) => v.getAttribute('src')),
      duration: document.querySelector<HTMLVideoElement>('#final video')!.duration,
      status: document.getElementById('status')!.textContent,
      bar: document.getElementById('bar-fill')!.style.width,
      download: document.querySelector<HTMLAnchorElement>('#final a[download]')?.download,
    }));
    assert.ok(shown.previews >= 1, `previews shown: ${shown.previews}`);
    assert.equal(shown.preview, 'data:image/jpeg;base64,');
    assert.ok(shown.sections.length >= 1, 'at least one section video');
    assert.match(shown.sections[0]!, /^\/predictions\/[a-z2-7]{26}\/sections\/1\.mp4$/);
    assert.ok(shown.duration > 0);
    assert.match(shown.status ?? '', /^Done in [\d.]+ s · seed 11$/);
    assert.equal(shown.bar, '100%');
    assert.equal(shown.download, 'framepack-11.mp4');
    // the section videos play too
    await page.waitForFunction(() => [...document.querySelectorAll<HTMLVideoElement>('#sections video')].every((v) => v.readyState >= 1 && v.duration > 0), WAIT);

    const shot = join(tiny.work, 'playground.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok((await stat(shot)).size > 10_000);
    t.diagnostic(`screenshot of the finished page: ${shot} (removed with the test's temp dir; FRAMEPACK_SCREENSHOT=<path> keeps a copy)`);
    if (process.env.FRAMEPACK_SCREENSHOT) await page.screenshot({ path: process.env.FRAMEPACK_SCREENSHOT, fullPage: true });
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('cancels a run halfway', async () => {
    const { page, problems } = await open();
    await fill(page, { prompt: 'a slow one', total_video_length_seconds: 1, latent_window_size: 3, steps: 50 });
    await page.click('#submit');
    await page.waitForFunction(() => /step 2\/50/.test(document.getElementById('progress-text')!.textContent ?? ''), WAIT);
    await page.click('#cancel');
    await page.waitForFunction(() => document.getElementById('status')!.textContent === 'Canceled', WAIT);
    const after = await page.evaluate(() => ({
      final: document.querySelectorAll('#final video').length,
      submit: document.querySelector<HTMLButtonElement>('#submit')!.disabled,
      cancel: document.querySelector<HTMLButtonElement>('#cancel')!.disabled,
    }));
    assert.deepEqual(after, { final: 0, submit: false, cancel: true });
    const health = await (await fetchIdempotent(`${tiny.url}/health-check`)).json() as { status: string };
    assert.ok(['READY', 'BUSY'].includes(health.status));
    assert.deepEqual(problems, []);
    await page.close();
  });
});
