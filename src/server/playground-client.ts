/**
 * The playground page's script (runs in the browser; playground.ts inlines the compiled file into the page).
 * It builds the form from the server's own `/openapi.json` (the Input component: every input in `x-order`,
 * with its description, default and range; `format: uri` inputs become file pickers sent as data URLs, choices
 * selects, lists are typed as JSON, and a text field left empty whose default is not text is left out so the
 * server's default applies),
 * submits with an id of its own (`PUT /predictions/{id}`, `Prefer: respond-async`), follows
 * `/predictions/{id}/events` (progress bar, preview, each section's video, the final video) and cancels
 * with `POST /predictions/{id}/cancel`.
 */

interface SchemaProp {
  title?: string;
  description?: string;
  type?: string;
  format?: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  nullable?: boolean;
  enum?: unknown[];
  'x-order'?: number;
}

interface Field {
  name: string;
  prop: SchemaProp;
  read(): Promise<unknown>;
}

interface Prediction {
  status: string;
  output: unknown;
  logs: string;
  error: string | null;
  metrics: { predict_time?: number } | null;
}

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const form = $<HTMLFormElement>('form');
const submit = $<HTMLButtonElement>('submit');
const cancel = $<HTMLButtonElement>('cancel');
const statusLine = $<HTMLParagraphElement>('status');
const bar = $<HTMLDivElement>('bar-fill');
const progressText = $<HTMLParagraphElement>('progress-text');
const preview = $<HTMLImageElement>('preview');
const previewCaption = $<HTMLElement>('preview-caption');
const sections = $<HTMLDivElement>('sections');
const final = $<HTMLDivElement>('final');
const logs = $<HTMLPreElement>('logs');

let fields: Field[] = [];
let current: { id: string; events: EventSource } | null = null;

function setStatus(text: string, kind: 'idle' | 'busy' | 'ok' | 'error' = 'idle'): void {
  statusLine.textContent = text;
  statusLine.dataset.kind = kind;
}

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** 26 lowercase base32 characters, the id form Replicate uses. */
function newId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  return Array.from(crypto.getRandomValues(new Uint8Array(26)), (b) => alphabet[b & 31]).join('');
}

function readFileAsDataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error ?? new Error('could not read the file'));
    reader.readAsDataURL(file);
  });
}

function hint(name: string, prop: SchemaProp, required: boolean): string {
  const parts: string[] = [];
  if (prop.description) parts.push(prop.description);
  if (prop.minimum !== undefined && prop.maximum !== undefined) parts.push(`${prop.minimum} to ${prop.maximum}`);
  if (prop.default !== undefined && prop.default !== null && prop.default !== '') parts.push(`default ${String(prop.default)}`);
  if (required) parts.push('required');
  return parts.length ? parts.join(' · ') : name;
}

