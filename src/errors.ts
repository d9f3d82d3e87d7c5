/**
 * The catalogue of every error the project reports on purpose: a stable code, a message template and, for
 * errors that end an HTTP request, the status code. Messages use `{name}` placeholders filled from the
 * params given to `appError`. Errors without a status end a prediction (status "failed", `error` = message)
 * or a command, never an HTTP request directly.
 *
 * Other parts of the project append their entries here, so that a message is written once and tests can
 * match on codes instead of wording.
 */

export interface CatalogueEntry {
  message: string;
  status?: number;
  /** The model can no longer run (its worker died): the server reports DEFUNCT. */
  fatal?: boolean;
  /** The failure is the device's (see `deviceFailure`): the server may take that device out of rotation. */
  device?: DeviceFailure;
}

/**
 * How a device failed a prediction. `lost`: it cannot be trusted for another run. `out-of-memory`: it may
 * serve smaller work, but a host with other devices serves on those.
 */
export type DeviceFailure = 'lost' | 'out-of-memory';

export const catalogue = {
  // ---- HTTP edge ----
  NOT_FOUND: { status: 404, message: 'Not Found' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method Not Allowed' },
  BODY_TOO_LARGE: { status: 413, message: 'Request body is larger than {limit} bytes' },
  STREAMING_NOT_SUPPORTED: {
    status: 406,
    message: 'This model does not support streaming responses. Remove text/event-stream from Accept.',
  },
  BUSY: { status: 409, message: 'Already running a prediction' },
  WORKERS_BUSY: { status: 409, message: 'All workers are busy: already running {count} predictions' },
  PREDICTION_RUNNING: { status: 409, message: 'Prediction {id} is already running' },
  NOT_READY: {
    status: 503,
    message: 'Setup has not finished yet. Wait until it has finished, or GET /health-check for status.',
  },
  SETUP_HAS_FAILED: { status: 503, message: 'Setup failed; the server cannot run predictions. See GET /health-check.' },
  DEFUNCT: { status: 503, message: 'The model can no longer run predictions; restart the server.' },
  SHUTTING_DOWN: { status: 503, message: 'The server is shutting down' },
  SCHEMA_NOT_AVAILABLE: { status: 503, message: 'OpenAPI schema not available' },
  INTERNAL: { status: 500, message: 'Internal Server Error' },

  // ---- setup ----
  PREDICTOR_LOAD_FAILED: { message: 'Error while loading predictor:\n\n{detail}' },
  PREDICTOR_INVALID: { message: 'Predictor module {module} must default-export a function (options) => Predictor' },
  SETUP_FAILED: { message: 'Predictor errored during setup: {detail}' },
  SETUP_TIMEOUT: { message: 'Setup did not finish within COG_SETUP_TIMEOUT={seconds} seconds' },
  WAIT_FILE_TIMEOUT: { message: 'COG_WAIT_FILE {file} did not appear within {seconds} seconds' },

  // ---- input files ----
  URL_SCHEME: { message: "'{scheme}' is not a valid URL scheme. 'data', 'http', or 'https' is supported." },
  URL_INVALID: { message: 'invalid URL: {detail}' },
  DATA_URL_INVALID: { message: 'invalid data URL: {detail}' },
  URL_BLOCKED: { message: 'refusing to fetch {url}: {address} is {range} address' },
  INPUT_FETCH_FAILED: { message: 'could not fetch {name} from {url}: {detail}' },
  INPUT_TOO_LARGE: { message: '{name} is larger than the limit of {limit} bytes' },
  TOO_MANY_REDIRECTS: { message: 'too many redirects fetching {url}' },

  // ---- input images ----
  IMAGE_UNREADABLE: { message: '{name} is not a readable image (JPEG, PNG, WebP, GIF, TIFF...): {detail}' },
  IMAGE_TOO_LARGE: {
    message: '{name} is {width}x{height} = {pixels} pixels, above the limit of {limit} pixels (possible decompression bomb)',
  },

  // ---- input combinations (422 with the field's location) ----
  END_IMAGE_NEEDS_INVERTED: {
    message:
      "end_image needs sampling_mode 'inverted', got '{mode}': F1 samples forward from the start image and has no " +
      "place for an end frame. Leave end_image out or use sampling_mode 'inverted'.",
  },

  // ---- predictions ----
  INPUT_REJECTED: { message: 'input rejected by the predictor: {detail}' },

  // ---- outputs ----
  OUTPUT_MISSING: { message: 'The predictor returned {path}, which is not a readable file' },
  UPLOAD_FAILED: { message: 'Got error trying to upload output files: {detail}' },

  // ---- model ----
  PREDICTOR_DEFUNCT: { message: 'The model worker stopped: {detail}', fatal: true },

  // ---- model files (src/hub) ----
  HUB_UNREACHABLE: {
    message:
      'Cannot reach the Hugging Face Hub at {endpoint} ({detail}). Check the network or proxy, or set HF_ENDPOINT to a ' +
      'reachable mirror. With the models already in the cache set HF_HUB_OFFLINE=1; otherwise run `framepack download` ' +
      'where there is network and reuse its cache (HF_HOME / HF_HUB_CACHE), or pass --models <dir> (FRAMEPACK_MODELS).',
  },
  HUB_AUTH: {
    message:
      '{repo}: the Hub refused access ({status}). If the repository is gated, accept its terms on the Hub, then set ' +
      'HF_TOKEN to a token that can read it.',
  },
  HUB_NOT_FOUND: {
    message:
      '{repo}@{revision}: {what} not found on {endpoint}. The revision pinned in models/manifest.json or the mirror ' +
      '(HF_ENDPOINT) does not have it: check both.',
  },
  MODELS_MISSING: { message: 'Model files are missing: {detail}. {hint}' },
  DISK_FULL: {
    message:
      'Not enough disk space in {dir}: {need} more needed, {free} free. Free some space or point HF_HUB_CACHE (or ' +
      '--models-cache) at a larger disk, then run again: finished files are kept and partial ones resume.',
  },
  DOWNLOAD_CORRUPT: {
    message:
      '{repo} {path}: the downloaded file does not match the Hub ({detail}). The bad copy was removed; run again to ' +
      'download it afresh. If this repeats, a proxy or mirror (HF_ENDPOINT) is altering the file.',
  },
  DOWNLOAD_INTERRUPTED: {
    message: '{repo} {path}: download stopped at {done} of {size} ({detail}). Run again: it resumes where it stopped.',
  },
  GPU_OUT_OF_MEMORY: {
    message:
      'The GPU ran out of memory ({detail}). Try a smaller resolution or a shorter video, or start the server with ' +
      'FRAMEPACK_PLACEMENT=low (one large network on the GPU at a time, 8-bit DiT and LLaMA, VAE tiling).',
    device: 'out-of-memory',
  },
  GPU_LOST: { message: 'The GPU failed and cannot run predictions any more ({detail})', device: 'lost' },

  SIZE_DOES_NOT_FIT: {
    message:
      'The {width}x{height} video at latent_window_size {lws} ({tokens} image tokens per step) does not fit this GPU: ' +
      '{detail}. Choose a lower resolution or latent_window_size.',
  },
  LORA_NOT_ENABLED: {
    message:
      'This server built its transformer without LoRA inputs (FRAMEPACK_LORA is off, or auto on {placement}: auto builds ' +
      'them on the CPU, and on CUDA under the high placement with at least {minFreeGiB} GiB free), so `loras` cannot be ' +
      'applied. Start it with FRAMEPACK_LORA=on to accept LoRAs, or leave `loras` empty.',
  },

  // ---- devices (src/runtime) ----
  RUNTIME_SETTING_INVALID: { message: '{name}={value} is not valid: use one of {allowed}.' },
  EP_UNAVAILABLE: {
    message:
      '{what} was asked for, but {detail}. Install the CUDA provider for onnxruntime-node 1.29.0 (the Docker image ' +
      'does), or unset FRAMEPACK_EP / FRAMEPACK_PLACEMENT to fall back to what is available.',
  },

  FP8_UNAVAILABLE: {
    message:
      'FRAMEPACK_DIT_FP8=on was asked for, but {detail}. FP8 linears need the CUDA provider on a GPU of compute ' +
      'capability 8.9 or newer (Ada, Hopper) and a placement whose DiT is not 8-bit quantized; use auto or off.',
  },

  DIT_KERNELS_UNAVAILABLE: {
    message:
      'FRAMEPACK_DIT_KERNELS=on was asked for, but {detail}. The DiT kernels are compiled at run time with NVRTC ' +
      '(libnvrtc.so.13) and call cuBLASLt (libcublasLt.so.13), both part of the CUDA runtime libraries; install them, ' +
      'or use auto or off.',
  },

  ORT_BINDING_UNAVAILABLE: { message: "ONNX Runtime's C API cannot be used here: {detail}" },
  ORT_CALL_FAILED: { message: 'ONNX Runtime {call} failed ({code}): {detail}' },
  ORT_RELEASED: { message: 'ONNX Runtime {what} was used after it was released' },
  CUDA_RUNTIME_UNAVAILABLE: { message: 'the CUDA runtime library cannot be loaded: {detail}' },
  CUDA_CALL_FAILED: { message: 'CUDA {call} failed ({code}): {detail}' },
  ORT_TENSOR_INVALID: { message: '{name}: {detail}' },
  DEVICE_TENSOR_RELEASED: { message: 'device tensor {ref} ({what}) was released or belongs to another session worker' },

  // ---- command line ----
  CLI_USAGE: { message: '{detail}' },
  CLI_INPUT_FILE: { message: 'Could not read input file {path}: {detail}' },
} as const satisfies Record<string, CatalogueEntry>;

export type ErrorCode = keyof typeof catalogue;

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number | undefined;
  readonly fatal: boolean;
  readonly device: DeviceFailure | undefined;
  readonly params: Record<string, unknown>;

  constructor(code: ErrorCode, params: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    const entry: CatalogueEntry = catalogue[code];
    super(format(entry.message, params), options);
    this.name = 'AppError';
    this.code = code;
    this.status = entry.status;
    this.fatal = entry.fatal ?? false;
    this.device = entry.device;
    this.params = params;
  }
}

/** `new AppError(code, params)` for call sites that read better as a function. */
export function appError(code: ErrorCode, params: Record<string, unknown> = {}, cause?: unknown): AppError {
  return new AppError(code, params, cause === undefined ? undefined : { cause });
}

/** True for errors after which the model cannot run again (any error with `fatal: true` counts). */
export function isFatal(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { fatal?: unknown }).fatal === true;
}

/** How the device failed, for errors that say so (any error with `device: 'lost' | 'out-of-memory'` counts). */
export function deviceFailure(err: unknown): DeviceFailure | undefined {
  const device = typeof err === 'object' && err !== null ? (err as { device?: unknown }).device : undefined;
  return device === 'lost' || device === 'out-of-memory' ? device : undefined;
}

/** The one-line message of anything thrown. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

function format(template: string, params: Record<string, unknown>): string {
  return template.replace(/\{(\w+)\}/g, (whole, key: string) => (key in params ? String(params[key]) : whole));
}
