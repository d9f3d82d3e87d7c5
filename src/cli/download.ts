/**
 * `framepack download [--models-cache <dir>] [--f1]`: fills the Hugging Face cache with the pinned FramePack
 * files ahead of time (in `docker build`, or onto a volume), so that `serve` starts without network; `--f1`
 * adds the F1 transformer of `sampling_mode` f1. Progress goes to stderr; the component folders are printed
 * to stdout as JSON when everything is there.
 */
import { parseArgs } from 'node:util';
import { appError } from '../errors.js';
import { resolveModels } from '../hub/resolve.js';

const USAGE = `usage: framepack download [--models-cache <dir>] [--concurrency <n>] [--f1]

Downloads the FramePack checkpoints at the commits pinned in models/manifest.json into the Hugging Face cache
(HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), verifying every file. An interrupted run
resumes. Honours HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE (which turns this into a check of the cache).
--f1 also fetches the FramePack-F1 transformer (25.7 GB) that sampling_mode f1 uses; without it, the server
downloads it when an f1 request first needs it.`;

export async function main(argv: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'models-cache': { type: 'string' },
        concurrency: { type: 'string' },
        f1: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    throw appError('CLI_USAGE', { detail: `${(err as Error).message}\n${USAGE}` });
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
  if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency > 0)) {
    throw appError('CLI_USAGE', { detail: `--concurrency must be a positive integer\n${USAGE}` });
  }
  const dirs = await resolveModels({
    models: null,   // the cache, even when FRAMEPACK_MODELS points at a folder
    cacheDir: values['models-cache'],
    optional: values.f1 ? ['transformerF1'] : [],
    transfer: { concurrency },
    log: (line) => process.stderr.write(line + '\n'),
  });
  process.stdout.write(JSON.stringify(dirs, null, 2) + '\n');
}