/** One form row for an input of the schema. */
function fieldFor(name: string, prop: SchemaProp, required: boolean): { row: HTMLElement; field: Field } {
  const id = `in-${name}`;
  const label = el('label', { htmlFor: id }, prop.title ?? name);
  const help = el('small', {}, hint(name, prop, required));
  const row = el('div', { className: 'field' }, label);
  if (prop.format === 'uri') {
    const input = el('input', { id, name, type: 'file', accept: 'image/*', required });
    const thumb = el('img', { className: 'thumb', alt: '' });
    input.addEventListener('change', () => {
      const file = input.files?.[0];
      thumb.src = file ? URL.createObjectURL(file) : '';
    });
    row.append(input, help, thumb);
    return {
      row, field: {
        name, prop, read: async () => {
          const file = input.files?.[0];
          return file ? readFileAsDataUrl(file) : undefined;
        },
      },
    };
  }
  if (prop.type === 'boolean') {
    const input = el('input', { id, name, type: 'checkbox', checked: prop.default === true });
    label.prepend(input);
    row.append(help);
    return { row, field: { name, prop, read: async () => input.checked } };
  }
  if (prop.type === 'integer' || prop.type === 'number') {
    const input = el('input', { id, name, type: 'number', step: prop.type === 'integer' ? '1' : 'any' });
    if (prop.minimum !== undefined) input.min = String(prop.minimum);
    if (prop.maximum !== undefined) input.max = String(prop.maximum);
    if (typeof prop.default === 'number') input.value = String(prop.default);
    else input.placeholder = 'random';
    input.required = required;
    const controls = el('div', { className: 'number' }, input);
    if (prop.minimum !== undefined && prop.maximum !== undefined) {
      const span = prop.maximum - prop.minimum;
      const slider = el('input', {
        type: 'range', min: String(prop.minimum), max: String(prop.maximum), tabIndex: -1,
        step: prop.type === 'integer' ? '1' : String(10 ** Math.floor(Math.log10(span / 100))),
        value: input.value,
      });
      slider.setAttribute('aria-label', `${prop.title ?? name} slider`);
      slider.addEventListener('input', () => { input.value = slider.value; });
      input.addEventListener('input', () => { slider.value = input.value; });
      controls.append(slider);
    }
    row.append(controls, help);
    return { row, field: { name, prop, read: async () => (input.value.trim() === '' ? undefined : Number(input.value)) } };
  }
  if (Array.isArray(prop.enum)) {
    // a choice; a nullable one offers "default" (left out of the request, so the server's default applies)
    const select = el('select', { id, name, required });
    if (prop.nullable) select.append(el('option', { value: '' }, '(default)'));
    for (const choice of prop.enum) if (choice !== null) select.append(el('option', { value: String(choice) }, String(choice)));
    select.value = prop.default === null || prop.default === undefined ? '' : String(prop.default);
    row.append(select, help);
    return { row, field: { name, prop, read: async () => (select.value === '' ? undefined : select.value) } };
  }
  const list = prop.type === 'array';
  const input = el('textarea', { id, name, rows: name === 'prompt' ? 3 : 1, required, value: typeof prop.default === 'string' ? prop.default : '' });
  if (list) input.placeholder = 'JSON list, e.g. [{"url": "https://...", "scale": 1}]';
  row.append(input, help);
  const read = async (): Promise<unknown> => {
    const v = input.value;
    if (v.trim() === '' && typeof prop.default !== 'string') return undefined; // null or [] by default: the server's
    if (!list) return v;
    try {
      return JSON.parse(v) as unknown;
    } catch {
      throw new Error(`${prop.title ?? name}: not a JSON list`);
    }
  };
  return { row, field: { name, prop, read } };
}

async function buildForm(): Promise<void> {
  const res = await fetch('/openapi.json');
  if (!res.ok) throw new Error(`GET /openapi.json answered ${res.status}`);
  const doc = await res.json() as { components?: { schemas?: { Input?: { properties?: Record<string, SchemaProp>; required?: string[] } } } };
  const input = doc.components?.schemas?.Input;
  if (!input?.properties) throw new Error('the schema has no Input component');
  const required = new Set(input.required ?? []);
  const entries = Object.entries(input.properties).sort(([, a], [, b]) => (a['x-order'] ?? 0) - (b['x-order'] ?? 0));
  const rows = $<HTMLDivElement>('fields');
  rows.replaceChildren();
  fields = entries.map(([name, prop]) => {
    const { row, field } = fieldFor(name, prop, required.has(name));
    rows.append(row);
    return field;
  });
  submit.disabled = false;
}

function problem(body: unknown, status: number): string {
  const detail = (body as { detail?: unknown; error?: string } | null)?.detail ?? (body as { error?: string } | null)?.error;
  if (Array.isArray(detail)) return detail.map((d: { loc?: unknown[]; msg?: string }) => `${d.loc?.at(-1) ?? ''}: ${d.msg ?? ''}`).join('; ');
  return typeof detail === 'string' ? detail : `HTTP ${status}`;
}

function resetRun(): void {
  bar.style.width = '0%';
  progressText.textContent = '';
  preview.removeAttribute('src');
  previewCaption.textContent = 'The preview appears with the first sampling step.';
  sections.replaceChildren();
  final.replaceChildren();
  logs.textContent = '';
}

function showSection(e: { section: number; sections: number; frames: number; url: string }): void {
  const video = el('video', { src: e.url, controls: true, muted: true, loop: true, playsInline: true, autoplay: true, preload: 'auto' });
  const figure = el('figure', {}, video, el('figcaption', {}, `Section ${e.section}/${e.sections} · ${e.frames} frames`));
  figure.dataset.section = String(e.section);
  sections.querySelector(`[data-section="${e.section}"]`)?.remove(); // a reconnect replays the sections
  sections.append(figure);
}

function dataUrlToBlob(url: string): Blob {
  const comma = url.indexOf(',');
  const mime = /^data:([^;,]+)/.exec(url)?.[1] ?? 'application/octet-stream';
  const bytes = Uint8Array.from(atob(url.slice(comma + 1)), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: mime });
}

