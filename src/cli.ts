#!/usr/bin/env node
/**
 * `framepack <command> [args]`: runs `main(argv)` of src/cli/<command>.ts. Commands are loaded on demand, so
 * `framepack serve` never imports the code of `framepack download` and the reverse.
 */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function commands(): string[] {
  try {
    return readdirSync(join(here, 'cli'))
      .filter((f) => f.endsWith('.js') && f !== 'flags.js')
      .map((f) => f.slice(0, -3))
      .sort();
  } catch {
    return [];
  }
}

function usage(): string {
  return [
    'usage: framepack <command> [options]',
    '',
    'commands:',
    ...commands().map((c) => `  ${c}`),
    '',
    'framepack serve      start the Cog-compatible HTTP server (port 5000)',
    'framepack predict -i prompt="a cat" -i input_image=@cat.png [-o out.mp4]',
  ].join('\n');
}

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(`${usage()}\n`);
    return cmd === undefined ? 1 : 0;
  }
  if (!/^[a-z][a-z0-9-]*$/.test(cmd) || !commands().includes(cmd)) {
    process.stderr.write(`framepack: unknown command '${cmd}'\n\n${usage()}\n`);
    return 1;
  }
  const mod = (await import(`./cli/${cmd}.js`)) as { main?: (argv: string[]) => Promise<number | void> };
  if (typeof mod.main !== 'function') {
    process.stderr.write(`framepack: '${cmd}' is not a command\n\n${usage()}\n`);
    return 1;
  }
  return (await mod.main(rest)) ?? 0;
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // A command is done when its main() returns: worker threads or sockets a model left open must not keep
    // the process alive (the timer itself does not keep it alive when nothing else does).
    setTimeout(() => process.exit(code), 100).unref();
  },
  (err: unknown) => {
    process.stderr.write(`framepack: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
