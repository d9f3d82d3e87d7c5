/**
 * Request validation with the error shapes of Cog's FastAPI/pydantic server: a 422 `{"detail": [...]}` whose
 * entries have `type`, `loc`, `msg` (plus `input`, `ctx`), all errors at once, in input order.
 *
 * Inputs are checked against the published `Input` schema itself (so the document and the behaviour cannot
 * drift) with pydantic's lax coercions, because older `cog predict` clients send every value as a string:
 * `"30"` and `30.0` are fine for an integer, `2` and `"2.5"` for a number, `"false"`/`"off"`/`0` for a boolean.
 * Unknown inputs are dropped; defaults are filled in, so the echoed `input` is the normalised one.
 */
import type { z } from 'zod';
import { appError, errorMessage } from '../errors.js';
import type { JsonSchema } from './openapi.js';
import { ipLiteralHost, refusal, refusedRange, type UrlPolicy } from './ssrf.js';

export interface ValidationIssue {
  type: string;
  loc: (string | number)[];
  msg: string;
  input?: unknown;
  ctx?: Record<string, unknown>;
}

export const WEBHOOK_EVENTS = ['start', 'output', 'logs', 'completed'] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

export interface PredictionRequest {
  id?: string;
  input: Record<string, unknown>;
  created_at?: string;
  webhook?: string;
  webhook_events_filter?: WebhookEvent[];
  context?: Record<string, string>;
  output_file_prefix?: string;
}

export interface InputOptions extends UrlPolicy {
  /** `file:` URLs for file inputs: only the local command line sets this, never the server. */
  allowFileUrls?: boolean;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Longest prediction id, in the body or in the path of PUT /predictions/{id}. */
export const MAX_ID_LENGTH = 1000;

/**
 * Why `id` cannot be a prediction id, or null. An id travels in the X-Prediction-ID header of uploads, and a
 * header holds Latin-1 text without control characters: anything else would fail only after the model ran.
 */
function idProblem(id: string, loc: (string | number)[]): ValidationIssue | null {
  if (id.length > MAX_ID_LENGTH) {
    return { type: 'string_too_long', loc, msg: `String should have at most ${MAX_ID_LENGTH} characters`, ctx: { max_length: MAX_ID_LENGTH } };
  }
  if (/[^\x20-\x7e\xa0-\xff]/.test(id)) {
    return { type: 'value_error', loc, msg: 'Value error, a prediction ID must be printable Latin-1 text (it is sent in an HTTP header)', input: id };
  }
  return null;
}

const BOOL_TRUE = new Set(['true', '1', 'yes', 'on', 't', 'y']);
const BOOL_FALSE = new Set(['false', '0', 'no', 'off', 'f', 'n']);
const INT_STRING = /^[+-]?\d+(\.0*)?$/;
const FLOAT_STRING = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

type Coerced = { ok: true; value: unknown } | { ok: false; type: string; msg: string };

const fail = (type: string, msg: string): Coerced => ({ ok: false, type, msg });

function coerceInteger(v: unknown): Coerced {
  if (typeof v === 'number') {
    return Number.isInteger(v) ? { ok: true, value: v }
      : fail('int_from_float', 'Input should be a valid integer, got a number with a fractional part');
  }
  if (typeof v === 'boolean') return { ok: true, value: v ? 1 : 0 };
  if (typeof v === 'string') {
    const s = v.trim();
    if (INT_STRING.test(s)) return { ok: true, value: Math.trunc(Number(s)) };
    return fail('int_parsing', 'Input should be a valid integer, unable to parse string as an integer');
  }
  return fail('int_type', 'Input should be a valid integer');
}

function coerceNumber(v: unknown): Coerced {
  if (typeof v === 'number') return { ok: true, value: v };
  if (typeof v === 'boolean') return { ok: true, value: v ? 1 : 0 };
  if (typeof v === 'string') {
    const s = v.trim();
    if (FLOAT_STRING.test(s)) return { ok: true, value: Number(s) };
    return fail('float_parsing', 'Input should be a valid number, unable to parse string as a number');
  }
  return fail('float_type', 'Input should be a valid number');
}

function coerceBoolean(v: unknown): Coerced {
  if (typeof v === 'boolean') return { ok: true, value: v };
  if (typeof v === 'number') {
    if (v === 0 || v === 1) return { ok: true, value: v === 1 };
    return fail('bool_parsing', 'Input should be a valid boolean, unable to interpret input');
  }
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (BOOL_TRUE.has(s)) return { ok: true, value: true };
    if (BOOL_FALSE.has(s)) return { ok: true, value: false };
    return fail('bool_parsing', 'Input should be a valid boolean, unable to interpret input');
  }
  return fail('bool_type', 'Input should be a valid boolean');
}