/** The provenance the final log line carries (the same JSON as the MP4's comment metadata). */
function provenanceOf(text: string): { seed?: number } | null {
  const line = text.split('\n').reverse().find((l) => l.includes(' provenance {'));
  if (!line) return null;
  try { return JSON.parse(line.slice(line.indexOf(' provenance {') + ' provenance '.length)); } catch { return null; }
}

function showOutcome(p: Prediction, kind: string): void {
  logs.textContent = p.logs;
  const seconds = p.metrics?.predict_time;
  if (kind === 'done' && typeof p.output === 'string') {
    const src = p.output.startsWith('data:') ? URL.createObjectURL(dataUrlToBlob(p.output)) : p.output;
    const prov = provenanceOf(p.logs);
    const name = `framepack-${prov?.seed ?? 'video'}.mp4`;
    const video = el('video', { src, controls: true, loop: true, playsInline: true, autoplay: true, muted: true, preload: 'auto' });
    const link = el('a', { href: src, download: name, className: 'button' }, `Download ${name}`);
    final.replaceChildren(video, link);
    if (prov) final.append(el('details', {}, el('summary', {}, 'How it was made (also in the MP4\'s comment metadata)'), el('pre', {}, JSON.stringify(prov, null, 2))));
    bar.style.width = '100%';
    setStatus(`Done${seconds ? ` in ${seconds.toFixed(1)} s` : ''}${prov?.seed !== undefined ? ` · seed ${prov.seed}` : ''}`, 'ok');
  } else if (kind === 'canceled') {
    setStatus('Canceled', 'idle');
  } else {
    setStatus(`Failed: ${p.error ?? 'unknown error'}`, 'error');
  }
}

function finishRun(): void {
  current?.events.close();
  current = null;
  submit.disabled = false;
  cancel.disabled = true;
}

function follow(id: string): EventSource {
  const events = new EventSource(`/predictions/${encodeURIComponent(id)}/events`);
  events.addEventListener('progress', (m) => {
    const e = JSON.parse((m as MessageEvent).data) as { section: number; sections: number; step: number; steps: number; percent: number; eta_seconds: number | null };
    bar.style.width = `${e.percent}%`;
    progressText.textContent = `Section ${e.section}/${e.sections} · step ${e.step}/${e.steps} · ${Math.floor(e.percent)}%` +
      (e.eta_seconds !== null && e.percent < 100 ? ` · about ${clock(e.eta_seconds)} of sampling left` : '');
  });
  events.addEventListener('preview', (m) => {
    const e = JSON.parse((m as MessageEvent).data) as { section: number; step: number; image: string };
    preview.src = e.image;
    previewCaption.textContent = `Section ${e.section}, step ${e.step}: the latents as they stand, projected to colour without the VAE`;
  });
  events.addEventListener('section', (m) => showSection(JSON.parse((m as MessageEvent).data)));
  for (const kind of ['done', 'failed', 'canceled']) {
    events.addEventListener(kind, (m) => {
      showOutcome(JSON.parse((m as MessageEvent).data) as Prediction, kind);
      finishRun();
    });
  }
  events.onerror = () => {
    // The browser reconnects by itself unless the server refused the stream.
    if (events.readyState === EventSource.CLOSED && current?.events === events) {
      setStatus('Lost the event stream of this prediction', 'error');
      finishRun();
    }
  };
  return events;
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  void (async () => {
    submit.disabled = true;
    resetRun();
    try {
      const input: Record<string, unknown> = {};
      for (const f of fields) {
        const v = await f.read();
        if (v !== undefined) input[f.name] = v;
      }
      const id = newId();
      setStatus('Submitting…', 'busy');
      const res = await fetch(`/predictions/${id}`, {
        method: 'PUT', headers: { 'content-type': 'application/json', prefer: 'respond-async' }, body: JSON.stringify({ input }),
      });
      const body: unknown = await res.json().catch(() => null);
      if (res.status !== 202) throw new Error(problem(body, res.status));
      current = { id, events: follow(id) };
      cancel.disabled = false;
      setStatus(`Running ${id}`, 'busy');
    } catch (err) {
      setStatus(`Not started: ${(err as Error).message}`, 'error');
      submit.disabled = false;
    }
  })();
});

cancel.addEventListener('click', () => {
  if (!current) return;
  cancel.disabled = true;
  setStatus('Canceling…', 'busy');
  void fetch(`/predictions/${encodeURIComponent(current.id)}/cancel`, { method: 'POST' });
});

buildForm().then(() => setStatus('Ready', 'idle'), (err: Error) => setStatus(`Could not build the form: ${err.message}`, 'error'));

export {};
