/**
 * Input and envelope validation against FramePack's Input component: every case of the pydantic-style
 * rules (lax coercion, bounds, nullability, unknown keys, file URLs, envelope fields).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inputSchema } from '../../src/framepack/inputs.js';
import { inputComponent } from '../../src/server/openapi.js';
import { schemaIssues, validateInput, validateRequest } from '../../src/server/validation.js';

const component = inputComponent(inputSchema);
const policy = { denyPrivate: false };
const base = { input_image: 'https://example.com/in.png', prompt: 'a cat' };

function check(extra: Record<string, unknown>) {
  return validateInput(component, { ...base, ...extra }, policy);
}

function oneIssue(extra: Record<string, unknown>) {
  const { issues } = check(extra);
  assert.equal(issues.length, 1, JSON.stringify(issues));
  return issues[0]!;
}

describe('input validation (pydantic lax mode)', () => {
  it('fills every default and echoes the normalised input', () => {
    const { value, issues } = check({});
    assert.deepEqual(issues, []);
    assert.deepEqual(value, {
      input_image: 'https://example.com/in.png', prompt: 'a cat', negative_prompt: '', seed: null,
      total_video_length_seconds: 3, latent_window_size: 9, steps: 25, cfg_scale: 1, distilled_cfg_scale: 10,
      cfg_rescale: 0, use_teacache: true, mp4_crf: 23, end_image: null, end_image_strength: 1, sampling_mode: 'inverted',
      cache: null, resolution: 640, prompt_blend_sections: 4, loras: [],
    });
    // The output follows the schema's order (x-order), not the request's.
    assert.deepEqual(Object.keys(value), Object.keys(inputSchema.shape));
  });

  it('checks the cache choice against its enumeration; null is the default', () => {
    assert.equal(check({ cache: 'magcache' }).value.cache, 'magcache');
    assert.equal(check({ cache: null }).value.cache, null);
    const issue = oneIssue({ cache: 'fastest' });
    assert.equal(issue.type, 'enum');
    assert.equal(issue.msg, "Input should be 'teacache', 'magcache' or 'off'");
  });

  it('checks the end frame and sampling mode inputs', () => {
    assert.equal(check({ end_image: 'https://example.com/end.png', end_image_strength: '0.25' }).value.end_image_strength, 0.25);
    assert.equal(oneIssue({ end_image_strength: 1.5 }).type, 'less_than_equal');
    assert.equal(oneIssue({ end_image_strength: -0.1 }).type, 'greater_than_equal');
    const mode = oneIssue({ sampling_mode: 'forward' });
    assert.equal(mode.type, 'enum');
    assert.equal(mode.msg, "Input should be 'inverted' or 'f1'");
    assert.equal(oneIssue({ end_image: 'ftp://example.com/end.png' }).loc.at(-1), 'end_image');
    assert.equal(check({ sampling_mode: 'f1', end_image: null }).issues.length, 0);
  });

  it('rejects end_image with sampling_mode f1 as a value error on end_image, after the fields pass', () => {
    const { value, issues } = check({ end_image: 'https://example.com/end.png', sampling_mode: 'f1' });
    assert.deepEqual(issues, []);
    const crossed = schemaIssues(inputSchema, value);
    assert.equal(crossed.length, 1);
    assert.equal(crossed[0]!.type, 'value_error');
    assert.deepEqual(crossed[0]!.loc, ['body', 'input', 'end_image']);
    assert.equal(crossed[0]!.input, 'https://example.com/end.png');
    assert.match(crossed[0]!.msg, /^Value error, end_image needs sampling_mode 'inverted', got 'f1'/);
    for (const ok of [{ sampling_mode: 'f1' }, { end_image: 'https://example.com/end.png' }, {}]) {
      assert.deepEqual(schemaIssues(inputSchema, check(ok).value), [], JSON.stringify(ok));
    }
  });

  it('reports missing required inputs with the whole input object, in order', () => {
    const { issues } = validateInput(component, { steps: 51 }, policy);
    assert.deepEqual(issues.map((i) => [i.type, i.loc.at(-1)]), [['missing', 'input_image'], ['missing', 'prompt'], ['less_than_equal', 'steps']]);
    assert.equal(issues[0]!.msg, 'Field required');
    assert.deepEqual(issues[0]!.input, { steps: 51 });
    assert.deepEqual(issues[0]!.loc, ['body', 'input', 'input_image']);
  });

  it('treats absent and null input as {} and rejects non-objects', () => {
    assert.equal(validateInput(component, undefined, policy).issues.length, 2);
    assert.equal(validateInput(component, null, policy).issues.length, 2);
    const [issue] = validateInput(component, [1, 2], policy).issues;
    assert.deepEqual(issue, { type: 'model_type', loc: ['body', 'input'], msg: 'Input should be a valid dictionary or instance of Input', input: [1, 2] });
  });

  it('drops unknown inputs', () => {
    const { value, issues } = check({ foo: 1 });
    assert.deepEqual(issues, []);
    assert.equal('foo' in value, false);
  });

  it('accepts null only for nullable inputs', () => {
    assert.equal(check({ seed: null }).value.seed, null);
    assert.deepEqual(oneIssue({ steps: null }), { type: 'int_type', loc: ['body', 'input', 'steps'], msg: 'Input should be a valid integer', input: null });
    assert.equal(oneIssue({ cfg_scale: null }).type, 'float_type');
    assert.equal(oneIssue({ use_teacache: null }).type, 'bool_type');
    assert.equal(oneIssue({ prompt: null }).type, 'string_type');
  });

  it('coerces integers like pydantic', () => {
    for (const v of [30, 30.0, '30', ' 30 ', '30.0']) assert.equal(check({ steps: v }).value.steps, 30, String(v));
    assert.equal(check({ seed: '12345' }).value.seed, 12345);
    const frac = oneIssue({ steps: 30.5 });
    assert.equal(frac.type, 'int_from_float');
    assert.equal(frac.msg, 'Input should be a valid integer, got a number with a fractional part');
    for (const v of ['abc', '1e1', '30.5']) {
      const issue = oneIssue({ steps: v });
      assert.equal(issue.type, 'int_parsing', v);
      assert.equal(issue.msg, 'Input should be a valid integer, unable to parse string as an integer');
    }
    assert.equal(oneIssue({ steps: [1] }).type, 'int_type');
    assert.equal(oneIssue({ steps: { a: 1 } }).type, 'int_type');
  });

  it('coerces numbers like pydantic', () => {
    assert.equal(check({ cfg_scale: 2 }).value.cfg_scale, 2);
    assert.equal(check({ cfg_scale: '2.5' }).value.cfg_scale, 2.5);
    assert.equal(check({ total_video_length_seconds: '1e0' }).value.total_video_length_seconds, 1);
    const bad = oneIssue({ cfg_scale: 'abc' });
    assert.deepEqual([bad.type, bad.msg], ['float_parsing', 'Input should be a valid number, unable to parse string as a number']);
    assert.deepEqual([oneIssue({ cfg_scale: [] }).type, oneIssue({ cfg_scale: {} }).msg], ['float_type', 'Input should be a valid number']);
  });

  it('coerces booleans like pydantic', () => {
    for (const v of ['true', 'TRUE', 'yes', 'on', 't', 'y', '1', 1, true]) assert.equal(check({ use_teacache: v }).value.use_teacache, true, String(v));
    for (const v of ['false', 'False', 'no', 'off', 'f', 'n', '0', 0, false]) assert.equal(check({ use_teacache: v }).value.use_teacache, false, String(v));
    for (const v of [2, 'maybe']) {
      const issue = oneIssue({ use_teacache: v });
      assert.deepEqual([issue.type, issue.msg], ['bool_parsing', 'Input should be a valid boolean, unable to interpret input']);
    }
    assert.equal(oneIssue({ use_teacache: [] }).type, 'bool_type');
  });

  it('never turns numbers or booleans into strings', () => {
    for (const v of [1, true, ['a']]) {
      const issue = oneIssue({ prompt: v });
      assert.deepEqual([issue.type, issue.msg], ['string_type', 'Input should be a valid string']);
    }
  });

  it('enforces bounds with pydantic messages and ctx', () => {
    assert.deepEqual(oneIssue({ steps: 0 }), {
      type: 'greater_than_equal', loc: ['body', 'input', 'steps'], msg: 'Input should be greater than or equal to 1', input: 0, ctx: { ge: 1 },
    });
    assert.deepEqual(oneIssue({ steps: 51 }), {
      type: 'less_than_equal', loc: ['body', 'input', 'steps'], msg: 'Input should be less than or equal to 50', input: 51, ctx: { le: 50 },
    });
    assert.equal(oneIssue({ total_video_length_seconds: 10.5 }).msg, 'Input should be less than or equal to 10');
    assert.equal(oneIssue({ cfg_rescale: -0.01 }).msg, 'Input should be greater than or equal to 0');
    assert.equal(check({ resolution: '960' }).issues.length, 0);
    assert.deepEqual(oneIssue({ resolution: 650 }), { type: 'multiple_of', loc: ['body', 'input', 'resolution'], msg: 'Input should be a multiple of 32', input: 650, ctx: { multiple_of: 32 } });
    assert.equal(oneIssue({ resolution: 992 }).type, 'less_than_equal');
    assert.equal(check({ mp4_crf: 0 }).issues.length, 0);
    assert.equal(check({ mp4_crf: 51 }).issues.length, 0);
  });

  it('accepts data and http(s) URLs for files and refuses other schemes with one entry', () => {
    for (const v of ['data:image/png;base64,iVBORw0KGgo=', 'data:text/plain; charset=utf-8;base64,aGVsbG8=', 'data:,hello%20world', 'http://example.com/a.png', 'HTTPS://example.com/a.png']) {
      assert.deepEqual(check({ input_image: v }).issues, [], v);
    }
    const ftp = oneIssue({ input_image: 'ftp://example.com/a.png' });
    assert.deepEqual(ftp.loc, ['body', 'input', 'input_image']);
    assert.equal(ftp.type, 'value_error');
    assert.equal(ftp.msg, "Value error, 'ftp' is not a valid URL scheme. 'data', 'http', or 'https' is supported.");
    assert.match(oneIssue({ input_image: 'file:///etc/passwd' }).msg, /'file' is not a valid URL scheme/);
    assert.match(oneIssue({ input_image: '/etc/passwd' }).msg, /'' is not a valid URL scheme/);
    assert.equal(oneIssue({ input_image: 42 }).type, 'string_type');
    assert.match(oneIssue({ input_image: 'data:image/png;base64,@@@@' }).msg, /not valid base64/);
    assert.match(oneIssue({ input_image: 'data:image/png;base64' }).msg, /invalid data URL/);
    assert.match(oneIssue({ input_image: 'http://' }).msg, /invalid URL/);
  });

  it('refuses link-local and cloud-metadata IP hosts always, loopback/private only when asked', () => {
    for (const host of ['169.254.169.254', '[fd00:ec2::254]', '[fe80::1]', '[::ffff:169.254.169.254]', '100.100.100.200']) {
      const issue = oneIssue({ input_image: `http://${host}/latest/meta-data` });
      assert.match(issue.msg, /refusing to fetch .*(link-local|cloud-metadata)/, host);
    }
    for (const host of ['127.0.0.1', '10.1.2.3', '192.168.0.1', '[::1]', '0x7f.1']) {
      assert.deepEqual(check({ input_image: `http://${host}/a.png` }).issues, [], host);
      const strict = validateInput(component, { ...base, input_image: `http://${host}/a.png` }, { denyPrivate: true });
      assert.equal(strict.issues.length, 1, host);
      assert.match(strict.issues[0]!.msg, /refusing to fetch/);
    }
  });

  it('accepts file: URLs only for the local command line', () => {
    assert.equal(oneIssue({ input_image: 'file:///tmp/a.png' }).type, 'value_error');
    assert.deepEqual(validateInput(component, { ...base, input_image: 'file:///tmp/a.png' }, { denyPrivate: false, allowFileUrls: true }).issues, []);
  });
});

describe("the predictor's own rules (schema pass)", () => {
  const request = (input: Record<string, unknown>) => validateRequest({ input: { ...base, ...input } }, component, policy, undefined, inputSchema);

  it('answers a malformed timestamped prompt with a value_error at the prompt, naming the problem', () => {
    const r = request({ prompt: '[0s: a cat] [2s- : it jumps]' });
    assert.equal(r.issues.length, 1, JSON.stringify(r.issues));
    const [issue] = r.issues;
    assert.equal(issue!.type, 'value_error');
    assert.deepEqual(issue!.loc, ['body', 'input', 'prompt']);
    assert.match(issue!.msg, /^Value error, timestamped prompt: "\[2s- :" looks like a timestamp but is not one: write \[2s: text\]/);
    assert.equal(issue!.input, '[0s: a cat] [2s- : it jumps]');
  });

  it('checks timestamps against the requested length and window', () => {
    assert.match(request({ prompt: '[0s: a] [4s: b]', total_video_length_seconds: 3 }).issues[0]!.msg, /starts at or after the end of the 3 s video/);
    assert.ok(request({ prompt: '[0s: a] [4s: b]', total_video_length_seconds: 5 }).request);
    assert.ok(request({ prompt: 'a [red] cat, 16:9' }).request, 'a plain prompt with brackets');
  });

  it('runs only once the component accepted the input', () => {
    const r = request({ prompt: '[0: a]', steps: 99 });
    assert.deepEqual(r.issues.map((i) => i.loc.at(-1)), ['steps']);
  });

  it('reports every rule an input breaks in one 422: an end image with f1 and a malformed timestamped prompt', () => {
    const r = request({ prompt: '[0s: a] [0s: b]', sampling_mode: 'f1', end_image: 'https://example.com/end.png' });
    assert.deepEqual(r.issues.map((i) => [i.type, i.loc.at(-1)]), [['value_error', 'end_image'], ['value_error', 'prompt']]);
    assert.ok(request({ prompt: '[0s: a] [1s: b]', sampling_mode: 'f1' }).request, 'timestamped prompts with f1');
  });

  it('checks the contents of loras, locating the item', () => {
    const r = request({ loras: [{ url: 'https://example.com/a.safetensors' }, { url: '/etc/passwd', scale: 9 }] });
    assert.deepEqual(r.issues.map((i) => i.loc), [['body', 'input', 'loras', 1, 'url'], ['body', 'input', 'loras', 1, 'scale']]);
    assert.equal(r.issues[0]!.input, '/etc/passwd');
    assert.deepEqual(request({ loras: [{ url: 'owner/repo/lora.safetensors' }] }).request?.input.loras, [{ url: 'owner/repo/lora.safetensors' }]);
  });
});

describe('envelope validation', () => {
  const ok = { input: base };

  it('accepts the full envelope and ignores unknown keys', () => {
    const r = validateRequest({ ...ok, id: 'abc', created_at: '2026-08-01T12:00:00.123456+00:00', webhook: 'https://example.com/hook',
      webhook_events_filter: ['start', 'completed'], context: { replicate_api_token: 'r8_x' }, output_file_prefix: 'https://x/', extra: 1 }, component, policy);
    assert.ok(r.request);
    assert.equal(r.request.id, 'abc');
    assert.deepEqual(r.request.webhook_events_filter, ['start', 'completed']);
  });

  it('rejects a body that is not an object', () => {
    assert.equal(validateRequest([1], component, policy).issues[0]!.type, 'model_attributes_type');
    assert.equal(validateRequest('x', component, policy).issues[0]!.loc[0], 'body');
  });

  it('validates each envelope field with its loc', () => {
    const cases: [Record<string, unknown>, string, (string | number)[]][] = [
      [{ id: 5 }, 'string_type', ['body', 'id']],
      [{ created_at: 'yesterday' }, 'datetime_from_date_parsing', ['body', 'created_at']],
      [{ webhook: 'ftp://x/y' }, 'url_scheme', ['body', 'webhook']],
      [{ webhook: 'not a url' }, 'url_parsing', ['body', 'webhook']],
      [{ webhook: '' }, 'url_parsing', ['body', 'webhook']],
      [{ webhook: `https://x/${'a'.repeat(65536)}` }, 'url_too_long', ['body', 'webhook']],
      [{ webhook_events_filter: ['start', 'bogus'] }, 'enum', ['body', 'webhook_events_filter', 1]],
      [{ webhook_events_filter: 'start' }, 'list_type', ['body', 'webhook_events_filter']],
      [{ context: { a: 1 } }, 'string_type', ['body', 'context', 'a']],
      [{ context: 'x' }, 'dict_type', ['body', 'context']],
      [{ output_file_prefix: 3 }, 'string_type', ['body', 'output_file_prefix']],
    ];
    for (const [extra, type, loc] of cases) {
      const r = validateRequest({ ...ok, ...extra }, component, policy);
      assert.equal(r.issues.length, 1, JSON.stringify(extra));
      assert.equal(r.issues[0]!.type, type);
      assert.deepEqual(r.issues[0]!.loc, loc);
    }
    assert.equal(validateRequest({ ...ok, webhook_events_filter: ['bogus'] }, component, policy).issues[0]!.msg,
      "Input should be 'start', 'output', 'logs' or 'completed'");
  });

  it('requires the body id of a PUT to match the path', () => {
    const r = validateRequest({ ...ok, id: 'other' }, component, policy, 'mine');
    assert.deepEqual(r.issues, [{ loc: ['body', 'id'], msg: 'prediction ID must match the ID supplied in the URL', type: 'value_error' }]);
    assert.equal(validateRequest(ok, component, policy, 'mine').request?.id, 'mine');
  });
});
