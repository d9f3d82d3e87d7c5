/**
 * Command-line flags shared by the commands: `--name value`, `--name=value`, short `-x value`, repeatable
 * flags collected in order. Unknown `--flags` are kept: they become the predictor's options.
 */

export interface ParsedArgs {
  /** Last value of each flag (`true` for a flag given without a value). */
  flags: Map<string, string | true>;
  /** Every value of each flag, in order (for repeatable ones such as -i). */
  all: Map<string, string[]>;
  positionals: string[];
}

export interface FlagSpec {
  /** Flags that never take a value. */
  booleans?: string[];
  /** Flags whose value is optional and, when given as a separate token, one of true/false/1/0/yes/no/on/off. */
  optionalBooleans?: string[];
  /** Short aliases: `-i` -> `input`. */
  aliases?: Record<string, string>;
}

const BOOL_WORDS = /^(true|false|1|0|yes|no|on|off)$/i;

export function parseArgs(argv: string[], spec: FlagSpec = {}): ParsedArgs {
  const flags = new Map<string, string | true>();
  const all = new Map<string, string[]>();
  const positionals: string[] = [];
  const set = (name: string, value: string | true) => {
    flags.set(name, value);
    if (typeof value === 'string') all.set(name, [...(all.get(name) ?? []), value]);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      inline = eq >= 0 ? arg.slice(eq + 1) : undefined;
    } else if (/^-[A-Za-z]$/.test(arg)) {
      name = spec.aliases?.[arg.slice(1)] ?? arg.slice(1);
    } else {
      positionals.push(arg);
      continue;
    }
    if (inline !== undefined) set(name, inline);
    else if (spec.booleans?.includes(name)) set(name, true);
    else if (spec.optionalBooleans?.includes(name)) {
      if (i + 1 < argv.length && BOOL_WORDS.test(argv[i + 1]!)) set(name, argv[++i]!);
      else set(name, true);
    } else if (i + 1 < argv.length && !(argv[i + 1]!.startsWith('--') && argv[i + 1]!.length > 2)) set(name, argv[++i]!);
    else set(name, true);
  }
  return { flags, all, positionals };
}

/** `false/0/no/off` -> false; anything else (or a bare flag) -> true; absent -> undefined. */
export function flagBool(v: string | true | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === true) return true;
  return !/^(false|0|no|off)$/i.test(v.trim());
}

/** `--setup-ms` -> `setupMs`. */
export function camel(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** The flags not in `known`, as predictor options (`--setup-ms 300` -> `{setupMs: '300'}`). */
export function predictorOptionsFrom(args: ParsedArgs, known: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of args.flags) if (!known.includes(name)) out[camel(name)] = value;
  return out;
}