function coerceString(v: unknown): Coerced {
  return typeof v === 'string' ? { ok: true, value: v } : fail('string_type', 'Input should be a valid string');
}

/**
 * Checks a file-input URL without fetching it: scheme, syntax, and IP-literal hosts in refused ranges (DNS
 * names are checked when fetched). Returns an error message, or null.
 */
export function fileUrlProblem(value: string, opts: InputOptions): string | null {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(value);
  const scheme = m ? m[1]!.toLowerCase() : '';
  if (scheme === 'data') {
    const comma = value.indexOf(',');
    if (comma < 0) return appError('DATA_URL_INVALID', { detail: 'no comma before the payload' }).message;
    const meta = value.slice(5, comma);
    if (/;\s*base64\s*$/i.test(meta)) {
      const payload = value.slice(comma + 1).replace(/\s+/g, '');
      if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(payload) || payload.replace(/=+$/, '').length % 4 === 1) {
        return appError('DATA_URL_INVALID', { detail: 'the payload is not valid base64' }).message;
      }
    }
    return null;
  }
  if (scheme === 'file' && opts.allowFileUrls) return null;
  if (scheme !== 'http' && scheme !== 'https') return appError('URL_SCHEME', { scheme }).message;
  let url: URL;
  try {
    url = new URL(value);
  } catch (err) {
    return appError('URL_INVALID', { detail: errorMessage(err) }).message;
  }
  if (url.hostname === '') return appError('URL_INVALID', { detail: 'no host' }).message;
  const literal = ipLiteralHost(url);
  if (literal !== null) {
    const range = refusedRange(literal, opts);
    if (range !== null) return refusal(url.origin, literal, range).message;
  }
  return null;
}

