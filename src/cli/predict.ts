/**
 * `framepack predict -i key=value -i input_image=@photo.png [-o out.mp4]`: one prediction on this machine,
 * without a server, with `cog predict`'s input syntax and validation messages.
 *
 *   -i, --input name=value     an input; `@path` reads a file; repeating a name makes a list
 *   --json '{...}' | @file     inputs as JSON (strings starting with @ are files)
 *   -o, --output <path>        where to write the output (default output.<ext> in the current directory)
 *   --predictor <module>       another predictor module (default: FramePack)
 *   --models <dir>, --noise <f>, --dump <f>, --any-flag <v>    passed to the predictor as options
 *
 * Values are typed from the input schema (integers, numbers, booleans); the rest is validated exactly as
 * the server validates a request. Progress is drawn as a bar on a terminal, as plain lines otherwise.
 */
import { constants } from 'node:fs';
import { access, copyFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AppError, appError, errorMessage } from '../errors.js';
import { createLogger, teeLogger } from '../log.js';
import type { Predictor } from '../predictor.js';
import { downloadUrl, fetchInputFiles } from '../server/input-files.js';
import { inputComponent, type JsonSchema } from '../server/openapi.js';
import { predictorSource } from '../server/predictor-source.js';
import { mimeOf } from '../server/uploads.js';
import { schemaIssues, validateInput } from '../server/validation.js';
import { parseArgs, predictorOptionsFrom } from './flags.js';

const KNOWN = ['input', 'output', 'json', 'predictor'];

class UsageError extends Error {}

/** The contents of a file the command line names (`@path`, `--json @path`), or a one-line error. */
async function readNamed(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw appError('CLI_INPUT_FILE', { path, detail: errorMessage(err) });
  }
}

/**
 * `@path` for a file input -> a file: URL (used in place, checked readable now: before the model loads);
 * for any other input -> a data URL, like cog.
 */
async function fileValue(path: string, prop: JsonSchema | undefined): Promise<string> {
  const abs = resolve(path);
  if (prop?.format === 'uri') {
    await access(abs, constants.R_OK).catch((err) => { throw appError('CLI_INPUT_FILE', { path: abs, detail: errorMessage(err) }); });
    return pathToFileURL(abs).href;
  }
  const bytes = await readNamed(abs);
  return `data:${mimeOf(abs)};base64,${bytes.toString('base64')}`;
}

/** Refuses an output path that cannot be written, before any work (the model's setup may take minutes). */
async function checkOutputPath(target: string): Promise<void> {
  const refuse = (why: string): never => { throw new UsageError(`cannot write the output to ${target}: ${why}`); };
  const dir = dirname(target);
  const folder = await stat(dir).catch(() => null);
  if (!folder) refuse(`the directory ${dir} does not exist`);
  if (!folder!.isDirectory()) refuse(`${dir} is not a directory`);
  await access(dir, constants.W_OK).catch(() => refuse(`${dir} is not writable`));
  if ((await stat(target).catch(() => null))?.isDirectory()) refuse('it is a directory');
}

/** Types a `-i` value by the schema, as `cog predict` >= 0.22 does; the validator reports what stays wrong. */
function typed(value: string, prop: JsonSchema | undefined): unknown {
  const v = value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
  switch (prop?.type) {
    case 'integer': return /^[+-]?\d+$/.test(v.trim()) ? Number(v) : v;
    case 'number': return v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v;
    case 'boolean': return /^true$/i.test(v) ? true : /^false$/i.test(v) ? false : v;
    case 'array': case 'object':
      try { return JSON.parse(v); } catch { return v; }
    default: return v;
  }
}

async function buildInput(pairs: string[], json: string | undefined, component: JsonSchema): Promise<Record<string, unknown>> {
  const props = (component.properties ?? {}) as Record<string, JsonSchema>;
  const input: Record<string, unknown> = {};
  if (json !== undefined) {
    const text = json.startsWith('@') ? (await readNamed(json === '@-' ? '/dev/stdin' : json.slice(1))).toString('utf8') : json;
    let parsed: unknown;
    try { parsed = JSON.parse(text); } catch (err) { throw new UsageError(`--json is not valid JSON: ${errorMessage(err)}`); }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new UsageError('--json must be a JSON object');
    for (const [k, v] of Object.entries(parsed)) input[k] = typeof v === 'string' && v.startsWith('@') ? await fileValue(v.slice(1), props[k]) : v;
  }
  const seen = new Map<string, unknown[]>();
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`-i expects name=value, got '${pair}'`);
    const name = pair.slice(0, eq);
    const raw = pair.slice(eq + 1);
    if (!(name in props)) throw new UsageError(`unknown input '${name}'; inputs are: ${Object.keys(props).join(', ')}`);
    const value = raw.startsWith('@') ? await fileValue(raw.slice(1), props[name]) : typed(raw, props[name]);
    seen.set(name, [...(seen.get(name) ?? []), value]);
  }
  for (const [name, values] of seen) input[name] = values.length === 1 ? values[0] : values;
  return input;
}

