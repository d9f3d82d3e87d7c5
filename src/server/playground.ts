/**
 * `GET /playground`: one self-contained page for trying the model from a browser, beside the Cog contract.
 * Everything it needs comes from this server: the markup and style here, the script (playground-client.ts,
 * compiled) inlined, the form built in the browser from `/openapi.json`, the run followed through
 * `/predictions/{id}/events`. Its Content-Security-Policy allows this origin only (the inline script and
 * style by hash), so the page cannot load anything from elsewhere.
 *
 * Like the Cog API it drives, it has no authentication, and says so. `--no-playground` (or
 * FRAMEPACK_NO_PLAYGROUND=1) leaves the route out for deployments that serve the bare contract.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { methodNotAllowed } from './error-handler.js';

const STYLE = `
:root { color-scheme: light dark; --fg: #1d1f23; --muted: #5d6470; --bg: #f6f7f9; --card: #fff; --line: #d9dde3;
  --accent: #2f6fde; --ok: #17804a; --err: #c0392b; font: 15px/1.45 system-ui, sans-serif; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8eb; --muted: #9aa3ae; --bg: #15171a; --card: #1e2125; --line: #33383f; } }
body { margin: 0; background: var(--bg); color: var(--fg); }
header { padding: 18px 28px 6px; }
h1 { margin: 0; font-size: 22px; }
h2 { font-size: 15px; margin: 18px 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.note { margin: 4px 0 0; color: var(--muted); max-width: 980px; }
main { display: grid; grid-template-columns: minmax(300px, 400px) 1fr; gap: 22px; padding: 14px 28px 28px; align-items: start; }
@media (max-width: 820px) { main { grid-template-columns: 1fr; } }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; }
.field { margin-bottom: 12px; }
.field label { display: block; font-weight: 600; margin-bottom: 3px; }
.field label input[type=checkbox] { margin-right: 6px; }
.field small { display: block; color: var(--muted); font-size: 12.5px; margin-top: 2px; }
textarea, select, input[type=number], input[type=file] { width: 100%; box-sizing: border-box; font: inherit; padding: 5px 7px;
  border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--fg); }
.number { display: flex; gap: 10px; align-items: center; }
.number input[type=number] { width: 110px; flex: none; }
.number input[type=range] { flex: 1; }
.thumb { max-width: 120px; max-height: 120px; margin-top: 6px; border-radius: 6px; display: block; }
.thumb:not([src]), .thumb[src=""] { display: none; }
.actions { display: flex; gap: 10px; margin-top: 6px; }
button, .button { font: inherit; font-weight: 600; padding: 7px 16px; border-radius: 6px; border: 1px solid var(--accent);
  background: var(--accent); color: #fff; cursor: pointer; text-decoration: none; display: inline-block; }
button[type=button] { background: transparent; color: var(--accent); }
button:disabled { opacity: .45; cursor: default; }
#status { font-weight: 600; margin: 0 0 8px; }
#status[data-kind=ok] { color: var(--ok); }
#status[data-kind=error] { color: var(--err); }
.bar { height: 10px; border-radius: 5px; background: var(--line); overflow: hidden; }
#bar-fill { height: 100%; width: 0; background: var(--accent); transition: width .25s; }
#progress-text { color: var(--muted); margin: 6px 0 0; min-height: 1.4em; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
#preview { width: 100%; min-height: 40px; image-rendering: auto; border-radius: 6px; background: var(--line); display: block; }
#sections { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); gap: 12px; }
video { width: 100%; border-radius: 6px; background: #000; display: block; }
#final video { max-height: 520px; object-fit: contain; margin-bottom: 10px; }
pre { white-space: pre-wrap; word-break: break-all; font-size: 12px; max-height: 320px; overflow: auto; }
`;

function page(script: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>FramePack playground</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>FramePack playground</h1>
<p class="note">One image and a prompt become a video, section by section. This page talks to this server's
Cog API without any authentication, as the API itself has none: anyone who can reach this port can run and
cancel predictions. Fine on your own machine; for a public deployment start the server with
<code>--no-playground</code> (or <code>FRAMEPACK_NO_PLAYGROUND=1</code>) and put authentication in front.</p>
</header>
<main>
<form id="form" class="card" novalidate>
<div id="fields">Loading the inputs from /openapi.json…</div>
<div class="actions"><button id="submit" type="submit" disabled>Generate</button><button id="cancel" type="button" disabled>Cancel</button></div>
</form>
<section class="card" aria-live="polite">
<p id="status">Loading…</p>
<div class="bar"><div id="bar-fill"></div></div>
<p id="progress-text"></p>
<h2>Live preview</h2>
<figure><img id="preview" alt="preview of the latents being sampled"><figcaption id="preview-caption">The preview appears with the first sampling step.</figcaption></figure>
<h2>Sections</h2>
<div id="sections"></div>
<h2>Video</h2>
<div id="final"></div>
<details><summary>Logs</summary><pre id="logs"></pre></details>
</section>
</main>
<script type="module">${script}</script>
</body>
</html>
`;
}

const hash = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

export interface PlaygroundPage {
  html: string;
  csp: string;
}

/** The page with its policy; the compiled client script sits next to this module. */
export function playgroundPage(): PlaygroundPage {
  const compiled = readFileSync(new URL('./playground-client.js', import.meta.url), 'utf8');
  // The page has no source map to offer, and `</script` inside the script would end it early.
  const script = compiled.replace(/^\/\/# sourceMappingURL=.*$/m, '').replaceAll('</script', '<\\/script');
  const csp = [
    "default-src 'none'",
    `script-src ${hash(script)}`,
    `style-src ${hash(STYLE)}`,
    "img-src 'self' data: blob:",
    // outputs uploaded with --upload-url are served from the upload host
    "media-src 'self' data: blob: https: http:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return { html: page(script), csp };
}

export function playgroundRoutes(app: FastifyInstance): void {
  let built: PlaygroundPage | undefined;
  app.get('/playground', async (_req, reply) => {
    built ??= playgroundPage();
    return reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', built.csp)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-cache')
      .send(built.html);
  });
  methodNotAllowed(app, '/playground', ['GET']);
}