/** Validates one input object against the `Input` component; returns the normalised value and the issues. */
export function validateInput(component: JsonSchema, raw: unknown, opts: InputOptions): { value: Record<string, unknown>; issues: ValidationIssue[] } {
  const issues: ValidationIssue[] = [];
  const value: Record<string, unknown> = {};
  const input = raw === undefined || raw === null ? {} : raw;
  if (!isObject(input)) {
    issues.push({ type: 'model_type', loc: ['body', 'input'], msg: 'Input should be a valid dictionary or instance of Input', input });
    return { value, issues };
  }
  const required = new Set<string>(component.required ?? []);
  const properties = Object.entries((component.properties ?? {}) as Record<string, JsonSchema>)
    .sort(([, a], [, b]) => (a['x-order'] ?? 0) - (b['x-order'] ?? 0));

  for (const [name, prop] of properties) {
    const loc = ['body', 'input', name];
    const given = Object.prototype.hasOwnProperty.call(input, name) ? input[name] : undefined;
    if (given === undefined) {
      if (required.has(name)) issues.push({ type: 'missing', loc, msg: 'Field required', input });
      else if ('default' in prop) value[name] = structuredClone(prop.default);
      continue;
    }
    if (given === null && prop.nullable === true) {
      value[name] = null;
      continue;
    }
    const coerced = prop.type === 'integer' ? coerceInteger(given)
      : prop.type === 'number' ? coerceNumber(given)
        : prop.type === 'boolean' ? coerceBoolean(given)
          : prop.type === 'string' ? coerceString(given)
            : { ok: true as const, value: given };
    if (!coerced.ok) {
      issues.push({ type: coerced.type, loc, msg: coerced.msg, input: given });
      continue;
    }
    const v = coerced.value;
    if (typeof v === 'number') {
      if (typeof prop.minimum === 'number' && v < prop.minimum) {
        issues.push({ type: 'greater_than_equal', loc, msg: `Input should be greater than or equal to ${String(prop.minimum)}`, input: given, ctx: { ge: prop.minimum } });
        continue;
      }
      if (typeof prop.maximum === 'number' && v > prop.maximum) {
        issues.push({ type: 'less_than_equal', loc, msg: `Input should be less than or equal to ${String(prop.maximum)}`, input: given, ctx: { le: prop.maximum } });
        continue;
      }
      if (typeof prop.exclusiveMinimum === 'number' && v <= prop.exclusiveMinimum) {
        issues.push({ type: 'greater_than', loc, msg: `Input should be greater than ${String(prop.exclusiveMinimum)}`, input: given, ctx: { gt: prop.exclusiveMinimum } });
        continue;
      }
      if (typeof prop.exclusiveMaximum === 'number' && v >= prop.exclusiveMaximum) {
        issues.push({ type: 'less_than', loc, msg: `Input should be less than ${String(prop.exclusiveMaximum)}`, input: given, ctx: { lt: prop.exclusiveMaximum } });
        continue;
      }
      if (typeof prop.multipleOf === 'number' && v % prop.multipleOf !== 0) {
        issues.push({ type: 'multiple_of', loc, msg: `Input should be a multiple of ${String(prop.multipleOf)}`, input: given, ctx: { multiple_of: prop.multipleOf } });
        continue;
      }
    }
    if (Array.isArray(prop.enum) && !prop.enum.includes(v)) {
      const choices = prop.enum.map((c: unknown) => `'${String(c)}'`);
      const list = choices.length > 1 ? `${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}` : choices[0];
      issues.push({ type: 'enum', loc, msg: `Input should be ${list}`, input: given, ctx: { expected: list } });
      continue;
    }
    if (typeof v === 'string') {
      if (prop.format === 'uri') {
        const problem = fileUrlProblem(v, opts);
        if (problem !== null) {
          issues.push({ type: 'value_error', loc, msg: `Value error, ${problem}`, input: given, ctx: { error: problem } });
          continue;
        }
      }
      if (typeof prop.minLength === 'number' && v.length < prop.minLength) {
        issues.push({ type: 'string_too_short', loc, msg: `String should have at least ${prop.minLength} characters`, input: given, ctx: { min_length: prop.minLength } });
        continue;
      }
      if (typeof prop.maxLength === 'number' && v.length > prop.maxLength) {
        issues.push({ type: 'string_too_long', loc, msg: `String should have at most ${prop.maxLength} characters`, input: given, ctx: { max_length: prop.maxLength } });
        continue;
      }
      if (typeof prop.pattern === 'string' && !new RegExp(prop.pattern, 'u').test(v)) {
        issues.push({ type: 'string_pattern_mismatch', loc, msg: `String should match pattern '${prop.pattern}'`, input: given, ctx: { pattern: prop.pattern } });
        continue;
      }
    }
    value[name] = v;
  }
  return { value, issues };
}

/**
 * What the predictor's own schema finds in an input the `Input` component accepted: its rules across inputs
 * (zod refinements, which JSON Schema cannot carry) and the contents of lists of objects, which the component
 * checks only by type. Run after the fields, as pydantic runs model validators; each issue becomes a
 * `value_error` at the location of the input (or list item) it names.
 */
export function schemaIssues(schema: z.ZodType, input: Record<string, unknown>): ValidationIssue[] {
  const parsed = schema.safeParse(input);
  if (parsed.success) return [];
  return parsed.error.issues.map((i) => {
    const path = i.path.map((k) => (typeof k === 'symbol' ? String(k) : k));
    let given: unknown = input;
    for (const k of path) given = given !== null && typeof given === 'object' ? (given as Record<string | number, unknown>)[k] : undefined;
    return { type: 'value_error', loc: ['body', 'input', ...path], msg: `Value error, ${i.message}`, input: given, ctx: { error: i.message } };
  });
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$/;

function webhookProblem(v: unknown, loc: (string | number)[]): ValidationIssue | null {
  if (typeof v !== 'string') return { type: 'url_type', loc, msg: 'URL input should be a string or URL', input: v };
  if (v.length === 0) return { type: 'url_parsing', loc, msg: 'Input should be a valid URL, input is empty', input: v };
  if (v.length > 65536) return { type: 'url_too_long', loc, msg: 'URL should have at most 65536 characters', input: v, ctx: { max_length: 65536 } };
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    return { type: 'url_parsing', loc, msg: 'Input should be a valid URL, relative URL without a base', input: v };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return { type: 'url_scheme', loc, msg: "URL scheme should be 'http' or 'https'", input: v, ctx: { expected_schemes: "'http' or 'https'" } };
  }
  return null;
}

/**
 * Validates the request envelope and its input. `pathId` is the id of an idempotent PUT; `schema`, the
 * predictor's input schema, adds its own rules once the input passed the component.
 * Returns the request, or the issues for a 422.
 */