/** A one-line progress bar on a terminal; plain lines otherwise. Log lines print above the bar. */
class Progress {
  private bar = '';
  private lastPlain = '';
  constructor(private readonly tty: boolean) {}
  line(text: string): void {
    if (this.tty && this.bar) process.stderr.write('\r\x1b[2K');
    process.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
    if (this.tty && this.bar) process.stderr.write(this.bar);
  }
  update(done: number, total: number, label = 'progress'): void {
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    if (this.tty) {
      const width = 30;
      const fill = Math.round(frac * width);
      this.bar = `${label} [${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${done}/${total}`;
      process.stderr.write(`\r\x1b[2K${this.bar}`);
      if (done >= total) { process.stderr.write('\n'); this.bar = ''; }
    } else {
      const text = `${label} ${done}/${total}`;
      if (text !== this.lastPlain) process.stderr.write(`${text}\n`);
      this.lastPlain = text;
    }
  }
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { aliases: { i: 'input', o: 'output' } });
  const str = (name: string) => { const v = args.flags.get(name); return typeof v === 'string' ? v : undefined; };
  const logger = createLogger({ fd: 2, level: process.env.COG_LOG_LEVEL ? undefined : 'warn' });
  const progress = new Progress(process.stderr.isTTY === true);
  const controller = new AbortController();
  const onSigint = () => { progress.line('canceling...'); controller.abort(); };
  process.on('SIGINT', onSigint);
  let tmpDir: string | undefined;
  let keepTmpDir = false;
  let predictor: Predictor | undefined;
  try {
    const source = predictorSource(str('predictor'), predictorOptionsFrom(args, KNOWN));
    const schema = source.schema ?? (predictor = await source.load()).inputSchema;
    const component = inputComponent(schema);
    const raw = await buildInput(args.all.get('input') ?? [], str('json'), component);
    const { value, issues } = validateInput(component, raw, { denyPrivate: false, allowFileUrls: true });
    if (issues.length === 0) issues.push(...schemaIssues(schema, value));
    if (issues.length > 0) {
      process.stderr.write(`The inputs you passed could not be validated:\n${issues.map((i) => ` - ${i.loc.slice(2).join('.')}: ${i.msg}`).join('\n')}\n`);
      return 1;
    }
    const outputFlag = str('output');
    await checkOutputPath(resolve(outputFlag ?? 'output'));
    predictor ??= await source.load();
    const tee = (line: string) => progress.line(line);
    const setupLogger = teeLogger(logger, { phase: 'setup' }, tee);
    await predictor.setup({ log: (l) => setupLogger.info(l), logger: setupLogger, signal: controller.signal, progress: (d, t, l) => progress.update(d, t, l) });

    tmpDir = await mkdtemp(join(tmpdir(), 'framepack-predict-'));
    const local = await fetchInputFiles(component, value, tmpDir, { denyPrivate: false, maxBytes: Number.MAX_SAFE_INTEGER, signal: controller.signal });
    const parsed = predictor.inputSchema.parse(local);
    const predLogger = teeLogger(logger, {}, tee);
    const started = performance.now();
    const out = await predictor.predict(parsed, {
      log: (l) => predLogger.info(l), logger: predLogger, signal: controller.signal, tmpDir,
      progress: (d, t, l) => progress.update(d, t, l),
      download: (url, file, o) => downloadUrl(o.name, url, file, { denyPrivate: false, maxBytes: o.maxBytes, signal: controller.signal }),
    });
    const target = resolve(outputFlag ?? `output${extname(out)}`);
    process.stderr.write(`Finished in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    try {
      await copyFile(out, target);
    } catch (err) {
      // The work is done: keep it where it is rather than lose it with the temp directory.
      keepTmpDir = true;
      process.stderr.write(`Could not write ${target}: ${errorMessage(err)}\nThe output is kept at ${out}\n`);
      return 1;
    }
    process.stdout.write(`Written output to: ${target}\n`);
    return 0;
  } catch (err) {
    if (controller.signal.aborted) {
      process.stderr.write('Prediction canceled\n');
      return 130;
    }
    // One line; the stack only when asked for (COG_LOG_LEVEL=debug).
    process.stderr.write(`Prediction failed: ${errorMessage(err)}\n`);
    if (logger.isLevelEnabled('debug') && err instanceof Error && !(err instanceof UsageError || err instanceof AppError)) {
      process.stderr.write(`${err.stack}\n`);
    }
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
    await predictor?.dispose?.().catch(() => undefined);
    if (tmpDir && !keepTmpDir) await rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
    logger.flush();
  }
}
