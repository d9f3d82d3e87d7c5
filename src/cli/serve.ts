/**
 * `framepack serve`: the Cog-compatible HTTP server. Accepts the flags Cog's server takes (this is what
 * `python -m cog.server.http ...` runs in the container) plus the project's own:
 *
 *   --host <addr>                      bind address (0.0.0.0)
 *   --port <n>                         port (PORT, else 5000)
 *   --upload-url <url>                 PUT output files there instead of returning data URLs
 *   --await-explicit-shutdown[=bool]   ignore SIGTERM; stay up after a failed setup; exit on POST /shutdown or SIGINT
 *   --predictor <module>               another predictor module (default: FramePack)
 *   --models <dir>, --noise <f>, --dump <f>, --any-flag <v>   passed to the predictor as options
 *   --deny-private-urls                also refuse loopback/private addresses for input URLs
 *   --no-playground                    do not serve the GET /playground page
 *   --x-mode, --threads                accepted and ignored (Cog flags without meaning here)
 *   -v, --version                      print the version
 *
 * Environment: PORT, COG_LOG_LEVEL, LOG_FORMAT, COG_THROTTLE_RESPONSE_INTERVAL, WEBHOOK_AUTH_TOKEN,
 * COG_SETUP_TIMEOUT, COG_WAIT_FILE, COG_USER_AGENT, KUBERNETES_SERVICE_HOST, FRAMEPACK_DENY_PRIVATE_URLS,
 * FRAMEPACK_NO_PLAYGROUND, FRAMEPACK_MAX_INPUT_BYTES, FRAMEPACK_BODY_LIMIT, FRAMEPACK_READY_FILE, COG_MAX_CONCURRENCY,
 * FRAMEPACK_SHUTDOWN_GRACE, FRAMEPACK_REQUEST_TIMEOUT.
 */
import { createLogger } from '../log.js';
import { terminateWorkers } from '../runtime/session.js';
import {
  CogServer, DEFAULT_BODY_LIMIT, DEFAULT_MAX_INPUT_BYTES, DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_STOP_GRACE_MS,
} from '../server/app.js';
import { concurrencyFromEnv } from '../server/pool.js';
import { predictorSource } from '../server/predictor-source.js';
import { COG_VERSION } from '../server/routes.js';
import { throttleFromEnv } from '../server/webhooks.js';
import { flagBool, parseArgs, predictorOptionsFrom } from './flags.js';

const KNOWN = ['host', 'port', 'upload-url', 'await-explicit-shutdown', 'predictor', 'deny-private-urls', 'no-playground',
  'x-mode', 'threads', 'version', 'check-hash-based-pycs'];

function positiveNumber(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value !== undefined && value.trim() !== '' && Number.isFinite(n) && n > 0 ? n : fallback;
}

/** Seconds from the environment as milliseconds; 0 allowed; unset or invalid -> the default. */
function secondsMs(value: string | undefined, fallbackMs: number): number {
  const n = Number(value);
  return value !== undefined && value.trim() !== '' && Number.isFinite(n) && n >= 0 ? Math.round(n * 1000) : fallbackMs;
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    booleans: ['version', 'deny-private-urls', 'no-playground'],
    optionalBooleans: ['await-explicit-shutdown'],
    aliases: { v: 'version' },
  });
  if (args.flags.has('version')) {
    process.stdout.write(`framepack-cog (Cog HTTP API ${COG_VERSION})\n`);
    return 0;
  }
  const logger = createLogger();
  const str = (name: string): string | undefined => {
    const v = args.flags.get(name);
    return typeof v === 'string' ? v : undefined;
  };
  const options = predictorOptionsFrom(args, KNOWN);
  const extra = Object.keys(options).filter((k) => !['models', 'noise', 'dump'].includes(k));
  if (extra.length > 0) logger.info({ options: extra }, 'passing unrecognised flags to the predictor');
  if (args.positionals.length > 0) logger.warn({ args: args.positionals }, 'ignoring arguments');

  const port = Number(str('port') ?? process.env.PORT ?? 5000);
  const awaitExplicitShutdown = flagBool(args.flags.get('await-explicit-shutdown')) ?? false;
  const setupTimeout = positiveNumber(process.env.COG_SETUP_TIMEOUT, 0);
  const server = new CogServer({
    logger,
    host: str('host') ?? '0.0.0.0',
    port: Number.isInteger(port) && port >= 0 ? port : 5000,
    awaitExplicitShutdown,
    bodyLimit: positiveNumber(process.env.FRAMEPACK_BODY_LIMIT, DEFAULT_BODY_LIMIT),
    source: predictorSource(str('predictor'), options),
    uploadUrl: str('upload-url'),
    policy: { denyPrivate: args.flags.has('deny-private-urls') || flagBool(process.env.FRAMEPACK_DENY_PRIVATE_URLS) === true },
    playground: !(args.flags.has('no-playground') || flagBool(process.env.FRAMEPACK_NO_PLAYGROUND) === true),
    maxInputBytes: positiveNumber(process.env.FRAMEPACK_MAX_INPUT_BYTES, DEFAULT_MAX_INPUT_BYTES),
    throttleMs: throttleFromEnv(process.env.COG_THROTTLE_RESPONSE_INTERVAL),
    webhookAuthToken: process.env.WEBHOOK_AUTH_TOKEN || undefined,
    setupTimeoutMs: setupTimeout > 0 ? setupTimeout * 1000 : undefined,
    maxConcurrency: concurrencyFromEnv(process.env.COG_MAX_CONCURRENCY, logger),
    waitFile: process.env.COG_WAIT_FILE || undefined,
    readyFile: process.env.KUBERNETES_SERVICE_HOST ? (process.env.FRAMEPACK_READY_FILE ?? '/var/run/cog/ready') : undefined,
    stopGraceMs: secondsMs(process.env.FRAMEPACK_SHUTDOWN_GRACE, DEFAULT_STOP_GRACE_MS),
    requestTimeoutMs: secondsMs(process.env.FRAMEPACK_REQUEST_TIMEOUT, DEFAULT_REQUEST_TIMEOUT_MS),
  });

  process.on('SIGTERM', () => server.signal('SIGTERM'));
  process.on('SIGINT', () => server.signal('SIGINT'));
  // A model callback that throws outside any promise must not take the server down unannounced: the
  // prediction fails and the health check says DEFUNCT (then the process exits unless told to wait).
  process.on('uncaughtException', (err) => server.runner.markDefunct(err));
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled promise rejection'));

  try {
    await server.start();
  } catch (err) {
    logger.fatal({ err }, 'could not start the server');
    return 1;
  }
  const code = await server.exited;
  // A cancelled prediction's last step may still be inside ONNX Runtime: exiting now would abort the process.
  await terminateWorkers({ graceMs: 10_000 });
  logger.flush();
  // Sessions, workers and keep-alive sockets of a model must not keep a stopped server alive.
  setTimeout(() => process.exit(code), 50).unref();
  return code;
}
