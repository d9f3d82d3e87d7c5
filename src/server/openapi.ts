/**
 * The OpenAPI 3.0.2 document Cog clients read: `cog predict` looks up
 * paths./predictions.post.responses.200...schema -> PredictionResponse.properties.output, which must be a direct
 * `$ref` to `Output` = `{type: string, format: uri}` for it to decode the data-URL output into a file; Replicate
 * shows `components.schemas.Input` as the model's form. The envelope follows Cog 0.16's FastAPI document.
 *
 * `Input` is generated from the predictor's zod schema the way Cog derives it from `predict()`'s signature:
 * title = the name with `_` as spaces and words capitalised, `x-order` = position, `required` = fields without
 * a default, `nullable` for optional fields.
 */
import { z } from 'zod';

export type JsonSchema = Record<string, any>;

/** `cfg_scale` -> `Cfg Scale`, `mp4_crf` -> `Mp4 Crf`. */
export function titleOf(name: string): string {
  return name.split('_').filter(Boolean).map((w) => w[0]!.toUpperCase() + w.slice(1)).join(' ');
}

/** Key order as Cog writes it (readable diffs against Cog-built schemas). */
const KEY_ORDER = ['title', 'description', 'type', 'format', 'items', 'enum', 'nullable', 'default', 'minimum', 'maximum',
  'exclusiveMinimum', 'exclusiveMaximum', 'minLength', 'maxLength', 'pattern', 'deprecated'];

function orderKeys(prop: JsonSchema): JsonSchema {
  const out: JsonSchema = {};
  for (const k of KEY_ORDER) if (k in prop) out[k] = prop[k];
  for (const k of Object.keys(prop)) if (!(k in out) && k !== 'x-order') out[k] = prop[k];
  if ('x-order' in prop) out['x-order'] = prop['x-order'];
  return out;
}

/** The `Input` component for a predictor's schema. */
export function inputComponent(schema: z.ZodObject): JsonSchema {
  const json = z.toJSONSchema(schema, { target: 'openapi-3.0', io: 'input', unrepresentable: 'any' }) as JsonSchema;
  const properties: JsonSchema = {};
  Object.keys(schema.shape).forEach((name, order) => {
    // Every bound zod enforces is published, zod's implicit safe-integer range of `z.int()` included: the
    // server validates requests against this document, so a value it accepts is one the predictor accepts.
    const prop: JsonSchema = { ...(json.properties?.[name] ?? {}) };
    delete prop.$schema;
    properties[name] = orderKeys({ title: titleOf(name), ...prop, 'x-order': order });
  });
  const required = (json.required as string[] | undefined) ?? [];
  const out: JsonSchema = { title: 'Input', type: 'object' };
  if (required.length > 0) out.required = required;
  out.properties = properties;
  return out;
}

const ok = { description: 'Successful Response', content: { 'application/json': { schema: {} } } };
const validationError = {
  description: 'Validation Error',
  content: { 'application/json': { schema: { $ref: '#/components/schemas/HTTPValidationError' } } },
};
const predictionResponse = {
  description: 'Successful Response',
  content: { 'application/json': { schema: { $ref: '#/components/schemas/PredictionResponse' } } },
};
const preferHeader = { in: 'header', name: 'prefer', required: false, schema: { title: 'Prefer', type: 'string' } };
const idParam = { in: 'path', name: 'prediction_id', required: true, schema: { title: 'Prediction ID', type: 'string' } };
const nullableDateTime = (title: string) => ({ title, type: 'string', format: 'date-time', nullable: true });

