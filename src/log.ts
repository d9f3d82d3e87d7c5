/**
 * Logging. One pino logger for the process: JSON lines by default (what log collectors expect), human-readable
 * through pino-pretty when stdout is a terminal or LOG_FORMAT is `console`/`development` (what `cog predict`
 * sets). The level comes from COG_LOG_LEVEL (`debug`, `info`, `warning`/`warn`, `error`; default info).
 *
 * `teeLogger` gives a predictor a logger whose every line is also handed to a callback: that is how lines a
 * model logs become the prediction's `logs` (or the health check's `setup.logs`).
 */
import { createRequire } from 'node:module';
import { format } from 'node:util';
import pino, { type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level?: string;
  pretty?: boolean;
  /** File descriptor written to: 1 (stdout, the default) or 2 (stderr, for commands whose stdout is data). */
  fd?: 1 | 2;
}

/** Maps Cog's level names onto pino's. */
export function levelFromEnv(value: string | undefined): LevelWithSilent {
  switch ((value ?? '').trim().toLowerCase()) {
    case 'debug': return 'debug';
    case 'warning': case 'warn': return 'warn';
    case 'error': return 'error';
    case 'silent': return 'silent';
    default: return 'info';
  }
}

function wantsPretty(tty: boolean): boolean {
  const fmt = (process.env.LOG_FORMAT ?? '').toLowerCase();
  if (fmt === 'json') return false;
  return fmt === 'console' || fmt === 'development' || tty;
}

/** pino-pretty is a development dependency: a production install falls back to JSON lines. */
function prettyAvailable(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? levelFromEnv(process.env.COG_LOG_LEVEL);
  const fd = opts.fd ?? 1;
  const tty = (fd === 1 ? process.stdout : process.stderr).isTTY === true;
  const pretty = opts.pretty ?? wantsPretty(tty);
  if (pretty && prettyAvailable()) {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { destination: fd, colorize: tty, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    });
  }
  return pino({ level, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd, sync: fd === 2 }));
}

/**
 * The text of one log call, formatted the way pino formats `msg`, with errors as their message: lines
 * become a prediction's logs, which reach clients, and a stack trace names the server's files.
 */
function lineOf(raw: unknown[]): string {
  const args = raw.map((a, i) => (i > 0 && a instanceof Error ? a.message : a));
  const [first, ...rest] = args;
  if (typeof first === 'string') return format(first, ...rest);
  if (first instanceof Error) return typeof rest[0] === 'string' ? format(rest[0], ...rest.slice(1)) : first.message;
  if (typeof rest[0] === 'string') return format(rest[0], ...rest.slice(1));
  return '';
}

/**
 * A logger writing where `parent` writes, with `bindings`, that also passes the text of each line at info or
 * above (debug too when the parent logs debug) to `onLine`, whatever the parent's level: a server started
 * with COG_LOG_LEVEL=warning still collects a model's info lines into its logs. Children inherit this.
 */
export function teeLogger(parent: Logger, bindings: Record<string, unknown>, onLine: (line: string) => void): Logger {
  const stream = (parent as unknown as Record<symbol, pino.DestinationStream>)[pino.symbols.streamSym];
  const parentLevel = parent.levelVal;
  return pino(
    {
      level: parentLevel < 30 ? parent.level : 'info',
      base: { ...parent.bindings(), ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      hooks: {
        logMethod(args, method, level) {
          const line = lineOf(args);
          if (line !== '') onLine(line);
          if (level >= parentLevel) method.apply(this, args);
        },
      },
    },
    stream,
  );
}