export function validateRequest(body: unknown, component: JsonSchema, opts: InputOptions, pathId?: string, schema?: z.ZodType):
  { request: PredictionRequest; issues: [] } | { request?: undefined; issues: ValidationIssue[] } {
  const issues: ValidationIssue[] = [];
  const b = body === undefined || body === null ? {} : body;
  if (!isObject(b)) {
    return { issues: [{ type: 'model_attributes_type', loc: ['body'], msg: 'Input should be a valid dictionary or object to extract fields from', input: b }] };
  }
  const request: PredictionRequest = { input: {} };

  if (b.id !== undefined && b.id !== null) {
    if (typeof b.id !== 'string') issues.push({ type: 'string_type', loc: ['body', 'id'], msg: 'Input should be a valid string', input: b.id });
    else request.id = b.id;
  }
  if (pathId !== undefined) {
    if (request.id !== undefined && request.id !== pathId) {
      return { issues: [{ loc: ['body', 'id'], msg: 'prediction ID must match the ID supplied in the URL', type: 'value_error' }] };
    }
    request.id = pathId;
  }
  if (request.id !== undefined) {
    const problem = idProblem(request.id, pathId !== undefined ? ['path', 'prediction_id'] : ['body', 'id']);
    if (problem) issues.push(problem);
  }

  const input = validateInput(component, b.input, opts);
  issues.push(...input.issues);
  if (input.issues.length === 0 && schema) issues.push(...schemaIssues(schema, input.value));
  request.input = input.value;

  if (b.created_at !== undefined && b.created_at !== null) {
    if (typeof b.created_at !== 'string' || !RFC3339.test(b.created_at) || Number.isNaN(Date.parse(b.created_at))) {
      issues.push({ type: 'datetime_from_date_parsing', loc: ['body', 'created_at'], msg: 'Input should be a valid datetime or date, not an RFC 3339 timestamp', input: b.created_at });
    } else {
      request.created_at = b.created_at;
    }
  }
  if (b.webhook !== undefined && b.webhook !== null) {
    const problem = webhookProblem(b.webhook, ['body', 'webhook']);
    if (problem) issues.push(problem);
    else request.webhook = b.webhook as string;
  }
  if (b.webhook_events_filter !== undefined && b.webhook_events_filter !== null) {
    const f = b.webhook_events_filter;
    if (!Array.isArray(f)) {
      issues.push({ type: 'list_type', loc: ['body', 'webhook_events_filter'], msg: 'Input should be a valid list', input: f });
    } else {
      const events: WebhookEvent[] = [];
      f.forEach((e, i) => {
        if ((WEBHOOK_EVENTS as readonly unknown[]).includes(e)) events.push(e as WebhookEvent);
        else issues.push({ type: 'enum', loc: ['body', 'webhook_events_filter', i], msg: "Input should be 'start', 'output', 'logs' or 'completed'", input: e, ctx: { expected: "'start', 'output', 'logs' or 'completed'" } });
      });
      request.webhook_events_filter = events;
    }
  }
  if (b.context !== undefined && b.context !== null) {
    if (!isObject(b.context)) {
      issues.push({ type: 'dict_type', loc: ['body', 'context'], msg: 'Input should be a valid dictionary', input: b.context });
    } else {
      const context: Record<string, string> = {};
      for (const [k, v] of Object.entries(b.context)) {
        if (typeof v !== 'string') issues.push({ type: 'string_type', loc: ['body', 'context', k], msg: 'Input should be a valid string', input: v });
        else context[k] = v;
      }
      request.context = context;
    }
  }
  if (b.output_file_prefix !== undefined && b.output_file_prefix !== null) {
    if (typeof b.output_file_prefix !== 'string') issues.push({ type: 'string_type', loc: ['body', 'output_file_prefix'], msg: 'Input should be a valid string', input: b.output_file_prefix });
    else request.output_file_prefix = b.output_file_prefix;
  }
  return issues.length > 0 ? { issues } : { request, issues: [] };
}

/** A request that failed validation; answered with 422 `{"detail": issues}`. */
export class RequestValidationError extends Error {
  readonly statusCode = 422;
  constructor(readonly issues: ValidationIssue[]) {
    super(issues.map((i) => `${i.loc.join('.')}: ${i.msg}`).join('; '));
    this.name = 'RequestValidationError';
  }
}