/** The whole document for a predictor whose input schema is `schema` and whose output is one file. */
export function openapiDocument(schema: z.ZodObject): JsonSchema {
  return {
    openapi: '3.0.2',
    info: { title: 'Cog', version: '0.1.0' },
    paths: {
      '/shutdown': { post: { summary: 'Start Shutdown', operationId: 'start_shutdown_shutdown_post', responses: { 200: ok } } },
      '/': { get: { summary: 'Root', operationId: 'root__get', responses: { 200: ok } } },
      '/health-check': { get: { summary: 'Healthcheck', operationId: 'healthcheck_health_check_get', responses: { 200: ok } } },
      '/predictions': {
        post: {
          summary: 'Predict',
          description: 'Run a single prediction on the model',
          operationId: 'predict_predictions_post',
          parameters: [preferHeader],
          requestBody: { content: { 'application/json': { schema: { $ref: '#/components/schemas/PredictionRequest' } } } },
          responses: { 200: predictionResponse, 422: validationError },
        },
      },
      '/predictions/{prediction_id}': {
        put: {
          summary: 'Predict Idempotent',
          description: 'Run a single prediction on the model (idempotent creation).',
          operationId: 'predict_idempotent_predictions__prediction_id__put',
          parameters: [idParam, preferHeader],
          requestBody: {
            required: true,
            content: { 'application/json': { schema: { title: 'Prediction Request', allOf: [{ $ref: '#/components/schemas/PredictionRequest' }] } } },
          },
          responses: { 200: predictionResponse, 422: validationError },
        },
      },
      '/predictions/{prediction_id}/cancel': {
        post: {
          summary: 'Cancel',
          description: 'Cancel a running prediction',
          operationId: 'cancel_predictions__prediction_id__cancel_post',
          parameters: [idParam],
          responses: { 200: ok, 422: validationError },
        },
      },
    },
    components: {
      schemas: {
        HTTPValidationError: {
          title: 'HTTPValidationError', type: 'object',
          properties: { detail: { title: 'Detail', type: 'array', items: { $ref: '#/components/schemas/ValidationError' } } },
        },
        Input: inputComponent(schema),
        Output: { title: 'Output', type: 'string', format: 'uri' },
        PredictionRequest: {
          title: 'PredictionRequest', type: 'object',
          properties: {
            input: { $ref: '#/components/schemas/Input' },
            id: { title: 'Id', type: 'string', nullable: true },
            created_at: nullableDateTime('Created At'),
            context: { title: 'Context', type: 'object', additionalProperties: { type: 'string' }, nullable: true },
            output_file_prefix: { title: 'Output File Prefix', type: 'string', nullable: true },
            webhook: { title: 'Webhook', type: 'string', format: 'uri', minLength: 1, maxLength: 65536, nullable: true },
            webhook_events_filter: {
              type: 'array', items: { $ref: '#/components/schemas/WebhookEvent' },
              default: ['start', 'output', 'logs', 'completed'], nullable: true,
            },
          },
        },
        PredictionResponse: {
          title: 'PredictionResponse', type: 'object',
          properties: {
            input: { $ref: '#/components/schemas/Input' },
            output: { $ref: '#/components/schemas/Output' },
            id: { title: 'Id', type: 'string', nullable: true },
            version: { title: 'Version', type: 'string', nullable: true },
            created_at: nullableDateTime('Created At'),
            started_at: nullableDateTime('Started At'),
            completed_at: nullableDateTime('Completed At'),
            logs: { title: 'Logs', type: 'string', default: '' },
            error: { title: 'Error', type: 'string', nullable: true },
            status: { $ref: '#/components/schemas/Status' },
            metrics: { title: 'Metrics', type: 'object', additionalProperties: true, nullable: true },
          },
        },
        Status: {
          title: 'Status', description: 'An enumeration.', type: 'string',
          enum: ['starting', 'processing', 'succeeded', 'canceled', 'failed'],
        },
        ValidationError: {
          title: 'ValidationError', type: 'object', required: ['loc', 'msg', 'type'],
          properties: {
            loc: { title: 'Location', type: 'array', items: { anyOf: [{ type: 'string' }, { type: 'integer' }] } },
            msg: { title: 'Message', type: 'string' },
            type: { title: 'Error Type', type: 'string' },
          },
        },
        WebhookEvent: {
          title: 'WebhookEvent', description: 'An enumeration.', type: 'string',
          enum: ['start', 'output', 'logs', 'completed'],
        },
      },
    },
  };
}
