/**
 * Where the reference fixtures live: test/fixtures in the repository (FRAMEPACK_FIXTURES points elsewhere,
 * e.g. a copy on another machine). Parity suites fail (never skip) when they are missing, so a broken
 * checkout cannot pass silently.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// dist/test/fixtures.js -> repository root is two levels up.
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const fixturesDir = resolve(process.env.FRAMEPACK_FIXTURES || join(repoRoot, 'test', 'fixtures'));

/** Absolute path of a file under the fixtures folder; throws with a hint when it does not exist. */
export function fixture(...parts: string[]): string {
  const p = join(fixturesDir, ...parts);
  if (!existsSync(p)) {
    throw new Error(`fixture not found: ${p} (set FRAMEPACK_FIXTURES to the fixtures folder)`);
  }
  return p;
}

export const tinyModels = (): string => fixture('framepack-tiny', 'models');
